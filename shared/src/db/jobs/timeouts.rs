//! Jobs stuck in `SENDING`: a phone that died after reporting `SENDING` never says what became
//! of the message, and it must not be sent twice. The reconciler fails their messages, then
//! removes the jobs.

use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, DateTime};

use super::{Job, Jobs};
use crate::domain::status::Status;

/// The index of `SENDING` jobs by the time they started sending.
pub(super) const TIMEOUT_INDEX: &str = "sending_timeout";

impl Jobs {
    /// Up to `limit` jobs in `SENDING` since `cutoff` or earlier, oldest first.
    pub async fn sending_since(
        &self,
        cutoff: DateTime,
        limit: i64,
    ) -> mongodb::error::Result<Vec<Job>> {
        let mut find = self
            .0
            .find(doc! {"status": Status::Sending.as_str(), "sending_at": {"$lte": cutoff}})
            .sort(doc! {"status": 1, "sending_at": 1})
            .limit(limit);
        if let Some(hint) = self.1.name(TIMEOUT_INDEX).await? {
            find = find.hint(hint);
        }
        find.await?.try_collect().await
    }

    /// Removes the jobs of `ids` still in `SENDING` since `cutoff` or earlier.
    pub async fn remove_timed_out(
        &self,
        ids: &[ObjectId],
        cutoff: DateTime,
    ) -> mongodb::error::Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let r = self
            .0
            .delete_many(doc! {
                "_id": {"$in": ids},
                "status": Status::Sending.as_str(),
                "sending_at": {"$lte": cutoff},
            })
            .await?;
        Ok(r.deleted_count)
    }
}
