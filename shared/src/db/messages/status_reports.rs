//! Agents' status reports: a report moves a message forward only along the contract's
//! transitions, only for the agent that holds it and, when it names one, only under its current
//! lease.

use mongodb::bson::{doc, oid::ObjectId, DateTime};

use super::Messages;
use crate::domain::status::Status;

/// What an agent's report did to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    /// The message moved to the reported status.
    Applied(Status),
    /// The message already had the reported status: nothing changed.
    Unchanged(Status),
    /// Not this agent's staged message (or no such message); reveals nothing.
    NotFound,
    /// The contract does not allow the move from the current status.
    InvalidTransition(Status),
    /// The report's `lease_id` is not the message's current lease.
    StaleLease(Status),
}

/// The longest `last_error` an agent may store.
pub const MAX_ERROR_CHARS: usize = 500;

impl Messages {
    /// Applies `agent`'s report that message `id` reached `status`.
    ///
    /// One conditional update on `{_id, agent_id, staged, status in allowed predecessors}` (and
    /// the lease when `lease_id` is given) decides; only when it matches nothing is the message
    /// read to explain why. A late or foreign report therefore never changes anything.
    pub async fn report(
        &self,
        agent: ObjectId,
        id: ObjectId,
        status: Status,
        lease_id: Option<&str>,
        error: Option<&str>,
        now: DateTime,
    ) -> mongodb::error::Result<ReportOutcome> {
        let predecessors: Vec<&str> = Status::allowed_predecessors(status)
            .into_iter()
            .map(Status::as_str)
            .collect();
        let mut filter = doc! {
            "_id": id,
            "agent_id": agent,
            "staged": true,
            "status": {"$in": predecessors},
        };
        if let Some(lease) = lease_id {
            filter.insert("lease_id", lease);
        }
        let mut set = doc! {"status": status.as_str(), "updated_at": now};
        match status {
            Status::Sending => {
                set.insert("sending_at", now);
            }
            Status::Sent => {
                set.insert("sent_at", now);
            }
            Status::Delivered => {
                set.insert("delivered_at", now);
            }
            Status::Failed => {
                set.insert("failed_at", now);
                if let Some(e) = error.map(str::trim).filter(|e| !e.is_empty()) {
                    set.insert(
                        "last_error",
                        e.chars().take(MAX_ERROR_CHARS).collect::<String>(),
                    );
                }
            }
            _ => {}
        }
        // Statuses only move forward, so a second try can only differ if the message was staged
        // in between; two rounds settle every case.
        for _ in 0..2 {
            if !Status::allowed_predecessors(status).is_empty() {
                let r = self
                    .0
                    .update_one(filter.clone(), doc! {"$set": set.clone()})
                    .await?;
                if r.matched_count == 1 {
                    return Ok(ReportOutcome::Applied(status));
                }
            }
            let Some(current) = self.0.find_one(doc! {"_id": id}).await? else {
                return Ok(ReportOutcome::NotFound);
            };
            if current.agent_id != agent || !current.staged {
                return Ok(ReportOutcome::NotFound);
            }
            if lease_id.is_some_and(|l| current.lease_id.as_deref() != Some(l)) {
                return Ok(ReportOutcome::StaleLease(current.status));
            }
            if current.status == status {
                return Ok(ReportOutcome::Unchanged(current.status));
            }
            if !current.status.can_become(status) {
                return Ok(ReportOutcome::InvalidTransition(current.status));
            }
        }
        // Still looks applicable yet never matched: report it as the conflict it is.
        let current = self
            .0
            .find_one(doc! {"_id": id})
            .await?
            .map_or(Status::Pending, |m| m.status);
        Ok(ReportOutcome::InvalidTransition(current))
    }
}
