//! Leasing, the messages' side: after a poll claimed jobs (`db::jobs`), their messages record
//! the lease: `ASSIGNED`, the agent, the lease and the attempt count. A job is handed to the phone
//! only once its message recorded this lease, so a job whose message moved on meanwhile (an
//! inconsistency left by a crash) is never sent.

use std::collections::{BTreeMap, HashSet};

use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime, Document};

use super::Messages;
use crate::db::jobs::{Claimed, Job};
use crate::db::stats::Transition;
use crate::domain::status::Status;

/// What recording a lease on the messages did.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Messages that now carry the lease: their jobs may be handed out.
    pub leased: HashSet<ObjectId>,
    /// The status changes to count.
    pub transitions: Vec<Transition>,
    /// Messages that had moved on (status, when it started sending), or are missing: their
    /// jobs are settled by `Jobs::settle_moved_on`, not handed out.
    pub moved_on: Vec<(ObjectId, Option<Status>, Option<DateTime>)>,
}

/// Where a claimed job's message is expected: the job's status before the claim, and its
/// holder then (or the agent it is pinned to).
fn expected(job: &Job, claimed: &Claimed) -> (Status, Option<ObjectId>) {
    let (status, holder) = claimed
        .before
        .get(&job.id)
        .copied()
        .unwrap_or((Status::Pending, None));
    (status, holder.or_else(|| job.pinned_agent()))
}

/// The filter of `job`'s message when it may take `lease_id` although it is not where the
/// claim expected it: waiting or held under another lease, or `SENDING` for an agent whose
/// retryable failure gave the job back (`tried_by`) before the message followed.
fn leasable(job: &Job, lease_id: &str) -> Document {
    let waiting = [Status::Pending.as_str(), Status::Assigned.as_str()];
    if job.tried_by.is_empty() {
        return doc! {
            "_id": job.id,
            "lease_id": {"$ne": lease_id},
            "status": {"$in": waiting.as_slice()},
        };
    }
    let either = doc! {
        "lease_id": {"$ne": lease_id},
        "$or": [
            {"status": {"$in": waiting.as_slice()}},
            {"status": Status::Sending.as_str(), "agent_id": {"$in": &job.tried_by}},
        ],
    };
    crate::db::by_id_and(job.id, either)
}

impl Messages {
    /// Records `claimed`'s lease (`lease_id`, held by `agent`) on the messages, idempotently
    /// (only messages not yet under this lease). One `update_many` per expected previous place
    /// and attempt count (usually one in all); when one changed fewer messages than asked, the
    /// rest are looked at one by one. Returns what was recorded, and the failure that stopped
    /// it, if any (what was recorded before it still counts).
    pub async fn record_lease(
        &self,
        agent: ObjectId,
        lease_id: &str,
        claimed: &Claimed,
        now: DateTime,
    ) -> (Recorded, mongodb::error::Result<()>) {
        let mut out = Recorded::default();
        let done = self
            .record_lease_into(&mut out, agent, lease_id, claimed, now)
            .await;
        (out, done)
    }

    async fn record_lease_into(
        &self,
        out: &mut Recorded,
        agent: ObjectId,
        lease_id: &str,
        claimed: &Claimed,
        now: DateTime,
    ) -> mongodb::error::Result<()> {
        let mut groups: BTreeMap<(Status, Option<ObjectId>, i32), Vec<&Job>> = BTreeMap::new();
        for job in &claimed.jobs {
            let (status, holder) = expected(job, claimed);
            groups
                .entry((status, holder, job.attempts))
                .or_default()
                .push(job);
        }
        for ((status, from_agent, attempts), jobs) in groups {
            let ids: Vec<ObjectId> = jobs.iter().map(|j| j.id).collect();
            let expires = jobs[0].lease_expires_at;
            let set = doc! {
                "status": Status::Assigned.as_str(),
                "agent_id": agent,
                "lease_id": lease_id,
                "lease_expires_at": expires,
                "leased_at": now,
                "attempts": attempts,
                "updated_at": now,
            };
            let priorities = jobs.iter().map(|j| j.priority_weight);
            let update = self.0.update_many(
                doc! {
                    "_id": {"$in": &ids},
                    "status": status.as_str(),
                    "agent_id": from_agent.map_or(Bson::Null, Bson::ObjectId),
                    "lease_id": {"$ne": lease_id},
                },
                doc! {"$set": set.clone()},
            );
            let r = self.2.write(priorities, update).await?;
            let all = r.modified_count as usize == ids.len();
            let changed_by_batch = if all {
                ids.iter().copied().collect()
            } else {
                self.under_lease(&ids, lease_id).await?
            };
            for job in &jobs {
                if !changed_by_batch.contains(&job.id) {
                    continue;
                }
                out.leased.insert(job.id);
                out.transitions.push(Transition {
                    message: job.counted(),
                    from: Some((status, from_agent)),
                    to: (Status::Assigned, Some(agent)),
                });
            }
            for job in jobs.iter().filter(|j| !changed_by_batch.contains(&j.id)) {
                let moved = self
                    .move_one(
                        leasable(job, lease_id),
                        doc! {"$set": set.clone()},
                        Status::Assigned,
                        Some(agent),
                    )
                    .await?;
                match moved {
                    Some(t) => {
                        out.leased.insert(job.id);
                        out.transitions.push(t);
                    }
                    None => {
                        let now_is = self.find(job.id).await?;
                        out.moved_on.push((
                            job.id,
                            now_is.as_ref().map(|m| m.status),
                            now_is.and_then(|m| m.sending_at),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Which of `ids` carry `lease_id`.
    async fn under_lease(
        &self,
        ids: &[ObjectId],
        lease_id: &str,
    ) -> mongodb::error::Result<HashSet<ObjectId>> {
        let found =
            crate::db::ids_matching(&self.0, doc! {"_id": {"$in": ids}, "lease_id": lease_id})
                .await?;
        Ok(found.into_iter().collect())
    }
}
