//! The database's own speed, as the yardstick for the service: `insert_many` of message
//! documents in the batch sizes the API inserts (one batch per request of the run), as many at
//! once as the run has clients, and a naive lease loop of one `find_one_and_update` per
//! message. Both run on a scratch collection of the deployment's database that is dropped
//! afterwards: the inserts meet the same indexes as `sms_messages`; the lease loop then gets a
//! lease index of its own (the service leases from `sms_jobs`), built before it is timed.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use mongodb::{Collection, Database, IndexModel};
use sms_shared::db::messages::{Message, NewMessage, Route};
use sms_shared::domain::phone;
use sms_shared::domain::status::Status;
use sms_testkit::recipients;

use crate::progress::Progress;
use crate::workload;

/// What the raw phases measured.
#[derive(Debug, Clone)]
pub struct RawFigures {
    pub insert: Duration,
    pub find_and_modify: Duration,
    /// Messages the lease loop found (should be all of them).
    pub leased: u64,
    /// Secondary indexes the scratch collection carried.
    pub indexes: usize,
}

/// Runs both raw phases over documents spread across `agents`, inserted in `batches` (their
/// sizes), `concurrency` batches at a time, then drops the scratch collection (also when a phase
/// fails).
pub async fn run(
    db: &Database,
    run_id: &str,
    batches: &[usize],
    concurrency: usize,
    agents: &[ObjectId],
    progress: &Progress,
) -> anyhow::Result<RawFigures> {
    let scratch: Collection<Message> = db.collection(&format!("bench_scratch_{run_id}"));
    let result = measure(db, &scratch, run_id, batches, concurrency, agents, progress).await;
    scratch
        .drop()
        .await
        .context("dropping the scratch collection")?;
    result
}

async fn measure(
    db: &Database,
    scratch: &Collection<Message>,
    run_id: &str,
    batches: &[usize],
    concurrency: usize,
    agents: &[ObjectId],
    progress: &Progress,
) -> anyhow::Result<RawFigures> {
    let indexes = copy_indexes(db, "sms_messages", scratch, vec![lease_index()]).await?;
    let n = batches.iter().sum();
    let docs = documents(run_id, batches, agents);

    let bar = progress.bar("raw insert_many", n as u64);
    let started = Instant::now();
    futures::stream::iter(&docs)
        .map(|batch| {
            let bar = &bar;
            async move {
                scratch
                    .insert_many(batch)
                    .ordered(false)
                    .await
                    .context("raw insert_many")?;
                bar.inc(batch.len() as u64);
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<()>()
        .await?;
    let insert = started.elapsed();
    bar.finish();
    drop(docs);

    scratch
        .create_index(lease_index())
        .await
        .context("creating the lease loop's index")?;
    let bar = progress.bar("raw find_and_modify", n as u64);
    let untyped = scratch.clone_with_type::<Document>();
    let started = Instant::now();
    let mut leased = 0;
    for i in 0..n {
        let agent = agents[i % agents.len()];
        let now = DateTime::now();
        let found = untyped
            .find_one_and_update(
                doc! {"agent_id": agent, "staged": true, "status": Status::Pending.as_str()},
                doc! {
                    "$set": {
                        "status": Status::Assigned.as_str(),
                        "lease_id": uuid::Uuid::new_v4().to_string(),
                        "lease_expires_at": DateTime::from_millis(now.timestamp_millis() + 300_000),
                        "leased_at": now,
                        "updated_at": now,
                    },
                    "$inc": {"attempts": 1},
                },
            )
            .sort(doc! {"priority_weight": -1, "created_at": 1})
            .projection(doc! {"_id": 1})
            .await
            .context("raw find_one_and_update")?;
        leased += u64::from(found.is_some());
        bar.inc(1);
    }
    let find_and_modify = started.elapsed();
    bar.finish();
    Ok(RawFigures {
        insert,
        find_and_modify,
        leased,
        indexes,
    })
}

/// The naive lease loop's index on message documents.
fn lease_index() -> IndexModel {
    IndexModel::builder()
        .keys(
            doc! {"agent_id": 1, "staged": 1, "status": 1, "priority_weight": -1, "created_at": 1},
        )
        .build()
}

/// Gives `scratch` the secondary indexes of the collection `source` (`fallback` when it has
/// none, e.g. before the service created them); returns how many it has.
pub(crate) async fn copy_indexes<T: Send + Sync>(
    db: &Database,
    source: &str,
    scratch: &Collection<T>,
    fallback: Vec<IndexModel>,
) -> anyhow::Result<usize> {
    let real: Collection<Document> = db.collection(source);
    let mut models: Vec<IndexModel> = match real.list_indexes().await {
        Ok(cursor) => cursor.try_collect().await.unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    models.retain(|m| m.keys != doc! {"_id": 1});
    if models.is_empty() {
        models = fallback;
    }
    for m in &mut models {
        // Only keys and the options that shape the index; server bookkeeping stays behind.
        let name = m.options.as_ref().and_then(|o| o.name.clone());
        let unique = m.options.as_ref().and_then(|o| o.unique);
        let expire = m.options.as_ref().and_then(|o| o.expire_after);
        let partial = m
            .options
            .as_ref()
            .and_then(|o| o.partial_filter_expression.clone());
        m.options = Some(
            mongodb::options::IndexOptions::builder()
                .name(name)
                .unique(unique)
                .expire_after(expire)
                .partial_filter_expression(partial)
                .build(),
        );
    }
    let count = models.len();
    scratch
        .create_indexes(models)
        .await
        .context("creating the scratch collection's indexes")?;
    Ok(count)
}

/// Message documents as `POST /requests` stores them (same fields, same text sizes), one batch
/// of `size` per request, already marked staged as a dispatcher leaves them, so that the lease
/// loop finds them by the same index the service uses.
fn documents(run_id: &str, batches: &[usize], agents: &[ObjectId]) -> Vec<Vec<Message>> {
    let template_id = ObjectId::new();
    let mut i = 0;
    batches
        .iter()
        .map(|&size| {
            let request_id = ObjectId::new();
            (0..size)
                .map(|_| {
                    let now = DateTime::now();
                    let to = phone::normalize(&recipients::phone(i), "+84", true)
                        .unwrap_or_else(|_| format!("+84{}", &recipients::phone(i)[1..]));
                    let text = workload::text(&workload::code(run_id, i));
                    let agent_id = agents[i % agents.len()];
                    i += 1;
                    Message::pending(NewMessage {
                        request_id,
                        api_key_id: Some(template_id),
                        client_name: "sms-bench".into(),
                        route: Route::Pinned(agent_id),
                        template_id,
                        to,
                        text,
                        priority_weight: 50,
                        created_at: now,
                    })
                    .staged_at(now)
                })
                .collect()
        })
        .collect()
}
