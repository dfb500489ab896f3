//! `api_keys`: client credentials. Only the SHA-256 digest of a key is stored.
//!
//! A key may be restricted to some agents (`agent_ids`): its requests may then only pin to, or
//! pool within, those phones. `None` leaves it unrestricted.

use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, DateTime};
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

pub const SCOPE_SEND: &str = "sms:send";
pub const SCOPE_READ: &str = "sms:read";
pub const SCOPES: [&str; 2] = [SCOPE_SEND, SCOPE_READ];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKey {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub client_name: String,
    pub scopes: Vec<String>,
    pub rate_limit_per_day: i64,
    /// The first characters of the plain key, to recognise it in lists.
    pub key_prefix: String,
    pub key_hash: String,
    pub is_active: bool,
    pub created_at: DateTime,
    pub created_by: String,
    #[serde(default)]
    pub revoked_at: Option<DateTime>,
    /// The only agents its requests may use; `None`: any agent.
    #[serde(default)]
    pub agent_ids: Option<Vec<ObjectId>>,
}

/// An operator's change of an API key: each field given is set (`agent_ids: Some(None)` lifts
/// the restriction).
#[derive(Debug, Clone, Default)]
pub struct ApiKeyChanges {
    pub agent_ids: Option<Option<Vec<ObjectId>>>,
    pub rate_limit_per_day: Option<i64>,
}

#[derive(Clone)]
pub struct ApiKeys(Collection<ApiKey>);

impl ApiKeys {
    pub fn new(db: &Database) -> Self {
        Self(db.collection("api_keys"))
    }

    pub async fn create_indexes(&self) -> mongodb::error::Result<()> {
        super::ensure_indexes(
            &self.0,
            vec![
                super::index(doc! {"key_hash": 1}, true, "key_hash_unique"),
                super::index(doc! {"created_at": -1}, false, "created_at"),
            ],
        )
        .await
    }

    pub async fn insert(&self, key: &ApiKey) -> mongodb::error::Result<()> {
        self.0.insert_one(key).await.map(|_| ())
    }

    pub async fn find_by_hash(&self, hash: &str) -> mongodb::error::Result<Option<ApiKey>> {
        self.0.find_one(doc! {"key_hash": hash}).await
    }

    pub async fn find(&self, id: ObjectId) -> mongodb::error::Result<Option<ApiKey>> {
        self.0.find_one(doc! {"_id": id}).await
    }

    pub async fn list(&self) -> mongodb::error::Result<Vec<ApiKey>> {
        self.0
            .find(doc! {})
            .sort(doc! {"created_at": -1})
            .await?
            .try_collect()
            .await
    }

    /// Applies `changes` to key `id`; the key as it is now, `None` if unknown.
    pub async fn update(
        &self,
        id: ObjectId,
        changes: &ApiKeyChanges,
    ) -> mongodb::error::Result<Option<ApiKey>> {
        let mut set = doc! {};
        if let Some(agents) = &changes.agent_ids {
            set.insert("agent_ids", agents.clone());
        }
        if let Some(limit) = changes.rate_limit_per_day {
            set.insert("rate_limit_per_day", limit);
        }
        if set.is_empty() {
            return self.find(id).await;
        }
        self.0
            .find_one_and_update(doc! {"_id": id}, doc! {"$set": set})
            .return_document(mongodb::options::ReturnDocument::After)
            .await
    }

    /// Marks the key revoked. Returns the key as it is now, `None` if unknown.
    pub async fn revoke(&self, id: ObjectId) -> mongodb::error::Result<Option<ApiKey>> {
        self.0
            .find_one_and_update(
                doc! {"_id": id},
                vec![doc! {"$set": {
                    "is_active": false,
                    "revoked_at": {"$ifNull": ["$revoked_at", "$$NOW"]},
                }}],
            )
            .return_document(mongodb::options::ReturnDocument::After)
            .await
    }
}
