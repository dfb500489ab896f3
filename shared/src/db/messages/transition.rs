//! Status changes of messages and the counters they move.
//!
//! The invariant: **every status change of a message is counted exactly once.** A change is
//! made by a conditional write on the message (its expected previous status, and more); the
//! writer whose write changed the message, and only that writer, produces the
//! [`Transition`] and hands it to [`count_transitions`]. A redelivered event, a repeated report or a second
//! API replica doing the same pass finds the message already changed, changes nothing, and so
//! counts nothing. Who changed what is known exactly:
//! - one message: `find_one_and_update` returning the document before the change ([`Messages::move_one`]);
//! - a batch: `update_many` filtered on the one previous place (status and agent) all its
//!   messages are expected in; when it modified fewer than asked, the messages are looked at one
//!   by one (leasing stamps its lease id, which tells which ones the batch changed).
//!
//! A process dying between the change and [`count_transitions`] loses that one count;
//! `sms-api recount-stats` rebuilds the counters of whole days from `sms_messages`.

use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use mongodb::options::ReturnDocument;
use serde::Deserialize;

use super::{Message, Messages};
use crate::db::stats::{Counted, Place, Stats, Transition};
use crate::domain::status::Status;

impl Message {
    /// What the counters know of this message.
    pub fn counted(&self) -> Counted {
        Counted {
            created_at: self.created_at,
            api_key_id: self.api_key_id,
            client_name: self.client_name.clone(),
            segments: self.segments,
        }
    }

    /// Where the counters have it now.
    pub fn place(&self) -> Place {
        (self.status, self.agent_id)
    }

    /// The counts stored messages add: one each where it stands (`PENDING`, for a new one).
    pub fn created(messages: &[Message]) -> Vec<Transition> {
        messages
            .iter()
            .map(|m| Transition {
                message: m.counted(),
                from: None,
                to: m.place(),
            })
            .collect()
    }
}

/// Whether a message reaching `status` is settled: it gets `settled_at`, from which the
/// retention TTL counts. `SENT` counts as settled (a delivery report may never come);
/// `DELIVERED` moves the time on.
pub fn settles(status: Status) -> bool {
    matches!(
        status,
        Status::Sent | Status::Delivered | Status::Failed | Status::Canceled
    )
}

/// Moves the counters of status changes that happened. A failure is logged, not returned: the
/// messages did change, and `sms-api recount-stats` repairs the days concerned.
pub async fn count_transitions(stats: &Stats, transitions: &[Transition]) {
    if transitions.is_empty() {
        return;
    }
    if let Err(e) = stats.apply(transitions).await {
        tracing::error!(
            error = %e,
            transitions = transitions.len(),
            "message counters not moved; sms-api recount-stats repairs them"
        );
    }
}

/// The changes a set of single-message writes made, and the first failure among them: the
/// changes that happened are counted even when another write failed.
pub fn gathered(
    results: impl IntoIterator<Item = mongodb::error::Result<Option<Transition>>>,
) -> (Vec<Transition>, mongodb::error::Result<()>) {
    let mut moved = Vec::new();
    let mut first_error = Ok(());
    for r in results {
        match r {
            Ok(t) => moved.extend(t),
            Err(e) if first_error.is_ok() => first_error = Err(e),
            Err(_) => {}
        }
    }
    (moved, first_error)
}

/// What a status change needs to know of the message it changed.
#[derive(Debug, Deserialize)]
pub(super) struct Before {
    pub status: Status,
    #[serde(default)]
    pub agent_id: Option<ObjectId>,
    pub created_at: DateTime,
    #[serde(default)]
    pub api_key_id: Option<ObjectId>,
    pub client_name: String,
    pub segments: i32,
}

impl Before {
    pub(super) fn projection() -> Document {
        doc! {
            "status": 1, "agent_id": 1, "created_at": 1, "api_key_id": 1,
            "client_name": 1, "segments": 1,
        }
    }

    /// The change from this state to `to` (the agent: `to_agent`, else unchanged).
    pub(super) fn to(self, to: Status, to_agent: Option<ObjectId>) -> Transition {
        let agent = to_agent.or(self.agent_id);
        self.moved_to((to, agent))
    }

    /// The change from this state to `place`, whose agent may be none.
    pub(super) fn moved_to(self, place: Place) -> Transition {
        Transition {
            from: Some((self.status, self.agent_id)),
            to: place,
            message: Counted {
                created_at: self.created_at,
                api_key_id: self.api_key_id,
                client_name: self.client_name,
                segments: self.segments,
            },
        }
    }
}

impl Messages {
    /// Applies `update` (which sets `status` to `to`, and `agent_id` to `to_agent` when given)
    /// to the one message matching `filter`; returns the change when this write made it.
    pub(super) async fn move_one(
        &self,
        filter: Document,
        update: Document,
        to: Status,
        to_agent: Option<ObjectId>,
    ) -> mongodb::error::Result<Option<Transition>> {
        let before = self.update_returning_before(filter, update).await?;
        Ok(before.map(|b| b.to(to, to_agent)))
    }

    /// Applies `update` (which moves the message to `place`, clearing its agent when the place
    /// has none) to the one message matching `filter`; returns the change when this write made it.
    pub(super) async fn move_to(
        &self,
        filter: Document,
        update: Document,
        place: Place,
    ) -> mongodb::error::Result<Option<Transition>> {
        let before = self.update_returning_before(filter, update).await?;
        Ok(before.map(|b| b.moved_to(place)))
    }

    async fn update_returning_before(
        &self,
        filter: Document,
        update: Document,
    ) -> mongodb::error::Result<Option<Before>> {
        self.0
            .clone_with_type::<Before>()
            .find_one_and_update(filter, update)
            .projection(Before::projection())
            .return_document(ReturnDocument::Before)
            .await
    }
}
