//! SafeCare SMS dispatcher: consumes message events from RabbitMQ and stages each message as a
//! leasable job in MongoDB, cancelling recent duplicates. Any number of replicas may run.
//!
//! [`Dispatcher::handle_batch`] (in `staging.rs`) is one step (events in, outcomes out) and is
//! what tests call directly; [`run`] is the consuming loop around it (both lanes' queues) with
//! acks, reconnects and graceful shutdown, and [`Wake`] tells the API processes which agents'
//! jobs a step staged.

pub mod config;
pub mod consumer;
mod fault;
pub mod server;
mod staging;
mod wake;

use std::time::Duration;

use sms_shared::db::Db;
use sms_shared::metrics::Metrics;

pub use consumer::run;
pub use wake::Wake;

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
    wake: Wake,
}

impl Dispatcher {
    pub fn new(db: Db, metrics: Metrics, anti_dup_window: Duration) -> Self {
        Self {
            db,
            wake: Wake::new(metrics.clone()),
            metrics,
            anti_dup_window,
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Where staging announces the lanes of the jobs it inserted (nowhere until the consumer
    /// attaches a channel).
    pub fn wake(&self) -> &Wake {
        &self.wake
    }

    /// Handles one event payload. Idempotent: a redelivered event changes nothing.
    pub async fn handle(&self, payload: &[u8]) -> Outcome {
        self.handle_batch(&[payload])
            .await
            .pop()
            .expect("one outcome per event")
    }
}
