//! Agents' status reports: a report moves a message forward only along the contract's
//! transitions, only for the agent that holds it and, when it names one, only under its current
//! lease.
//!
//! The job is the fence (`db::jobs`): one conditional write on it decides, then the message
//! follows with a write conditional on its own predecessors, so a repeat is a no-op and the
//! change is counted once. A report whose job is gone is judged on the message alone: that is a
//! delivery receipt after `SENT`, or the retry of a report whose job step went through before a
//! crash kept the message step from happening. Only when nothing matched is anything read, to
//! explain why; a late or foreign report therefore never changes anything.

use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};

use super::transition::settles;
use super::Messages;
use crate::db::jobs::Jobs;
use crate::db::stats::Transition;
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
    /// A retryable failure of a pool message: it went back to its pool (`PENDING`) for another
    /// agent; `false` when an earlier copy of the report did that already.
    Requeued(bool),
}

/// The longest `last_error` an agent may store.
pub const MAX_ERROR_CHARS: usize = 500;

/// One agent's report that a message reached a status.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    pub agent: ObjectId,
    pub message_id: ObjectId,
    pub status: Status,
    /// The lease the report is about, when the phone names it.
    pub lease_id: Option<&'a str>,
    /// Why it failed (kept with `FAILED`).
    pub error: Option<&'a str>,
}

impl Report<'_> {
    fn predecessors(&self) -> Vec<&'static str> {
        Status::allowed_predecessors(self.status)
            .into_iter()
            .map(Status::as_str)
            .collect()
    }

    /// The reported error as `last_error` keeps it: trimmed, at most [`MAX_ERROR_CHARS`].
    pub(super) fn error_text(&self) -> Option<String> {
        let e = self.error.map(str::trim).filter(|e| !e.is_empty())?;
        Some(e.chars().take(MAX_ERROR_CHARS).collect())
    }

    /// What the message's document gets when it reaches the reported status.
    pub(super) fn update(&self, now: DateTime) -> Document {
        let mut set = doc! {"status": self.status.as_str(), "updated_at": now};
        match self.status {
            Status::Sending => set.insert("sending_at", now),
            Status::Sent => set.insert("sent_at", now),
            Status::Delivered => set.insert("delivered_at", now),
            Status::Failed => set.insert("failed_at", now),
            _ => None,
        };
        if self.status == Status::Failed {
            if let Some(e) = self.error_text() {
                set.insert("last_error", e);
            }
        }
        if settles(self.status) {
            set.insert("settled_at", now);
        }
        doc! {"$set": set}
    }
}

impl Messages {
    /// Applies a report: the job's fence, then the message; returns the outcome and the status
    /// change it made, for the counters.
    pub async fn report(
        &self,
        jobs: &Jobs,
        r: Report<'_>,
        now: DateTime,
    ) -> mongodb::error::Result<(ReportOutcome, Option<Transition>)> {
        let update = r.update(now);
        // Statuses only move forward, so a second round can only differ if the job changed
        // between its write and its read; two rounds settle every case.
        for _ in 0..2 {
            if jobs
                .report(r.agent, r.message_id, r.status, r.lease_id, now)
                .await?
            {
                return match self.follow(&r, &update).await? {
                    Some(t) => Ok((ReportOutcome::Applied(r.status), Some(t))),
                    None => Ok((self.explain_unmoved(&r).await?, None)),
                };
            }
            if let Some(job) = jobs.find(r.message_id).await? {
                if !job.reportable_by(r.agent) {
                    return Ok((ReportOutcome::NotFound, None));
                }
                if r.lease_id
                    .is_some_and(|l| job.lease_id.as_deref() != Some(l))
                {
                    return Ok((ReportOutcome::StaleLease(job.status), None));
                }
                if job.status == r.status {
                    // A repeat; the message may still lag behind its job after a crash.
                    let caught_up = self.follow(&r, &update).await?;
                    return Ok((ReportOutcome::Unchanged(job.status), caught_up));
                }
                if !job.status.can_become(r.status) {
                    return Ok((ReportOutcome::InvalidTransition(job.status), None));
                }
                continue;
            }
            let Some(current) = self.find(r.message_id).await? else {
                return Ok((ReportOutcome::NotFound, None));
            };
            let handed_out = current.staged || current.lease_id.is_some();
            if current.agent_id != Some(r.agent) || !handed_out {
                return Ok((ReportOutcome::NotFound, None));
            }
            if r.lease_id
                .is_some_and(|l| current.lease_id.as_deref() != Some(l))
            {
                return Ok((ReportOutcome::StaleLease(current.status), None));
            }
            if current.status == r.status {
                return Ok((ReportOutcome::Unchanged(current.status), None));
            }
            if !current.status.can_become(r.status) {
                return Ok((ReportOutcome::InvalidTransition(current.status), None));
            }
            let mut filter = doc! {
                "_id": r.message_id,
                "agent_id": r.agent,
                "status": {"$in": r.predecessors()},
            };
            if let Some(lease) = r.lease_id {
                filter.insert("lease_id", lease);
            }
            if let Some(t) = self
                .move_one(filter, update.clone(), r.status, None)
                .await?
            {
                return Ok((ReportOutcome::Applied(r.status), Some(t)));
            }
        }
        // Still looks applicable yet never matched: report it as the conflict it is.
        let current = self
            .find(r.message_id)
            .await?
            .map_or(Status::Pending, |m| m.status);
        Ok((ReportOutcome::InvalidTransition(current), None))
    }

    /// The message follows its job: moved to the reported status if it is in a predecessor.
    async fn follow(
        &self,
        r: &Report<'_>,
        update: &Document,
    ) -> mongodb::error::Result<Option<Transition>> {
        if Status::allowed_predecessors(r.status).is_empty() {
            return Ok(None);
        }
        self.move_one(
            doc! {"_id": r.message_id, "status": {"$in": r.predecessors()}},
            update.clone(),
            r.status,
            None,
        )
        .await
    }

    /// Why a message whose job let the report through did not move: it already had the status
    /// (a retry), or something else settled it first (the reconciler).
    async fn explain_unmoved(&self, r: &Report<'_>) -> mongodb::error::Result<ReportOutcome> {
        Ok(match self.find(r.message_id).await? {
            None => ReportOutcome::NotFound,
            Some(m) if m.status == r.status => ReportOutcome::Unchanged(m.status),
            Some(m) => ReportOutcome::InvalidTransition(m.status),
        })
    }
}
