//! Retention: with `MESSAGE_RETENTION_DAYS` set, the database removes settled messages that
//! long after they settled. A message gets `settled_at` when it reaches `SENT`, `DELIVERED`,
//! `FAILED` or `CANCELED` (a delivery receipt moves it on), and a TTL index on that field does
//! the removal; messages still waiting for or held by a phone have no `settled_at` and stay.
//! Counters (`stats_*`), requests and jobs are not affected.
//!
//! `sms-api create-indexes` makes the index match the setting: creates it, changes its
//! expiry in place (`collMod`), or drops it when the variable is unset (keep forever).

use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::doc;
use mongodb::options::IndexOptions;
use mongodb::IndexModel;

use super::Messages;

/// The TTL index on `settled_at`.
pub const RETENTION_INDEX: &str = "retention";

/// What [`Messages::apply_retention`] did to the TTL index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionChange {
    Unchanged,
    Created,
    Changed,
    Dropped,
}

impl Messages {
    /// Makes the TTL index on `settled_at` match `keep` (`None`: no index, keep forever).
    pub async fn apply_retention(
        &self,
        keep: Option<Duration>,
    ) -> mongodb::error::Result<RetentionChange> {
        let indexes: Vec<IndexModel> = self.0.list_indexes().await?.try_collect().await?;
        let current = indexes
            .iter()
            .filter_map(|i| i.options.as_ref())
            .find(|o| o.name.as_deref() == Some(RETENTION_INDEX))
            .map(|o| o.expire_after);
        match (current, keep) {
            (None, None) => Ok(RetentionChange::Unchanged),
            (Some(_), None) => {
                self.0.drop_index(RETENTION_INDEX).await?;
                Ok(RetentionChange::Dropped)
            }
            (Some(now), Some(keep)) if now == Some(keep) => Ok(RetentionChange::Unchanged),
            (Some(_), Some(keep)) => {
                let changed = self
                    .0
                    .client()
                    .database(self.0.namespace().db.as_str())
                    .run_command(doc! {
                        "collMod": self.0.name(),
                        "index": {"name": RETENTION_INDEX, "expireAfterSeconds": keep.as_secs() as i64},
                    })
                    .await;
                if changed.is_err() {
                    // A server without collMod for TTL indexes: replace the index.
                    self.0.drop_index(RETENTION_INDEX).await?;
                    self.0.create_index(ttl(keep)).await?;
                }
                Ok(RetentionChange::Changed)
            }
            (None, Some(keep)) => {
                self.0.create_index(ttl(keep)).await?;
                Ok(RetentionChange::Created)
            }
        }
    }
}

fn ttl(keep: Duration) -> IndexModel {
    IndexModel::builder()
        .keys(doc! {"settled_at": 1})
        .options(
            IndexOptions::builder()
                .name(RETENTION_INDEX.to_owned())
                .expire_after(keep)
                .build(),
        )
        .build()
}
