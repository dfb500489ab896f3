//! `api_keys`: client credentials. Only the SHA-256 digest of a key is stored.

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
