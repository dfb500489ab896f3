//! The loaded history: requests of `--request-size` messages spread evenly over `--days` days
//! and round-robin over the agents, all of one API key, every message final (`DELIVERED`,
//! `SENT` or `FAILED`, as an agent's reports leave it), plus a little live work per agent:
//! staged `PENDING` messages with their jobs, as a dispatcher leaves them. Documents are built
//! with the service's own constructors and inserted with big unordered `insert_many`s; the
//! counters are then rebuilt from them with the recount `sms-api recount-stats` runs.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{self, oid::ObjectId, DateTime, Document};
use serde::Serialize;
use sms_shared::db::jobs::Job;
use sms_shared::db::messages::{Message, NewMessage, Route};
use sms_shared::db::requests::SmsRequest;
use sms_shared::db::Db;
use sms_shared::domain::status::Status;

use super::{Owner, ScaleArgs};
use crate::workload;

/// Documents per `insert_many`.
const BATCH: usize = 10_000;
/// `insert_many`s in flight at once.
const IN_FLIGHT: usize = 2;
/// The history ends this long before the load starts.
const HISTORY_END: i64 = 10 * 60_000;
/// Every recipient number gets this many messages over the history.
pub const MESSAGES_PER_NUMBER: usize = 5;
/// The priority the API gives a request whose template names none.
const PRIORITY: i32 = 50;

/// What the load did and how long it took.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Loaded {
    pub messages: u64,
    pub history: u64,
    pub live: u64,
    pub requests: u64,
    pub by_status: Vec<(String, u64)>,
    pub insert_seconds: f64,
    pub insert_msgs_per_s: f64,
    pub recount_days: u64,
    pub recount_seconds: f64,
    /// A request in the middle of the history, for the detail call.
    pub sample_request_id: String,
    /// A number of the history (E.164), for the number search.
    pub sample_number: String,
}

/// The final status of history message `i`: 5% `FAILED`, 5% `SENT` (no delivery report
/// came), the rest `DELIVERED`.
pub fn final_status(i: usize) -> Status {
    match i % 20 {
        0 => Status::Failed,
        10 => Status::Sent,
        _ => Status::Delivered,
    }
}

/// The stored number of recipient `i` (E.164, as the API normalises it); numbers repeat every
/// `history / MESSAGES_PER_NUMBER` messages, never within one request.
pub fn number(i: usize, history: usize) -> String {
    let numbers = (history / MESSAGES_PER_NUMBER).max(1);
    let national = sms_testkit::recipients::phone(i % numbers);
    sms_shared::domain::phone::normalize(&national, "+84", false).expect("a valid test number")
}

/// Creation time of history request `k` of `requests`: evenly over `[start, end)`.
fn request_time(k: usize, requests: usize, start: i64, end: i64) -> DateTime {
    DateTime::from_millis(start + (end - start) * k as i64 / requests as i64)
}

/// `m` as an agent's reports leave it in `status`: leased, sent and settled within seconds
/// of its creation, as `status_reports.rs` writes them.
pub fn settled(mut m: Message, agent: ObjectId, status: Status, i: usize) -> Message {
    let created = m.created_at.timestamp_millis();
    let at = |secs: i64| DateTime::from_millis(created + secs * 1000);
    m = m.staged_at(at(1));
    m.agent_id = Some(agent);
    m.lease_id = Some(uuid::Uuid::new_v4().to_string());
    m.leased_at = Some(at(2));
    m.lease_expires_at = Some(at(2 + 300));
    m.attempts = 1;
    m.sending_at = Some(at(3));
    let end = match status {
        Status::Failed => {
            m.failed_at = Some(at(5));
            m.last_error = Some(["RADIO_OFF", "GENERIC_FAILURE", "NO_SERVICE"][i % 3].into());
            at(5)
        }
        Status::Sent => {
            m.sent_at = Some(at(4));
            at(4)
        }
        _ => {
            m.sent_at = Some(at(4));
            m.delivered_at = Some(at(9));
            at(9)
        }
    };
    m.status = status;
    m.updated_at = end;
    m.settled_at = Some(end);
    m
}

