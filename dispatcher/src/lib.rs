//! SafeCare SMS dispatcher: consumes message events from RabbitMQ and stages each message as a
//! leasable job in MongoDB, cancelling recent duplicates. Any number of replicas may run.
//!
//! [`Dispatcher::handle`] is one step (event in, outcome out) and is what tests call directly;
//! [`run`] is the consuming loop around it with acks, reconnects and graceful shutdown.

pub mod config;
pub mod consumer;
mod fault;
pub mod server;

use std::time::Duration;

use mongodb::bson::DateTime;
use sms_shared::amqp::MessageEvent;
use sms_shared::db::dedup::{self, Claim};
use sms_shared::db::messages::Staged;
use sms_shared::db::Db;
use sms_shared::domain::status::Status;
use sms_shared::metrics::Metrics;

pub use consumer::run;

/// What handling one event did, and so how its delivery is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The message is now visible to its agent. Ack.
    Staged,
    /// The message was canceled as `DUPLICATE_RECENT`. Ack.
    CanceledDuplicate,
    /// An earlier delivery already settled this message. Ack.
    AlreadyDone,
    /// The event can never be handled (unparseable, unknown message). Reject to the dead-letter queue.
    Poison(String),
    /// A transient failure (database unreachable). Requeue after a pause.
    Retry(String),
}

/// Stages messages. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    db: Db,
    metrics: Metrics,
    anti_dup_window: Duration,
}

impl Dispatcher {
    pub fn new(db: Db, metrics: Metrics, anti_dup_window: Duration) -> Self {
        Self {
            db,
            metrics,
            anti_dup_window,
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Handles one event payload. Idempotent: a redelivered event changes nothing.
    #[tracing::instrument(skip_all, fields(message_id))]
    pub async fn handle(&self, payload: &[u8]) -> Outcome {
        let event: MessageEvent = match serde_json::from_slice(payload) {
            Ok(e) => e,
            Err(e) => return Outcome::Poison(format!("unparseable event: {e}")),
        };
        tracing::Span::current().record("message_id", event.message_id.as_str());
        let Some(id) = event.message_oid() else {
            return Outcome::Poison(format!("malformed message id {:?}", event.message_id));
        };
        let message = match self.db.messages.find(id).await {
            Ok(Some(m)) => m,
            Ok(None) => return Outcome::Poison(format!("unknown message {id}")),
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        if message.staged || message.status != Status::Pending {
            return Outcome::AlreadyDone;
        }
        let now = DateTime::now();
        let key = dedup::key(&message.to, &message.text);
        let claim = match self.db.dedup.claim(&key, id, now, self.anti_dup_window).await {
            Ok(c) => c,
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        let staged = match claim {
            Claim::Won => self.db.messages.stage(id, now).await,
            Claim::Duplicate => self.db.messages.cancel_duplicate(id, now).await,
        };
        match staged {
            Ok(Staged::Staged) => {
                self.metrics.messages_staged.inc();
                let latency_ms = now.timestamp_millis() - event.accepted_at_ms;
                self.metrics.stage_latency.observe(latency_ms.max(0) as f64 / 1000.0);
                Outcome::Staged
            }
            Ok(Staged::CanceledDuplicate) => {
                self.metrics.messages_canceled_duplicate.inc();
                Outcome::CanceledDuplicate
            }
            Ok(Staged::AlreadyDone) => Outcome::AlreadyDone,
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }
}
