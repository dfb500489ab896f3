//! `sms_jobs`: the phones' live work. One document per message that waits for a phone or is
//! held by one, keyed by the message's id, and removed once the phone is done with it (`SENT`,
//! `FAILED`) or the reconciler gives up on it (`SENDING_TIMEOUT`). Leasing, the fence of status
//! reports, timeouts and the in-flight gauge read only this collection, so what a phone's poll
//! costs follows the work in flight, never the history kept in `sms_messages`.
//!
//! A job carries what a phone needs (`to`, `text`, `segments`, `encoding`) and what the counters
//! need (`created_at`, `api_key_id`, `client_name`, `segments`), so neither step reads the
//! message. Its life:
//!
//! | job `status` | `holder` | `available_at` | set by |
//! | --- | --- | --- | --- |
//! | `PENDING` | none | staging time | the dispatcher ([`Jobs::stage`]) |
//! | `ASSIGNED` | the leasing agent | `lease_expires_at` (none for a lease-less `ASSIGNED` report: leasable) | a poll (`lease.rs`) |
//! | `SENDING` | the reporting agent | unset: never handed out again | a report (`reports.rs`) |
//!
//! `lanes` says who may lease it: the one agent a pinned message names (its id in hex), or a
//! pool's agents: [`EVERY_AGENT`] (`"*"`, every active agent) or a list of agent ids. A poll
//! takes the jobs whose lanes hold its agent or `"*"`, so pinned and pool work come in one lease
//! order. Only pool jobs (`pool: true`) ever move to another agent: a stale holder's jobs and a
//! retryable failure go back to the pool (`pool.rs`), the latter excluding the agents that
//! already failed it (`tried_by`). Each step changes the job first and the message second (see
//! `db::messages`), so the job is the fence and the message the history.
//!
//! Files: `lease.rs` (candidates, fenced claim, read back), `reports.rs` (the report fence),
//! `pool.rs` (pool jobs back to their pool), `timeouts.rs` (`SENDING` past its time) and, here,
//! the document, staging and the in-flight count.

use std::collections::HashSet;

use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime};
use mongodb::error::ErrorKind;
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

use super::bulk_gate::BulkGate;
use super::hints::Hints;
use super::messages::{Message, Messages};
use super::stats::Counted;
use crate::domain::status::Status;

mod lease;
mod pool;
mod reports;
mod timeouts;

pub use lease::{CandidateQuery, Claimed, LEASE_ORDER_INDEX};
pub use reports::JobStep;

/// One message waiting for, or held by, a phone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The message's id.
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub request_id: ObjectId,
    pub api_key_id: Option<ObjectId>,
    pub client_name: String,
    /// Who may lease it: agent ids in hex, or [`EVERY_AGENT`].
    pub lanes: Vec<String>,
    /// A pool message's job: it may move to another agent of its lanes.
    #[serde(default)]
    pub pool: bool,
    /// Agents whose retryable failure gave it back to the pool: they do not get it again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tried_by: Vec<ObjectId>,
    /// The agent holding it; `None` while nobody leased it.
    #[serde(default)]
    pub holder: Option<ObjectId>,
    /// `PENDING`, `ASSIGNED` or `SENDING`.
    pub status: Status,
    pub priority_weight: i32,
    /// The message's creation time (lease order, counters).
    pub created_at: DateTime,
    /// From when a poll may lease it; unset once `SENDING`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_at: Option<DateTime>,
    #[serde(default)]
    pub lease_id: Option<String>,
    #[serde(default)]
    pub lease_expires_at: Option<DateTime>,
    #[serde(default)]
    pub leased_at: Option<DateTime>,
    #[serde(default)]
    pub sending_at: Option<DateTime>,
    /// Leases so far.
    pub attempts: i32,
    pub to: String,
    pub text: String,
    pub segments: i32,
    pub encoding: String,
}

/// The lane of every active agent: a pool of the whole fleet.
pub const EVERY_AGENT: &str = "*";

/// The lane of `agent`: its pinned messages, and the pools naming it.
pub fn lane(agent: ObjectId) -> String {
    agent.to_hex()
}

impl Job {
    /// The job of a message in the state `m` is in, made leasable at `now` when nothing holds
    /// it; `None` when the message needs no phone any more (or does not yet: unstaged messages
    /// get their job from the dispatcher).
    pub fn of(m: &Message, now: DateTime) -> Option<Self> {
        let staged = m.staged_at.unwrap_or(now);
        let (holder, available_at) = match m.status {
            Status::Pending => (None, Some(staged)),
            Status::Assigned => (m.agent_id, Some(m.lease_expires_at.unwrap_or(staged))),
            Status::Sending => (m.agent_id, None),
            _ => return None,
        };
        Some(Self {
            id: m.id,
            request_id: m.request_id,
            api_key_id: m.api_key_id,
            client_name: m.client_name.clone(),
            lanes: m.lanes(),
            pool: m.pool.is_some(),
            tried_by: Vec::new(),
            holder,
            status: m.status,
            priority_weight: m.priority_weight,
            created_at: m.created_at,
            available_at,
            lease_id: m.lease_id.clone(),
            lease_expires_at: m.lease_expires_at,
            leased_at: m.leased_at,
            sending_at: m.sending_at.filter(|_| m.status == Status::Sending),
            attempts: m.attempts,
            to: m.to.clone(),
            text: m.text.clone(),
            segments: m.segments,
            encoding: m.encoding.clone(),
        })
    }

    /// The agent the message is pinned to; `None` for a pool job.
    pub fn pinned_agent(&self) -> Option<ObjectId> {
        if self.pool {
            return None;
        }
        match self.lanes.as_slice() {
            [only] => ObjectId::parse_str(only).ok(),
            _ => None,
        }
    }

