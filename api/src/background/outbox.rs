//! Persist, then publish: message documents are their own outbox records. Events are published
//! after a request is stored (at once, or deferred during a burst as below); the sweeper
//! republishes whatever is still unconfirmed a few seconds later (broker down, publish failed,
//! API restarted mid-way). Every event goes to its message's lane (`FAST_LANE_PRIORITY`), the
//! sweeper's and the restage's too.
//!
//! Publishing and marking write nothing a client waits for, yet both compete with the requests
//! being accepted: a published event makes a dispatcher stage its message (writes to the same
//! collection), and a mark writes to it directly. So while this API is inserting requests of
//! several pieces ([`ClientWrites`]; a request of one piece holds the collection no longer than
//! a mark does), bulk events wait until none has been in flight for a moment ([`SETTLE`]: the
//! gaps between a burst's requests do not count), but no longer than half the sweeper's grace
//! period after the request was accepted; a lone request's events go out [`SETTLE`] after it,
//! a small request's at once. Marks wait for that deadline, and bulk marks also for the
//! dispatchers' backlog to be gone (`backlog`): by then a dispatcher that staged the message
//! has marked it published too, so a mark often finds nothing left to write, and a burst's
//! marks do not meet its staging. Fast lane events (one-time passwords) never wait: they are
//! published at once, ahead of the bulk events of the same batch.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::bson::{oid::ObjectId, DateTime};
use sms_shared::amqp::{Lane, MessageEvent};
use sms_shared::db::messages::OutboxRow;
use sms_shared::time;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::backlog;
use crate::state::AppState;

/// Events per publish batch (and per outbox scan): a whole number of payloads, so a request's
/// events fill every payload but its last.
const BATCH: usize = 32 * sms_shared::amqp::events::EVENTS_PER_PAYLOAD;

/// The event announcing one stored message.
pub fn event(row: OutboxRow) -> MessageEvent {
    MessageEvent {
        message_id: row.id.to_hex(),
        request_id: row.request_id.to_hex(),
        accepted_at_ms: row.accepted_at.timestamp_millis(),
        priority_weight: row.priority_weight,
    }
}

/// How long no client insert may have been in flight before the collection counts as quiet. A
/// burst from several clients leaves gaps of a few milliseconds between its inserts (responses,
/// the next request's parsing); those are not quiet moments.
const SETTLE: Duration = Duration::from_millis(100);

/// Counts the request inserts in flight in this process, so that background writes to the same
/// collection can wait for a quiet moment.
#[derive(Clone)]
pub struct ClientWrites(Arc<Inner>);

struct Inner {
    in_flight: AtomicUsize,
    /// Milliseconds after `epoch` at which the last insert ended, plus one; 0 before the first.
    last_end: AtomicU64,
    epoch: Instant,
    quiet: Notify,
}

impl Default for ClientWrites {
    fn default() -> Self {
        Self(Arc::new(Inner {
            in_flight: AtomicUsize::new(0),
            last_end: AtomicU64::new(0),
            epoch: Instant::now(),
            quiet: Notify::new(),
        }))
    }
}

impl Inner {
    /// How long it has been since the last insert ended (`None`: there never was one).
    fn idle_for(&self) -> Option<Duration> {
        match self.last_end.load(Ordering::SeqCst) {
            0 => None,
            end => Some(
                self.epoch
                    .elapsed()
                    .saturating_sub(Duration::from_millis(end - 1)),
            ),
        }
    }
}

/// One client insert in flight; dropping it ends it.
pub struct ClientWrite(Arc<Inner>);

impl ClientWrites {
    /// Starts a client insert.
    pub fn begin(&self) -> ClientWrite {
        self.0.in_flight.fetch_add(1, Ordering::SeqCst);
        ClientWrite(self.0.clone())
    }

    /// Returns once no client insert has been in flight for [`SETTLE`], or at `deadline`.
    pub async fn settled(&self, deadline: Instant) {
        self.wait(deadline, SETTLE).await
    }

    /// Returns once no client insert has been in flight for `settle`, or at `deadline`.
    async fn wait(&self, deadline: Instant, settle: Duration) {
        let _ = tokio::time::timeout_at(deadline.into(), async {
            loop {
                let notified = self.0.quiet.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.0.in_flight.load(Ordering::SeqCst) > 0 {
                    notified.await;
                    continue;
                }
                match self.0.idle_for() {
                    Some(idle) if idle < settle => tokio::time::sleep(settle - idle).await,
                    _ => return,
                }
            }
        })
        .await;
    }
}

impl Drop for ClientWrite {
    fn drop(&mut self) {
        let end = self.0.epoch.elapsed().as_millis() as u64 + 1;
        self.0.last_end.store(end, Ordering::SeqCst);
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.quiet.notify_waiters();
        }
    }
}

/// Publishes `events` and marks the confirmed ones published. Fast lane events are published at
/// once; bulk events are deferred while this API is inserting requests, at most until half the
/// grace period after `since`, and the marks until then. Returns how many were confirmed and
/// marked.
/// Failures are logged and left to the sweeper.
pub async fn publish(state: &AppState, events: &[MessageEvent], since: Instant) -> usize {
    publish_and_mark(state, events, since, Marks::AtDeadline).await
}

/// When a publish writes its marks.
enum Marks {
    /// At the deadline (events of requests just accepted, which dispatchers are staging).
    AtDeadline,
    /// Once no client insert has been in flight for a moment (the sweeper's republished events:
    /// their messages are past the grace period already).
    WhenSettled,
}

