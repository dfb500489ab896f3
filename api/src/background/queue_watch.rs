//! Watches the message queue from the API, so that events piling up with no dispatcher to take
//! them are noticed: accepted messages then never reach a phone, and nothing else complains.
//!
//! Every few seconds a passive declare asks the broker how many events wait in the queue and how
//! many consumers (dispatchers) it has; the answer refreshes the `sms_queue_messages` and
//! `sms_queue_consumers` gauges, and events waiting with no consumer log a warning each time.

use std::time::Duration;

use sms_shared::amqp::QueueStats;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// How often the queue is looked at.
const INTERVAL: Duration = Duration::from_secs(5);
/// The longest one look may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Looks at the queue every [`INTERVAL`] until `stop`.
pub async fn run(state: AppState, stop: CancellationToken) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        watch_once(&state).await;
    }
}

/// One look: refreshes the gauges and warns when events wait with no dispatcher. Returns what
/// the broker reported, or `None` when it could not be asked (the gauges are then withdrawn
/// rather than left at stale values).
pub async fn watch_once(state: &AppState) -> Option<QueueStats> {
    let queue = state.publisher.topology().queue.as_str();
    let metrics = &state.metrics;
    match tokio::time::timeout(TIMEOUT, state.publisher.queue_stats()).await {
        Ok(Ok(stats)) => {
            metrics
                .queue_messages
                .with_label_values(&[queue])
                .set(stats.messages.into());
            metrics
                .queue_consumers
                .with_label_values(&[queue])
                .set(stats.consumers.into());
            if stats.messages > 0 && stats.consumers == 0 {
                tracing::warn!(
                    queue,
                    waiting = stats.messages,
                    "message events are waiting and no dispatcher consumes the queue"
                );
            }
            Some(stats)
        }
        failed => {
            let _ = metrics.queue_messages.remove_label_values(&[queue]);
            let _ = metrics.queue_consumers.remove_label_values(&[queue]);
            let error = match failed {
                Ok(Err(e)) => format!("{e:#}"),
                _ => "timed out".to_owned(),
            };
            tracing::debug!(queue, error = %error, "could not inspect the message queue");
            None
        }
    }
}
