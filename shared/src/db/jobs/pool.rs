//! Pool jobs going back to their pool, the jobs' side (the messages follow in
//! `db::messages::pool`). Pinned jobs never do: they wait for their one agent.
//!
//! - **A stale holder.** An agent that stopped polling keeps its `ASSIGNED` pool jobs until their
//!   leases end; the reconciler gives them back at once instead ([`Jobs::release`]). `SENDING`
//!   jobs are never released: the phone may have sent them.
//! - **A retryable failure.** The holder reports that it could not send (no signal, Android's
//!   sending limit): the job goes back to the pool for the agents that have not failed it yet
//!   ([`Jobs::requeue`]), as long as it has had fewer than `MAX_SEND_ATTEMPTS` leases.
//!
//! Both are one write conditional on the holder, the status and the lease, so a report that the
//! holder makes at the same moment either lands first (and the job is no longer what the write
//! expects) or finds the job gone from its hands (and is refused).

use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime};

use super::{Job, Jobs};
use crate::domain::status::Status;

/// The index of jobs by holder.
pub(super) const HOLDER_INDEX: &str = "holder";

/// What a pool job looks like back in its pool: waiting, held by nobody, leasable now.
fn back_in_pool(now: DateTime) -> mongodb::bson::Document {
    doc! {
        "status": Status::Pending.as_str(),
        "holder": Bson::Null,
        "lease_id": Bson::Null,
        "lease_expires_at": Bson::Null,
        "sending_at": Bson::Null,
        "available_at": now,
    }
}

impl Job {
    /// Whether `agent` may give this job back to the pool after a retryable failure reported
    /// under `lease_id` (when given): it is a pool job that `agent` holds, under that lease, and
    /// it has had fewer than `max_attempts` leases. Whether another agent can take it is the
    /// caller's to check.
    pub fn requeueable_by(
        &self,
        agent: ObjectId,
        lease_id: Option<&str>,
        max_attempts: i32,
    ) -> bool {
        self.pool
            && self.holder == Some(agent)
            && matches!(self.status, Status::Assigned | Status::Sending)
            && lease_id.is_none_or(|l| self.lease_id.as_deref() == Some(l))
            && self.attempts < max_attempts
    }

    /// The agents that may not lease it again: those that failed it, and `agent`.
    pub fn excluded_with(&self, agent: ObjectId) -> Vec<ObjectId> {
        let mut out = self.tried_by.clone();
        if !out.contains(&agent) {
            out.push(agent);
        }
        out
    }
}

impl Jobs {
    /// Up to `limit` `ASSIGNED` pool jobs of `holders` whose leases still run at `now`.
    pub async fn held_in_pools(
        &self,
        holders: &[ObjectId],
        now: DateTime,
        limit: i64,
    ) -> mongodb::error::Result<Vec<Job>> {
        if holders.is_empty() {
            return Ok(Vec::new());
        }
        let mut find = self
            .0
            .find(doc! {
                "holder": {"$in": holders},
                "status": Status::Assigned.as_str(),
                "pool": true,
                "lease_expires_at": {"$gt": now},
            })
            .limit(limit);
        if let Some(hint) = self.1.name(HOLDER_INDEX).await? {
            find = find.hint(hint);
        }
        find.await?.try_collect().await
    }

    /// Gives `job` back to its pool if it is still `ASSIGNED` to the same holder under the same
    /// lease; whether it did.
    pub async fn release(&self, job: &Job, now: DateTime) -> mongodb::error::Result<bool> {
        let Some(holder) = job.holder else {
            return Ok(false);
        };
        let r = self
            .0
            .update_one(
                doc! {
                    "_id": job.id,
                    "holder": holder,
                    "status": Status::Assigned.as_str(),
                    "lease_id": job.lease_id.as_deref(),
                    "pool": true,
                },
                doc! {"$set": back_in_pool(now)},
            )
            .await?;
        Ok(r.modified_count == 1)
    }

    /// Gives `job`, which `agent` failed with a retryable error, back to its pool without
    /// `agent`, if it is still as `agent` saw it (holder, status, lease, attempts); whether it did.
    pub async fn requeue(
        &self,
        job: &Job,
        agent: ObjectId,
        now: DateTime,
    ) -> mongodb::error::Result<bool> {
        let r = self
            .0
            .update_one(
                doc! {
                    "_id": job.id,
                    "holder": agent,
                    "status": job.status.as_str(),
                    "lease_id": job.lease_id.as_deref(),
                    "attempts": job.attempts,
                    "pool": true,
                },
                doc! {"$set": back_in_pool(now), "$addToSet": {"tried_by": agent}},
            )
            .await?;
        Ok(r.modified_count == 1)
    }
}
