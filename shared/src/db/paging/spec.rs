//! One database operation of a list as a value: the list functions execute it, and tests
//! replay it under `explain`.

use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::options::Hint;
use mongodb::Collection;
use serde::de::DeserializeOwned;

/// One operation on the database, as executed: what `explain` replays.
#[derive(Debug, Clone, PartialEq)]
pub enum QuerySpec {
    Find {
        filter: Document,
        sort: Document,
        hint: &'static str,
        skip: u64,
        limit: u64,
    },
    /// `$match`, at most `limit` documents, counted (the pipeline `count_documents` sends).
    Count {
        filter: Document,
        hint: &'static str,
        limit: Option<u64>,
    },
}

impl QuerySpec {
    /// The command this operation sends for `collection`.
    pub fn command(&self, collection: &str) -> Document {
        match self {
            QuerySpec::Find {
                filter,
                sort,
                hint,
                skip,
                limit,
            } => doc! {
                "find": collection, "filter": filter.clone(), "sort": sort.clone(),
                "hint": *hint, "skip": *skip as i64, "limit": *limit as i64,
            },
            QuerySpec::Count { hint, .. } => doc! {
                "aggregate": collection, "pipeline": self.pipeline(), "cursor": {}, "hint": *hint,
            },
        }
    }

    /// `explain` of [`command`](Self::command) with the given verbosity (`executionStats`).
    pub fn explain(&self, collection: &str, verbosity: &str) -> Document {
        doc! {"explain": self.command(collection), "verbosity": verbosity}
    }

    fn pipeline(&self) -> Vec<Document> {
        let QuerySpec::Count { filter, limit, .. } = self else {
            return Vec::new();
        };
        let mut pipeline = vec![doc! {"$match": filter.clone()}];
        if let Some(l) = limit {
            pipeline.push(doc! {"$limit": *l as i64});
        }
        pipeline.push(doc! {"$group": {"_id": 1, "n": {"$sum": 1}}});
        pipeline
    }

    pub(super) async fn find<T>(&self, coll: &Collection<T>) -> mongodb::error::Result<Vec<T>>
    where
        T: DeserializeOwned + Send + Sync,
    {
        let QuerySpec::Find {
            filter,
            sort,
            hint,
            skip,
            limit,
        } = self
        else {
            return Ok(Vec::new());
        };
        coll.find(filter.clone())
            .sort(sort.clone())
            .hint(Hint::Name((*hint).to_owned()))
            .skip(*skip)
            .limit(*limit as i64)
            .batch_size((*limit).min(u64::from(u32::MAX)) as u32)
            .await?
            .try_collect()
            .await
    }

    pub(super) async fn count<T>(&self, coll: &Collection<T>) -> mongodb::error::Result<u64>
    where
        T: Send + Sync,
    {
        let QuerySpec::Count { hint, .. } = self else {
            return Ok(0);
        };
        let mut cursor = coll
            .aggregate(self.pipeline())
            .hint(Hint::Name((*hint).to_owned()))
            .await?;
        let Some(group) = cursor.try_next().await? else {
            return Ok(0);
        };
        Ok(match group.get("n") {
            Some(mongodb::bson::Bson::Int32(n)) => *n as u64,
            Some(mongodb::bson::Bson::Int64(n)) => *n as u64,
            Some(mongodb::bson::Bson::Double(n)) => *n as u64,
            _ => 0,
        })
    }
}
