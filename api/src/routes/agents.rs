//! Agents (Android phones): registration with the shared secret, heartbeats, and the operator's
//! view and switch of the fleet.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use axum::Router;
use mongodb::bson::{doc, DateTime, Document};
use serde::{Deserialize, Serialize};
use sms_shared::db::agents::{Agent, Registered};
use sms_shared::domain::token;
use sms_shared::time::{self, serde_rfc3339};

use crate::auth::{AgentAuth, Operator};
use crate::error::{ApiError, ApiResult};
use crate::extract::{object_id, Json};
use crate::state::AppState;

/// An agent counts as online when its last heartbeat is this recent.
const ONLINE_WINDOW_SECONDS: i64 = 120;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/admin/agent/registration-secret",
            get(get_registration_secret).put(put_registration_secret),
        )
        .route("/admin/agents", get(list_agents))
        .route("/admin/agents/{id}", patch(update_agent))
        .route("/agent/register", post(register_agent))
        .route("/agent/heartbeat", post(heartbeat))
}

#[derive(Serialize)]
struct RegistrationSecret {
    registration_secret: Option<String>,
    configured: bool,
}

/// The secret in force: the database value wins over `AGENT_REGISTRATION_SECRET`; an empty
/// value disables it; with neither, registration is open.
async fn secret_in_force(state: &AppState) -> ApiResult<Option<String>> {
    let stored = state.db.settings.registration_secret().await?;
    Ok(match stored {
        Some(v) => Some(v).filter(|v| !v.is_empty()),
        None => state.config.agent_registration_secret.clone(),
    })
}

async fn get_registration_secret(
    State(state): State<AppState>,
    _op: Operator,
) -> ApiResult<Json<RegistrationSecret>> {
    let secret = secret_in_force(&state).await?;
    Ok(Json(RegistrationSecret {
        configured: secret.is_some(),
        registration_secret: secret,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutRegistrationSecret {
    registration_secret: String,
}

async fn put_registration_secret(
    State(state): State<AppState>,
    operator: Operator,
    Json(body): Json<PutRegistrationSecret>,
) -> ApiResult<Json<RegistrationSecret>> {
    let value = body.registration_secret.trim().to_owned();
    if value.chars().count() > 256 {
        return Err(ApiError::validation(
            "registration_secret",
            "must be at most 256 characters",
        ));
    }
    state
        .db
        .settings
        .set_registration_secret(&value, &operator.name)
        .await?;
    operator
        .audit(
            &state,
            if value.is_empty() {
                "registration_secret.disable"
            } else {
                "registration_secret.set"
            },
            "setting",
            Some("agent_registration_secret".into()),
            doc! {},
        )
        .await?;
    let secret = Some(value).filter(|v| !v.is_empty());
    Ok(Json(RegistrationSecret {
        configured: secret.is_some(),
        registration_secret: secret,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterAgent {
    device_id: String,
    label: Option<String>,
    registration_secret: Option<String>,
    rotate_token: Option<bool>,
}

#[derive(Serialize)]
struct RegisterResponse {
    agent_id: String,
    agent_token: Option<String>,
    device_id: String,
    label: String,
    is_active: bool,
}

#[tracing::instrument(skip_all, fields(device_id = %body.device_id))]
async fn register_agent(
    State(state): State<AppState>,
    Json(body): Json<RegisterAgent>,
) -> ApiResult<(StatusCode, Json<RegisterResponse>)> {
    if let Some(expected) = secret_in_force(&state).await? {
        let given = body.registration_secret.as_deref().unwrap_or("");
        if !token::digests_equal(&token::digest(given), &token::digest(&expected)) {
            return Err(ApiError::Unauthorized);
        }
    }
    let device_id = body.device_id.trim().to_owned();
    if device_id.is_empty() || device_id.chars().count() > 128 {
        return Err(ApiError::validation(
            "device_id",
            "must be 1 to 128 characters",
        ));
    }
    let label = body
        .label
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| device_id.clone());
    if label.chars().count() > 128 {
        return Err(ApiError::validation(
            "label",
            "must be at most 128 characters",
        ));
    }
    let minted = token::mint(token::AGENT_TOKEN_PREFIX);
    let rotate = body.rotate_token.unwrap_or(true);
    let (status, agent, plain) = match state
        .db
        .agents
        .register(&device_id, &label, &minted.hash, rotate)
        .await?
    {
        Registered::Created(a) => (StatusCode::CREATED, a, Some(minted.plain)),
        Registered::Rotated(a) => (StatusCode::OK, a, Some(minted.plain)),
        Registered::Kept(a) => (StatusCode::OK, a, None),
    };
    tracing::info!(agent_id = %agent.id, new_token = plain.is_some(), "agent registered");
    Ok((
        status,
        Json(RegisterResponse {
            agent_id: agent.id.to_hex(),
            agent_token: plain,
            device_id: agent.device_id,
            label: agent.label,
            is_active: agent.is_active,
        }),
    ))
}

/// Device facts an agent reports with each heartbeat.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Heartbeat {
    battery: Option<f64>,
    charging: Option<bool>,
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

#[derive(Serialize)]
struct HeartbeatResponse {
    ok: bool,
    server_time: String,
}

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
        server_time: time::rfc3339(DateTime::now()),
    }))
}

#[derive(Serialize)]
struct AgentView {
    agent_id: String,
    id: String,
    device_id: String,
    label: String,
    is_active: bool,
    #[serde(with = "serde_rfc3339::option")]
    last_seen_at: Option<DateTime>,
    online: bool,
    #[serde(with = "serde_rfc3339")]
    created_at: DateTime,
    device: Option<Document>,
}

impl From<Agent> for AgentView {
    fn from(a: Agent) -> Self {
        let now = DateTime::now().timestamp_millis();
        let online = a
            .last_seen_at
            .is_some_and(|t| now - t.timestamp_millis() <= ONLINE_WINDOW_SECONDS * 1000);
        Self {
            agent_id: a.id.to_hex(),
            id: a.id.to_hex(),
            device_id: a.device_id,
            label: a.label,
            is_active: a.is_active,
            last_seen_at: a.last_seen_at,
            online,
            created_at: a.created_at,
            device: a.device,
        }
    }
}

#[derive(Serialize)]
struct Items<T> {
    items: Vec<T>,
}

async fn list_agents(
    State(state): State<AppState>,
    _op: Operator,
) -> ApiResult<Json<Items<AgentView>>> {
    let items = state
        .db
        .agents
        .list()
        .await?
        .into_iter()
        .map(AgentView::from)
        .collect();
    Ok(Json(Items { items }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateAgent {
    is_active: bool,
}

async fn update_agent(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
    Json(body): Json<UpdateAgent>,
) -> ApiResult<Json<AgentView>> {
    let id = object_id(&id)?;
    let agent = state
        .db
        .agents
        .set_active(id, body.is_active)
        .await?
        .ok_or(ApiError::NotFound)?;
    operator
        .audit(
            &state,
            if body.is_active {
                "agent.enable"
            } else {
                "agent.disable"
            },
            "agent",
            Some(id.to_hex()),
            doc! {"device_id": &agent.device_id},
        )
        .await?;
    Ok(Json(AgentView::from(agent)))
}
