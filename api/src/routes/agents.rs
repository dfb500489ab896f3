//! Agents (Android phones): registration with the shared secret, heartbeats, and the operator's
//! view and switch of the fleet.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use mongodb::bson::{doc, DateTime, Document};
use serde::{Deserialize, Serialize};
use sms_shared::db::agents::{Agent, Registered};
use sms_shared::domain::token;
use sms_shared::time::{self, serde_rfc3339};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{AgentAuth, Operator};
use crate::error::{ApiError, ApiResult};
use crate::extract::{object_id, Json};
use crate::openapi::{AuthError, BodyErrors, Errors, NotFoundError};
use crate::state::AppState;

/// An agent counts as online when its last heartbeat is this recent.
const ONLINE_WINDOW_SECONDS: i64 = 120;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_registration_secret, put_registration_secret))
        .routes(routes!(list_agents))
        .routes(routes!(update_agent))
        .routes(routes!(register_agent))
        .routes(routes!(heartbeat))
}

/// The agent registration secret in force.
#[derive(Serialize, utoipa::ToSchema)]
struct RegistrationSecret {
    /// The secret agents must send to register; `null` when registration is open.
    registration_secret: Option<String>,
    /// Whether a secret is required.
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

/// The registration secret in force: the stored one, else `AGENT_REGISTRATION_SECRET`.
#[utoipa::path(
    get,
    path = "/admin/agent/registration-secret",
    tag = "agents",
    security(("operator_jwt" = [])),
    responses(
        (status = 200, description = "The secret in force", body = RegistrationSecret),
        AuthError,
        Errors,
    )
)]
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

/// A new registration secret.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PutRegistrationSecret {
    /// At most 256 characters (after trimming); empty disables the secret.
    #[schema(max_length = 256)]
    registration_secret: String,
}

/// Sets the registration secret; an empty one opens registration to any device.
#[utoipa::path(
    put,
    path = "/admin/agent/registration-secret",
    tag = "agents",
    security(("operator_jwt" = [])),
    responses(
        (status = 200, description = "The secret now in force", body = RegistrationSecret),
        AuthError,
        Errors,
        BodyErrors,
    )
)]
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

/// A device asking to become an agent.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RegisterAgent {
    /// The device's stable id: 1 to 128 characters, not only spaces.
    #[schema(min_length = 1, max_length = 128, pattern = r"\S")]
    device_id: String,
    /// A name for operators (at most 128 characters); the `device_id` when absent.
    #[schema(max_length = 128)]
    label: Option<String>,
    /// Required when a registration secret is configured.
    registration_secret: Option<String>,
    /// For a known `device_id`: `false` keeps the old token (and answers `agent_token: null`);
    /// default `true`.
    rotate_token: Option<bool>,
}

/// A registered agent and, unless kept, its new token.
#[derive(Serialize, utoipa::ToSchema)]
struct RegisterResponse {
    agent_id: String,
    /// The token to send as `Authorization: Bearer <agent_token>`; `null` when the old one was kept.
    agent_token: Option<String>,
    device_id: String,
    label: String,
    is_active: bool,
}

/// Registers a device as an agent, or rotates a known device's token.
#[utoipa::path(
    post,
    path = "/agent/register",
    tag = "agents",
    responses(
        (status = 201, description = "A new agent", body = RegisterResponse),
        (status = 200, description = "A known device: its token rotated, or kept with `rotate_token: false`", body = RegisterResponse),
        AuthError,
        Errors,
        BodyErrors,
    )
)]
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
        server_time: time::rfc3339(DateTime::now()),
    }))
}

/// An agent as operators see it.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Agent)]
struct AgentView {
    agent_id: String,
    /// The same as `agent_id`.
    id: String,
    device_id: String,
    label: String,
    /// A disabled agent's token is refused.
    is_active: bool,
    /// The last heartbeat.
    #[serde(with = "serde_rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    last_seen_at: Option<DateTime>,
    /// Whether the last heartbeat is at most two minutes old.
    online: bool,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: DateTime,
    /// The device facts of the last heartbeat.
    #[schema(value_type = Option<Object>)]
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

/// Every agent, oldest first.
#[derive(Serialize, utoipa::ToSchema)]
struct AgentList {
    items: Vec<AgentView>,
}

/// Lists the agents with their last heartbeat.
#[utoipa::path(
    get,
    path = "/admin/agents",
    tag = "agents",
    security(("operator_jwt" = [])),
    responses(
        (status = 200, description = "Every agent", body = AgentList),
        AuthError,
        Errors,
    )
)]
async fn list_agents(State(state): State<AppState>, _op: Operator) -> ApiResult<Json<AgentList>> {
    let items = state
        .db
        .agents
        .list()
        .await?
        .into_iter()
        .map(AgentView::from)
        .collect();
    Ok(Json(AgentList { items }))
}

/// The operator's switch of an agent.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateAgent {
    /// `false` disables the agent: its token gets 401 at once.
    is_active: bool,
}

/// Enables or disables an agent.
#[utoipa::path(
    patch,
    path = "/admin/agents/{id}",
    tag = "agents",
    params(("id" = String, Path, description = "The agent's id")),
    security(("operator_jwt" = [])),
    responses(
        (status = 200, description = "The agent as it is now", body = AgentView),
        AuthError,
        NotFoundError,
        Errors,
        BodyErrors,
    )
)]
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
