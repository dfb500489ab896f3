//! `sms_requests`: one document per accepted send request, with where its messages go: pinned
//! to one agent (`agent_id`), or to a pool (`agent_id: null`): the agents `agent_ids` names, or
//! every active agent when it names none.

use mongodb::bson::{doc, oid::ObjectId, DateTime};
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

/// One accepted send request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SmsRequest {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// The API key that sent it; `None` when an operator sent it.
    pub api_key_id: Option<ObjectId>,
    pub client_name: String,
    pub created_by: String,
    pub template_id: ObjectId,
    /// The agent its messages are pinned to; `None` for a pool.
    #[serde(default)]
    pub agent_id: Option<ObjectId>,
    /// A pool's agents; `None` when pinned, or for a pool of every active agent.
    #[serde(default)]
    pub agent_ids: Option<Vec<ObjectId>>,
    pub priority_weight: i32,
    pub total: i64,
    pub created_at: DateTime,
}

#[derive(Clone)]
pub struct Requests(Collection<SmsRequest>);

impl Requests {
    pub fn new(db: &Database) -> Self {
        Self(db.collection("sms_requests"))
    }

    pub async fn create_indexes(&self) -> mongodb::error::Result<()> {
        super::ensure_indexes(
            &self.0,
            vec![
                super::index(
                    doc! {"api_key_id": 1, "created_at": -1},
                    false,
                    "api_key_created",
                ),
                super::index(doc! {"template_id": 1}, false, "template"),
            ],
        )
        .await
    }

    pub async fn insert(&self, r: &SmsRequest) -> mongodb::error::Result<()> {
        self.0.insert_one(r).await.map(|_| ())
    }

    /// The request if `tenant` may see it (`None` tenant: an operator sees all).
    pub async fn find_for(
        &self,
        id: ObjectId,
        tenant: Option<ObjectId>,
    ) -> mongodb::error::Result<Option<SmsRequest>> {
        let mut f = doc! {"_id": id};
        if let Some(key) = tenant {
            f.insert("api_key_id", key);
        }
        self.0.find_one(f).await
    }

    pub async fn references_template(&self, template_id: ObjectId) -> mongodb::error::Result<bool> {
        Ok(self
            .0
            .find_one(doc! {"template_id": template_id})
            .await?
            .is_some())
    }

    pub async fn delete(&self, id: ObjectId) -> mongodb::error::Result<()> {
        self.0.delete_one(doc! {"_id": id}).await.map(|_| ())
    }
}
