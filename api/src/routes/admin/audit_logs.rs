//! `/admin/audit-logs`: operators review who changed what, newest first.

use axum::extract::State;
use mongodb::bson::{Bson, DateTime};
use serde::{Deserialize, Serialize};
use sms_shared::db::audit_logs::{AuditFilter, AuditLog};
use sms_shared::time::serde_rfc3339;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Operator;
use crate::error::ApiResult;
use crate::extract::{time_range, Json, Page, Paging, Query, TimeFilter};
use crate::openapi::{AuthError, Errors};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit_logs))
}

/// Filters (exact `actor` and `action`, `at` in `[from, to)`) and paging.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// Only this operator's actions.
    actor: Option<String>,
    /// Only this action, e.g. `api_key.create`.
    action: Option<String>,
    /// From this time on (inclusive): RFC 3339, or `YYYY-MM-DD` for midnight UTC.
    #[param(value_type = Option<TimeFilter>, inline)]
    from: Option<String>,
    /// Before this time (exclusive), later than `from`: RFC 3339, or `YYYY-MM-DD`.
    #[param(value_type = Option<TimeFilter>, inline)]
    to: Option<String>,
    /// Page size; default 50, capped at 500.
    #[param(minimum = 1)]
    limit: Option<i64>,
    /// Entries to skip; at most 1000000.
    #[param(maximum = 1000000)]
    skip: Option<u64>,
    /// Continue after this entry: the `next` of the previous page.
    #[param(pattern = "^([0-9a-fA-F]{24})?$")]
    after: Option<String>,
}

/// One operator write, or one agent token issued.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = AuditLog)]
struct AuditLogView {
    id: String,
    /// The operator's name; for agent tokens issued without an operator, `agent:<agent_id>`
    /// (the agent's own token) or `registration-secret`.
    actor: String,
    /// What was done, e.g. `template.approve`.
    action: String,
    /// The kind of object: `api_key`, `agent`, `template`, `setting`.
    target_type: String,
    target_id: Option<String>,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    at: DateTime,
    /// The client's address.
    ip: Option<String>,
    /// What the action changed.
    #[schema(value_type = Object)]
    details: serde_json::Value,
}

impl From<AuditLog> for AuditLogView {
    fn from(log: AuditLog) -> Self {
        Self {
            id: log.id.to_hex(),
            actor: log.actor,
            action: log.action,
            target_type: log.target_type,
            target_id: log.target_id,
            at: log.at,
            ip: log.ip,
            details: Bson::Document(log.details).into_relaxed_extjson(),
        }
    }
}

/// Empty filter values count as absent.
fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Lists audit log entries, newest first. Page with `after` (the previous page's `next`) or
/// `skip`; `total` is exact up to 1,000 entries past the page, beyond that it is capped there
/// and `total_is_lower_bound` is true.
#[utoipa::path(
    get,
    path = "/admin/audit-logs",
    tag = "audit-logs",
    params(AuditQuery),
    security(("operator_jwt" = [])),
    responses(
        (status = 200, description = "A page of entries", body = Page<AuditLogView>),
        AuthError,
        Errors,
    )
)]
#[tracing::instrument(skip_all)]
async fn list_audit_logs(
    State(state): State<AppState>,
    _operator: Operator,
    Query(query): Query<AuditQuery>,
) -> ApiResult<Json<Page<AuditLogView>>> {
    let (from, until) = time_range(query.from.as_deref(), query.to.as_deref())?;
    let page = Paging {
        limit: query.limit,
        skip: query.skip,
        after: query.after,
    }
    .resolve()?;
    let filter = AuditFilter {
        actor: non_empty(query.actor),
        action: non_empty(query.action),
        from,
        until,
    };
    let listing = state.db.audit_logs.list(&filter, &page).await?;
    Ok(Json(Page::of(listing, &page)))
}
