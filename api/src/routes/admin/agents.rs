//! `GET /admin/agents`, `PATCH /admin/agents/{id}` and `POST /admin/agents/{id}/rotate-token`:
//! operators see the fleet with its last heartbeats, enable or disable an agent, and give a
//! phone a new token (a phone that lost its own, or one that may be in the wrong hands).

use axum::extract::{Path, State};
use mongodb::bson::{doc, DateTime, Document};
use serde::{Deserialize, Serialize};
use sms_shared::db::agents::Agent;
use sms_shared::time::serde_rfc3339;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Operator;
use crate::error::{ApiError, ApiResult};
use crate::extract::{object_id, Json};
use crate::openapi::{AuthError, BodyErrors, ConflictError, Errors, NotFoundError};
use crate::routes::agent::register::{rotate, Proof};
use crate::state::AppState;

/// An agent counts as online when its last heartbeat is this recent.
const ONLINE_WINDOW_SECONDS: i64 = 120;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_agents))
        .routes(routes!(update_agent))
        .routes(routes!(rotate_agent_token))
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

/// An agent's new token, shown this once.
#[derive(Serialize, utoipa::ToSchema)]
struct RotatedToken {
    agent_id: String,
    /// The phone's new token (`Authorization: Bearer <agent_token>`); the old one no longer works.
    agent_token: String,
    device_id: String,
    label: String,
    /// A disabled agent keeps its state: the new token works once it is enabled.
    is_active: bool,
}

/// Gives an agent a new token; the old one stops working at once.
#[utoipa::path(
    post,
    path = "/admin/agents/{id}/rotate-token",
    tag = "agents",
    params(("id" = String, Path, description = "The agent's id")),
    security(("operator_jwt" = [])),
    responses(
        (status = 200, description = "The new token, shown this once", body = RotatedToken),
        AuthError,
        NotFoundError,
        ConflictError,
        Errors,
    )
)]
async fn rotate_agent_token(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<RotatedToken>> {
    let id = object_id(&id)?;
    let agent = state.db.agents.find(id).await?.ok_or(ApiError::NotFound)?;
    let ip = operator.ip.clone();
    let (agent, token) = rotate(&state, &agent, None, &Proof::Operator(operator), ip).await?;
    Ok(Json(RotatedToken {
        agent_id: agent.id.to_hex(),
        agent_token: token,
        device_id: agent.device_id,
        label: agent.label,
        is_active: agent.is_active,
    }))
}