    /// What the counters know of its message.
    pub fn counted(&self) -> Counted {
        Counted {
            created_at: self.created_at,
            api_key_id: self.api_key_id,
            client_name: self.client_name.clone(),
            segments: self.segments,
        }
    }
}

/// The `sms_jobs` collection.
#[derive(Clone)]
pub struct Jobs(Collection<Job>, Hints, BulkGate);

impl Jobs {
    pub fn new(db: &Database, hints: Hints) -> Self {
        Self(db.collection("sms_jobs"), hints, BulkGate::default())
    }

    /// The same collection, its bulk writes taking turns at `gate`.
    pub fn gated(self, gate: BulkGate) -> Self {
        Self(self.0, self.1, gate)
    }

    pub fn collection(&self) -> &Collection<Job> {
        &self.0
    }

    pub async fn create_indexes(&self) -> mongodb::error::Result<()> {
        super::ensure_indexes(
            &self.0,
            vec![
                super::index(
                    doc! {"lanes": 1, "priority_weight": -1, "created_at": 1, "_id": 1},
                    false,
                    LEASE_ORDER_INDEX,
                ),
                super::index(
                    doc! {"status": 1, "sending_at": 1},
                    false,
                    timeouts::TIMEOUT_INDEX,
                ),
                super::index(doc! {"holder": 1}, false, pool::HOLDER_INDEX),
            ],
        )
        .await
    }

    /// Inserts jobs with one unordered `insert_many`. A job that exists already (E11000) was
    /// staged by an earlier delivery of the same event: it is left as it is. Returns the ids
    /// inserted now, and the first other error (the caller retries; what was inserted stays).
    pub async fn stage(&self, jobs: &[Job]) -> (Vec<ObjectId>, Option<mongodb::error::Error>) {
        if jobs.is_empty() {
            return (Vec::new(), None);
        }
        let Err(e) = self.0.insert_many(jobs).ordered(false).await else {
            return (jobs.iter().map(|j| j.id).collect(), None);
        };
        let ErrorKind::InsertMany(failure) = e.kind.as_ref() else {
            // Nothing is known about what was inserted: none is counted as staged now.
            return (Vec::new(), Some(e));
        };
        let failed: Vec<(usize, i32)> = failure
            .write_errors
            .iter()
            .flatten()
            .map(|w| (w.index, w.code))
            .collect();
        let inserted = jobs
            .iter()
            .enumerate()
            .filter(|(i, _)| !failed.iter().any(|(f, _)| f == i))
            .map(|(_, j)| j.id)
            .collect();
        let other =
            failed.iter().any(|(_, code)| *code != 11000) || failure.write_concern_error.is_some();
        (inserted, other.then_some(e))
    }

    /// Which of `ids` have a job.
    pub async fn existing(&self, ids: &[ObjectId]) -> mongodb::error::Result<HashSet<ObjectId>> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let found = super::ids_matching(&self.0, doc! {"_id": {"$in": ids}}).await?;
        Ok(found.into_iter().collect())
    }

    /// The job of message `id`, if it has one.
    pub async fn find(&self, id: ObjectId) -> mongodb::error::Result<Option<Job>> {
        self.0.find_one(doc! {"_id": id}).await
    }

    /// Jobs each agent holds at `now`: `ASSIGNED` under a live lease, plus `SENDING`.
    pub async fn in_flight_by_agent(
        &self,
        now: DateTime,
    ) -> mongodb::error::Result<Vec<(ObjectId, i64)>> {
        let mut cursor = self
            .0
            .aggregate(vec![
                doc! {"$match": {"holder": {"$ne": Bson::Null}, "$or": [
                    {"status": Status::Sending.as_str()},
                    {"status": Status::Assigned.as_str(), "lease_expires_at": {"$gt": now}},
                ]}},
                doc! {"$group": {"_id": "$holder", "n": {"$sum": 1}}},
            ])
            .await?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await? {
            let Ok(agent) = d.get_object_id("_id") else {
                continue;
            };
            let n = match d.get("n") {
                Some(Bson::Int32(n)) => i64::from(*n),
                Some(Bson::Int64(n)) => *n,
                Some(Bson::Double(n)) => *n as i64,
                _ => 0,
            };
            out.push((agent, n));
        }
        Ok(out)
    }

    /// Gives every staged message still waiting for or held by a phone its job when it has none:
    /// after an upgrade from a version without `sms_jobs`, or a restore of `sms_messages` alone.
    /// Idempotent (existing jobs are kept). Returns how many jobs were created.
    pub async fn restore_missing(
        &self,
        messages: &Messages,
        now: DateTime,
    ) -> mongodb::error::Result<u64> {
        let live: Vec<&str> = [Status::Pending, Status::Assigned, Status::Sending]
            .iter()
            .map(|s| s.as_str())
            .collect();
        let mut cursor = messages
            .collection()
            .find(doc! {"status": {"$in": live}, "staged": true})
            .await?;
        let mut restored = 0;
        let mut batch = Vec::new();
        loop {
            let next = cursor.try_next().await?;
            if let Some(job) = next.as_ref().and_then(|m| Job::of(m, now)) {
                batch.push(job);
            }
            if batch.len() >= 1000 || (next.is_none() && !batch.is_empty()) {
                let (inserted, error) = self.stage(&batch).await;
                restored += inserted.len() as u64;
                if let Some(e) = error {
                    return Err(e);
                }
                batch.clear();
            }
            if next.is_none() {
                return Ok(restored);
            }
        }
    }
}
