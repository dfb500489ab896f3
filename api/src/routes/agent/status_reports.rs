//! `POST /agent/messages/report`: an agent reports what became of its leased messages. Each
//! report gets its own result (see `db::messages` status reports: the job is the fence, then
//! the message, then the counters), so one bad item never fails the batch. The plain reports of
//! a batch (one per message, not retryable) that share a status, lease and error are applied
//! together with a few writes (`db::messages` report batches), the others one by one; the
//! counters move once for the whole batch.
//!
//! A `FAILED` report marked `retryable` (the phone could not send: no signal, Android's sending
//! limit) gives a pool message back to its pool for an agent that has not failed it yet, while it
//! has had fewer than `MAX_SEND_ATTEMPTS` leases; its result is `ok: true, status: "PENDING"`.
//! Otherwise, and always for pinned messages, `FAILED` is final. A report also counts as a sign
//! of life of the phone, like a poll.

use std::collections::{HashMap, HashSet};

use axum::extract::State;
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::oid::ObjectId;
use serde::{Deserialize, Serialize};
use sms_shared::db::messages::{count_transitions, Report, ReportGroup, ReportOutcome};
use sms_shared::db::stats::Transition;
use sms_shared::domain::status::Status;
use sms_shared::time;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::AgentAuth;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::openapi::{AuthError, BodyErrors, Errors};
use crate::state::AppState;

/// Items per report batch.
const MAX_REPORTS: usize = 500;
/// Messages of one report batch updated at once.
const REPORT_CONCURRENCY: usize = 16;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(report_messages))
}

/// What became of the agent's messages, applied in order.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ReportBatch {
    /// 1 to 500 reports.
    #[schema(min_items = 1, max_items = 500)]
    messages: Vec<ReportItem>,
}

/// One message's new status.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ReportItem {
    message_id: String,
    /// The status reached; another value gets `INVALID_STATUS` in its result.
    #[schema(value_type = Status)]
    status: String,
    /// Why it failed (kept with `FAILED`, up to 500 characters).
    error: Option<String>,
    /// The lease the report is about; when given, it must be the message's current lease.
    lease_id: Option<String>,
    /// With `FAILED`: the message was not sent and another phone may try (no signal, Android's
    /// `RESULT_ERROR_LIMIT_EXCEEDED`). A pool message then goes back to its pool (`PENDING`)
    /// until it has had `MAX_SEND_ATTEMPTS` leases; a pinned one fails as usual.
    #[serde(default)]
    retryable: bool,
}

/// The outcome of one report.
#[derive(Serialize, utoipa::ToSchema)]
struct ReportResult {
    message_id: String,
    /// Whether the report was applied: the message now has the reported status or, after a
    /// retryable `FAILED`, went back to its pool (`status: PENDING`).
    ok: bool,
    /// The message's status after the report (`PENDING` when a retryable failure sent it back
    /// to its pool); `null` when it is not the agent's to know.
    status: Option<Status>,
    /// Why not: `INVALID_STATUS`, `NOT_FOUND`, `INVALID_TRANSITION` or `STALE_LEASE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    error: Option<&'static str>,
}

/// One result per report, in order.
#[derive(Serialize, utoipa::ToSchema)]
struct ReportResponse {
    results: Vec<ReportResult>,
}

/// Reports what became of leased messages. Each report gets its own result; only the batch's
/// shape can fail the whole call.
#[utoipa::path(
    post,
    path = "/agent/messages/report",
    tag = "jobs",
    security(("agent_token" = [])),
    responses(
        (status = 200, description = "One result per report", body = ReportResponse),
        AuthError,
        Errors,
        BodyErrors,
    )
)]
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
    state
        .db
        .agents
        .record_poll(&agent, time::bson_now(), state.config.rules.agent_stale)
        .await?;
    let total = body.messages.len();
    let mut results: Vec<Option<ReportResult>> = (0..total).map(|_| None).collect();
    let mut moved = Vec::new();
    let (bulk, mut one_by_one) = split(body.messages);
    for (key, items) in bulk {
        let left = report_in_bulk(&state, agent.id, key, items, &mut results, &mut moved).await?;
        one_by_one.extend(left.into_iter().map(|item| vec![item]));
    }
    // Items of one message apply in order (a batch may carry SENDING then SENT for it); items
    // of different messages touch different documents, so they run concurrently.
    let settled: Vec<Answered> = futures::stream::iter(one_by_one)
        .map(|group| report_one_by_one(&state, agent.id, group))
        .buffer_unordered(REPORT_CONCURRENCY)
        .try_collect()
        .await?;
    for (answered, changes) in settled {
        moved.extend(changes);
        for (i, r) in answered {
            results[i] = Some(r);
        }
    }
    count_transitions(&state.db.stats, &moved).await;
    let results = results
        .into_iter()
        .map(|r| r.expect("every item answered"))
        .collect();
    Ok(Json(ReportResponse { results }))
}

