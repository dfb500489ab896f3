//! The reconciler: a phone that died after reporting `SENDING` never says what happened, and such
//! a message must not be sent twice. Every `RECONCILE_INTERVAL_MS` this loop fails the messages
//! whose jobs stayed in `SENDING` longer than `SENDING_TIMEOUT_SECONDS` with `SENDING_TIMEOUT`,
//! then removes those jobs, and refreshes the per-agent in-flight gauge. Both read `sms_jobs`
//! only. Every API replica may run it: each message is failed (and counted) by the one write
//! that changed it, and a crash between the message and its job leaves a job the next pass
//! finishes.
//!
//! A phone that stops polling also holds its `ASSIGNED` messages until their leases end. For
//! pool messages another phone could send them now: each pass gives the `ASSIGNED` (never
//! `SENDING`) pool jobs of agents silent for `AGENT_STALE_SECONDS` back to their pool, job first,
//! then message (`db::jobs` and `db::messages`, `pool.rs`). Pinned messages wait for their phone.

use std::collections::HashSet;

use anyhow::Context;
use futures::StreamExt;
use mongodb::bson::{oid::ObjectId, DateTime};
use sms_shared::db::jobs::Job;
use sms_shared::db::messages::{count_transitions, gathered};
use sms_shared::db::stats::Transition;
use sms_shared::time;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Timed-out (or released) jobs handled per round of a pass.
const TIMEOUT_BATCH: i64 = 500;
/// Messages failed at once.
const TIMEOUT_CONCURRENCY: usize = 16;

/// What one pass did.
#[derive(Debug, Clone, Default)]
pub struct Pass {
    /// Messages failed with `SENDING_TIMEOUT`.
    pub timed_out: u64,
    /// Pool messages taken back from silent agents.
    pub released: u64,
    /// Agents holding messages, with how many.
    pub in_flight: Vec<(String, i64)>,
}

/// Runs passes until `stop` is cancelled. A failed pass is logged and retried on the next tick.
pub async fn run(state: AppState, stop: CancellationToken) {
    let mut tick = tokio::time::interval(state.config.reconcile_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Agents given a gauge value so far: one that holds nothing any more is set back to 0.
    let mut known: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        match reconcile(&state).await {
            Ok(pass) => {
                let current: HashSet<String> =
                    pass.in_flight.iter().map(|(a, _)| a.clone()).collect();
                for gone in known.difference(&current) {
                    state
                        .metrics
                        .agent_in_flight
                        .with_label_values(&[gone.as_str()])
                        .set(0);
                }
                known.extend(current);
            }
            Err(e) => tracing::warn!(error = format!("{e:#}"), "reconcile pass failed"),
        }
    }
}

/// One pass: fail timed-out `SENDING` messages, give silent agents' pool messages back to their
/// pool, then set the in-flight gauge of every agent holding messages.
pub async fn reconcile(state: &AppState) -> anyhow::Result<Pass> {
    let now = time::bson_now();
    let timeout_ms =
        i64::try_from(state.config.rules.sending_timeout.as_millis()).unwrap_or(i64::MAX);
    let cutoff = DateTime::from_millis(now.timestamp_millis().saturating_sub(timeout_ms));
    let timed_out = fail_timeouts(state, cutoff, now)
        .await
        .context("failing timed-out SENDING messages")?;
    if timed_out > 0 {
        state.metrics.sending_timeouts.inc_by(timed_out);
        tracing::warn!(timed_out, "messages failed with SENDING_TIMEOUT");
    }
    let stale_ms = i64::try_from(state.config.rules.agent_stale.as_millis()).unwrap_or(i64::MAX);
    let silent_since = DateTime::from_millis(now.timestamp_millis().saturating_sub(stale_ms));
    let released = release_stale(state, silent_since, now)
        .await
        .context("releasing the pool messages of silent agents")?;
    if released > 0 {
        state.metrics.stale_releases.inc_by(released);
        tracing::warn!(
            released,
            "pool messages of silent agents given back to their pool"
        );
    }
    let in_flight: Vec<(String, i64)> = state
        .db
        .jobs
        .in_flight_by_agent(now)
        .await
        .context("counting messages in flight")?
        .into_iter()
        .map(|(agent, n)| (agent.to_hex(), n))
        .collect();
    for (agent, n) in &in_flight {
        state
            .metrics
            .agent_in_flight
            .with_label_values(&[agent.as_str()])
            .set(*n);
    }
    Ok(Pass {
        timed_out,
        released,
        in_flight,
    })
}

/// Fails the message of every job in `SENDING` since `cutoff` or earlier, counts the changes,
/// then removes those jobs. Returns how many messages this pass failed.
async fn fail_timeouts(
    state: &AppState,
    cutoff: DateTime,
    now: DateTime,
) -> mongodb::error::Result<u64> {
    let db = &state.db;
    let mut failed = 0;
    loop {
        let jobs = db.jobs.sending_since(cutoff, TIMEOUT_BATCH).await?;
        let ids: Vec<ObjectId> = jobs.iter().map(|j| j.id).collect();
        let results: Vec<_> = futures::stream::iter(ids.clone())
            .map(|id| db.messages.fail_sending_timeout(id, now))
            .buffer_unordered(TIMEOUT_CONCURRENCY)
            .collect()
            .await;
        let (moved, done) = gathered(results);
        failed += moved.len() as u64;
        count_transitions(&db.stats, &moved).await;
        done?;
        db.jobs.remove_timed_out(&ids, cutoff).await?;
        if (ids.len() as i64) < TIMEOUT_BATCH {
            return Ok(failed);
        }
    }
}

/// Gives the `ASSIGNED` pool jobs of agents silent since `silent_since` back to their pool, and
/// their messages after them; counts the changes. Returns how many messages this pass moved.
async fn release_stale(
    state: &AppState,
    silent_since: DateTime,
    now: DateTime,
) -> mongodb::error::Result<u64> {
    let db = &state.db;
    let silent = db.agents.silent_since(silent_since).await?;
    let mut released = 0;
    loop {
        let jobs = db
            .jobs
            .held_in_pools(&silent, silent_since, now, TIMEOUT_BATCH)
            .await?;
        let results: Vec<_> = futures::stream::iter(jobs.iter().cloned())
            .map(|job| release_one(state, job, now))
            .buffer_unordered(TIMEOUT_CONCURRENCY)
            .collect()
            .await;
        let mut freed = 0;
        let mut first_error = Ok(());
        let mut moved = Vec::new();
        for r in results {
            match r {
                Ok(Some(t)) => {
                    freed += 1;
                    moved.extend(t);
                }
                Ok(None) => {}
                Err(e) if first_error.is_ok() => first_error = Err(e),
                Err(_) => {}
            }
        }
        released += freed;
        count_transitions(&db.stats, &moved).await;
        first_error?;
        if (jobs.len() as i64) < TIMEOUT_BATCH || freed == 0 {
            return Ok(released);
        }
    }
}

/// Gives one job back to its pool, then its message; `None` when the job had moved on (its
/// holder reported meanwhile), else the message's change, if it made one.
async fn release_one(
    state: &AppState,
    job: Job,
    now: DateTime,
) -> mongodb::error::Result<Option<Option<Transition>>> {
    if !state.db.jobs.release(&job, now).await? {
        return Ok(None);
    }
    state.db.messages.release_to_pool(&job, now).await.map(Some)
}
