//! Waking long-polling phones: once a staging step inserted jobs, the dispatcher announces their
//! lanes on the `{prefix}.wake` fanout, and every API process wakes the agents waiting on them.
//!
//! Best effort by design: the wake is published without confirms on a channel of the current
//! connection, from a task of its own, so staging never waits for it and a broker hiccup only
//! loses the wake. A phone that misses one finds its job on its next check (the API re-checks
//! every few seconds) or its next poll.

use std::sync::{Arc, Mutex};

use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel};
use sms_shared::amqp::WakeEvent;
use sms_shared::metrics::Metrics;

/// Where wakes go while the consumer is connected. Cheap to clone; clones share the channel.
#[derive(Clone)]
pub struct Wake {
    target: Arc<Mutex<Option<Target>>>,
    metrics: Metrics,
}

struct Target {
    channel: Channel,
    exchange: String,
}

impl Wake {
    /// Sends nowhere until [`attach`](Self::attach); counts what it sends in `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            target: Default::default(),
            metrics,
        }
    }

    /// Sends wakes on `channel` to `exchange` from now on (the consumer, once connected).
    pub fn attach(&self, channel: Channel, exchange: &str) {
        *self.target.lock().expect("wake lock") = Some(Target {
            channel,
            exchange: exchange.to_owned(),
        });
    }

    /// Stops sending wakes (the connection is gone); until the next attach they are dropped.
    pub fn detach(&self) {
        *self.target.lock().expect("wake lock") = None;
    }

    /// Announces `lanes` in the background; does nothing without a connection or lanes.
    pub fn send(&self, mut lanes: Vec<String>) {
        lanes.sort_unstable();
        lanes.dedup();
        if lanes.is_empty() {
            return;
        }
        let Some((channel, exchange)) = self
            .target
            .lock()
            .expect("wake lock")
            .as_ref()
            .map(|t| (t.channel.clone(), t.exchange.clone()))
        else {
            return;
        };
        let payload = serde_json::to_vec(&WakeEvent { lanes }).expect("wake events serialise");
        let sent_count = self.metrics.wakes_sent.clone();
        tokio::spawn(async move {
            let sent = channel
                .basic_publish(
                    &exchange,
                    "",
                    BasicPublishOptions::default(),
                    &payload,
                    BasicProperties::default().with_content_type("application/json".into()),
                )
                .await;
            match sent {
                Ok(_) => sent_count.inc(),
                Err(e) => {
                    tracing::debug!(error = %e, "wake not sent; phones find their jobs on their next check")
                }
            }
        });
    }
}
