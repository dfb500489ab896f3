//! `sms_messages`: one document per recipient. The document is also its own outbox record
//! (`published`), and carries its staging, lease and delivery state.

use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime, Document};
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

use crate::domain::status::Status;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub request_id: ObjectId,
    /// The tenant: the API key that sent it, `None` for operator sends.
    pub api_key_id: Option<ObjectId>,
    pub client_name: String,
    pub agent_id: ObjectId,
    pub template_id: ObjectId,
    pub to: String,
    pub text: String,
    pub status: Status,
    pub priority_weight: i32,
    pub segments: i32,
    pub encoding: String,
    pub created_at: DateTime,
    pub updated_at: DateTime,
    /// Outbox marker: set once RabbitMQ confirmed the message's event.
    pub published: bool,
    #[serde(default)]
    pub published_at: Option<DateTime>,
    /// Visible to agents only once a dispatcher staged it.
    pub staged: bool,
    #[serde(default)]
    pub staged_at: Option<DateTime>,
    #[serde(default)]
    pub lease_id: Option<String>,
    #[serde(default)]
    pub lease_expires_at: Option<DateTime>,
    #[serde(default)]
    pub leased_at: Option<DateTime>,
    pub attempts: i32,
    #[serde(default)]
    pub sending_at: Option<DateTime>,
    #[serde(default)]
    pub sent_at: Option<DateTime>,
    #[serde(default)]
    pub delivered_at: Option<DateTime>,
    #[serde(default)]
    pub failed_at: Option<DateTime>,
    #[serde(default)]
    pub last_error: Option<String>,
}

/// Filters of message listings; the tenant filter is applied by the caller's credential.
#[derive(Debug, Default, Clone)]
pub struct MessageFilter {
    pub tenant: Option<ObjectId>,
    pub request_id: Option<ObjectId>,
    pub status: Option<Status>,
    pub agent_id: Option<ObjectId>,
    pub to: Option<String>,
    pub from: Option<DateTime>,
    pub until: Option<DateTime>,
}

impl MessageFilter {
    pub fn to_document(&self) -> Document {
        let mut f = doc! {};
        if let Some(t) = self.tenant {
            f.insert("api_key_id", t);
        }
        if let Some(r) = self.request_id {
            f.insert("request_id", r);
        }
        if let Some(s) = self.status {
            f.insert("status", s.as_str());
        }
        if let Some(a) = self.agent_id {
            f.insert("agent_id", a);
        }
        if let Some(to) = &self.to {
            f.insert("to", to);
        }
        let mut created = doc! {};
        if let Some(t) = self.from {
            created.insert("$gte", t);
        }
        if let Some(t) = self.until {
            created.insert("$lt", t);
        }
        if !created.is_empty() {
            f.insert("created_at", created);
        }
        f
    }
}

/// What staging one message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staged {
    /// Made visible to its agent now.
    Staged,
    /// Canceled as a recent duplicate now.
    CanceledDuplicate,
    /// Already staged or canceled earlier (a redelivered or republished event).
    AlreadyDone,
}

#[derive(Clone)]
pub struct Messages(Collection<Message>);

impl Messages {
    pub fn new(db: &Database) -> Self {
        Self(db.collection("sms_messages"))
    }

    pub fn collection(&self) -> &Collection<Message> {
        &self.0
    }

    pub async fn create_indexes(&self) -> mongodb::error::Result<()> {
        super::ensure_indexes(
            &self.0,
            vec![
                super::index(doc! {"request_id": 1, "_id": 1}, false, "request"),
                super::index(doc! {"api_key_id": 1, "created_at": -1}, false, "tenant_created"),
                super::index(doc! {"created_at": 1, "_id": 1}, false, "created_id"),
                super::index(doc! {"status": 1, "created_at": -1}, false, "status_created"),
                super::index(doc! {"to": 1, "created_at": -1}, false, "to_created"),
                super::index(
                    doc! {"agent_id": 1, "staged": 1, "status": 1, "priority_weight": -1, "created_at": 1},
                    false,
                    "lease_queue",
                ),
                super::index(doc! {"published": 1, "created_at": 1}, false, "outbox"),
                super::index(doc! {"status": 1, "sending_at": 1}, false, "sending_timeout"),
            ],
        )
        .await
    }

