//! Message reads and searches: the messages of one request (`GET /messages`), messages across
//! requests with filters (`GET /messages/all`) and one message (`GET /messages/{id}`). API keys
//! see only their own.

use axum::extract::{Path, State};
use mongodb::bson::DateTime;
use serde::{Deserialize, Serialize};
use sms_shared::db::api_keys::SCOPE_READ;
use sms_shared::db::messages::{Message, MessageFilter};
use sms_shared::domain::phone;
use sms_shared::domain::status::Status;
use sms_shared::time::serde_rfc3339;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{
    id_param, object_id, time_param, Json, Page, Paging, Query, StatusFilter, TimeFilter,
};
use crate::openapi::{AuthError, Errors, NotFoundError, ScopeError};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_request_messages))
        .routes(routes!(list_messages))
        .routes(routes!(get_message))
}

/// A message as clients and operators see it.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Message)]
pub struct MessageView {
    message_id: String,
    /// The same as `message_id`.
    id: String,
    request_id: String,
    /// The agent it is pinned to, or for a pool message the agent that leased it last; `null`
    /// while no agent of its pool holds it.
    agent_id: Option<String>,
    client_name: String,
    /// E.164.
    to: String,
    text: String,
    status: Status,
    priority_weight: i32,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: DateTime,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    updated_at: DateTime,
    #[serde(with = "serde_rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    sent_at: Option<DateTime>,
    #[serde(with = "serde_rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    delivered_at: Option<DateTime>,
    #[serde(with = "serde_rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    failed_at: Option<DateTime>,
    /// Why it failed or was canceled, e.g. `DUPLICATE_RECENT`.
    last_error: Option<String>,
    /// How often it was leased.
    attempts: i32,
    /// SMS parts the text needs.
    segments: i32,
    /// `GSM-7` or `UCS-2`.
    encoding: String,
}

impl From<Message> for MessageView {
    fn from(m: Message) -> Self {
        Self {
            message_id: m.id.to_hex(),
            id: m.id.to_hex(),
            request_id: m.request_id.to_hex(),
            agent_id: m.agent_id.map(|a| a.to_hex()),
            client_name: m.client_name,
            to: m.to,
            text: m.text,
            status: m.status,
            priority_weight: m.priority_weight,
            created_at: m.created_at,
            updated_at: m.updated_at,
            sent_at: m.sent_at,
            delivered_at: m.delivered_at,
            failed_at: m.failed_at,
            last_error: m.last_error,
            attempts: m.attempts,
            segments: m.segments,
            encoding: m.encoding,
        }
    }
}

/// The request whose messages to list, and paging. No other parameter is accepted.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct RequestMessagesQuery {
    /// The request's id.
    #[param(value_type = String)]
    request_id: Option<String>,
    /// Page size; default 50, capped at 500.
    #[param(minimum = 1)]
    limit: Option<i64>,
    /// Messages to skip; at most 1000000.
    #[param(maximum = 1000000)]
    skip: Option<u64>,
    /// Continue after this message: the `next` of the previous page.
    #[param(pattern = "^([0-9a-fA-F]{24})?$")]
    after: Option<String>,
}

/// The messages of one request, oldest first. API keys see only their own requests. `total`
/// is exact; page with `after` (the previous page's `next`) or `skip`.
#[utoipa::path(
    get,
    path = "/messages",
    tag = "requests",
    params(RequestMessagesQuery),
    security(("api_key" = []), ("operator_jwt" = [])),
    responses(
        (status = 200, description = "A page of the request's messages", body = Page<MessageView>),
        AuthError,
        ScopeError,
        NotFoundError,
        Errors,
    )
)]
async fn list_request_messages(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<RequestMessagesQuery>,
) -> ApiResult<Json<Page<MessageView>>> {
    caller.require(SCOPE_READ)?;
    let page = Paging {
        limit: q.limit,
        skip: q.skip,
        after: q.after,
    }
    .resolve()?;
    let raw = q
        .request_id
        .ok_or_else(|| ApiError::validation("request_id", "is required"))?;
    let request_id = object_id(&raw)?;
    // The request itself must be visible to the caller.
    state
        .db
        .requests
        .find_for(request_id, caller.tenant())
        .await?
        .ok_or(ApiError::NotFound)?;
    let filter = MessageFilter {
        tenant: caller.tenant(),
        request_id: Some(request_id),
        ..Default::default()
    };
    let listing = state.db.messages.list(&filter, &page).await?;
    Ok(Json(Page::of(listing, &page)))
}

