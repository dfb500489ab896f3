//! The fence of agents' status reports: a report may move a job only when the reporting agent
//! holds it (or nobody does and it is pinned to that agent: a pool job nobody holds is nobody's
//! to report on), the job is in one of the reported status's allowed predecessors and, when the
//! report names a lease, under that lease. One conditional write decides, so a late or foreign
//! report changes nothing. [`Jobs::report_many`] applies the same fence to many messages at once
//! (one agent, status and lease), for the batches phones send.

use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime, Document};

use super::{lane, Job, Jobs};
use crate::domain::status::Status;

/// What a report does to the job it passes the fence of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStep {
    /// The job stays, with this status (`ASSIGNED`, `SENDING`).
    Advance,
    /// The phone is done with it (`SENT`, `FAILED`): the job is removed.
    Finish,
}

impl JobStep {
    /// The step a report of `status` takes on a job; `None` when no job can be in a
    /// predecessor of `status` (`DELIVERED` follows `SENT`, which has no job).
    pub fn of(status: Status) -> Option<Self> {
        match status {
            Status::Assigned | Status::Sending => Some(Self::Advance),
            Status::Sent | Status::Failed => Some(Self::Finish),
            _ => None,
        }
    }
}

impl Job {
    /// Whether `agent` may report on this job: it holds it, or nobody does and it is pinned to
    /// `agent`.
    pub fn reportable_by(&self, agent: ObjectId) -> bool {
        match self.holder {
            Some(holder) => holder == agent,
            None => self.pinned_agent() == Some(agent),
        }
    }
}

/// The fence of a report by `agent` that message `id` (an id, or `{"$in": [ids]}`) reached
/// `status`.
fn fence(agent: ObjectId, id: impl Into<Bson>, status: Status, lease_id: Option<&str>) -> Document {
    let predecessors: Vec<&str> = Status::allowed_predecessors(status)
        .into_iter()
        .map(Status::as_str)
        .collect();
    let mut f = doc! {
        "status": {"$in": predecessors},
        "$or": [
            {"holder": agent},
            {"holder": Bson::Null, "pool": {"$ne": true}, "lanes": lane(agent)},
        ],
    };
    if let Some(lease) = lease_id {
        f.insert("lease_id", lease);
    }
    crate::db::by_id_and(id, f)
}

impl Jobs {
    /// Applies `agent`'s report of `status` to the job of message `id` if it passes the fence:
    /// `SENDING` and `ASSIGNED` update it (a `SENDING` job loses `available_at`), `SENT` and
    /// `FAILED` remove it. Returns whether the fence let it through.
    pub async fn report(
        &self,
        agent: ObjectId,
        id: ObjectId,
        status: Status,
        lease_id: Option<&str>,
        now: DateTime,
    ) -> mongodb::error::Result<bool> {
        Ok(self
            .report_many(agent, &[id], status, lease_id, now)
            .await?
            == 1)
    }

    /// [`Jobs::report`] for the jobs of the messages `ids` at once: one write. Returns how many
    /// passed the fence; which ones, when not all, is for the caller to find out.
    pub async fn report_many(
        &self,
        agent: ObjectId,
        ids: &[ObjectId],
        status: Status,
        lease_id: Option<&str>,
        now: DateTime,
    ) -> mongodb::error::Result<u64> {
        let Some(step) = JobStep::of(status) else {
            return Ok(0);
        };
        let id: Bson = match ids {
            [one] => (*one).into(),
            _ => doc! {"$in": ids}.into(),
        };
        let fence = fence(agent, id, status, lease_id);
        let gate = &self.2;
        Ok(match step {
            JobStep::Finish => {
                gate.bulk_write(self.0.delete_many(fence))
                    .await?
                    .deleted_count
            }
            JobStep::Advance => {
                let mut update = doc! {"$set": {"status": status.as_str(), "holder": agent}};
                if status == Status::Sending {
                    update = doc! {
                        "$set": {"status": status.as_str(), "holder": agent, "sending_at": now},
                        "$unset": {"available_at": ""},
                    };
                }
                gate.bulk_write(self.0.update_many(fence, update))
                    .await?
                    .matched_count
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_finds_its_jobs_by_id_and_checks_the_rest_on_them() {
        let (agent, id) = (ObjectId::new(), ObjectId::new());
        let f = fence(agent, id, Status::Sent, Some("lease"));
        assert_eq!(f.keys().collect::<Vec<_>>(), ["$and"]);
        let conjuncts = f.get_array("$and").unwrap();
        assert_eq!(conjuncts[0], Bson::Document(doc! {"_id": id}));
        let rest = conjuncts[1].as_document().unwrap();
        assert_eq!(rest.get_str("lease_id"), Ok("lease"));
        assert!(rest.contains_key("$or") && rest.contains_key("status"));
    }
}