    /// Inserts a request's messages in bulk (the driver splits large batches).
    pub async fn insert_many(&self, messages: &[Message]) -> mongodb::error::Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        self.0
            .insert_many(messages)
            .ordered(false)
            .await
            .map(|_| ())
    }

    pub async fn delete_request(&self, request_id: ObjectId) -> mongodb::error::Result<()> {
        self.0
            .delete_many(doc! {"request_id": request_id})
            .await
            .map(|_| ())
    }

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

    /// Messages whose events are still unconfirmed and older than `before` (oldest first).
    pub async fn unpublished(
        &self,
        before: DateTime,
        limit: i64,
    ) -> mongodb::error::Result<Vec<(ObjectId, ObjectId, DateTime)>> {
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
            .find(doc! {"published": false, "created_at": {"$lt": before}})
            .projection(doc! {"_id": 1, "request_id": 1, "created_at": 1})
            .sort(doc! {"published": 1, "created_at": 1})
            .limit(limit)
            .await?
            .try_collect()
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.id, r.request_id, r.created_at))
            .collect())
    }

    pub async fn find(&self, id: ObjectId) -> mongodb::error::Result<Option<Message>> {
        self.0.find_one(doc! {"_id": id}).await
    }

    /// The message if `tenant` may see it (`None`: an operator sees all).
    pub async fn find_for(
        &self,
        id: ObjectId,
        tenant: Option<ObjectId>,
    ) -> mongodb::error::Result<Option<Message>> {
        let mut f = doc! {"_id": id};
        if let Some(key) = tenant {
            f.insert("api_key_id", key);
        }
        self.0.find_one(f).await
    }

    /// A page of messages, newest first, with the total matching count.
    pub async fn list(
        &self,
        filter: &MessageFilter,
        limit: i64,
        skip: u64,
    ) -> mongodb::error::Result<(Vec<Message>, u64)> {
        let f = filter.to_document();
        let total = self.0.count_documents(f.clone()).await?;
        let sort = if filter.request_id.is_some() {
            doc! {"request_id": 1, "_id": 1}
        } else {
            doc! {"created_at": -1, "_id": -1}
        };
        let items = self
            .0
            .find(f)
            .sort(sort)
            .skip(skip)
            .limit(limit)
            .await?
            .try_collect()
            .await?;
        Ok((items, total))
    }

    /// How many of a request's messages are in each status.
    pub async fn status_counts(
        &self,
        request_id: ObjectId,
    ) -> mongodb::error::Result<Vec<(String, i64)>> {
        let mut cursor = self
            .0
            .aggregate(vec![
                doc! {"$match": {"request_id": request_id}},
                doc! {"$group": {"_id": "$status", "n": {"$sum": 1}}},
            ])
            .await?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await? {
            let status = d.get_str("_id").unwrap_or_default().to_owned();
            let n = match d.get("n") {
                Some(Bson::Int32(n)) => *n as i64,
                Some(Bson::Int64(n)) => *n,
                Some(Bson::Double(n)) => *n as i64,
                _ => 0,
            };
            out.push((status, n));
        }
        Ok(out)
    }

    /// Makes a pending, unstaged message visible to its agent. Idempotent.
    pub async fn stage(&self, id: ObjectId, now: DateTime) -> mongodb::error::Result<Staged> {
        let r = self
            .0
            .update_one(
                doc! {"_id": id, "staged": false, "status": Status::Pending.as_str()},
                doc! {"$set": {"staged": true, "staged_at": now, "updated_at": now}},
            )
            .await?;
        Ok(if r.modified_count == 1 {
            Staged::Staged
        } else {
            Staged::AlreadyDone
        })
    }

    /// Cancels a pending, unstaged message as a recent duplicate. Idempotent.
    pub async fn cancel_duplicate(
        &self,
        id: ObjectId,
        now: DateTime,
    ) -> mongodb::error::Result<Staged> {
        let r = self
            .0
            .update_one(
                doc! {"_id": id, "staged": false, "status": Status::Pending.as_str()},
                doc! {"$set": {
                    "status": Status::Canceled.as_str(),
                    "last_error": "DUPLICATE_RECENT",
                    "staged_at": now,
                    "updated_at": now,
                }},
            )
            .await?;
        Ok(if r.modified_count == 1 {
            Staged::CanceledDuplicate
        } else {
            Staged::AlreadyDone
        })
    }
}
