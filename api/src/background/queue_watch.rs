//! Watches the message queues from the API, so that events piling up with no dispatcher to take
//! them are noticed: accepted messages then never reach a phone, and nothing else complains.
//!
//! Every few seconds passive declares ask the broker how many events wait in each lane's queue
//! (`{prefix}.messages`, `{prefix}.messages.fast`) and how many consumers (dispatchers) it has;
//! the answers refresh the `sms_queue_messages` and `sms_queue_consumers` gauges (label `queue`),
//! and events waiting in a queue with no consumer log a warning each time.

use std::time::Duration;

use sms_shared::amqp::{Lane, MessageQueues};
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// How often the queues are looked at.
const INTERVAL: Duration = Duration::from_secs(5);
/// The longest one look may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Looks at the queues every [`INTERVAL`] until `stop`.
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
pub async fn watch_once(state: &AppState) -> Option<MessageQueues> {
    let topology = state.publisher.topology();
    let metrics = &state.metrics;
    let lanes = [Lane::Bulk, Lane::Fast];
    match tokio::time::timeout(TIMEOUT, state.publisher.queue_stats()).await {
        Ok(Ok(stats)) => {
            for lane in lanes {
                let queue = topology.queue_of(lane);
                let of = stats.of(lane);
                metrics
                    .queue_messages
                    .with_label_values(&[queue])
                    .set(of.messages.into());
                metrics
                    .queue_consumers
                    .with_label_values(&[queue])
                    .set(of.consumers.into());
                if of.messages > 0 && of.consumers == 0 {
                    tracing::warn!(
                        queue,
                        waiting = of.messages,
                        "message events are waiting and no dispatcher consumes the queue"
                    );
                }
            }
            Some(stats)
        }
        failed => {
            for lane in lanes {
                let queue = topology.queue_of(lane);
                let _ = metrics.queue_messages.remove_label_values(&[queue]);
                let _ = metrics.queue_consumers.remove_label_values(&[queue]);
            }
            let error = match failed {
                Ok(Err(e)) => format!("{e:#}"),
                _ => "timed out".to_owned(),
            };
            tracing::debug!(error = %error, "could not inspect the message queues");
            None
        }
    }
}