/// Filters and paging of the message list. No other parameter is accepted.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AllMessagesQuery {
    /// Only messages in this status (case-insensitive).
    #[param(value_type = Option<StatusFilter>, inline)]
    status: Option<String>,
    /// Only this agent's messages.
    #[param(pattern = "^([0-9a-fA-F]{24})?$")]
    agent_id: Option<String>,
    /// Only messages to this number (normalised like a recipient).
    to: Option<String>,
    /// Created from this time on (inclusive): RFC 3339, or `YYYY-MM-DD` for midnight UTC.
    #[param(value_type = Option<TimeFilter>, inline)]
    from: Option<String>,
    /// Created before this time (exclusive): RFC 3339, or `YYYY-MM-DD`.
    #[param(value_type = Option<TimeFilter>, inline)]
    until: Option<String>,
    /// Page size; default 50, capped at 500.
    #[param(minimum = 1)]
    limit: Option<i64>,
    /// Messages to skip; at most 1000000.
    #[param(maximum = 1000000)]
    skip: Option<u64>,
    /// Continue after this message: the `next` of the previous page.
    #[param(pattern = "^([0-9a-fA-F]{24})?$")]
    after: Option<String>,
}

/// Messages across requests, newest first: an API key's own, or every one for operators. Page
/// with `after` (the previous page's `next`) or `skip`. `total` is exact for a `to` search and
/// up to 1,000 matches past the page; beyond that it is capped there and
/// `total_is_lower_bound` is true.
#[utoipa::path(
    get,
    path = "/messages/all",
    tag = "requests",
    params(AllMessagesQuery),
    security(("api_key" = []), ("operator_jwt" = [])),
    responses(
        (status = 200, description = "A page of messages", body = Page<MessageView>),
        AuthError,
        ScopeError,
        Errors,
    )
)]
async fn list_messages(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AllMessagesQuery>,
) -> ApiResult<Json<Page<MessageView>>> {
    caller.require(SCOPE_READ)?;
    let page = Paging {
        limit: q.limit,
        skip: q.skip,
        after: q.after,
    }
    .resolve()?;
    let status = match q.status.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            Status::parse(&s.to_ascii_uppercase())
                .ok_or_else(|| ApiError::validation("status", "unknown status"))?,
        ),
    };
    let agent_id = id_param("agent_id", q.agent_id.as_deref())?;
    let rules = &state.config.rules;
    let to = match q.to.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => Some(
            phone::normalize(t, &rules.default_country_prefix, false)
                .map_err(|e| ApiError::validation("to", e.to_string()))?,
        ),
    };
    let from = time_param("from", q.from.as_deref())?;
    let until = time_param("until", q.until.as_deref())?;
    let filter = MessageFilter {
        tenant: caller.tenant(),
        status,
        agent_id,
        to,
        from,
        until,
        ..Default::default()
    };
    let listing = state.db.messages.list(&filter, &page).await?;
    Ok(Json(Page::of(listing, &page)))
}

/// One message. API keys see only their own.
#[utoipa::path(
    get,
    path = "/messages/{id}",
    tag = "requests",
    params(("id" = String, Path, description = "The message's id")),
    security(("api_key" = []), ("operator_jwt" = [])),
    responses(
        (status = 200, description = "The message", body = MessageView),
        AuthError,
        ScopeError,
        NotFoundError,
        Errors,
    )
)]
async fn get_message(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<MessageView>> {
    caller.require(SCOPE_READ)?;
    let id = object_id(&id)?;
    let m = state
        .db
        .messages
        .find_for(id, caller.tenant())
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(m.into()))
}
