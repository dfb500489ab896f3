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

use mongodb::bson::{oid::ObjectId, DateTime};
use sms_shared::amqp::MessageEvent;
use sms_shared::db::dedup::{self, Claim};
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
    pub async fn handle(&self, payload: &[u8]) -> Outcome {
        self.handle_batch(&[payload])
            .await
            .pop()
            .expect("one outcome per event")
    }

    /// Handles a batch of event payloads, returning one outcome per payload in order.
    ///
    /// The messages are read with one query, their anti-dup claims inserted with one unordered
    /// `insert_many` (only keys already held take extra single-document steps), and they are
    /// staged (or cancelled) with one update each way.
    #[tracing::instrument(skip_all, fields(events = payloads.len()))]
    pub async fn handle_batch(&self, payloads: &[&[u8]]) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; payloads.len()];
        let mut wanted: Vec<(usize, MessageEvent, ObjectId)> = Vec::with_capacity(payloads.len());
        for (i, payload) in payloads.iter().enumerate() {
            match serde_json::from_slice::<MessageEvent>(payload) {
                Err(e) => outcomes[i] = Some(Outcome::Poison(format!("unparseable event: {e}"))),
                Ok(event) => match event.message_oid() {
                    None => {
                        outcomes[i] = Some(Outcome::Poison(format!(
                            "malformed message id {:?}",
                            event.message_id
                        )))
                    }
                    Some(id) => wanted.push((i, event, id)),
                },
            }
        }
        let ids: Vec<ObjectId> = wanted.iter().map(|(_, _, id)| *id).collect();
        let found = match self.db.messages.find_many(&ids).await {
            Ok(found) => found,
            Err(e) => {
                for (i, _, _) in &wanted {
                    outcomes[*i] = Some(Outcome::Retry(e.to_string()));
                }
                return outcomes
                    .into_iter()
                    .map(|o| o.expect("every event settled"))
                    .collect();
            }
        };
        let now = DateTime::now();
        let mut to_claim = Vec::new();
        for (i, event, id) in wanted {
            match found.get(&id) {
                None => outcomes[i] = Some(Outcome::Poison(format!("unknown message {id}"))),
                Some(m) if m.staged || m.status != Status::Pending => {
                    outcomes[i] = Some(Outcome::AlreadyDone)
                }
                Some(m) => to_claim.push((i, event, id, dedup::key(&m.to, &m.text))),
            }
        }
        let keys: Vec<(&str, ObjectId)> = to_claim
            .iter()
            .map(|(_, _, id, key)| (key.as_str(), *id))
            .collect();
        let claims = self
            .db
            .dedup
            .claim_many(&keys, now, self.anti_dup_window)
            .await;
        let (mut won, mut lost) = (Vec::new(), Vec::new());
        for ((i, event, id, _), claim) in to_claim.into_iter().zip(claims) {
            match claim {
                Ok(Claim::Won) => won.push((i, event, id)),
                Ok(Claim::Duplicate) => lost.push((i, id)),
                Err(e) => outcomes[i] = Some(Outcome::Retry(e.to_string())),
            }
        }
        if !won.is_empty() {
            let ids: Vec<ObjectId> = won.iter().map(|(_, _, id)| *id).collect();
            match self.db.messages.stage_many(&ids, now).await {
                Ok(staged) => {
                    self.metrics.messages_staged.inc_by(staged);
                    for (i, event, _) in &won {
                        let latency_ms = now.timestamp_millis() - event.accepted_at_ms;
                        self.metrics
                            .stage_latency
                            .observe(latency_ms.max(0) as f64 / 1000.0);
                        outcomes[*i] = Some(Outcome::Staged);
                    }
                }
                Err(e) => {
                    for (i, _, _) in &won {
                        outcomes[*i] = Some(Outcome::Retry(e.to_string()));
                    }
                }
            }
        }
        if !lost.is_empty() {
            let ids: Vec<ObjectId> = lost.iter().map(|(_, id)| *id).collect();
            match self.db.messages.cancel_duplicates(&ids, now).await {
                Ok(canceled) => {
                    self.metrics.messages_canceled_duplicate.inc_by(canceled);
                    for (i, _) in &lost {
                        outcomes[*i] = Some(Outcome::CanceledDuplicate);
                    }
                }
                Err(e) => {
                    for (i, _) in &lost {
                        outcomes[*i] = Some(Outcome::Retry(e.to_string()));
                    }
                }
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.expect("every event settled"))
            .collect()
    }
}
