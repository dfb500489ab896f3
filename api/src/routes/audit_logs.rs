//! `/admin/audit-logs`: operators review who changed what, newest first.

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use mongodb::bson::{Bson, DateTime};
use serde::{Deserialize, Serialize};
use sms_shared::db::audit_logs::{AuditFilter, AuditLog};
use sms_shared::time::serde_rfc3339;

use crate::auth::Operator;
use crate::error::ApiResult;
use crate::extract::{time_range, Json, Page, Paging, Query};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/admin/audit-logs", get(list_audit_logs))
}

/// Filters (exact `actor` and `action`, `at` in `[from, to)`) and paging.
#[derive(Debug, Deserialize)]
struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<i64>,
    skip: Option<u64>,
}

#[derive(Serialize)]
struct AuditLogView {
    id: String,
    actor: String,
    action: String,
    target_type: String,
    target_id: Option<String>,
    #[serde(with = "serde_rfc3339")]
    at: DateTime,
    ip: Option<String>,
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

#[tracing::instrument(skip_all)]
async fn list_audit_logs(
    State(state): State<AppState>,
    _operator: Operator,
    Query(query): Query<AuditQuery>,
) -> ApiResult<Json<Page<AuditLogView>>> {
    let (from, until) = time_range(query.from.as_deref(), query.to.as_deref())?;
    let (limit, skip) = Paging {
        limit: query.limit,
        skip: query.skip,
    }
    .resolve()?;
    let filter = AuditFilter {
        actor: non_empty(query.actor),
        action: non_empty(query.action),
        from,
        until,
    };
    let (items, total) = state.db.audit_logs.list(&filter, limit, skip).await?;
    Ok(Json(Page {
        items: items.into_iter().map(AuditLogView::from).collect(),
        total,
        limit,
        skip,
    }))
}