async fn publish_and_mark(
    state: &AppState,
    events: &[MessageEvent],
    since: Instant,
    marks: Marks,
) -> usize {
    let deadline = since + state.config.outbox_grace / 2;
    let (fast, bulk): (Vec<MessageEvent>, Vec<MessageEvent>) = events
        .iter()
        .cloned()
        .partition(|e| state.publisher.lane(e) == Lane::Fast);
    let mut confirmed = publish_now(state, &fast).await;
    let bulk_confirmed = if bulk.is_empty() {
        Vec::new()
    } else {
        state.client_writes.settled(deadline).await;
        publish_now(state, &bulk).await
    };
    match marks {
        Marks::AtDeadline => {
            tokio::time::sleep_until(deadline.into()).await;
            let mut marked = mark(state, &confirmed).await;
            if !bulk_confirmed.is_empty() {
                // During a backlog the dispatchers mark these as they stage them (`backlog`).
                let until = since + backlog::BACKLOG_GRACE / 2;
                state.backlog.wait_out(state, until.into()).await;
                marked += mark(state, &bulk_confirmed).await;
            }
            marked
        }
        Marks::WhenSettled => {
            state.client_writes.settled(deadline).await;
            confirmed.extend(bulk_confirmed);
            mark(state, &confirmed).await
        }
    }
}

/// Marks `confirmed` published (those still unmarked); returns how many were handled before the
/// first failure.
async fn mark(state: &AppState, confirmed: &[ObjectId]) -> usize {
    let mut marked = 0;
    for ids in confirmed.chunks(BATCH) {
        if let Err(e) = state.db.messages.mark_published(ids).await {
            // Left unpublished: the sweeper republishes them and the dispatcher ignores the repeat.
            tracing::warn!(error = %e, "could not mark messages published");
            break;
        }
        marked += ids.len();
    }
    marked
}

/// Publishes `events` in batches, stopping at the first batch that fails; returns the ids of
/// the messages whose events the broker confirmed.
async fn publish_now(state: &AppState, events: &[MessageEvent]) -> Vec<ObjectId> {
    let mut confirmed: Vec<ObjectId> = Vec::with_capacity(events.len());
    for chunk in events.chunks(BATCH) {
        match state.publisher.publish(chunk).await {
            Ok(results) => confirmed.extend(
                chunk
                    .iter()
                    .zip(results)
                    .filter(|(_, ok)| *ok)
                    .filter_map(|(e, _)| e.message_oid()),
            ),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), count = chunk.len(), "events not published; the sweeper will retry");
                break;
            }
        }
    }
    confirmed
}

/// One sweep: republishes messages still unpublished after the grace period. Returns how many
/// were confirmed this time.
pub async fn sweep_once(state: &AppState) -> anyhow::Result<usize> {
    let mut grace = state.config.outbox_grace;
    if state.backlog.busy(state).await {
        // An unmarked message's event is most likely still queued (`backlog`).
        grace = grace.max(backlog::BACKLOG_GRACE);
    }
    let grace = grace.as_millis() as i64;
    let mut total = 0;
    loop {
        let before = DateTime::from_millis(time::bson_now().timestamp_millis() - grace);
        let stale = state.db.messages.unpublished(before, BATCH as i64).await?;
        if stale.is_empty() {
            return Ok(total);
        }
        let events: Vec<MessageEvent> = stale.iter().copied().map(event).collect();
        let confirmed = publish_and_mark(state, &events, Instant::now(), Marks::WhenSettled).await;
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
        time::bson_now().timestamp_millis() - RESTAGE_AFTER.as_millis() as i64,
    );
    let stuck = state
        .db
        .messages
        .published_unstaged(before, BATCH as i64)
        .await?;
    if stuck.is_empty() {
        return Ok(0);
    }
    // While either queue still holds events, dispatchers are behind rather than events lost.
    let queues = state.backlog.queues(state).await;
    match queues {
        None => anyhow::bail!("could not inspect the message queues"),
        Some(q) if q.ready() > 0 => return Ok(0),
        Some(_) => {}
    }
    let events: Vec<MessageEvent> = stuck.iter().copied().map(event).collect();
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

    #[tokio::test]
    async fn waits_for_client_writes_but_not_past_the_deadline() {
        let writes = ClientWrites::default();
        let far = Instant::now() + Duration::from_secs(30);
        let started = Instant::now();
        writes.wait(far, Duration::ZERO).await;
        writes.settled(far).await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "no writes yet: no wait"
        );

        let write = writes.begin();
        let idle = tokio::spawn({
            let writes = writes.clone();
            async move { writes.wait(far, Duration::ZERO).await }
        });
        let settled = tokio::spawn({
            let writes = writes.clone();
            async move { writes.settled(far).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!idle.is_finished(), "a write is in flight");
        assert!(!settled.is_finished(), "a write is in flight");
        let ended = Instant::now();
        drop(write);
        tokio::time::timeout(Duration::from_secs(5), idle)
            .await
            .expect("idle as soon as the write ends")
            .unwrap();
        assert!(
            ended.elapsed() < SETTLE,
            "idle does not wait for a quiet moment"
        );
        tokio::time::timeout(Duration::from_secs(5), settled)
            .await
            .expect("settled after the write ends")
            .unwrap();
        assert!(
            ended.elapsed() >= SETTLE,
            "a quiet moment lasts {SETTLE:?}, not just the gap between two writes"
        );

        let _stuck = writes.begin();
        let started = Instant::now();
        writes
            .wait(started + Duration::from_millis(100), Duration::ZERO)
            .await;
        writes.settled(started + Duration::from_millis(100)).await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(100) && waited < Duration::from_secs(1),
            "both wait until the deadline and no longer: {waited:?}"
        );
    }
}