/// A message document as stored: the [`Message`] and the `stagings` count the dispatcher that
/// staged it added.
fn stored(m: &Message) -> anyhow::Result<Document> {
    let mut d = bson::to_document(m)?;
    d.insert("stagings", 1);
    Ok(d)
}

/// Inserts the history and the live work, then recounts the counters.
pub async fn load(db: &Db, owner: &Owner, args: &ScaleArgs) -> anyhow::Result<Loaded> {
    let live = args.agents * args.live_per_agent;
    let history = args.messages - live;
    let requests = history.div_ceil(args.request_size);
    let now = sms_shared::time::bson_now().timestamp_millis();
    let end = now - HISTORY_END;
    let start = end - i64::from(args.days) * 86_400_000;
    tracing::info!(messages = args.messages, requests, "loading the history");

    let started = Instant::now();
    let request_docs: Vec<SmsRequest> = (0..requests)
        .map(|k| {
            let mut r = request(
                owner,
                k % args.agents,
                request_time(k, requests, start, end),
            );
            r.total = (history - k * args.request_size).min(args.request_size) as i64;
            r
        })
        .collect();
    db.database
        .collection::<SmsRequest>("sms_requests")
        .insert_many(&request_docs)
        .ordered(false)
        .await
        .context("inserting the requests")?;
    let batches = (0..history).step_by(BATCH).map(|from| {
        let to = (from + BATCH).min(history);
        let docs: anyhow::Result<Vec<Document>> = (from..to)
            .map(|i| {
                let r = &request_docs[i / args.request_size];
                let agent = r.agent_id.expect("history requests are pinned");
                let m = Message::pending(new_message(owner, r, number(i, history), i));
                stored(&settled(m, agent, final_status(i), i))
            })
            .collect();
        insert(db, docs)
    });
    let mut inserted = futures::stream::iter(batches).buffer_unordered(IN_FLIGHT);
    let mut done = 0u64;
    while let Some(n) = inserted.try_next().await? {
        done += n;
        if done % 100_000 < BATCH as u64 {
            tracing::info!(inserted = done, "loading");
        }
    }
    let live_requests = insert_live(db, owner, args, now).await?;
    let insert_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let recount_days = recount(db).await?;
    let recount_seconds = started.elapsed().as_secs_f64();

    let by_status = [Status::Delivered, Status::Sent, Status::Failed]
        .iter()
        .map(|s| {
            let n = (0..history).filter(|i| final_status(*i) == *s).count() as u64;
            (s.as_str().to_owned(), n)
        })
        .chain([(Status::Pending.as_str().to_owned(), live as u64)])
        .collect();
    Ok(Loaded {
        messages: args.messages as u64,
        history: history as u64,
        live: live as u64,
        requests: (requests + live_requests) as u64,
        by_status,
        insert_seconds,
        insert_msgs_per_s: args.messages as f64 / insert_seconds.max(1e-9),
        recount_days,
        recount_seconds,
        sample_request_id: request_docs[requests / 2].id.to_hex(),
        sample_number: number(history / 2, history),
    })
}

async fn insert(db: &Db, docs: anyhow::Result<Vec<Document>>) -> anyhow::Result<u64> {
    let docs = docs?;
    db.database
        .collection::<Document>("sms_messages")
        .insert_many(&docs)
        .ordered(false)
        .await
        .context("inserting messages")?;
    Ok(docs.len() as u64)
}

/// A request of the owner's key pinned to agent `agent`, as `POST /requests` stores it.
fn request(owner: &Owner, agent: usize, created_at: DateTime) -> SmsRequest {
    SmsRequest {
        id: ObjectId::new(),
        api_key_id: Some(owner.api_key_id),
        client_name: owner.client_name.clone(),
        created_by: owner.client_name.clone(),
        template_id: owner.template_id,
        agent_id: Some(owner.agents[agent].0),
        agent_ids: None,
        priority_weight: PRIORITY,
        total: 0,
        created_at,
    }
}

