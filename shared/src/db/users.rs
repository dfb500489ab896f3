//! `users`: operators who log in with a password (made by `seed-admin`).

use mongodb::bson::{doc, oid::ObjectId, DateTime};
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub username: String,
    pub password_hash: String,
    pub is_active: bool,
    pub created_at: DateTime,
}

#[derive(Clone)]
pub struct Users(Collection<User>);

impl Users {
    pub fn new(db: &Database) -> Self {
        Self(db.collection("users"))
    }

    pub async fn create_indexes(&self) -> mongodb::error::Result<()> {
        super::ensure_indexes(
            &self.0,
            vec![super::index(doc! {"username": 1}, true, "username_unique")],
        )
        .await
    }

    pub async fn find_by_username(&self, username: &str) -> mongodb::error::Result<Option<User>> {
        self.0.find_one(doc! {"username": username}).await
    }

    /// Creates the user unless one with that name exists. Returns whether it was created.
    pub async fn insert_if_absent(
        &self,
        username: &str,
        password_hash: &str,
    ) -> mongodb::error::Result<bool> {
        let result = self
            .0
            .update_one(
                doc! {"username": username},
                doc! {"$setOnInsert": {
                    "_id": ObjectId::new(),
                    "username": username,
                    "password_hash": password_hash,
                    "is_active": true,
                    "created_at": crate::time::bson_now(),
                }},
            )
            .upsert(true)
            .await;
        match result {
            Ok(r) => Ok(r.upserted_id.is_some()),
            Err(e) if super::is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
