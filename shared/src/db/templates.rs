//! `templates`: message templates with `{NAME}` placeholders, approved before use.

use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime};
use mongodb::options::ReturnDocument;
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Template {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub name: String,
    pub content: String,
    pub variables: Vec<String>,
    pub is_approved: bool,
    #[serde(default)]
    pub approved_by: Option<String>,
    #[serde(default)]
    pub approved_at: Option<DateTime>,
    #[serde(default)]
    pub priority_weight: Option<i32>,
    pub created_at: DateTime,
    pub updated_at: DateTime,
    pub created_by: String,
}

/// A write that collided with another template's name.
#[derive(Debug, thiserror::Error)]
pub enum TemplateWriteError {
    #[error("a template with this name already exists")]
    NameTaken,
    #[error(transparent)]
    Db(#[from] mongodb::error::Error),
}

fn on_name_conflict(e: mongodb::error::Error) -> TemplateWriteError {
    if super::is_duplicate_key(&e) {
        TemplateWriteError::NameTaken
    } else {
        TemplateWriteError::Db(e)
    }
}

/// Fields an update may change (`None` leaves the field alone).
#[derive(Debug, Default)]
pub struct TemplateChanges {
    pub name: Option<String>,
    pub content: Option<(String, Vec<String>)>,
    pub priority_weight: Option<Option<i32>>,
}

#[derive(Clone)]
pub struct Templates(Collection<Template>);

impl Templates {
    pub fn new(db: &Database) -> Self {
        Self(db.collection("templates"))
    }

    pub async fn create_indexes(&self) -> mongodb::error::Result<()> {
        super::ensure_indexes(
            &self.0,
            vec![super::index(doc! {"name": 1}, true, "name_unique")],
        )
        .await
    }

    pub async fn insert(&self, t: &Template) -> Result<(), TemplateWriteError> {
        self.0
            .insert_one(t)
            .await
            .map(|_| ())
            .map_err(on_name_conflict)
    }

    pub async fn find(&self, id: ObjectId) -> mongodb::error::Result<Option<Template>> {
        self.0.find_one(doc! {"_id": id}).await
    }

    pub async fn list(&self) -> mongodb::error::Result<Vec<Template>> {
        self.0
            .find(doc! {})
            .sort(doc! {"created_at": -1})
            .await?
            .try_collect()
            .await
    }

    /// Applies `changes`; any change withdraws an approval. `None` when the template is unknown.
    pub async fn update(
        &self,
        id: ObjectId,
        changes: TemplateChanges,
    ) -> Result<Option<Template>, TemplateWriteError> {
        let mut set = doc! {
            "updated_at": crate::time::bson_now(),
            "is_approved": false,
            "approved_by": Bson::Null,
            "approved_at": Bson::Null,
        };
        if let Some(name) = changes.name {
            set.insert("name", name);
        }
        if let Some((content, variables)) = changes.content {
            set.insert("content", content);
            set.insert("variables", variables);
        }
        if let Some(weight) = changes.priority_weight {
            set.insert(
                "priority_weight",
                weight.map(Bson::Int32).unwrap_or(Bson::Null),
            );
        }
        self.0
            .find_one_and_update(doc! {"_id": id}, doc! {"$set": set})
            .return_document(ReturnDocument::After)
            .await
            .map_err(on_name_conflict)
    }

    pub async fn approve(
        &self,
        id: ObjectId,
        actor: &str,
    ) -> mongodb::error::Result<Option<Template>> {
        self.0
            .find_one_and_update(
                doc! {"_id": id},
                doc! {"$set": {"is_approved": true, "approved_by": actor, "approved_at": crate::time::bson_now()}},
            )
            .return_document(ReturnDocument::After)
            .await
    }

    pub async fn delete(&self, id: ObjectId) -> mongodb::error::Result<bool> {
        Ok(self.0.delete_one(doc! {"_id": id}).await?.deleted_count == 1)
    }
}
