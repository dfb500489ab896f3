//! The database's limit for the send pipeline: every write one message needs on its way from
//! `POST /requests` to `DELIVERED`, done directly on scratch collections that carry the same
//! indexes as `sms_messages`, `sms_jobs` and `dedup`, in batches of the run's sizes: its
//! requests (one agent each) for what the service does to a request's messages, its poll limit
//! for what a phone's poll and reports do; as many requests at once as the run has clients.
//!
//! Per request, in order, each step one command over the whole request, then steps 4 and 5 one
//! command over each poll's share of it (`--poll-limit` messages):
//!
//! 1. the message insert: `insert_many` (unordered) of the message documents as the API stores
//!    them (pending, unstaged);
//! 2. the anti-dup claim: `insert_many` (unordered) of one `dedup` claim per message (the
//!    `to + text` digest as `_id`), as the dispatcher's `Dedup::claim_many` does;
//! 3. the staging update: `insert_many` (unordered) of the jobs (`Job::of` each message), then
//!    one `update_many` by `_id $in` marking the messages staged (and counting the staging), as
//!    the dispatcher's `stage_inserted` does;
//! 4. the lease update: one `update_many` on the jobs by `_id $in` under the lease fence
//!    (lanes, `available_at <= now`) setting the lease, then one `update_many` on the messages
//!    recording it (`ASSIGNED`, agent, lease, attempts);
//! 5. the two report updates: `SENT` deletes the jobs (`delete_many` by `_id $in`, holder and
//!    lease) and moves the messages (`update_many`); `DELIVERED` moves the messages again.
//!
//! What it leaves out, and the service does: the reads (the dispatcher's `find_many`, a poll's
//! candidate `find` and read-back), the counters, the outbox and the agents' bookkeeping; and
//! the service stages a dispatcher's prefetch at a time, not whole requests. So this is an
//! upper bound the service can approach, not reach.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use mongodb::{Collection, Database, IndexModel};
use sms_shared::db::dedup::{self, DedupClaim};
use sms_shared::db::jobs::{lane, Job, EVERY_AGENT};
use sms_shared::db::messages::{Message, NewMessage, Route};
use sms_shared::domain::phone;
use sms_shared::domain::status::Status;
use sms_testkit::recipients;

use crate::progress::Progress;
use crate::raw::copy_indexes;
use crate::workload::{self, RequestPlan};

/// How long a lease lasts here (it never runs out during the measurement).
const LEASE_MS: i64 = 300_000;

/// What the raw pipeline measured.
#[derive(Debug, Clone)]
pub struct RawPipelineFigures {
    pub elapsed: Duration,
    pub messages: u64,
    /// Messages `DELIVERED` at the end (all of them when every step matched).
    pub delivered: u64,
    /// Secondary indexes on the scratch messages, jobs and dedup collections.
    pub indexes: (usize, usize, usize),
}

/// The scratch collections, dropped afterwards.
struct Scratch {
    messages: Collection<Message>,
    jobs: Collection<Job>,
    dedup: Collection<DedupClaim>,
}

impl Scratch {
    async fn drop_all(&self) -> anyhow::Result<()> {
        self.messages.drop().await?;
        self.jobs.drop().await?;
        self.dedup.drop().await?;
        Ok(())
    }
}

/// Runs the pipeline's writes for the messages of `plans` (`agents[plan.agent]` each), then
/// drops the scratch collections (also when a step fails).
pub async fn run(
    db: &Database,
    run_id: &str,
    plans: &[RequestPlan],
    concurrency: usize,
    poll_limit: usize,
    agents: &[ObjectId],
    progress: &Progress,
) -> anyhow::Result<RawPipelineFigures> {
    let scratch = Scratch {
        messages: db.collection(&format!("bench_pipe_messages_{run_id}")),
        jobs: db.collection(&format!("bench_pipe_jobs_{run_id}")),
        dedup: db.collection(&format!("bench_pipe_dedup_{run_id}")),
    };
    let sizes = Sizes {
        concurrency,
        poll_limit,
    };
    let result = measure(db, &scratch, run_id, plans, sizes, agents, progress).await;
    scratch
        .drop_all()
        .await
        .context("dropping the raw pipeline's scratch collections")?;
    result
}

