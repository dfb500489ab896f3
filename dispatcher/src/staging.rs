//! Staging, the dispatcher's step: a batch of payloads in (each carrying the events of one or
//! more messages of a request), one [`Outcome`] per payload out: the worst of its events'.
//!
//! 1. Read the batch's messages (one query). Unknown ids are poison; a message staged or
//!    settled already needs nothing (a redelivered or republished event).
//! 2. Claim the anti-dup key (`to + text`) of each pending, unstaged message (`db::dedup`).
//! 3. Winners: insert their jobs into `sms_jobs` (one unordered `insert_many`; a job that exists
//!    already was inserted by an earlier delivery), wake the agents of the jobs inserted now
//!    (they are leasable from that moment), then mark their messages staged and published and
//!    count the insertion on them (`stagings`) in one write; messages whose job an earlier
//!    delivery inserted are only marked. The job comes first, so a crash in between leaves a
//!    job whose message the redelivered event marks.
//! 4. Losers: cancelled as `DUPLICATE_RECENT` (unless an earlier delivery had already given
//!    them a job: then they were winners), and counted `PENDING → CANCELED`.
//!
//! Every write is conditional or keyed by the message id, so handling the same events twice, or
//! on two dispatchers at once, stages each message once. The consumer acks only after this
//! returns, and requeues the batch on [`Outcome::Retry`].

use std::collections::{HashMap, HashSet};

use mongodb::bson::{oid::ObjectId, DateTime};
use sms_shared::amqp::{events, MessageEvent};
use sms_shared::db::dedup::{self, Claim};
use sms_shared::db::jobs::Job;
use sms_shared::db::messages::{count_transitions, Message};
use sms_shared::domain::status::Status;
use sms_shared::time;

use crate::{Dispatcher, Outcome};

/// A payload as decoded: the events it carries, or why it is poison.
pub(crate) type Decoded = Result<Vec<MessageEvent>, String>;

/// One event of the batch that names a known message: its position and the event.
type Item = (usize, MessageEvent, ObjectId);

impl Dispatcher {
    /// Handles a batch of payloads (each carrying one or more events), returning one outcome per
    /// payload in order: the worst of its events' (see [`worst`]).
    pub async fn handle_batch(&self, payloads: &[&[u8]]) -> Vec<Outcome> {
        self.handle_decoded(payloads.iter().map(|p| events::decode(p)).collect())
            .await
    }

    /// [`Dispatcher::handle_batch`] of payloads already decoded.
    #[tracing::instrument(skip_all, fields(payloads = payloads.len()))]
    pub(crate) async fn handle_decoded(&self, payloads: Vec<Decoded>) -> Vec<Outcome> {
        let mut unreadable: Vec<Option<Outcome>> = vec![None; payloads.len()];
        let (mut events, mut carrier) = (Vec::new(), Vec::new());
        for (p, payload) in payloads.into_iter().enumerate() {
            match payload {
                Err(why) => unreadable[p] = Some(Outcome::Poison(why)),
                Ok(carried) => {
                    carrier.extend(std::iter::repeat_n(p, carried.len()));
                    events.extend(carried);
                }
            }
        }
        let mut of_payload: Vec<Vec<Outcome>> = vec![Vec::new(); unreadable.len()];
        for (outcome, p) in self.handle_events(events).await.into_iter().zip(carrier) {
            of_payload[p].push(outcome);
        }
        unreadable
            .into_iter()
            .zip(of_payload)
            .map(|(poison, outcomes)| poison.unwrap_or_else(|| worst(outcomes)))
            .collect()
    }

