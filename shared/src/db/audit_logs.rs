//! `audit_logs`: one entry per operator write, and per agent token issued (registrations and
//! rotations, whoever proved them).

use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

/// Who did what to which object, when and from where.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditLog {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// An operator's name, `agent:<agent_id>` for an agent's own token, or
    /// `registration-secret` for a device that proved the registration secret.
    pub actor: String,
    pub action: String,
    pub target_type: String,
    pub target_id: Option<String>,
    pub at: DateTime,
    pub ip: Option<String>,
    #[serde(default)]
    pub details: Document,
}

/// Filters for listing audit entries.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub from: Option<DateTime>,
    pub until: Option<DateTime>,
}

impl AuditFilter {
    fn to_document(&self) -> Document {
        let mut f = doc! {};
        if let Some(a) = &self.actor {
            f.insert("actor", a);
        }
        if let Some(a) = &self.action {
            f.insert("action", a);
        }
        let mut at = doc! {};
        if let Some(t) = self.from {
            at.insert("$gte", t);
        }
        if let Some(t) = self.until {
            at.insert("$lt", t);
        }
        if !at.is_empty() {
            f.insert("at", at);
        }
        f
    }
}

impl AuditLog {
    /// A new entry stamped now.
    pub fn new(
        actor: impl Into<String>,
        action: &str,
        target_type: &str,
        target_id: Option<String>,
        ip: Option<String>,
        details: Document,
    ) -> Self {
        Self {
            id: ObjectId::new(),
            actor: actor.into(),
            action: action.to_owned(),
            target_type: target_type.to_owned(),
            target_id,
            at: DateTime::now(),
            ip,
            details,
        }
    }
}

#[derive(Clone)]
pub struct AuditLogs(Collection<AuditLog>);

impl AuditLogs {
    pub fn new(db: &Database) -> Self {
        Self(db.collection("audit_logs"))
    }

    pub async fn create_indexes(&self) -> mongodb::error::Result<()> {
        super::ensure_indexes(
            &self.0,
            vec![
                super::index(doc! {"at": -1}, false, "at"),
                super::index(doc! {"actor": 1, "at": -1}, false, "actor_at"),
                super::index(doc! {"action": 1, "at": -1}, false, "action_at"),
            ],
        )
        .await
    }

    pub async fn insert(&self, entry: &AuditLog) -> mongodb::error::Result<()> {
        self.0.insert_one(entry).await.map(|_| ())
    }

    /// Withdraws an entry recorded ahead of a change that then did not happen.
    pub async fn remove(&self, id: ObjectId) -> mongodb::error::Result<()> {
        self.0.delete_one(doc! {"_id": id}).await.map(|_| ())
    }

    /// Newest first, with the total matching count.
    pub async fn list(
        &self,
        filter: &AuditFilter,
        limit: i64,
        skip: u64,
    ) -> mongodb::error::Result<(Vec<AuditLog>, u64)> {
        let f = filter.to_document();
        let total = self.0.count_documents(f.clone()).await?;
        let items = self
            .0
            .find(f)
            .sort(doc! {"at": -1, "_id": -1})
            .skip(skip)
            .limit(limit)
            .await?
            .try_collect()
            .await?;
        Ok((items, total))
    }
}
