//! Staging: a dispatcher that received a message's event makes the message visible to its agent,
//! or cancels it as a recent duplicate. Both only touch pending, unstaged messages, so a
//! redelivered event changes nothing.

use mongodb::bson::{doc, oid::ObjectId, DateTime};

use super::Messages;
use crate::domain::status::Status;

impl Messages {
    /// Makes pending, unstaged messages visible to their agents. Idempotent: returns how many
    /// were staged now (the others were staged or settled earlier).
    pub async fn stage_many(&self, ids: &[ObjectId], now: DateTime) -> mongodb::error::Result<u64> {
        let r = self
            .0
            .update_many(
                doc! {"_id": {"$in": ids}, "staged": false, "status": Status::Pending.as_str()},
                // A staged message's event evidently reached the broker: mark it published
                // too, which spares the API that write. `stagings` makes "staged twice"
                // countable by the fault scenarios.
                doc! {
                    "$set": {"staged": true, "staged_at": now, "updated_at": now, "published": true},
                    "$inc": {"stagings": 1},
                },
            )
            .await?;
        Ok(r.modified_count)
    }

    /// Cancels pending, unstaged messages as recent duplicates. Idempotent: returns how many
    /// were cancelled now.
    pub async fn cancel_duplicates(
        &self,
        ids: &[ObjectId],
        now: DateTime,
    ) -> mongodb::error::Result<u64> {
        let r = self
            .0
            .update_many(
                doc! {"_id": {"$in": ids}, "staged": false, "status": Status::Pending.as_str()},
                doc! {
                    "$set": {
                        "status": Status::Canceled.as_str(),
                        "last_error": "DUPLICATE_RECENT",
                        "staged_at": now,
                        "updated_at": now,
                        "published": true,
                    },
                    "$inc": {"stagings": 1},
                },
            )
            .await?;
        Ok(r.modified_count)
    }
}
