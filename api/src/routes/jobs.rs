//! The agent protocol: phones lease their jobs (`GET /agent/jobs/next`) and report what became
//! of them (`POST /agent/messages/report`).

use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use mongodb::bson::{oid::ObjectId, DateTime};
use serde::{Deserialize, Serialize};
use sms_shared::db::messages::{Message, ReportOutcome};
use sms_shared::domain::status::Status;
use sms_shared::time::{self, serde_rfc3339};

use crate::auth::AgentAuth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::state::AppState;

/// Jobs per poll unless the agent asks otherwise, and the most it may ask for.
const DEFAULT_JOBS: i64 = 10;
const MAX_JOBS: i64 = 100;
/// Items per report batch.
const MAX_REPORTS: usize = 500;
/// When to poll again after an empty answer that the pacing did not cause.
const IDLE_RETRY_SECONDS: i64 = 5;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/agent/jobs/next", get(lease_jobs))
        .route("/agent/messages/report", post(report_messages))
}

#[derive(Deserialize)]
struct JobsQuery {
    limit: Option<i64>,
}

#[derive(Serialize)]
struct Job {
    message_id: String,
    id: String,
    request_id: String,
    to: String,
    text: String,
    lease_id: String,
    #[serde(with = "serde_rfc3339")]
    lease_expires_at: DateTime,
    priority_weight: i32,
    attempts: i32,
    segments: i32,
    encoding: String,
}

impl Job {
    fn from_leased(m: Message, lease_id: &str, expires: DateTime) -> Self {
        Self {
            message_id: m.id.to_hex(),
            id: m.id.to_hex(),
            request_id: m.request_id.to_hex(),
            to: m.to,
            text: m.text,
            lease_id: m.lease_id.unwrap_or_else(|| lease_id.to_owned()),
            lease_expires_at: m.lease_expires_at.unwrap_or(expires),
            priority_weight: m.priority_weight,
            attempts: m.attempts,
            segments: m.segments,
            encoding: m.encoding,
        }
    }
}

#[derive(Serialize)]
struct JobsResponse {
    jobs: Vec<Job>,
    /// Set when `jobs` is empty: seconds until the next poll is worth making.
    retry_after_seconds: Option<i64>,
}

#[tracing::instrument(skip_all, fields(agent_id = %agent.id))]
async fn lease_jobs(
    State(state): State<AppState>,
    AgentAuth(agent): AgentAuth,
    Query(query): Query<JobsQuery>,
) -> ApiResult<Json<JobsResponse>> {
    let limit = query.limit.unwrap_or(DEFAULT_JOBS);
    if limit < 1 {
        return Err(ApiError::validation("limit", "must be at least 1"));
    }
    let limit = limit.min(MAX_JOBS);
    let now = time::now();
    let rules = &state.config.rules;
    let grant = state
        .db
        .agent_leases
        .reserve(
            agent.id,
            limit,
            i64::from(rules.agent_rate_limit_per_min),
            now,
        )
        .await?;
    if grant.allowed == 0 {
        return Ok(Json(JobsResponse {
            jobs: Vec::new(),
            retry_after_seconds: Some(grant.retry_after_seconds.unwrap_or(IDLE_RETRY_SECONDS)),
        }));
    }
    let lease_id = uuid::Uuid::new_v4().to_string();
    let lease_for = std::time::Duration::from_secs(rules.lease_seconds.unsigned_abs());
    let now = time::to_bson(now);
    let leased = match state
        .db
        .messages
        .lease(agent.id, grant.allowed, &lease_id, lease_for, now)
        .await
    {
        Ok(leased) => leased,
        Err(e) => {
            // Give the allowance back; failing that, it only lapses with the window.
            let _ = state.db.agent_leases.settle(grant.reservation, 0).await;
            return Err(e.into());
        }
    };
    let count = leased.messages.len() as i64;
    state
        .db
        .agent_leases
        .settle(grant.reservation, count)
        .await?;
    state.metrics.leases.inc_by(count as u64);
    state.metrics.lease_expiries.inc_by(leased.re_leased);
    if count > 0 {
        tracing::info!(
            leased = count,
            re_leased = leased.re_leased,
            %lease_id,
            "jobs leased"
        );
    }
    let expires = DateTime::from_millis(now.timestamp_millis() + lease_for.as_millis() as i64);
    let jobs: Vec<Job> = leased
        .messages
        .into_iter()
        .map(|m| Job::from_leased(m, &lease_id, expires))
        .collect();
    let retry_after_seconds = jobs.is_empty().then_some(IDLE_RETRY_SECONDS);
    Ok(Json(JobsResponse {
        jobs,
        retry_after_seconds,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportBatch {
    messages: Vec<ReportItem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportItem {
    message_id: String,
    status: String,
    error: Option<String>,
    lease_id: Option<String>,
}

#[derive(Serialize)]
struct ReportResult {
    message_id: String,
    ok: bool,
    /// The message's status after the report; `null` when it is not the agent's to know.
    status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
}

#[derive(Serialize)]
struct ReportResponse {
    results: Vec<ReportResult>,
}

#[tracing::instrument(skip_all, fields(agent_id = %agent.id, items = body.messages.len()))]
async fn report_messages(
    State(state): State<AppState>,
    AgentAuth(agent): AgentAuth,
    Json(body): Json<ReportBatch>,
) -> ApiResult<Json<ReportResponse>> {
    if body.messages.is_empty() || body.messages.len() > MAX_REPORTS {
        return Err(ApiError::validation(
            "messages",
            format!("must hold 1 to {MAX_REPORTS} reports"),
        ));
    }
    let mut results = Vec::with_capacity(body.messages.len());
    // In order: a batch may carry SENDING then SENT for the same message.
    for item in body.messages {
        let outcome = match (
            ObjectId::parse_str(&item.message_id),
            Status::parse(&item.status),
        ) {
            (_, None) => Err("INVALID_STATUS"),
            (Err(_), Some(_)) => Ok(ReportOutcome::NotFound),
            (Ok(id), Some(status)) => Ok(state
                .db
                .messages
                .report(
                    agent.id,
                    id,
                    status,
                    item.lease_id.as_deref(),
                    item.error.as_deref(),
                    time::bson_now(),
                )
                .await?),
        };
        let (ok, status, error) = match outcome {
            Err(code) => (false, None, Some(code)),
            Ok(ReportOutcome::Applied(s)) => {
                state.metrics.reports.with_label_values(&[s.as_str()]).inc();
                (true, Some(s), None)
            }
            Ok(ReportOutcome::Unchanged(s)) => (true, Some(s), None),
            Ok(ReportOutcome::NotFound) => (false, None, Some("NOT_FOUND")),
            Ok(ReportOutcome::InvalidTransition(s)) => (false, Some(s), Some("INVALID_TRANSITION")),
            Ok(ReportOutcome::StaleLease(s)) => (false, Some(s), Some("STALE_LEASE")),
        };
        if let Some(reason) = error {
            state
                .metrics
                .reports_rejected
                .with_label_values(&[reason])
                .inc();
        }
        results.push(ReportResult {
            message_id: item.message_id,
            ok,
            status,
            error,
        });
    }
    Ok(Json(ReportResponse { results }))
}
