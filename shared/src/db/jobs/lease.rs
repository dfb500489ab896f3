//! Leasing: a poll picks the jobs of its lanes that are available now, highest priority first,
//! then oldest, and claims them under a fresh `lease_id`.
//!
//! The poller's lanes are its own (pinned messages and the pools naming it) and
//! [`EVERY_AGENT`]'s. The candidates come from two ranges of one index (`lease_order`: a lane,
//! in lease order), merged in that order (MongoDB's `SORT_MERGE`, no in-memory sort), so a poll
//! reads about `limit` entries plus the jobs held or already failed by the agent (`tried_by`),
//! whatever the history. The claim is one `update_many` that repeats `available_at <= now`: a job another
//! poll claimed in between has moved its `available_at` to its lease's end and is skipped, so two
//! polls never hold one job under live leases. `SENDING` jobs have no `available_at` and are
//! never handed out again.
//!
//! The candidates are read whole. When none was ever leased (`attempts` 0, the usual case: new
//! jobs), the claim also repeats `attempts: 0`, and a claim that took every candidate needs no
//! read-back: nothing but a claim changes a job that was never leased (a report without a lease
//! changes only `status` and `holder`, which the claim sets, or takes `available_at` away), so
//! the jobs as claimed are the candidates with the claim's changes. Otherwise what was claimed
//! is read back by the lease id.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};

use super::{lane, Job, Jobs, EVERY_AGENT};
use crate::domain::status::Status;

/// The index a poll's candidates come from.
pub const LEASE_ORDER_INDEX: &str = "lease_order";

/// The `find` a poll issues for its candidates: the filter leads with the index's first field,
/// and the index is named as a hint.
#[derive(Debug, Clone)]
pub struct CandidateQuery {
    pub filter: Document,
    pub sort: Document,
    pub hint: &'static str,
    pub limit: i64,
}

impl CandidateQuery {
    /// The candidates of `agent`'s lanes available at `now`.
    pub fn new(agent: ObjectId, limit: i64, now: DateTime) -> Self {
        Self {
            filter: claimable(agent, now),
            sort: doc! {"priority_weight": -1, "created_at": 1, "_id": 1},
            hint: LEASE_ORDER_INDEX,
            limit,
        }
    }

    /// The same query as a `find` command, e.g. to `explain` it.
    pub fn find_command(&self) -> Document {
        doc! {
            "find": "sms_jobs",
            "filter": self.filter.clone(),
            "sort": self.sort.clone(),
            "hint": self.hint,
            "limit": self.limit,
        }
    }
}

/// The jobs `agent` may lease at `now`: of its lanes, available, not failed by it before.
fn claimable(agent: ObjectId, now: DateTime) -> Document {
    doc! {
        "lanes": {"$in": [lane(agent), EVERY_AGENT]},
        "available_at": {"$lte": now},
        "tried_by": {"$ne": agent},
    }
}

/// The jobs one poll claimed.
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    /// The claimed jobs as they are now (`ASSIGNED` to the poller), in lease order.
    pub jobs: Vec<Job>,
    /// Each claimed job's status and holder before the claim.
    pub before: HashMap<ObjectId, (Status, Option<ObjectId>)>,
}

impl Claimed {
    /// How many were `ASSIGNED` before: leased again after their lease ran out (or reported
    /// `ASSIGNED` without a lease).
    pub fn re_leased(&self) -> u64 {
        self.before
            .values()
            .filter(|(status, _)| *status == Status::Assigned)
            .count() as u64
    }
}

/// What a claim sets on every job it takes: the claim's update, and the same change made to a
/// job in memory.
struct Lease<'a> {
    agent: ObjectId,
    lease_id: &'a str,
    expires: DateTime,
    now: DateTime,
}

impl Lease<'_> {
    /// The claim's update.
    fn update(&self) -> Document {
        doc! {
            "$set": {
                "status": Status::Assigned.as_str(),
                "holder": self.agent,
                "lease_id": self.lease_id,
                "lease_expires_at": self.expires,
                "leased_at": self.now,
                "available_at": self.expires,
            },
            "$inc": {"attempts": 1},
        }
    }

    /// `job` as [`update`](Self::update) leaves it.
    fn applied_to(&self, mut job: Job) -> Job {
        job.status = Status::Assigned;
        job.holder = Some(self.agent);
        job.lease_id = Some(self.lease_id.to_owned());
        job.lease_expires_at = Some(self.expires);
        job.leased_at = Some(self.now);
        job.available_at = Some(self.expires);
        job.attempts += 1;
        job
    }
}

