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
    /// Up to `limit` `ASSIGNED` pool jobs of `holders` leased before `silent_since` whose leases
    /// still run at `now`. A job leased since (its holder polled again meanwhile) is not one.
    pub async fn held_in_pools(
        &self,
        holders: &[ObjectId],
        silent_since: DateTime,
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
                "leased_at": {"$lt": silent_since},
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::messages::{Message, NewMessage, Route};

    fn held(pool: bool, holder: ObjectId, attempts: i32) -> Job {
        let at = DateTime::from_millis(1_700_000_000_000);
        let route = if pool {
            Route::Pool(vec!["*".to_owned()])
        } else {
            Route::Pinned(holder)
        };
        let m = Message::pending(NewMessage {
            request_id: ObjectId::new(),
            api_key_id: None,
            client_name: "SafeShop".into(),
            route,
            template_id: ObjectId::new(),
            to: "+84901234567".into(),
            text: "Ma OTP 1".into(),
            priority_weight: 50,
            created_at: at,
        })
        .staged_at(at);
        let mut job = Job::of(&m, at).unwrap();
        job.status = Status::Assigned;
        job.holder = Some(holder);
        job.lease_id = Some("lease-1".into());
        job.attempts = attempts;
        job
    }

    #[test]
    fn only_the_holder_of_a_pool_job_may_requeue_it_within_the_attempts() {
        let (a, b) = (ObjectId::new(), ObjectId::new());
        let job = held(true, a, 1);
        assert!(job.requeueable_by(a, Some("lease-1"), 3));
        assert!(job.requeueable_by(a, None, 3));
        assert!(!job.requeueable_by(b, None, 3), "not its holder");
        assert!(!job.requeueable_by(a, Some("lease-0"), 3), "another lease");
        assert!(!job.requeueable_by(a, None, 1), "no attempts left");
        assert!(!held(false, a, 1).requeueable_by(a, None, 3), "pinned");
        let mut sending = held(true, a, 2);
        sending.status = Status::Sending;
        assert!(sending.requeueable_by(a, None, 3));
    }

    #[test]
    fn the_excluded_agents_are_those_that_failed_it_and_the_reporter() {
        let (a, b) = (ObjectId::new(), ObjectId::new());
        let mut job = held(true, a, 2);
        job.tried_by = vec![b];
        assert_eq!(job.excluded_with(a), vec![b, a]);
        assert_eq!(job.excluded_with(b), vec![b]);
    }
}