/// Reports that may go in bulk share these: status, lease, and the error a `FAILED` keeps.
type BulkKey = (Status, Option<String>, Option<String>);
/// The reports that go in bulk, by what they share, with their place in the batch and id.
type Bulk = HashMap<BulkKey, Vec<(usize, ObjectId, ReportItem)>>;
/// Reports with their place in the batch.
type Numbered = Vec<(usize, ReportItem)>;
/// Results with their place in the batch, and the changes made.
type Answered = (Vec<(usize, ReportResult)>, Vec<Transition>);

/// Splits a batch: the plain reports of messages reported once in it, by what they share, and
/// the rest, grouped by message in the batch's order.
fn split(items: Vec<ReportItem>) -> (Bulk, Vec<Numbered>) {
    let mut times: HashMap<String, usize> = HashMap::new();
    for item in &items {
        *times.entry(item.message_id.clone()).or_default() += 1;
    }
    let mut bulk = Bulk::new();
    let mut groups: Vec<Numbered> = Vec::new();
    let mut group_of: HashMap<String, usize> = HashMap::new();
    for (i, item) in items.into_iter().enumerate() {
        let plain = (times[&item.message_id] == 1 && !item.retryable)
            .then(|| {
                let id = ObjectId::parse_str(&item.message_id).ok()?;
                let status = Status::parse(&item.status)?;
                let error = (status == Status::Failed)
                    .then(|| item.error.clone())
                    .flatten();
                Some((id, (status, item.lease_id.clone(), error)))
            })
            .flatten();
        if let Some((id, key)) = plain {
            bulk.entry(key).or_default().push((i, id, item));
            continue;
        }
        let g = *group_of.entry(item.message_id.clone()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push((i, item));
    }
    (bulk, groups)
}

/// Applies reports that share `key` with a few writes (`Messages::report_group`); answers the
/// ones applied and returns the others, to be applied one by one.
async fn report_in_bulk(
    state: &AppState,
    agent: ObjectId,
    (status, lease_id, error): BulkKey,
    items: Vec<(usize, ObjectId, ReportItem)>,
    results: &mut [Option<ReportResult>],
    moved: &mut Vec<Transition>,
) -> ApiResult<Numbered> {
    let group = ReportGroup {
        agent,
        status,
        lease_id: lease_id.as_deref(),
        error: error.as_deref(),
        ids: items.iter().map(|(_, id, _)| *id).collect(),
    };
    let db = &state.db;
    let done = db
        .messages
        .report_group(&db.jobs, &group, time::bson_now())
        .await?;
    moved.extend(done.moved);
    let applied: HashSet<ObjectId> = done.applied.into_iter().collect();
    let mut left = Vec::new();
    for (i, id, item) in items {
        if applied.contains(&id) {
            results[i] = Some(answer(state, item, Ok(ReportOutcome::Applied(status))));
        } else {
            left.push((i, item));
        }
    }
    Ok(left)
}

/// Applies one message's report items in order; returns their results and the changes made.
async fn report_one_by_one(
    state: &AppState,
    agent: ObjectId,
    group: Numbered,
) -> ApiResult<Answered> {
    let mut out = Vec::with_capacity(group.len());
    let mut moved = Vec::new();
    for (i, item) in group {
        let outcome = match (
            ObjectId::parse_str(&item.message_id),
            Status::parse(&item.status),
        ) {
            (_, None) => Err("INVALID_STATUS"),
            (Err(_), Some(_)) => Ok(ReportOutcome::NotFound),
            (Ok(id), Some(status)) => {
                let report = Report {
                    agent,
                    message_id: id,
                    status,
                    lease_id: item.lease_id.as_deref(),
                    error: item.error.as_deref(),
                };
                let (outcome, change) = apply(state, report, item.retryable).await?;
                moved.extend(change);
                Ok(outcome)
            }
        };
        out.push((i, answer(state, item, outcome)));
    }
    Ok((out, moved))
}

/// The result of one report, counted in the metrics.
fn answer(
    state: &AppState,
    item: ReportItem,
    outcome: Result<ReportOutcome, &'static str>,
) -> ReportResult {
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
        Ok(ReportOutcome::Requeued(now)) => {
            if now {
                state.metrics.pool_requeues.inc();
            }
            (true, Some(Status::Pending), None)
        }
    };
    if let Some(reason) = error {
        state
            .metrics
            .reports_rejected
            .with_label_values(&[reason])
            .inc();
    }
    ReportResult {
        message_id: item.message_id,
        ok,
        status,
        error,
    }
}

/// Applies one report (a retryable failure first tries to give a pool message back to its pool);
/// returns its outcome and the change it made.
async fn apply(
    state: &AppState,
    report: Report<'_>,
    retryable: bool,
) -> ApiResult<(ReportOutcome, Option<Transition>)> {
    let db = &state.db;
    let now = time::bson_now();
    let requeued = if retryable {
        let max_attempts = state.config.rules.max_send_attempts;
        db.messages
            .requeue_failed(&db.jobs, &db.agents, report, max_attempts, now)
            .await?
    } else {
        None
    };
    Ok(match requeued {
        Some(done) => done,
        None => db.messages.report(&db.jobs, report, now).await?,
    })
}
