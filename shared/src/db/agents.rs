//! `agents`: Android phones that lease and send messages. Tokens are stored as SHA-256 digests.
//!
//! A token only changes through [`Agents::rotate_token`], conditional on the token the caller
//! proved or read, so a rotation never silently undoes another.

use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use mongodb::options::ReturnDocument;
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

/// A phone registered as an agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Agent {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub device_id: String,
    pub label: String,
    pub token_hash: String,
    pub is_active: bool,
    pub created_at: DateTime,
    pub updated_at: DateTime,
    #[serde(default)]
    pub last_seen_at: Option<DateTime>,
    /// Facts from the latest heartbeat (battery, signal, app version, ...).
    #[serde(default)]
    pub device: Option<Document>,
}

/// The `agents` collection.
#[derive(Clone)]
pub struct Agents(Collection<Agent>);

impl Agents {
    pub fn new(db: &Database) -> Self {
        Self(db.collection("agents"))
    }

    pub async fn create_indexes(&self) -> mongodb::error::Result<()> {
        super::ensure_indexes(
            &self.0,
            vec![
                super::index(doc! {"device_id": 1}, true, "device_id_unique"),
                super::index(doc! {"token_hash": 1}, true, "token_hash_unique"),
            ],
        )
        .await
    }

    pub async fn find(&self, id: ObjectId) -> mongodb::error::Result<Option<Agent>> {
        self.0.find_one(doc! {"_id": id}).await
    }

    pub async fn find_by_token_hash(&self, hash: &str) -> mongodb::error::Result<Option<Agent>> {
        self.0.find_one(doc! {"token_hash": hash}).await
    }

    pub async fn list(&self) -> mongodb::error::Result<Vec<Agent>> {
        self.0
            .find(doc! {})
            .sort(doc! {"created_at": 1})
            .await?
            .try_collect()
            .await
    }

    /// The agent of a device, active or not.
    pub async fn find_by_device_id(
        &self,
        device_id: &str,
    ) -> mongodb::error::Result<Option<Agent>> {
        self.0.find_one(doc! {"device_id": device_id}).await
    }

    /// Creates the active agent `id` for a new `device_id`; `None` when the device is already
    /// known (a concurrent first registration may have just created it).
    pub async fn create(
        &self,
        id: ObjectId,
        device_id: &str,
        label: &str,
        token_hash: &str,
    ) -> mongodb::error::Result<Option<Agent>> {
        let now = DateTime::now();
        let agent = Agent {
            id,
            device_id: device_id.to_owned(),
            label: label.to_owned(),
            token_hash: token_hash.to_owned(),
            is_active: true,
            created_at: now,
            updated_at: now,
            last_seen_at: None,
            device: None,
        };
        match self.0.insert_one(&agent).await {
            Ok(_) => Ok(Some(agent)),
            Err(e) if super::is_duplicate_key(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the token of agent `id` (and its label, when given), but only while its token is
    /// still `current_hash`: the one the caller proved or read. Of two racing rotations, one
    /// wins and the other gets `None` and changes nothing.
    pub async fn rotate_token(
        &self,
        id: ObjectId,
        current_hash: &str,
        new_hash: &str,
        label: Option<&str>,
    ) -> mongodb::error::Result<Option<Agent>> {
        let mut set = doc! {"token_hash": new_hash, "updated_at": DateTime::now()};
        if let Some(label) = label {
            set.insert("label", label);
        }
        self.update_if_token(id, current_hash, set).await
    }

    /// Sets the label of agent `id` while its token is still `current_hash`, keeping the token.
    pub async fn relabel(
        &self,
        id: ObjectId,
        current_hash: &str,
        label: &str,
    ) -> mongodb::error::Result<Option<Agent>> {
        self.update_if_token(
            id,
            current_hash,
            doc! {"label": label, "updated_at": DateTime::now()},
        )
        .await
    }

    async fn update_if_token(
        &self,
        id: ObjectId,
        current_hash: &str,
        set: Document,
    ) -> mongodb::error::Result<Option<Agent>> {
        self.0
            .find_one_and_update(
                doc! {"_id": id, "token_hash": current_hash},
                doc! {"$set": set},
            )
            .return_document(ReturnDocument::After)
            .await
    }

    pub async fn heartbeat(&self, id: ObjectId, device: Document) -> mongodb::error::Result<()> {
        self.0
            .update_one(
                doc! {"_id": id},
                doc! {"$set": {"last_seen_at": DateTime::now(), "device": device}},
            )
            .await
            .map(|_| ())
    }

    pub async fn set_active(
        &self,
        id: ObjectId,
        active: bool,
    ) -> mongodb::error::Result<Option<Agent>> {
        self.0
            .find_one_and_update(
                doc! {"_id": id},
                doc! {"$set": {"is_active": active, "updated_at": DateTime::now()}},
            )
            .return_document(ReturnDocument::After)
            .await
    }
}
