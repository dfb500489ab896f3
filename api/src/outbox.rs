//! Persist, then publish: message documents are their own outbox records. Events are published
//! right after a request is stored; the sweeper republishes whatever is still unconfirmed a few
//! seconds later (broker down, publish failed, API restarted mid-way).
//!
//! Marking confirmed messages published is bookkeeping that no client waits for, and it writes
//! to the same collection as the requests being accepted. It therefore waits while this API
//! is inserting requests ([`ClientWrites`]), for at most half the sweeper's grace period, so
//! that a burst of large requests is not slowed by the marks of the requests before it.
//! A dispatcher that stages a message marks it published too, so a deferred mark often finds
//! nothing left to write.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{oid::ObjectId, DateTime};
use sms_shared::amqp::MessageEvent;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Events per publish batch (and per outbox scan).
const BATCH: usize = 1000;

/// The event announcing one stored message.
pub fn event(message_id: ObjectId, request_id: ObjectId, accepted_at: DateTime) -> MessageEvent {
    MessageEvent {
        message_id: message_id.to_hex(),
        request_id: request_id.to_hex(),
        accepted_at_ms: accepted_at.timestamp_millis(),
    }
}

/// Counts the request inserts in flight in this process, so that background writes to the same
/// collection can wait for a quiet moment.
#[derive(Clone, Default)]
pub struct ClientWrites(Arc<Inner>);

#[derive(Default)]
struct Inner {
    in_flight: AtomicUsize,
    quiet: Notify,
}

/// One client insert in flight; dropping it ends it.
pub struct ClientWrite(Arc<Inner>);

impl ClientWrites {
    /// Starts a client insert.
    pub fn begin(&self) -> ClientWrite {
        self.0.in_flight.fetch_add(1, Ordering::SeqCst);
        ClientWrite(self.0.clone())
    }

    /// Returns once no client insert is in flight, or after `at_most`.
    pub async fn quiet(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, async {
            loop {
                let notified = self.0.quiet.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.0.in_flight.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }
}

impl Drop for ClientWrite {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.quiet.notify_waiters();
        }
    }
}

/// Publishes `events` and marks the confirmed ones published. Returns how many were confirmed.
/// Failures are logged and left to the sweeper.
pub async fn publish(state: &AppState, events: &[MessageEvent]) -> usize {
    let mut confirmed_total = 0;
    for chunk in events.chunks(BATCH) {
        let results = match state.publisher.publish(chunk).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), count = chunk.len(), "events not published; the sweeper will retry");
                return confirmed_total;
            }
        };
        let confirmed: Vec<ObjectId> = chunk
            .iter()
            .zip(results)
            .filter(|(_, ok)| *ok)
            .filter_map(|(e, _)| e.message_oid())
            .collect();
        state
            .client_writes
            .quiet(state.config.outbox_grace / 2)
            .await;
        if let Err(e) = state.db.messages.mark_published(&confirmed).await {
            // Left unpublished: the sweeper republishes them and the dispatcher ignores the repeat.
            tracing::warn!(error = %e, "could not mark messages published");
            return confirmed_total;
        }
        confirmed_total += confirmed.len();
    }
    confirmed_total
}

/// One sweep: republishes messages still unpublished after the grace period. Returns how many
/// were confirmed this time.
pub async fn sweep_once(state: &AppState) -> anyhow::Result<usize> {
    let grace = state.config.outbox_grace.as_millis() as i64;
    let mut total = 0;
    loop {
        let before = DateTime::from_millis(DateTime::now().timestamp_millis() - grace);
        let stale = state.db.messages.unpublished(before, BATCH as i64).await?;
        if stale.is_empty() {
            return Ok(total);
        }
        let events: Vec<MessageEvent> = stale.iter().map(|(m, r, at)| event(*m, *r, *at)).collect();
        let confirmed = publish(state, &events).await;
        state.metrics.outbox_republished.inc_by(confirmed as u64);
        total += confirmed;
        if confirmed < events.len() || stale.len() < BATCH {
            return Ok(total);
        }
    }
}

/// How long a confirmed event may go unstaged before its message is published again.
const RESTAGE_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

/// Republishes messages whose confirmed events never got them staged (events lost with a broker's
/// data, or dead-lettered after a long database outage). The dispatcher ignores any repeat.
pub async fn restage_once(state: &AppState) -> anyhow::Result<usize> {
    let before = DateTime::from_millis(
        DateTime::now().timestamp_millis() - RESTAGE_AFTER.as_millis() as i64,
    );
    let stuck = state
        .db
        .messages
        .published_unstaged(before, BATCH as i64)
        .await?;
    if stuck.is_empty() {
        return Ok(0);
    }
    // While the queue still holds events, dispatchers are behind rather than events lost.
    if state.publisher.queue_depth().await? > 0 {
        return Ok(0);
    }
    let events: Vec<MessageEvent> = stuck.iter().map(|(m, r, at)| event(*m, *r, *at)).collect();
    let results = state.publisher.publish(&events).await?;
    let confirmed: Vec<ObjectId> = events
        .iter()
        .zip(results)
        .filter(|(_, ok)| *ok)
        .filter_map(|(e, _)| e.message_oid())
        .collect();
    // A fresh publication time restarts the wait before the next attempt.
    state.db.messages.touch_published(&confirmed).await?;
    state
        .metrics
        .outbox_republished
        .inc_by(confirmed.len() as u64);
    Ok(confirmed.len())
}

/// Sweeps every half grace period until `stop`.
pub async fn run_sweeper(state: AppState, stop: CancellationToken) {
    let period = (state.config.outbox_grace / 2).max(std::time::Duration::from_millis(100));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match sweep_once(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(republished = n, "outbox sweeper republished message events"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "outbox sweep failed"),
        }
        match restage_once(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                republished = n,
                "republished confirmed events that were never staged"
            ),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "restage sweep failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn quiet_waits_for_client_writes_but_not_longer_than_allowed() {
        let writes = ClientWrites::default();
        let started = Instant::now();
        writes.quiet(Duration::from_secs(5)).await;
        assert!(started.elapsed() < Duration::from_secs(1), "idle: no wait");

        let write = writes.begin();
        let waiter = tokio::spawn({
            let writes = writes.clone();
            async move { writes.quiet(Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "a write is in flight");
        drop(write);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the wait ends when the write ends")
            .unwrap();

        let _stuck = writes.begin();
        let started = Instant::now();
        writes.quiet(Duration::from_millis(100)).await;
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "bounded wait"
        );
    }
}
