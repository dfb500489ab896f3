//! `agents`: Android phones that lease and send messages. Tokens are stored as SHA-256 digests.

use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use mongodb::options::ReturnDocument;
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

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

/// What registering a device did.
pub enum Registered {
    /// A new agent was created with this token digest.
    Created(Agent),
    /// A known device got a new token.
    Rotated(Agent),
    /// A known device kept its token.
    Kept(Agent),
}

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

    /// Creates the agent for `device_id`, or rotates (when `rotate`) or keeps its token.
    pub async fn register(
        &self,
        device_id: &str,
        label: &str,
        new_token_hash: &str,
        rotate: bool,
    ) -> mongodb::error::Result<Registered> {
        let now = DateTime::now();
        let mut set = doc! {"label": label, "updated_at": now};
        if rotate {
            set.insert("token_hash", new_token_hash);
        }
        let existing = self
            .0
            .find_one_and_update(doc! {"device_id": device_id}, doc! {"$set": set})
            .return_document(ReturnDocument::After)
            .await?;
        if let Some(agent) = existing {
            return Ok(if rotate {
                Registered::Rotated(agent)
            } else {
                Registered::Kept(agent)
            });
        }
        let agent = Agent {
            id: ObjectId::new(),
            device_id: device_id.to_owned(),
            label: label.to_owned(),
            token_hash: new_token_hash.to_owned(),
            is_active: true,
            created_at: now,
            updated_at: now,
            last_seen_at: None,
            device: None,
        };
        match self.0.insert_one(&agent).await {
            Ok(_) => Ok(Registered::Created(agent)),
            // Two first registrations of one device raced: the other one created it.
            Err(e) if super::is_duplicate_key(&e) => {
                Box::pin(self.register(device_id, label, new_token_hash, rotate)).await
            }
            Err(e) => Err(e),
        }
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
