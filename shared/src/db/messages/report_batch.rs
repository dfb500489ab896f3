//! Agents' status reports in bulk: a phone reports its poll's messages together (`SENT` for all
//! of them, then `DELIVERED`), and applying those one by one costs a write on the job, a write
//! on the message and the counters' writes per message. [`Messages::report_group`] applies the
//! reports of one agent that share a status, lease and error with a few writes for the whole
//! group, deciding exactly what [`Messages::report`] would decide for each:
//!
//! 1. the jobs' fence, once for all (`Jobs::report_many`); unless every job passes, the whole
//!    group is left to the one-by-one path, which finds the jobs that did pass gone or advanced
//!    and judges them as it judges a retried report;
//! 2. the messages are read once (status, agent, lease: what the one-by-one path checks, and what
//!    the counters need), and those that may move are moved with one `update_many` per previous
//!    (status, agent) place, so every change made is known exactly;
//! 3. when such a write moved fewer messages than it was given (another writer got there in
//!    between), the tag the write stamped (`report_batch`) tells which ones it moved.
//!
//! Anything not moved here (a message in an unexpected status, a foreign or stale report) is
//! returned to be applied one by one, which explains it.

use std::collections::{BTreeMap, HashSet};

use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime};
use serde::Deserialize;

use super::transition::Before;
use super::{Messages, Report};
use crate::db::jobs::{JobStep, Jobs};
use crate::db::stats::Transition;
use crate::domain::status::Status;

/// Reports by one agent that each of `ids` (distinct messages) reached `status`, naming
/// `lease_id` (or none) and, for `FAILED`, `error`.
#[derive(Debug, Clone)]
pub struct ReportGroup<'a> {
    pub agent: ObjectId,
    pub status: Status,
    pub lease_id: Option<&'a str>,
    pub error: Option<&'a str>,
    pub ids: Vec<ObjectId>,
}

/// What [`Messages::report_group`] did.
#[derive(Debug, Default)]
pub struct GroupOutcome {
    /// Messages that moved to the reported status.
    pub applied: Vec<ObjectId>,
    /// The changes made, for the counters.
    pub moved: Vec<Transition>,
    /// Messages left to the one-by-one path.
    pub rest: Vec<ObjectId>,
}

/// A message as the bulk path judges it.
#[derive(Debug, Deserialize)]
struct Current {
    #[serde(rename = "_id")]
    id: ObjectId,
    status: Status,
    #[serde(default)]
    agent_id: Option<ObjectId>,
    created_at: DateTime,
    #[serde(default)]
    api_key_id: Option<ObjectId>,
    client_name: String,
    segments: i32,
    #[serde(default)]
    staged: bool,
    #[serde(default)]
    lease_id: Option<String>,
}

impl Current {
    /// Whether a delivery receipt (no job) of `g` may move this message: the one-by-one path's
    /// checks (its agent's, handed out, under the lease named).
    fn takes_receipt(&self, g: &ReportGroup<'_>) -> bool {
        let handed_out = self.staged || self.lease_id.is_some();
        let lease_ok = g
            .lease_id
            .is_none_or(|l| self.lease_id.as_deref() == Some(l));
        self.agent_id == Some(g.agent) && handed_out && lease_ok
    }

    fn before(self) -> Before {
        Before {
            status: self.status,
            agent_id: self.agent_id,
            created_at: self.created_at,
            api_key_id: self.api_key_id,
            client_name: self.client_name,
            segments: self.segments,
        }
    }
}

impl Messages {
    /// Applies a group of reports with a few writes; see the module's documentation.
    pub async fn report_group(
        &self,
        jobs: &Jobs,
        g: &ReportGroup<'_>,
        now: DateTime,
    ) -> mongodb::error::Result<GroupOutcome> {
        let everything_left = || GroupOutcome {
            rest: g.ids.clone(),
            ..GroupOutcome::default()
        };
        let step = JobStep::of(g.status);
        if step.is_none() && g.status != Status::Delivered {
            return Ok(everything_left());
        }
        if step.is_some() {
            let passed = jobs
                .report_many(g.agent, &g.ids, g.status, g.lease_id, now)
                .await?;
            if passed != g.ids.len() as u64 {
                return Ok(everything_left());
            }
        }
        let predecessors = Status::allowed_predecessors(g.status);
        let mut out = GroupOutcome::default();
        let mut places: BTreeMap<(Status, Option<ObjectId>), Vec<Current>> = BTreeMap::new();
        let mut found = HashSet::new();
        for m in self.current(&g.ids).await? {
            found.insert(m.id);
            if predecessors.contains(&m.status) && (step.is_some() || m.takes_receipt(g)) {
                places.entry((m.status, m.agent_id)).or_default().push(m);
            } else {
                out.rest.push(m.id);
            }
        }
        // Unknown ids: the one-by-one path answers them.
        out.rest
            .extend(g.ids.iter().filter(|id| !found.contains(*id)).copied());
        for ((from, agent), messages) in places {
            self.move_place(g, from, agent, messages, now, &mut out)
                .await?;
        }
        Ok(out)
    }

    async fn current(&self, ids: &[ObjectId]) -> mongodb::error::Result<Vec<Current>> {
        let mut projection = super::transition::Before::projection();
        projection.insert("staged", 1);
        projection.insert("lease_id", 1);
        self.0
            .clone_with_type::<Current>()
            .find(doc! {"_id": {"$in": ids}})
            .projection(projection)
            .await?
            .try_collect()
            .await
    }

    /// Moves the `messages` found at (`from`, `agent`) to the reported status with one write.
    async fn move_place(
        &self,
        g: &ReportGroup<'_>,
        from: Status,
        agent: Option<ObjectId>,
        messages: Vec<Current>,
        now: DateTime,
        out: &mut GroupOutcome,
    ) -> mongodb::error::Result<()> {
        let ids: Vec<ObjectId> = messages.iter().map(|m| m.id).collect();
        let tag = ObjectId::new();
        let report = Report {
            agent: g.agent,
            message_id: ids[0],
            status: g.status,
            lease_id: g.lease_id,
            error: g.error,
        };
        let mut update = report.update(now);
        if let Ok(set) = update.get_document_mut("$set") {
            set.insert("report_batch", tag);
        }
        let mut filter = doc! {
            "_id": {"$in": &ids},
            "status": from.as_str(),
            "agent_id": agent.map_or(Bson::Null, Bson::from),
        };
        if let (None, Some(lease)) = (JobStep::of(g.status), g.lease_id) {
            filter.insert("lease_id", lease);
        }
        let modified = self
            .2
            .bulk_write(self.0.update_many(filter, update))
            .await?
            .modified_count;
        let moved: HashSet<ObjectId> = if modified == ids.len() as u64 {
            ids.iter().copied().collect()
        } else {
            crate::db::ids_matching(&self.0, doc! {"_id": {"$in": &ids}, "report_batch": tag})
                .await?
                .into_iter()
                .collect()
        };
        for m in messages {
            if moved.contains(&m.id) {
                out.applied.push(m.id);
                out.moved.push(m.before().to(g.status, None));
            } else {
                out.rest.push(m.id);
            }
        }
        Ok(())
    }
}
