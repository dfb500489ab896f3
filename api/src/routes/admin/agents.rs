//! `GET /admin/agents`, `PATCH /admin/agents/{id}` and `POST /admin/agents/{id}/rotate-token`:
//! operators see the fleet with its last heartbeats, polls and what each phone may still send,
//! enable or disable an agent, set its own sending limits, and give a phone a new token (a phone
//! that lost its own, or one that may be in the wrong hands).
//!
//! The list reads the agents, the pacing ledger's last 30 minutes and today's counters
//! (`db::agent_rate`), never `sms_messages`, so it stays fast whatever the history.

use axum::extract::{Path, State};
use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use serde::{Deserialize, Serialize};
use sms_shared::db::agent_rate::{Caps, Remaining, Usage};
use sms_shared::db::agents::{Agent, AgentChanges};
use sms_shared::time::{self, serde_rfc3339};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Operator;
use crate::error::{ApiError, ApiResult, FieldErrors};
use crate::extract::{nullable, object_id, Json};
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
    /// The last poll or status report (to within 5 s); an agent silent for
    /// `AGENT_STALE_SECONDS` has its pool messages given to other agents.
    #[serde(with = "serde_rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    last_poll_at: Option<DateTime>,
    /// Its own messages per rolling minute; `null`: `AGENT_RATE_LIMIT_PER_MIN`.
    rate_limit_per_min: Option<i64>,
    /// Messages per rolling 30 minutes; `null`: no cap.
    max_per_30min: Option<i64>,
    /// Messages per UTC day; `null`: no cap.
    daily_limit: Option<i64>,
    /// Messages leased to it since 00:00 UTC (sent or not).
    sends_today: i64,
    /// What it may still lease in each window.
    remaining: RemainingView,
}

/// What an agent may still lease now in each window of its limits.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Remaining)]
struct RemainingView {
    /// In the rolling minute.
    per_min: i64,
    /// In the rolling 30 minutes; `null` without `max_per_30min`.
    per_30min: Option<i64>,
    /// Until 00:00 UTC; `null` without `daily_limit`.
    today: Option<i64>,
}

impl From<Remaining> for RemainingView {
    fn from(r: Remaining) -> Self {
        Self {
            per_min: r.per_min,
            per_30min: r.per_30min,
            today: r.today,
        }
    }
}

impl AgentView {
    /// `a` as operators see it, with what it used of its limits.
    fn of(a: Agent, usage: Usage, default_per_min: i64) -> Self {
        let now = sms_shared::time::bson_now().timestamp_millis();
        let online = a
            .last_seen_at
            .is_some_and(|t| now - t.timestamp_millis() <= ONLINE_WINDOW_SECONDS * 1000);
        let remaining = usage.remaining(Caps::of(&a, default_per_min)).into();
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
            last_poll_at: a.last_poll_at,
            rate_limit_per_min: a.rate_limit_per_min,
            max_per_30min: a.max_per_30min,
            daily_limit: a.daily_limit,
            sends_today: usage.today,
            remaining,
        }
    }
}

/// `agents` as operators see them now.
async fn views(state: &AppState, agents: Vec<Agent>) -> ApiResult<Vec<AgentView>> {
    let ids: Vec<ObjectId> = agents.iter().map(|a| a.id).collect();
    let usage = state.db.agent_rate.usage(&ids, time::now()).await?;
    let default_per_min = i64::from(state.config.rules.agent_rate_limit_per_min);
    Ok(agents
        .into_iter()
        .map(|a| {
            let used = usage.get(&a.id).copied().unwrap_or_default();
            AgentView::of(a, used, default_per_min)
        })
        .collect())
}

/// Every agent, oldest first.
#[derive(Serialize, utoipa::ToSchema)]
struct AgentList {
    items: Vec<AgentView>,
}

/// Lists the agents with their last heartbeat and poll, their limits and what is left of them.
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
    let agents = state.db.agents.list().await?;
    let items = views(&state, agents).await?;
    Ok(Json(AgentList { items }))
}

/// Changes to an agent; absent fields stay as they are, `null` clears a limit.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateAgent {
    /// `false` disables the agent: its token gets 401 at once.
    is_active: Option<bool>,
    /// Its own messages per rolling minute (1 to 1000000); `null`: `AGENT_RATE_LIMIT_PER_MIN`.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1_000_000)]
    rate_limit_per_min: Option<Option<i64>>,
    /// Messages per rolling 30 minutes (1 to 1000000); Android lets an app send 30 SMS per 30
    /// minutes unless the phone's limit was raised. `null`: no cap.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1_000_000)]
    max_per_30min: Option<Option<i64>>,
    /// Messages per UTC day (1 to 1000000000); `null`: no cap.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1_000_000_000)]
    daily_limit: Option<Option<i64>>,
}

impl UpdateAgent {
    /// The changes, or the errors of out-of-range limits.
    fn changes(&self) -> Result<AgentChanges, ApiError> {
        let mut errors = FieldErrors::new();
        for (field, value, max) in [
            ("rate_limit_per_min", self.rate_limit_per_min, 1_000_000),
            ("max_per_30min", self.max_per_30min, 1_000_000),
            ("daily_limit", self.daily_limit, 1_000_000_000),
        ] {
            if let Some(Some(n)) = value {
                if !(1..=max).contains(&n) {
                    errors
                        .entry(field.into())
                        .or_default()
                        .push(format!("must be between 1 and {max}, or null"));
                }
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::Validation {
                detail: "invalid agent change; nothing was changed".into(),
                errors,
            });
        }
        Ok(AgentChanges {
            is_active: self.is_active,
            rate_limit_per_min: self.rate_limit_per_min,
            max_per_30min: self.max_per_30min,
            daily_limit: self.daily_limit,
        })
    }
}

/// Enables or disables an agent, and sets or clears its own limits.
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
    let changes = body.changes()?;
    let agent = state
        .db
        .agents
        .update(id, &changes)
        .await?
        .ok_or(ApiError::NotFound)?;
    if let Some(active) = changes.is_active {
        let action = if active {
            "agent.enable"
        } else {
            "agent.disable"
        };
        let details = doc! {"device_id": &agent.device_id};
        operator
            .audit(&state, action, "agent", Some(id.to_hex()), details)
            .await?;
    }
    if changes.changes_limits() {
        let details = doc! {
            "device_id": &agent.device_id,
            "rate_limit_per_min": agent.rate_limit_per_min,
            "max_per_30min": agent.max_per_30min,
            "daily_limit": agent.daily_limit,
        };
        operator
            .audit(&state, "agent.limits", "agent", Some(id.to_hex()), details)
            .await?;
    }
    let view = views(&state, vec![agent]).await?.pop().expect("one agent");
    Ok(Json(view))
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
