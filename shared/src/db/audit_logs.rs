//! `audit_logs`: one entry per operator write, and per agent token issued (registrations and
//! rotations, whoever proved them); listed newest first by `_id`, which carries the entry's
//! second (see `db::paging`).

use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

use super::hints::Hints;
use super::paging::{self, Keyed, ListIndex, ListQuery, Listing, PageRequest};

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

impl AuditLog {
    /// A new entry stamped now; its id carries the same second as `at`.
    pub fn new(
        actor: impl Into<String>,
        action: &str,
        target_type: &str,
        target_id: Option<String>,
        ip: Option<String>,
        details: Document,
    ) -> Self {
        let at = crate::time::bson_now();
        Self {
            id: paging::id_at(at),
            actor: actor.into(),
            action: action.to_owned(),
            target_type: target_type.to_owned(),
            target_id,
            at,
            ip,
            details,
        }
    }
}

impl Keyed for AuditLog {
    fn key(&self) -> ObjectId {
        self.id
    }
}

/// The indexes of the audit list (no filter: MongoDB's own `_id_`).
pub mod indexes {
    use super::ListIndex;

    pub const ALL: &str = "_id_";
    pub const ACTOR: ListIndex = ListIndex {
        name: "list_actor",
        fields: &["actor"],
    };
    pub const ACTION: ListIndex = ListIndex {
        name: "list_action",
        fields: &["action"],
    };
    pub const ACTOR_ACTION: ListIndex = ListIndex {
        name: "list_actor_action",
        fields: &["actor", "action"],
    };
}

impl AuditFilter {
    /// The list query of these filters on the index that serves them.
    pub fn list_query(&self) -> ListQuery {
        let mut equals = doc! {};
        if let Some(a) = &self.actor {
            equals.insert("actor", a);
        }
        if let Some(a) = &self.action {
            equals.insert("action", a);
        }
        let index = match (&self.actor, &self.action) {
            (None, None) => indexes::ALL,
            (Some(_), None) => indexes::ACTOR.name,
            (None, Some(_)) => indexes::ACTION.name,
            (Some(_), Some(_)) => indexes::ACTOR_ACTION.name,
        };
        ListQuery {
            equals,
            time_field: "at",
            from: self.from,
            until: self.until,
            index,
            bounded: false,
            hint: true,
        }
    }
}

/// The `audit_logs` collection.
#[derive(Clone)]
pub struct AuditLogs(Collection<AuditLog>, Hints);

impl AuditLogs {
    pub fn new(db: &Database, hints: Hints) -> Self {
        Self(db.collection("audit_logs"), hints)
    }

    pub fn collection(&self) -> &Collection<AuditLog> {
        &self.0
    }

    pub async fn create_indexes(&self) -> mongodb::error::Result<()> {
        super::ensure_indexes(
            &self.0,
            vec![
                indexes::ACTOR.model(),
                indexes::ACTION.model(),
                indexes::ACTOR_ACTION.model(),
            ],
        )
        .await?;
        // Replaced by the `_id`-ordered ones above.
        super::drop_indexes(&self.0, &["at", "actor_at", "action_at"]).await
    }

    pub async fn insert(&self, entry: &AuditLog) -> mongodb::error::Result<()> {
        self.0.insert_one(entry).await.map(|_| ())
    }

    /// Withdraws an entry recorded ahead of a change that then did not happen.
    pub async fn remove(&self, id: ObjectId) -> mongodb::error::Result<()> {
        self.0.delete_one(doc! {"_id": id}).await.map(|_| ())
    }

    /// A page of entries, newest first; see `db::paging` for `after`, `skip` and `total`.
    pub async fn list(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> mongodb::error::Result<Listing<AuditLog>> {
        let mut query = filter.list_query();
        query.hint = self.1.wanted().await?;
        paging::newest_first(&self.0, &query, page, crate::time::bson_now()).await
    }
}
