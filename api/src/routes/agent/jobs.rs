//! `GET /agent/jobs/next`: an agent leases its next jobs (its pinned messages and those of the
//! pools it belongs to, together), highest priority first, within its limits (per minute, per
//! 30 minutes, per day: `db::agent_rate`).
//!
//! The handler is its steps: record the poll (the reconciler releases the pool messages of agents
//! that stopped polling) → reserve the allowance → claim jobs in `sms_jobs` (live work only,
//! whatever the history) → record the lease on their messages and count `PENDING → ASSIGNED` →
//! give back the unused allowance. A job is handed out only once its message carries the lease.

use axum::extract::State;
use mongodb::bson::{oid::ObjectId, DateTime};
use serde::{Deserialize, Serialize};
use sms_shared::db::agent_rate::Caps;
use sms_shared::db::jobs::Job as LeasedJob;
use sms_shared::db::messages::count_transitions;
use sms_shared::time::{self, serde_rfc3339};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::AgentAuth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::openapi::{AuthError, Errors};
use crate::state::AppState;

/// Jobs per poll unless the agent asks otherwise, and the most it may ask for.
const DEFAULT_JOBS: i64 = 10;
const MAX_JOBS: i64 = 100;
/// When to poll again after an empty answer that the pacing did not cause.
const IDLE_RETRY_SECONDS: i64 = 5;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(lease_jobs))
}

/// How many jobs to lease.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct JobsQuery {
    /// At most this many jobs; default 10, capped at 100.
    #[param(minimum = 1)]
    limit: Option<i64>,
}

/// A message leased to the agent to send.
#[derive(Serialize, utoipa::ToSchema)]
struct Job {
    message_id: String,
    /// The same as `message_id`.
    id: String,
    request_id: String,
    /// E.164.
    to: String,
    text: String,
    /// Identifies this lease; send it back with the report.
    lease_id: String,
    /// Until when the job is the agent's; an `ASSIGNED` job whose lease ran out can be leased again.
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    lease_expires_at: DateTime,
    priority_weight: i32,
    /// How often it was leased, this lease included.
    attempts: i32,
    /// SMS parts the text needs.
    segments: i32,
    /// `GSM-7` or `UCS-2`.
    encoding: String,
}

impl Job {
    fn from_leased(j: LeasedJob, lease_id: &str, expires: DateTime) -> Self {
        Self {
            message_id: j.id.to_hex(),
            id: j.id.to_hex(),
            request_id: j.request_id.to_hex(),
            to: j.to,
            text: j.text,
            lease_id: j.lease_id.unwrap_or_else(|| lease_id.to_owned()),
            lease_expires_at: j.lease_expires_at.unwrap_or(expires),
            priority_weight: j.priority_weight,
            attempts: j.attempts,
            segments: j.segments,
            encoding: j.encoding,
        }
    }
}

/// The jobs of one poll.
#[derive(Serialize, utoipa::ToSchema)]
struct JobsResponse {
    jobs: Vec<Job>,
    /// Set when `jobs` is empty: seconds until the next poll is worth making.
    retry_after_seconds: Option<i64>,
}

/// Leases the agent's next jobs, pinned and pool ones together: highest `priority_weight` first,
/// then oldest, within the agent's limits (`AGENT_RATE_LIMIT_PER_MIN` or its own
/// `rate_limit_per_min`, its `max_per_30min` and `daily_limit`).
#[utoipa::path(
    get,
    path = "/agent/jobs/next",
    tag = "jobs",
    params(JobsQuery),
    security(("agent_token" = [])),
    responses(
        (status = 200, description = "The leased jobs; when none, `retry_after_seconds` says when to poll again", body = JobsResponse),
        AuthError,
        Errors,
    )
)]
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
    state
        .db
        .agents
        .record_poll(agent.id, time::to_bson(now), rules.agent_stale)
        .await?;
    let caps = Caps::of(&agent, i64::from(rules.agent_rate_limit_per_min));
    let grant = state
        .db
        .agent_rate
        .reserve(agent.id, limit, caps, now)
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
    let leased = lease(&state, agent.id, grant.allowed, &lease_id, lease_for, now).await;
    let (leased, re_leased) = match leased {
        Ok(leased) => leased,
        Err(e) => {
            // Give the allowance back; failing that, it only lapses with the window. Jobs
            // claimed but not handed out are leased again when their lease runs out.
            let _ = state.db.agent_rate.settle(&grant, 0).await;
            return Err(e.into());
        }
    };
    let count = leased.len() as i64;
    state.db.agent_rate.settle(&grant, count).await?;
    state.metrics.leases.inc_by(count as u64);
    state.metrics.lease_expiries.inc_by(re_leased);
    if count > 0 {
        tracing::info!(leased = count, re_leased, %lease_id, "jobs leased");
    }
    let expires = DateTime::from_millis(now.timestamp_millis() + lease_for.as_millis() as i64);
    let jobs: Vec<Job> = leased
        .into_iter()
        .map(|j| Job::from_leased(j, &lease_id, expires))
        .collect();
    let retry_after_seconds = jobs.is_empty().then_some(IDLE_RETRY_SECONDS);
    Ok(Json(JobsResponse {
        jobs,
        retry_after_seconds,
    }))
}

/// Claims up to `limit` jobs for `agent` under `lease_id` and records the lease on their
/// messages; returns the jobs to hand out (in lease order) and how many of them were leased
/// again after their lease ran out.
async fn lease(
    state: &AppState,
    agent: ObjectId,
    limit: i64,
    lease_id: &str,
    lease_for: std::time::Duration,
    now: DateTime,
) -> mongodb::error::Result<(Vec<LeasedJob>, u64)> {
    let db = &state.db;
    let mut claimed = db
        .jobs
        .lease(agent, limit, lease_id, lease_for, now)
        .await?;
    let (recorded, done) = db
        .messages
        .record_lease(agent, lease_id, &claimed, now)
        .await;
    count_transitions(&db.stats, &recorded.transitions).await;
    done?;
    if !recorded.moved_on.is_empty() {
        tracing::warn!(
            jobs = recorded.moved_on.len(),
            "jobs whose messages had moved on were not handed out"
        );
        db.jobs
            .settle_moved_on(lease_id, &recorded.moved_on, now)
            .await?;
    }
    claimed.jobs.retain(|j| recorded.leased.contains(&j.id));
    claimed.before.retain(|id, _| recorded.leased.contains(id));
    let re_leased = claimed.re_leased();
    Ok((claimed.jobs, re_leased))
}