async fn measure(
    db: &Database,
    s: &Scratch,
    run_id: &str,
    plans: &[RequestPlan],
    sizes: Sizes,
    agents: &[ObjectId],
    progress: &Progress,
) -> anyhow::Result<RawPipelineFigures> {
    let message_index = IndexModel::builder()
        .keys(
            doc! {"agent_id": 1, "staged": 1, "status": 1, "priority_weight": -1, "created_at": 1},
        )
        .build();
    let job_index = IndexModel::builder()
        .keys(doc! {"lanes": 1, "priority_weight": -1, "created_at": 1, "_id": 1})
        .build();
    let ttl = IndexModel::builder()
        .keys(doc! {"expires_at": 1})
        .options(
            mongodb::options::IndexOptions::builder()
                .expire_after(Duration::ZERO)
                .build(),
        )
        .build();
    let indexes = (
        copy_indexes(db, "sms_messages", &s.messages, vec![message_index]).await?,
        copy_indexes(db, "sms_jobs", &s.jobs, vec![job_index]).await?,
        copy_indexes(db, "dedup", &s.dedup, vec![ttl]).await?,
    );
    let batches: Vec<(ObjectId, Vec<Message>)> = plans
        .iter()
        .map(|p| {
            let agent = agents[p.agent];
            (agent, documents(run_id, p, agent))
        })
        .collect();
    let messages: u64 = batches.iter().map(|(_, b)| b.len() as u64).sum();

    let bar = progress.bar("raw pipeline", messages);
    let started = Instant::now();
    futures::stream::iter(&batches)
        .map(|(agent, batch)| {
            let bar = &bar;
            async move {
                one_batch(s, *agent, batch, sizes.poll_limit).await?;
                bar.inc(batch.len() as u64);
                anyhow::Ok(())
            }
        })
        .buffer_unordered(sizes.concurrency.max(1))
        .try_collect::<()>()
        .await?;
    let elapsed = started.elapsed();
    bar.finish();
    let delivered = s
        .messages
        .count_documents(doc! {"status": Status::Delivered.as_str()})
        .await?;
    Ok(RawPipelineFigures {
        elapsed,
        messages,
        delivered,
        indexes,
    })
}

/// The run's sizes the steps are done in.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Requests at once (the run's clients).
    concurrency: usize,
    /// Messages per poll and per report.
    poll_limit: usize,
}

/// Every write of one request's messages to `agent`, from insert to `DELIVERED`.
async fn one_batch(
    s: &Scratch,
    agent: ObjectId,
    batch: &[Message],
    poll_limit: usize,
) -> anyhow::Result<()> {
    let ids: Vec<ObjectId> = batch.iter().map(|m| m.id).collect();
    let of_batch = doc! {"_id": {"$in": &ids}};

    // 1. The message insert (the API).
    s.messages
        .insert_many(batch)
        .ordered(false)
        .await
        .context("raw pipeline: message insert")?;

    // 2. The anti-dup claim (a dispatcher).
    let now = DateTime::now();
    let expires = DateTime::from_millis(now.timestamp_millis() + 86_400_000 + 300_000);
    let claims: Vec<DedupClaim> = batch
        .iter()
        .map(|m| DedupClaim {
            key: dedup::key(&m.to, &m.text),
            message_id: m.id,
            staged_at: now,
            expires_at: expires,
        })
        .collect();
    s.dedup
        .insert_many(&claims)
        .ordered(false)
        .await
        .context("raw pipeline: anti-dup claim")?;

    // 3. The staging update: the jobs, then the messages.
    let jobs: Vec<Job> = batch.iter().filter_map(|m| Job::of(m, now)).collect();
    s.jobs
        .insert_many(&jobs)
        .ordered(false)
        .await
        .context("raw pipeline: job insert")?;
    let msgs = s.messages.clone_with_type::<Document>();
    let mut unstaged = of_batch.clone();
    unstaged.insert("staged", false);
    unstaged.insert("status", doc! {"$ne": Status::Canceled.as_str()});
    msgs.update_many(
        unstaged,
        doc! {
            "$set": {"staged": true, "staged_at": now, "updated_at": now, "published": true},
            "$inc": {"stagings": 1},
        },
    )
    .await
    .context("raw pipeline: staging update")?;

    for poll in ids.chunks(poll_limit.max(1)) {
        lease_and_report(s, agent, poll).await?;
    }
    Ok(())
}

