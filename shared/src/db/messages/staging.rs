//! Staging, the messages' side: once a dispatcher inserted a message's job (`db::jobs`), the
//! message is marked staged (and published: its event evidently reached the broker); a recent
//! duplicate is cancelled instead. Both only touch messages not staged yet, so a redelivered
//! event changes nothing.

use mongodb::bson::{doc, oid::ObjectId, DateTime};

use super::Messages;
use crate::db::stats::Transition;
use crate::domain::status::Status;

impl Messages {
    /// Marks the messages whose jobs were inserted now as staged and published, and counts the
    /// staging on them (`stagings`) in the same write. `stagings` above 1 means a message got a
    /// job twice, which the fault scenarios count as "staged twice". A message another dispatcher
    /// marked first (it handled the same event, and its job insert came second) takes this
    /// dispatcher's time.
    pub async fn stage_inserted(
        &self,
        ids: &[ObjectId],
        now: DateTime,
    ) -> mongodb::error::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.0
            .update_many(
                doc! {"_id": {"$in": ids}, "status": {"$ne": Status::Canceled.as_str()}},
                doc! {
                    "$inc": {"stagings": 1},
                    "$set": {"staged": true, "staged_at": now, "updated_at": now, "published": true},
                },
            )
            .await
            .map(|_| ())
    }

    /// Marks messages whose jobs exist (inserted by an earlier delivery of their event) as
    /// staged and published. A phone may already have
    /// leased or even sent one (the job comes first), so any status but `CANCELED` is marked.
    /// Idempotent: returns how many were marked now.
    pub async fn mark_staged(
        &self,
        ids: &[ObjectId],
        now: DateTime,
    ) -> mongodb::error::Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let r = self
            .0
            .update_many(
                doc! {
                    "_id": {"$in": ids},
                    "staged": false,
                    "status": {"$ne": Status::Canceled.as_str()},
                },
                doc! {"$set": {"staged": true, "staged_at": now, "updated_at": now, "published": true}},
            )
            .await?;
        Ok(r.modified_count)
    }

    /// Cancels pending, unstaged messages as recent duplicates, one conditional write each so
    /// that each cancellation is counted by the dispatcher that made it. Idempotent. Returns the
    /// cancellations made, and the first failure (the others still count).
    pub async fn cancel_duplicates(
        &self,
        ids: &[ObjectId],
        now: DateTime,
    ) -> (Vec<Transition>, mongodb::error::Result<()>) {
        let cancels = ids.iter().map(|id| {
            self.move_one(
                doc! {"_id": id, "staged": false, "status": Status::Pending.as_str()},
                doc! {
                    "$set": {
                        "status": Status::Canceled.as_str(),
                        "last_error": "DUPLICATE_RECENT",
                        "staged_at": now,
                        "settled_at": now,
                        "updated_at": now,
                        "published": true,
                    },
                    "$inc": {"stagings": 1},
                },
                Status::Canceled,
                None,
            )
        });
        super::transition::gathered(futures::future::join_all(cancels).await)
    }
}
