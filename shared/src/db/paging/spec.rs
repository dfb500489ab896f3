//! One database operation of a list as a value: the list functions execute exactly its
//! [`QuerySpec::command`], and tests replay that command under `explain`.

use mongodb::bson::{doc, Bson, Document};
use mongodb::{Collection, Database};
use serde::de::DeserializeOwned;

/// What an operation does with its filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// The matches in `sort` order, `skip` then at most `limit` of them, in one reply.
    Find {
        sort: Document,
        skip: u64,
        limit: u64,
    },
    /// How many match, counting at most `limit` (the pipeline `count_documents` sends).
    Count { limit: Option<u64> },
}

/// One operation on the database, as executed.
#[derive(Debug, Clone, PartialEq)]
pub struct QuerySpec {
    pub op: Op,
    /// Led by the first field of `index`.
    pub filter: Document,
    /// The index that serves the filter and the order.
    pub index: &'static str,
    /// Whether `index` is sent as a hint (see [`Hints`](crate::db::hints::Hints)).
    pub hint: bool,
}

impl QuerySpec {
    /// The command this operation sends for `collection`.
    pub fn command(&self, collection: &str) -> Document {
        let mut command = match &self.op {
            Op::Find { sort, skip, limit } => doc! {
                "find": collection, "filter": self.filter.clone(), "sort": sort.clone(),
                "skip": *skip as i64, "limit": *limit as i64,
                // The whole page in one reply: no cursor left open.
                "batchSize": *limit as i64, "singleBatch": true,
            },
            Op::Count { limit } => {
                let mut pipeline = vec![doc! {"$match": self.filter.clone()}];
                if let Some(l) = limit {
                    pipeline.push(doc! {"$limit": *l as i64});
                }
                pipeline.push(doc! {"$group": {"_id": 1, "n": {"$sum": 1}}});
                doc! {"aggregate": collection, "pipeline": pipeline, "cursor": {}}
            }
        };
        if self.hint {
            command.insert("hint", self.index);
        }
        command
    }

    /// `explain` of [`command`](Self::command) with the given verbosity (`executionStats`).
    pub fn explain(&self, collection: &str, verbosity: &str) -> Document {
        doc! {"explain": self.command(collection), "verbosity": verbosity}
    }

    /// Runs a find and reads its documents.
    pub(super) async fn find<T>(&self, coll: &Collection<T>) -> mongodb::error::Result<Vec<T>>
    where
        T: DeserializeOwned + Send + Sync,
    {
        first_batch(coll, self.command(coll.name()))
            .await?
            .into_iter()
            .map(|d| mongodb::bson::from_document(d).map_err(Into::into))
            .collect()
    }

    /// Runs a count and reads it.
    pub(super) async fn count<T>(&self, coll: &Collection<T>) -> mongodb::error::Result<u64>
    where
        T: Send + Sync,
    {
        let batch = first_batch(coll, self.command(coll.name())).await?;
        Ok(match batch.first().and_then(|g| g.get("n")) {
            Some(Bson::Int32(n)) => *n as u64,
            Some(Bson::Int64(n)) => *n as u64,
            Some(Bson::Double(n)) => *n as u64,
            _ => 0,
        })
    }
}

/// The documents of a cursor command's first batch.
async fn first_batch<T: Send + Sync>(
    coll: &Collection<T>,
    command: Document,
) -> mongodb::error::Result<Vec<Document>> {
    let reply = database(coll).run_command(command).await?;
    let batch = reply
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .map_err(|e| mongodb::error::Error::custom(format!("a reply without firstBatch: {e}")))?;
    Ok(batch
        .iter()
        .filter_map(|d| d.as_document().cloned())
        .collect())
}

fn database<T: Send + Sync>(coll: &Collection<T>) -> Database {
    coll.client().database(&coll.namespace().db)
}