/// Steps 4 and 5 for one poll's messages: the lease, then the `SENT` and `DELIVERED` reports.
async fn lease_and_report(s: &Scratch, agent: ObjectId, ids: &[ObjectId]) -> anyhow::Result<()> {
    let of_batch = doc! {"_id": {"$in": ids}};
    let msgs = s.messages.clone_with_type::<Document>();

    // 4. The lease update (a poll): the jobs under the fence, then the messages.
    let now = DateTime::now();
    let lease_id = uuid::Uuid::new_v4().to_string();
    let lease_expires = DateTime::from_millis(now.timestamp_millis() + LEASE_MS);
    let mut fence = of_batch.clone();
    fence.insert("lanes", doc! {"$in": [lane(agent), EVERY_AGENT]});
    fence.insert("available_at", doc! {"$lte": now});
    fence.insert("tried_by", doc! {"$ne": agent});
    s.jobs
        .update_many(
            fence,
            doc! {
                "$set": {
                    "status": Status::Assigned.as_str(),
                    "holder": agent,
                    "lease_id": &lease_id,
                    "lease_expires_at": lease_expires,
                    "leased_at": now,
                    "available_at": lease_expires,
                },
                "$inc": {"attempts": 1},
            },
        )
        .await
        .context("raw pipeline: job lease")?;
    let mut waiting = of_batch.clone();
    waiting.insert("status", Status::Pending.as_str());
    waiting.insert("agent_id", agent);
    waiting.insert("lease_id", doc! {"$ne": &lease_id});
    msgs.update_many(
        waiting,
        doc! {"$set": {
            "status": Status::Assigned.as_str(),
            "agent_id": agent,
            "lease_id": &lease_id,
            "lease_expires_at": lease_expires,
            "leased_at": now,
            "attempts": 1,
            "updated_at": now,
        }},
    )
    .await
    .context("raw pipeline: message lease")?;

    // 5. The reports: SENT (the job goes, the message moves), then DELIVERED.
    let now = DateTime::now();
    let mut held = of_batch.clone();
    held.insert("status", doc! {"$in": predecessors(Status::Sent)});
    held.insert("holder", agent);
    held.insert("lease_id", &lease_id);
    s.jobs
        .delete_many(held)
        .await
        .context("raw pipeline: SENT on the jobs")?;
    report(&msgs, &of_batch, Status::Sent, "sent_at", now).await?;
    let now = DateTime::now();
    report(&msgs, &of_batch, Status::Delivered, "delivered_at", now).await?;
    Ok(())
}

/// Moves the messages of `of_batch` that are in a predecessor of `status` to it.
async fn report(
    msgs: &Collection<Document>,
    of_batch: &Document,
    status: Status,
    at_field: &str,
    now: DateTime,
) -> anyhow::Result<()> {
    let mut filter = of_batch.clone();
    filter.insert("status", doc! {"$in": predecessors(status)});
    let mut set = doc! {"status": status.as_str(), "updated_at": now, "settled_at": now};
    set.insert(at_field, now);
    msgs.update_many(filter, doc! {"$set": set})
        .await
        .with_context(|| format!("raw pipeline: {status} on the messages"))?;
    Ok(())
}

fn predecessors(status: Status) -> Vec<&'static str> {
    Status::allowed_predecessors(status)
        .into_iter()
        .map(Status::as_str)
        .collect()
}

/// The messages of one request as the API stores them: pending, unstaged, pinned to `agent`.
fn documents(run_id: &str, plan: &RequestPlan, agent: ObjectId) -> Vec<Message> {
    let request_id = ObjectId::new();
    let template_id = ObjectId::new();
    plan.messages
        .clone()
        .map(|i| {
            let national = recipients::phone(i);
            let to = phone::normalize(&national, "+84", true)
                .unwrap_or_else(|_| format!("+84{}", &national[1..]));
            Message::pending(NewMessage {
                request_id,
                api_key_id: Some(template_id),
                client_name: "sms-bench".into(),
                route: Route::Pinned(agent),
                template_id,
                to,
                text: workload::text(&workload::code(run_id, i)),
                priority_weight: 50,
                created_at: DateTime::now(),
            })
        })
        .collect()
}
