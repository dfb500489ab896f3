//! `GET /agent/jobs/next`: an agent leases its next jobs (its pinned messages and those of the
//! pools it belongs to, together), highest priority first, within its limits (per minute, per
//! 30 minutes, per day: `db::agent_rate`), waiting up to `wait` seconds for one when none is
//! there.
//!
//! One look is its steps: record the poll (the reconciler releases the pool messages of agents
//! that stopped polling) and, at the same time, reserve the allowance → claim jobs in `sms_jobs`
//! (live work only, whatever the history) → record the lease on their messages → count
//! `PENDING → ASSIGNED` and, at the same time, give back the unused allowance. A job is handed
//! out only once its message carries the lease. The claim and the lease record of a poll holding
//! no fast-lane job take turns with the process's other bulk writes (`db::bulk_gate`).
//!
//! A long poll (`wait` > 0) that finds nothing registers its interest in its lanes with the wake
//! hub *before* each look, and between looks waits for a wake (a dispatcher staged a job of one
//! of its lanes), `LONG_POLL_RECHECK_SECONDS` (a lease that ran out makes a job leasable without
//! any wake), its deadline or the server's shutdown. Each look settles its allowance reservation
//! before the wait, so a waiting phone holds none of its allowance, and records the poll, so a
//! waiting phone never looks silent; a phone at its limit is answered at once.

use std::time::Duration;

use axum::extract::State;
use mongodb::bson::{oid::ObjectId, DateTime};
use serde::{Deserialize, Serialize};
use sms_shared::db::agent_rate::Caps;
use sms_shared::db::agents::Agent;
use sms_shared::db::jobs::{lane, Job as LeasedJob};
use sms_shared::db::messages::count_transitions;
use sms_shared::db::stats::Transition;
use sms_shared::time::{self, serde_rfc3339};
use tokio::time::Instant;
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
/// The longest `wait` (seconds).
const MAX_WAIT_SECONDS: u64 = 30;
/// The lane of jobs any agent may lease.
const ANY_AGENT_LANE: &str = "*";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(lease_jobs))
}

/// How many jobs to lease, and how long to wait for one.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct JobsQuery {
    /// At most this many jobs; default 10, capped at 100.
    #[param(minimum = 1)]
    limit: Option<i64>,
    /// Seconds to wait for a job when none is leasable now (a long poll), 0 to 30; default 0
    /// answers at once. The answer comes as soon as a job is leased, else after `wait` seconds
    /// with no jobs.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 30)]
    wait: Option<String>,
}

/// `wait` as a duration: a whole number of seconds from 0 to 30 (empty: 0).
fn wait_for(raw: Option<&str>) -> Result<Duration, ApiError> {
    let Some(raw) = raw.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(Duration::ZERO);
    };
    match raw.parse::<u64>() {
        Ok(seconds) if seconds <= MAX_WAIT_SECONDS => Ok(Duration::from_secs(seconds)),
        _ => Err(ApiError::validation(
            "wait",
            "must be a whole number of seconds from 0 to 30",
        )),
    }
}

