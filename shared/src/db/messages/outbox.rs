//! The outbox side of `sms_messages`: the API publishes each stored message's event, marks it
//! published once RabbitMQ confirmed it, and republishes what stays unconfirmed or unstaged.

use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use serde::Deserialize;

use super::Messages;
use crate::domain::status::Status;

/// A message's id, its request's id and when it was accepted: what its event carries.
pub type OutboxRow = (ObjectId, ObjectId, DateTime);

impl Messages {
    /// Marks messages whose events RabbitMQ confirmed.
    pub async fn mark_published(&self, ids: &[ObjectId]) -> mongodb::error::Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let r = self
            .0
            .update_many(
                doc! {"_id": {"$in": ids}, "published": false},
                doc! {"$set": {"published": true, "published_at": DateTime::now()}},
            )
            .await?;
        Ok(r.modified_count)
    }

    /// Moves the publication time of republished messages to now.
    pub async fn touch_published(&self, ids: &[ObjectId]) -> mongodb::error::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.0
            .update_many(
                doc! {"_id": {"$in": ids}},
                doc! {"$set": {"published_at": DateTime::now()}},
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
            doc! {"published": 1, "created_at": 1},
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
            doc! {"staged": false, "published_at": {"$lt": before}, "status": Status::Pending.as_str()},
            doc! {"staged": 1, "published_at": 1},
            limit,
        )
        .await
    }

    /// What the outbox needs to rebuild an event, for the messages matching `filter`.
    async fn outbox_rows(
        &self,
        filter: Document,
        sort: Document,
        limit: i64,
    ) -> mongodb::error::Result<Vec<OutboxRow>> {
        #[derive(Deserialize)]
        struct Row {
            #[serde(rename = "_id")]
            id: ObjectId,
            request_id: ObjectId,
            created_at: DateTime,
        }
        let rows: Vec<Row> = self
            .0
            .clone_with_type::<Row>()
            .find(filter)
            .projection(doc! {"_id": 1, "request_id": 1, "created_at": 1})
            .sort(sort)
            .limit(limit)
            .await?
            .try_collect()
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.id, r.request_id, r.created_at))
            .collect())
    }
}