impl Jobs {
    /// Claims up to `limit` jobs of `agent`'s lane under `lease_id` for `lease_for`.
    pub async fn lease(
        &self,
        agent: ObjectId,
        limit: i64,
        lease_id: &str,
        lease_for: Duration,
        now: DateTime,
    ) -> mongodb::error::Result<Claimed> {
        if limit <= 0 {
            return Ok(Claimed::default());
        }
        let q = CandidateQuery::new(agent, limit, now);
        let mut find = self.0.find(q.filter).sort(q.sort).limit(q.limit);
        if let Some(hint) = self.1.name(q.hint).await? {
            find = find.hint(hint);
        }
        let candidates: Vec<Job> = find.await?.try_collect().await?;
        if candidates.is_empty() {
            return Ok(Claimed::default());
        }
        let ids: Vec<ObjectId> = candidates.iter().map(|c| c.id).collect();
        let lease = Lease {
            agent,
            lease_id,
            expires: DateTime::from_millis(now.timestamp_millis() + lease_for.as_millis() as i64),
            now,
        };
        let never_leased = candidates.iter().all(|c| c.attempts == 0);
        let mut fence = doc! {"_id": {"$in": &ids}};
        fence.extend(claimable(agent, now));
        if never_leased {
            fence.insert("attempts", 0);
        }
        let priorities = candidates.iter().map(|c| c.priority_weight);
        let claim = self.0.update_many(fence, lease.update());
        let claimed = self.2.write(priorities, claim).await?;
        if claimed.modified_count == 0 {
            return Ok(Claimed::default());
        }
        let mut before: HashMap<ObjectId, (Status, Option<ObjectId>)> = candidates
            .iter()
            .map(|c| (c.id, (c.status, c.holder)))
            .collect();
        let jobs: Vec<Job> = if never_leased && claimed.modified_count == ids.len() as u64 {
            candidates
                .into_iter()
                .map(|c| lease.applied_to(c))
                .collect()
        } else {
            self.read_back(&ids, lease_id).await?
        };
        let taken: HashSet<ObjectId> = jobs.iter().map(|j| j.id).collect();
        before.retain(|id, _| taken.contains(id));
        Ok(Claimed { jobs, before })
    }

    /// The jobs of `ids` claimed under `lease_id`, in the order of `ids` (lease order).
    async fn read_back(
        &self,
        ids: &[ObjectId],
        lease_id: &str,
    ) -> mongodb::error::Result<Vec<Job>> {
        let mut jobs: Vec<Job> = self
            .0
            .find(doc! {"_id": {"$in": ids}, "lease_id": lease_id})
            .await?
            .try_collect()
            .await?;
        let rank: HashMap<&ObjectId, usize> =
            ids.iter().enumerate().map(|(i, id)| (id, i)).collect();
        jobs.sort_by_key(|j| rank[&j.id]);
        Ok(jobs)
    }

    /// Settles the jobs of this lease whose message had already moved on when the poll tried
    /// to record the lease on it (the message is the history; it wins): a job whose message is
    /// `SENDING` becomes `SENDING` (the reconciler times it out), any other is removed. These
    /// jobs are not handed out.
    pub async fn settle_moved_on(
        &self,
        lease_id: &str,
        moved_on: &[(ObjectId, Option<Status>, Option<DateTime>)],
        now: DateTime,
    ) -> mongodb::error::Result<()> {
        for (id, status, sending_at) in moved_on {
            let fence = doc! {"_id": id, "lease_id": lease_id};
            match status {
                Some(Status::Pending | Status::Assigned) => {}
                Some(Status::Sending) => {
                    self.0
                        .update_one(
                            fence,
                            doc! {
                                "$set": {
                                    "status": Status::Sending.as_str(),
                                    "sending_at": sending_at.unwrap_or(now),
                                },
                                "$unset": {"available_at": ""},
                            },
                        )
                        .await?;
                }
                _ => {
                    self.0.delete_one(fence).await?;
                }
            }
        }
        Ok(())
    }
}
