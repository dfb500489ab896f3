//! `GET /requests/{id}`: a send request and how far its messages got.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use mongodb::bson::DateTime;
use serde::Serialize;
use sms_shared::db::api_keys::SCOPE_READ;
use sms_shared::domain::status::Status;
use sms_shared::time::serde_rfc3339;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{object_id, Json};
use crate::openapi::{AuthError, Errors, NotFoundError, ScopeError};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_request))
}

/// A send request and how far its messages got.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = SmsRequest)]
struct RequestView {
    request_id: String,
    /// The same as `request_id`.
    id: String,
    /// The number of messages.
    total: i64,
    /// How many of its messages are in each status; every status is present.
    #[schema(value_type = sms_shared::db::reports::StatusCounts)]
    status_counts: BTreeMap<String, i64>,
    template_id: String,
    /// The agent its messages are pinned to; `null` for a pool.
    agent_id: Option<String>,
    /// A pool's agents; `null` when pinned, or for a pool of every active agent.
    agent_ids: Option<Vec<String>>,
    client_name: String,
    priority_weight: i32,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: DateTime,
}

/// A send request with its messages counted by status. API keys see only their own.
#[utoipa::path(
    get,
    path = "/requests/{id}",
    tag = "requests",
    params(("id" = String, Path, description = "The request's id")),
    security(("api_key" = []), ("operator_jwt" = [])),
    responses(
        (status = 200, description = "The request", body = RequestView),
        AuthError,
        ScopeError,
        NotFoundError,
        Errors,
    )
)]
async fn get_request(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<RequestView>> {
    caller.require(SCOPE_READ)?;
    let id = object_id(&id)?;
    let request = state
        .db
        .requests
        .find_for(id, caller.tenant())
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut status_counts: BTreeMap<String, i64> = Status::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), 0))
        .collect();
    for (status, n) in state.db.messages.status_counts(id).await? {
        status_counts.insert(status, n);
    }
    Ok(Json(RequestView {
        request_id: request.id.to_hex(),
        id: request.id.to_hex(),
        total: request.total,
        status_counts,
        template_id: request.template_id.to_hex(),
        agent_id: request.agent_id.map(|a| a.to_hex()),
        agent_ids: request
            .agent_ids
            .map(|ids| ids.iter().map(|a| a.to_hex()).collect()),
        client_name: request.client_name,
        priority_weight: request.priority_weight,
        created_at: request.created_at,
    }))
}