/// Message `i` of request `r`, with its OTP text.
fn new_message(owner: &Owner, r: &SmsRequest, to: String, i: usize) -> NewMessage {
    NewMessage {
        request_id: r.id,
        api_key_id: r.api_key_id,
        client_name: owner.client_name.clone(),
        route: Route::Pinned(r.agent_id.expect("pinned")),
        template_id: r.template_id,
        to,
        text: workload::text(&workload::code("s", i)),
        priority_weight: r.priority_weight,
        created_at: r.created_at,
    }
}

/// One request per agent of `--live-per-agent` messages created two minutes ago, staged a
/// minute ago: the messages, their jobs (`Jobs::stage`, as the dispatcher inserts them) and
/// their staging count. Returns the number of requests.
async fn insert_live(db: &Db, owner: &Owner, args: &ScaleArgs, now: i64) -> anyhow::Result<usize> {
    let created = DateTime::from_millis(now - 120_000);
    let staged = DateTime::from_millis(now - 60_000);
    let mut requests = Vec::new();
    let mut messages = Vec::new();
    for agent in 0..args.agents {
        let mut r = request(owner, agent, created);
        r.total = args.live_per_agent as i64;
        for j in 0..args.live_per_agent {
            let i = args.messages + agent * args.live_per_agent + j;
            let to = number(i, args.messages);
            messages.push(Message::pending(new_message(owner, &r, to, i)).staged_at(staged));
        }
        requests.push(r);
    }
    db.database
        .collection::<SmsRequest>("sms_requests")
        .insert_many(&requests)
        .await?;
    db.messages.insert_many(&messages).await?;
    let jobs: Vec<Job> = messages.iter().filter_map(|m| Job::of(m, staged)).collect();
    let (inserted, failed) = db.jobs.stage(&jobs).await;
    if let Some(e) = failed {
        return Err(e).context("staging the live jobs");
    }
    db.messages.stage_inserted(&inserted, staged).await?;
    Ok(requests.len())
}

/// Rebuilds the counters of every day holding messages, as `sms-api recount-stats --settle-ms 0`
/// does right after a bulk load. Returns the days recounted.
async fn recount(db: &Db) -> anyhow::Result<u64> {
    let today = sms_shared::time::now().date_naive();
    let (oldest, newest) = db
        .stats
        .message_days()
        .await?
        .context("no messages loaded")?;
    let done = db
        .stats
        .recount(oldest.min(today), newest.max(today), Duration::ZERO)
        .await?;
    Ok(done.days)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(at: DateTime) -> Message {
        Message::pending(NewMessage {
            request_id: ObjectId::new(),
            api_key_id: Some(ObjectId::new()),
            client_name: "SafeShop".into(),
            route: Route::Pinned(ObjectId::new()),
            template_id: ObjectId::new(),
            to: number(7, 100),
            text: workload::text("s000007"),
            priority_weight: PRIORITY,
            created_at: at,
        })
    }

    #[test]
    fn settled_messages_carry_what_reports_leave_and_no_job() {
        let at = DateTime::from_millis(1_795_564_800_000);
        let agent = ObjectId::new();
        for (i, status) in [
            (0, Status::Failed),
            (10, Status::Sent),
            (1, Status::Delivered),
        ] {
            assert_eq!(final_status(i), status);
            let m = settled(message(at), agent, status, i);
            assert_eq!((m.status, m.agent_id, m.attempts), (status, Some(agent), 1));
            assert!(m.staged && m.published && m.lease_id.is_some());
            assert!(m.settled_at.unwrap() > at && m.updated_at == m.settled_at.unwrap());
            assert_eq!(m.failed_at.is_some(), status == Status::Failed);
            assert_eq!(m.last_error.is_some(), status == Status::Failed);
            assert_eq!(m.delivered_at.is_some(), status == Status::Delivered);
            assert!(Job::of(&m, at).is_none(), "a settled message has no job");
            assert_eq!(stored(&m).unwrap().get_i32("stagings").unwrap(), 1);
        }
    }

    #[test]
    fn numbers_are_e164_and_repeat_across_requests_only() {
        assert_eq!(number(0, 1_000), "+84900000000");
        assert_eq!(number(200, 1_000), number(0, 1_000));
        let one_request: std::collections::HashSet<String> =
            (0..200).map(|i| number(i, 1_000)).collect();
        assert_eq!(one_request.len(), 200);
    }
}
