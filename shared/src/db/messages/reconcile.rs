//! What the reconciler asks of `sms_messages`: messages stuck in `SENDING` past their timeout,
//! and how many messages each agent holds.

use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime};

use super::Messages;
use crate::domain::status::Status;

impl Messages {
    /// Fails every message stuck in `SENDING` since before `cutoff` with `SENDING_TIMEOUT`.
    /// They are never handed out again.
    pub async fn fail_sending_timeouts(
        &self,
        cutoff: DateTime,
        now: DateTime,
    ) -> mongodb::error::Result<u64> {
        let r = self
            .0
            .update_many(
                doc! {"status": Status::Sending.as_str(), "sending_at": {"$lte": cutoff}},
                doc! {"$set": {
                    "status": Status::Failed.as_str(),
                    "last_error": "SENDING_TIMEOUT",
                    "failed_at": now,
                    "updated_at": now,
                }},
            )
            .await?;
        Ok(r.modified_count)
    }

    /// Messages each agent holds at `now`: `ASSIGNED` with a live lease, plus `SENDING`.
    pub async fn in_flight_by_agent(
        &self,
        now: DateTime,
    ) -> mongodb::error::Result<Vec<(ObjectId, i64)>> {
        let mut cursor = self
            .0
            .aggregate(vec![
                doc! {"$match": {"$or": [
                    {"status": Status::Assigned.as_str(), "lease_expires_at": {"$gt": now}},
                    {"status": Status::Sending.as_str()},
                ]}},
                doc! {"$group": {"_id": "$agent_id", "n": {"$sum": 1}}},
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
}
