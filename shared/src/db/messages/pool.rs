//! Pool messages going back to their pool, the messages' side: after their job went back
//! (`db::jobs`, `pool.rs`), the message follows: `PENDING`, no agent, no lease, and its change is
//! counted (from the holder to nobody).
//!
//! Two causes: the reconciler releasing a stale agent's `ASSIGNED` messages
//! ([`Messages::release_to_pool`]), and the holder reporting a retryable failure
//! ([`Messages::requeue_failed`], which decides whether the failure is retried at all). In both,
//! the job moves first and the message second, each with a conditional write, so a poll that
//! leases the job in between finds the message still with the old holder and takes it from
//! there (see `leasing.rs`), and the message's own write then matches nothing.

use mongodb::bson::{doc, Bson, DateTime};

use super::status_reports::{Report, ReportOutcome};
use super::Messages;
use crate::db::agents::Agents;
use crate::db::jobs::{Job, Jobs};
use crate::db::stats::Transition;
use crate::domain::status::Status;

/// The `$set` of a message back in its pool.
fn back_in_pool(now: DateTime) -> mongodb::bson::Document {
    doc! {
        "status": Status::Pending.as_str(),
        "agent_id": Bson::Null,
        "lease_id": Bson::Null,
        "lease_expires_at": Bson::Null,
        "updated_at": now,
    }
}

impl Messages {
    /// The message of `job`, which was just released from its stale holder, follows it back to
    /// the pool if it is still `ASSIGNED` to that holder under the same lease. Returns the
    /// change when this write made it.
    pub async fn release_to_pool(
        &self,
        job: &Job,
        now: DateTime,
    ) -> mongodb::error::Result<Option<Transition>> {
        let Some(holder) = job.holder else {
            return Ok(None);
        };
        self.move_to(
            doc! {
                "_id": job.id,
                "status": Status::Assigned.as_str(),
                "agent_id": holder,
                "lease_id": job.lease_id.as_deref(),
            },
            doc! {"$set": back_in_pool(now)},
            (Status::Pending, None),
        )
        .await
    }

    /// A retryable `FAILED` report: when the message is a pool message that `r.agent` holds (under
    /// `r.lease_id`, when given), has had fewer than `max_attempts` leases, and another active
    /// agent of its lanes has not failed it yet, its job goes back to the pool without `r.agent`
    /// and the message follows, keeping the reported error as `last_error`.
    ///
    /// `None` when it does not apply: the report is then an ordinary, final `FAILED`. A retry of
    /// a report that already gave the job back answers the same and completes the message's
    /// step if a crash kept it from happening.
    pub async fn requeue_failed(
        &self,
        jobs: &Jobs,
        agents: &Agents,
        r: Report<'_>,
        max_attempts: i32,
        now: DateTime,
    ) -> mongodb::error::Result<Option<(ReportOutcome, Option<Transition>)>> {
        if r.status != Status::Failed {
            return Ok(None);
        }
        let Some(job) = jobs.find(r.message_id).await? else {
            return Ok(None);
        };
        // A retry of a report that already gave the job back.
        let given_back = job.pool && job.holder.is_none() && job.tried_by.contains(&r.agent);
        let requeued = given_back
            || (job.requeueable_by(r.agent, r.lease_id, max_attempts)
                && agents
                    .any_active_in(&job.lanes, &job.excluded_with(r.agent))
                    .await?
                && jobs.requeue(&job, r.agent, now).await?);
        if !requeued {
            return Ok(None);
        }
        let mut set = back_in_pool(now);
        if let Some(error) = r.error_text() {
            set.insert("last_error", error);
        }
        let live = [Status::Assigned.as_str(), Status::Sending.as_str()];
        let moved = self
            .move_to(
                doc! {"_id": r.message_id, "status": {"$in": live.as_slice()}, "agent_id": r.agent},
                doc! {"$set": set},
                (Status::Pending, None),
            )
            .await?;
        Ok(Some((ReportOutcome::Requeued(!given_back), moved)))
    }
}
