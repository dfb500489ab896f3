//! The outbox side of `sms_messages`: the API publishes each stored message's event, marks it
//! published once RabbitMQ confirmed it, and republishes what stays unconfirmed or unstaged.
//!
//! Both sweeps read partial indexes holding only the messages they look for (unpublished ones;
//! pending unstaged ones), so they cost what is waiting, not what was ever sent.

use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use mongodb::options::IndexOptions;
use mongodb::IndexModel;
use serde::Deserialize;

use super::{Messages, INSERT_PIECE};
use crate::domain::status::Status;
use crate::time;

/// What a message's event carries: its id, its request's id, when it was accepted, and its
/// `priority_weight` (which decides the event's lane).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct OutboxRow {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub request_id: ObjectId,
    #[serde(rename = "created_at")]
    pub accepted_at: DateTime,
    /// Missing only from documents older than priorities: those are bulk.
    #[serde(default)]
    pub priority_weight: Option<i32>,
}

/// The partial index of messages whose event is not confirmed yet.
const UNPUBLISHED_INDEX: &str = "outbox_unpublished";
/// The partial index of pending messages no dispatcher has staged yet.
const UNSTAGED_INDEX: &str = "outbox_unstaged";

/// Indexes of earlier versions: leasing and timeouts read `sms_jobs` now, and the outbox's
/// sweeps have the partial indexes.
const RETIRED_INDEXES: [&str; 4] = ["lease_queue", "sending_timeout", "outbox", "unstaged"];

/// The outbox's indexes on `sms_messages`.
fn indexes() -> Vec<IndexModel> {
    let partial = |keys: Document, name: &str, only: Document| {
        IndexModel::builder()
            .keys(keys)
            .options(
                IndexOptions::builder()
                    .name(name.to_owned())
                    .partial_filter_expression(only)
                    .build(),
            )
            .build()
    };
    vec![
        partial(
            doc! {"created_at": 1},
            UNPUBLISHED_INDEX,
            doc! {"published": false},
        ),
        partial(
            doc! {"published_at": 1},
            UNSTAGED_INDEX,
            doc! {"staged": false, "status": Status::Pending.as_str()},
        ),
    ]
}

impl From<&super::Message> for OutboxRow {
    fn from(m: &super::Message) -> Self {
        Self {
            id: m.id,
            request_id: m.request_id,
            accepted_at: m.created_at,
            priority_weight: Some(m.priority_weight),
        }
    }
}

impl Messages {
    /// Creates the outbox's partial indexes and drops the retired ones.
    pub(super) async fn create_outbox_indexes(&self) -> mongodb::error::Result<()> {
        crate::db::ensure_indexes(&self.0, indexes()).await?;
        crate::db::drop_indexes(&self.0, &RETIRED_INDEXES).await
    }

    /// Marks messages whose events RabbitMQ confirmed, [`INSERT_PIECE`] at a time: a burst's
    /// marks are mostly still to write (staging has not reached them), and one write of a whole
    /// request's would hold the collection long enough to delay a one-time password's insert.
    /// Each piece is read first: a dispatcher that staged a message marked it already, and a
    /// write that finds nothing to change still holds the collection while it looks (reads
    /// hold nothing), so only the messages still unmarked are written.
    pub async fn mark_published(&self, ids: &[ObjectId]) -> mongodb::error::Result<u64> {
        let mut modified = 0;
        for piece in ids.chunks(INSERT_PIECE) {
            let unmarked = self.unmarked(piece).await?;
            if unmarked.is_empty() {
                continue;
            }
            let r = self
                .0
                .update_many(
                    doc! {"_id": {"$in": &unmarked}, "published": false},
                    doc! {"$set": {"published": true, "published_at": time::bson_now()}},
                )
                .await?;
            modified += r.modified_count;
        }
        Ok(modified)
    }

    /// Which of `ids` are not marked published.
    async fn unmarked(&self, ids: &[ObjectId]) -> mongodb::error::Result<Vec<ObjectId>> {
        crate::db::ids_matching(&self.0, doc! {"_id": {"$in": ids}, "published": false}).await
    }

    /// Moves the publication time of republished messages to now.
    pub async fn touch_published(&self, ids: &[ObjectId]) -> mongodb::error::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.0
            .update_many(
                doc! {"_id": {"$in": ids}},
                doc! {"$set": {"published_at": time::bson_now()}},
            )
            .await
            .map(|_| ())
    }

    /// Messages whose events are still unconfirmed and older than `before` (oldest first).
    pub async fn unpublished(
        &self,
        before: DateTime,
        limit: i64,
    ) -> mongodb::error::Result<Vec<OutboxRow>> {
        self.outbox_rows(
            doc! {"published": false, "created_at": {"$lt": before}},
            doc! {"created_at": 1},
            UNPUBLISHED_INDEX,
            limit,
        )
        .await
    }

    /// Pending messages whose event was confirmed before `before` but which no dispatcher has
    /// staged: their event was lost with a broker's data or dead-lettered after too many
    /// redeliveries during a long database outage. Oldest first.
    pub async fn published_unstaged(
        &self,
        before: DateTime,
        limit: i64,
    ) -> mongodb::error::Result<Vec<OutboxRow>> {
        self.outbox_rows(
            doc! {"staged": false, "status": Status::Pending.as_str(), "published_at": {"$lt": before}},
            doc! {"published_at": 1},
            UNSTAGED_INDEX,
            limit,
        )
        .await
    }

    /// What the outbox needs to rebuild an event, for the messages matching `filter`.
    async fn outbox_rows(
        &self,
        filter: Document,
        sort: Document,
        hint: &str,
        limit: i64,
    ) -> mongodb::error::Result<Vec<OutboxRow>> {
        let coll = self.0.clone_with_type::<OutboxRow>();
        let mut find = coll
            .find(filter)
            .projection(doc! {"_id": 1, "request_id": 1, "created_at": 1, "priority_weight": 1})
            .sort(sort)
            .limit(limit);
        if let Some(hint) = self.1.name(hint).await? {
            find = find.hint(hint);
        }
        find.await?.try_collect().await
    }
}
