//! The wake consumer: this API process's own queue on the `{prefix}.wake` fanout
//! ([`WakeSubscription`]), whose events wake the long polls waiting in this process (see
//! [`crate::wake`]).
//!
//! When the subscription is lost (a broker restart, the queue deleted), it is opened again with
//! backoff (200 ms doubling up to 10 s), which declares the exchange and a fresh queue. Wakes
//! sent meanwhile are lost, so every waiting poll looks once more as soon as the new queue is
//! bound; each also looks every few seconds whatever happens.

use std::time::Duration;

use sms_shared::amqp::WakeSubscription;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// The first pause before opening the subscription again, and the longest.
const FIRST_PAUSE: Duration = Duration::from_millis(200);
const LONGEST_PAUSE: Duration = Duration::from_secs(10);

/// Consumes wakes until `stop`, subscribing again with backoff whenever the broker goes away.
pub async fn run(state: AppState, stop: CancellationToken) {
    let mut pause = FIRST_PAUSE;
    loop {
        let opened = tokio::select! {
            _ = stop.cancelled() => return,
            opened = WakeSubscription::open(&state.config.amqp, "sms-api wake") => opened,
        };
        let lost = match opened {
            Ok(subscription) => {
                pause = FIRST_PAUSE;
                match listen(&state, subscription, &stop).await {
                    None => return,
                    Some(lost) => lost,
                }
            }
            Err(e) => e,
        };
        tracing::warn!(error = %format!("{lost:#}"), retry_in_ms = pause.as_millis() as u64, "wake consumer lost; reconnecting");
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// Hands every wake to the hub until `stop` (`None`) or until the subscription is lost.
async fn listen(
    state: &AppState,
    mut subscription: WakeSubscription,
    stop: &CancellationToken,
) -> Option<anyhow::Error> {
    tracing::info!(queue = %subscription.queue(), "consuming wakes");
    state.metrics.wake_subscribed.set(1);
    // Wakes sent while no queue of this process was bound are lost: every waiting poll looks again.
    state.wake.wake_everyone();
    let lost = loop {
        tokio::select! {
            _ = stop.cancelled() => break None,
            next = subscription.next() => match next {
                Ok(Some(wake)) => {
                    state.metrics.wakes_received.inc();
                    state.wake.wake(&wake.lanes);
                }
                Ok(None) => tracing::debug!("ignoring a delivery that is not a wake"),
                Err(e) => break Some(e),
            }
        }
    };
    state.metrics.wake_subscribed.set(0);
    subscription.close().await;
    lost
}