    /// Handles events, returning one outcome per event in order.
    #[tracing::instrument(skip_all, fields(events = events.len()))]
    async fn handle_events(&self, events: Vec<MessageEvent>) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; events.len()];
        let mut wanted: Vec<Item> = Vec::with_capacity(events.len());
        for (i, event) in events.into_iter().enumerate() {
            match event.message_oid() {
                None => {
                    outcomes[i] = Some(Outcome::Poison(format!(
                        "malformed message id {:?}",
                        event.message_id
                    )))
                }
                Some(id) => wanted.push((i, event, id)),
            }
        }
        let ids: Vec<ObjectId> = wanted.iter().map(|(_, _, id)| *id).collect();
        let found = match self.db.messages.find_many(&ids).await {
            Ok(found) => found,
            Err(e) => {
                for (i, _, _) in &wanted {
                    outcomes[*i] = Some(Outcome::Retry(e.to_string()));
                }
                return settled(outcomes);
            }
        };
        let now = time::bson_now();
        let (mut to_claim, mut unmarked) = (Vec::new(), Vec::new());
        for (i, event, id) in wanted {
            match found.get(&id) {
                None => outcomes[i] = Some(Outcome::Poison(format!("unknown message {id}"))),
                Some(m) if m.status == Status::Pending && !m.staged => {
                    let key = dedup::key(&m.to, &m.text);
                    to_claim.push(((i, event, id), key));
                }
                // Its job exists and a phone moved it on before it was marked staged.
                Some(m) if !m.staged && m.status != Status::Canceled => unmarked.push((i, id)),
                Some(_) => outcomes[i] = Some(Outcome::AlreadyDone),
            }
        }
        let keys: Vec<(&str, ObjectId)> = to_claim
            .iter()
            .map(|((_, _, id), key)| (key.as_str(), *id))
            .collect();
        let claims = self
            .db
            .dedup
            .claim_many(&keys, now, self.anti_dup_window)
            .await;
        let (mut won, mut lost) = (Vec::new(), Vec::new());
        for ((item, _), claim) in to_claim.into_iter().zip(claims) {
            match claim {
                Ok(Claim::Won) => won.push(item),
                Ok(Claim::Duplicate) => lost.push(item),
                Err(e) => outcomes[item.0] = Some(Outcome::Retry(e.to_string())),
            }
        }
        let lost_ids: Vec<ObjectId> = lost.iter().map(|(_, _, id)| *id).collect();
        match self.db.jobs.existing(&lost_ids).await {
            Ok(staged_before) => {
                let (had_job, rest) = lost
                    .into_iter()
                    .partition(|(_, _, id)| staged_before.contains(id));
                won.extend(had_job);
                lost = rest;
            }
            Err(e) => {
                for (i, _, _) in lost.drain(..) {
                    outcomes[i] = Some(Outcome::Retry(e.to_string()));
                }
            }
        }
        self.stage(&won, &unmarked, &found, now, &mut outcomes)
            .await;
        self.cancel(&lost, now, &mut outcomes).await;
        settled(outcomes)
    }

    /// Step 3: the winners' jobs, then their messages (and those left unmarked by a crash).
    async fn stage(
        &self,
        won: &[Item],
        unmarked: &[(usize, ObjectId)],
        found: &HashMap<ObjectId, Message>,
        now: DateTime,
        outcomes: &mut [Option<Outcome>],
    ) {
        let jobs: Vec<Job> = won
            .iter()
            .filter_map(|(_, _, id)| found.get(id).and_then(|m| Job::of(m, now)))
            .collect();
        let (inserted, failed) = self.db.jobs.stage(&jobs).await;
        let new: HashSet<&ObjectId> = inserted.iter().collect();
        self.wake.send(
            jobs.iter()
                .filter(|j| new.contains(&j.id))
                .flat_map(|j| j.lanes.iter().cloned())
                .collect(),
        );
        let counted = self.db.messages.stage_inserted(&inserted, now).await;
        let rest: Vec<ObjectId> = won
            .iter()
            .map(|(_, _, id)| *id)
            .filter(|id| !new.contains(id))
            .chain(unmarked.iter().map(|(_, id)| *id))
            .collect();
        let marked = match (failed, counted) {
            (Some(e), _) | (None, Err(e)) => Err(e),
            (None, Ok(())) => self.db.messages.mark_staged(&rest, now).await,
        };
        let positions = won
            .iter()
            .map(|(i, _, _)| *i)
            .chain(unmarked.iter().map(|(i, _)| *i));
        match marked {
            Err(e) => {
                for i in positions {
                    outcomes[i] = Some(Outcome::Retry(e.to_string()));
                }
            }
            Ok(_) => {
                self.metrics.messages_staged.inc_by(inserted.len() as u64);
                for (i, event, _) in won {
                    let latency_ms = now.timestamp_millis() - event.accepted_at_ms;
                    self.metrics
                        .stage_latency
                        .observe(latency_ms.max(0) as f64 / 1000.0);
                    outcomes[*i] = Some(Outcome::Staged);
                }
                for (i, _) in unmarked {
                    outcomes[*i] = Some(Outcome::AlreadyDone);
                }
            }
        }
    }

    /// Step 4: the losers are cancelled as recent duplicates, and counted.
    async fn cancel(&self, lost: &[Item], now: DateTime, outcomes: &mut [Option<Outcome>]) {
        if lost.is_empty() {
            return;
        }
        let ids: Vec<ObjectId> = lost.iter().map(|(_, _, id)| *id).collect();
        let (canceled, done) = self.db.messages.cancel_duplicates(&ids, now).await;
        self.metrics
            .messages_canceled_duplicate
            .inc_by(canceled.len() as u64);
        count_transitions(&self.db.stats, &canceled).await;
        for (i, _, _) in lost {
            outcomes[*i] = Some(match &done {
                Ok(()) => Outcome::CanceledDuplicate,
                Err(e) => Outcome::Retry(e.to_string()),
            });
        }
    }
}

/// How a payload is settled: by the worst outcome of its events. One to retry requeues it (the
/// others are handled again as repeats); one unknown message dead-letters it, the others having
/// been staged.
fn worst(outcomes: Vec<Outcome>) -> Outcome {
    let rank = |o: &Outcome| match o {
        Outcome::AlreadyDone => 0,
        Outcome::CanceledDuplicate => 1,
        Outcome::Staged => 2,
        Outcome::Poison(_) => 3,
        Outcome::Retry(_) => 4,
    };
    outcomes
        .into_iter()
        .max_by_key(rank)
        .expect("a payload carries at least one event")
}

/// The outcomes, once every event has one.
fn settled(outcomes: Vec<Option<Outcome>>) -> Vec<Outcome> {
    outcomes
        .into_iter()
        .map(|o| o.expect("every event settled"))
        .collect()
}