/// The lanes `agent` leases from, which its long polls wait on: its own and any agent's.
fn lanes_of(agent: ObjectId) -> Vec<String> {
    vec![lane(agent), ANY_AGENT_LANE.to_owned()]
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
/// `rate_limit_per_min`, its `max_per_30min` and `daily_limit`); with `wait`, waits up to that
/// many seconds for one.
#[utoipa::path(
    get,
    path = "/agent/jobs/next",
    tag = "jobs",
    params(JobsQuery),
    security(("agent_token" = [])),
    responses(
        (status = 200, description = "The leased jobs; when none, `retry_after_seconds` says when to poll again (0 after a long poll that waited its `wait`)", body = JobsResponse),
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
    let wait = wait_for(query.wait.as_deref())?;
    let deadline = Instant::now() + wait;
    let lanes = lanes_of(agent.id);
    let mut waiting = None;
    loop {
        // Interest first: a job staged while this look runs wakes the wait below.
        let mut interest = (!wait.is_zero()).then(|| state.wake.interest(&lanes));
        let jobs = match look(&state, &agent, limit).await? {
            Look::Leased(jobs) => jobs,
            Look::Paced(retry_after) => return Ok(empty(retry_after)),
        };
        if !jobs.is_empty() {
            return Ok(Json(JobsResponse {
                jobs,
                retry_after_seconds: None,
            }));
        }
        let Some(interest) = interest.as_mut() else {
            return Ok(empty(IDLE_RETRY_SECONDS));
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || state.wake.is_closed() {
            return Ok(empty(0));
        }
        waiting.get_or_insert_with(|| LongPoll::start(&state));
        tokio::select! {
            _ = interest.woken() => {}
            _ = tokio::time::sleep(left.min(state.config.long_poll_recheck)) => {}
        }
    }
}

/// An answer without jobs.
fn empty(retry_after_seconds: i64) -> Json<JobsResponse> {
    Json(JobsResponse {
        jobs: Vec::new(),
        retry_after_seconds: Some(retry_after_seconds),
    })
}

/// A long poll waiting, counted in `sms_agent_long_polls` until dropped.
struct LongPoll(AppState);

impl LongPoll {
    fn start(state: &AppState) -> Self {
        state.metrics.long_polls.inc();
        Self(state.clone())
    }
}

impl Drop for LongPoll {
    fn drop(&mut self) {
        self.0.metrics.long_polls.dec();
    }
}

/// What one look found.
enum Look {
    /// The jobs leased now (maybe none).
    Leased(Vec<Job>),
    /// The pacing allowance is used up: poll again after this many seconds.
    Paced(i64),
}

/// One look: record the poll, reserve the allowance, lease, settle the reservation for what was
/// leased.
async fn look(state: &AppState, agent: &Agent, limit: i64) -> ApiResult<Look> {
    let now = time::now();
    let rules = &state.config.rules;
    let caps = Caps::of(agent, i64::from(rules.agent_rate_limit_per_min));
    // Two collections, neither waiting for the other.
    let (polled, grant) = tokio::join!(
        state
            .db
            .agents
            .record_poll(agent, time::to_bson(now), rules.agent_stale),
        state.db.agent_rate.reserve(agent.id, limit, caps, now),
    );
    let grant = grant?;
    if let Err(e) = polled {
        let _ = state.db.agent_rate.settle(&grant, 0).await;
        return Err(e.into());
    }
    if grant.allowed == 0 {
        return Ok(Look::Paced(
            grant.retry_after_seconds.unwrap_or(IDLE_RETRY_SECONDS),
        ));
    }
    let lease_id = uuid::Uuid::new_v4().to_string();
    let lease_for = std::time::Duration::from_secs(rules.lease_seconds.unsigned_abs());
    let now = time::to_bson(now);
    let leased = lease(state, agent.id, grant.allowed, &lease_id, lease_for, now).await;
    let Leased {
        jobs: leased,
        re_leased,
        transitions,
    } = match leased {
        Ok(leased) => leased,
        Err(e) => {
            // Give the allowance back; failing that, it only lapses with the window. Jobs
            // claimed but not handed out are leased again when their lease runs out.
            let _ = state.db.agent_rate.settle(&grant, 0).await;
            return Err(e.into());
        }
    };
    let count = leased.len() as i64;
    // Two collections, neither waiting for the other.
    let (_, settled) = tokio::join!(
        count_transitions(&state.db.stats, &transitions),
        state.db.agent_rate.settle(&grant, count),
    );
    settled?;
    state.metrics.leases.inc_by(count as u64);
    state.metrics.lease_expiries.inc_by(re_leased);
    if count > 0 {
        tracing::info!(leased = count, re_leased, %lease_id, "jobs leased");
    }
    let expires = DateTime::from_millis(now.timestamp_millis() + lease_for.as_millis() as i64);
    Ok(Look::Leased(
        leased
            .into_iter()
            .map(|j| Job::from_leased(j, &lease_id, expires))
            .collect(),
    ))
}

/// What one poll leased.
struct Leased {
    /// The jobs to hand out, in lease order.
    jobs: Vec<LeasedJob>,
    /// How many of them were leased again after their lease ran out.
    re_leased: u64,
    /// The messages' status changes, still to be counted.
    transitions: Vec<Transition>,
}

/// Claims up to `limit` jobs for `agent` under `lease_id` and records the lease on their
/// messages. When recording fails, what was recorded is counted before the error returns.
async fn lease(
    state: &AppState,
    agent: ObjectId,
    limit: i64,
    lease_id: &str,
    lease_for: std::time::Duration,
    now: DateTime,
) -> mongodb::error::Result<Leased> {
    let db = &state.db;
    let mut claimed = db
        .jobs
        .lease(agent, limit, lease_id, lease_for, now)
        .await?;
    let (recorded, done) = db
        .messages
        .record_lease(agent, lease_id, &claimed, now)
        .await;
    if let Err(e) = done {
        count_transitions(&db.stats, &recorded.transitions).await;
        return Err(e);
    }
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
    Ok(Leased {
        re_leased: claimed.re_leased(),
        jobs: claimed.jobs,
        transitions: recorded.transitions,
    })
}
