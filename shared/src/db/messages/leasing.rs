//! Leasing: an agent's poll claims its staged messages for a while, highest priority first.

use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime, Document};
use serde::Deserialize;

use super::{Message, Messages};
use crate::domain::status::Status;

/// A batch of messages leased by one poll.
#[derive(Debug, Clone, Default)]
pub struct Leased {
    /// The leased messages, highest `priority_weight` first, then oldest.
    pub messages: Vec<Message>,
    /// How many of them were `ASSIGNED` before, with an expired lease.
    pub re_leased: u64,
}

/// Staged messages of `agent` that may be leased at `now`: pending, or assigned with an
/// expired lease (or none: an agent may report `ASSIGNED` without leasing). `SENDING` and later
/// are never handed out again.
fn leasable(agent: ObjectId, now: DateTime) -> Document {
    doc! {
        "agent_id": agent,
        "staged": true,
        "$or": [
            {"status": Status::Pending.as_str()},
            {"status": Status::Assigned.as_str(), "lease_expires_at": {"$lte": now}},
            {"status": Status::Assigned.as_str(), "lease_expires_at": Bson::Null},
        ],
    }
}

/// The lease order: highest priority first, then oldest.
fn lease_order() -> Document {
    doc! {"priority_weight": -1, "created_at": 1, "_id": 1}
}

impl Messages {
    /// Leases up to `limit` of `agent`'s staged messages under the fresh `lease_id`.
    ///
    /// Candidates are picked in lease order, then claimed by one `update_many` that repeats the
    /// leasable filter, so a message another poll claimed in between is skipped, and read back
    /// by the lease id. Two polls never hold the same message while its lease is live.
    pub async fn lease(
        &self,
        agent: ObjectId,
        limit: i64,
        lease_id: &str,
        lease_for: std::time::Duration,
        now: DateTime,
    ) -> mongodb::error::Result<Leased> {
        if limit <= 0 {
            return Ok(Leased::default());
        }
        #[derive(Deserialize)]
        struct Candidate {
            #[serde(rename = "_id")]
            id: ObjectId,
            status: Status,
        }
        let candidates: Vec<Candidate> = self
            .0
            .clone_with_type::<Candidate>()
            .find(leasable(agent, now))
            .projection(doc! {"_id": 1, "status": 1})
            .sort(lease_order())
            .limit(limit)
            .await?
            .try_collect()
            .await?;
        if candidates.is_empty() {
            return Ok(Leased::default());
        }
        let ids: Vec<ObjectId> = candidates.iter().map(|c| c.id).collect();
        let expires = DateTime::from_millis(now.timestamp_millis() + lease_for.as_millis() as i64);
        let mut filter = leasable(agent, now);
        filter.insert("_id", doc! {"$in": &ids});
        let claimed = self
            .0
            .update_many(
                filter,
                doc! {
                    "$set": {
                        "status": Status::Assigned.as_str(),
                        "lease_id": lease_id,
                        "lease_expires_at": expires,
                        "leased_at": now,
                        "updated_at": now,
                    },
                    "$inc": {"attempts": 1},
                },
            )
            .await?;
        if claimed.modified_count == 0 {
            return Ok(Leased::default());
        }
        let messages: Vec<Message> = self
            .0
            .find(doc! {"_id": {"$in": &ids}, "lease_id": lease_id})
            .sort(lease_order())
            .await?
            .try_collect()
            .await?;
        let re_leased = messages
            .iter()
            .filter(|m| {
                candidates
                    .iter()
                    .any(|c| c.id == m.id && c.status == Status::Assigned)
            })
            .count() as u64;
        Ok(Leased {
            messages,
            re_leased,
        })
    }
}
