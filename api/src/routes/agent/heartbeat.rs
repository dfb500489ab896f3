//! `POST /agent/heartbeat`: an agent says it is alive, with its device facts (battery, signal,
//! versions) for operators to see.

use axum::extract::State;
use mongodb::bson::Document;
use serde::{Deserialize, Serialize};
use sms_shared::time;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::AgentAuth;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::openapi::{AuthError, BodyErrors, Errors};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(heartbeat))
}

/// Device facts an agent reports with each heartbeat; all optional. Texts are kept up to 128
/// characters.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Heartbeat {
    /// Battery level in percent.
    #[schema(minimum = 0, maximum = 100)]
    battery: Option<f64>,
    charging: Option<bool>,
    /// Signal strength as the device reports it.
    signal: Option<i32>,
    network: Option<String>,
    app_version: Option<String>,
    os_version: Option<String>,
    model: Option<String>,
    sim_operator: Option<String>,
}

impl Heartbeat {
    fn to_document(&self) -> Document {
        let mut d = Document::new();
        let short =
            |s: &Option<String>| s.as_ref().map(|v| v.chars().take(128).collect::<String>());
        if let Some(v) = self.battery {
            d.insert("battery", v);
        }
        if let Some(v) = self.charging {
            d.insert("charging", v);
        }
        if let Some(v) = self.signal {
            d.insert("signal", v);
        }
        for (k, v) in [
            ("network", short(&self.network)),
            ("app_version", short(&self.app_version)),
            ("os_version", short(&self.os_version)),
            ("model", short(&self.model)),
            ("sim_operator", short(&self.sim_operator)),
        ] {
            if let Some(v) = v {
                d.insert(k, v);
            }
        }
        d
    }
}

/// The heartbeat was recorded.
#[derive(Serialize, utoipa::ToSchema)]
struct HeartbeatResponse {
    /// Always `true`.
    ok: bool,
    /// The server's clock, for the device to compare with its own.
    #[schema(format = DateTime)]
    server_time: String,
}

/// Records that the agent is alive, with its device facts.
#[utoipa::path(
    post,
    path = "/agent/heartbeat",
    tag = "agents",
    security(("agent_token" = [])),
    responses(
        (status = 200, description = "Recorded", body = HeartbeatResponse),
        AuthError,
        Errors,
        BodyErrors,
    )
)]
async fn heartbeat(
    State(state): State<AppState>,
    AgentAuth(agent): AgentAuth,
    Json(body): Json<Heartbeat>,
) -> ApiResult<Json<HeartbeatResponse>> {
    if body.battery.is_some_and(|b| !(0.0..=100.0).contains(&b)) {
        return Err(ApiError::validation("battery", "must be between 0 and 100"));
    }
    state
        .db
        .agents
        .heartbeat(agent.id, body.to_document())
        .await?;
    Ok(Json(HeartbeatResponse {
        ok: true,
        server_time: time::rfc3339(time::bson_now()),
    }))
}
