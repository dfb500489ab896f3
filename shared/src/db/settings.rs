//! `settings`: operator-editable values stored in the database (the agent registration secret).

use mongodb::bson::{doc, DateTime};
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

const REGISTRATION_SECRET: &str = "agent_registration_secret";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Setting {
    #[serde(rename = "_id")]
    pub key: String,
    pub value: String,
    pub updated_at: DateTime,
    pub updated_by: String,
}

#[derive(Clone)]
pub struct Settings(Collection<Setting>);

impl Settings {
    pub fn new(db: &Database) -> Self {
        Self(db.collection("settings"))
    }

    /// The stored registration secret: `None` when never set, `Some("")` when disabled.
    pub async fn registration_secret(&self) -> mongodb::error::Result<Option<String>> {
        Ok(self
            .0
            .find_one(doc! {"_id": REGISTRATION_SECRET})
            .await?
            .map(|s| s.value))
    }

    pub async fn set_registration_secret(
        &self,
        value: &str,
        actor: &str,
    ) -> mongodb::error::Result<()> {
        self.0
            .update_one(
                doc! {"_id": REGISTRATION_SECRET},
                doc! {"$set": {"value": value, "updated_at": crate::time::bson_now(), "updated_by": actor}},
            )
            .upsert(true)
            .await
            .map(|_| ())
    }
}
