//! The agent protocol: leasing (`GET /agent/jobs/next`), pacing, reports and the reconciler.
//!
//! Staged messages are inserted straight into `sms_messages`, as a dispatcher leaves them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use mongodb::bson::{self, doc, oid::ObjectId, DateTime};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sms_shared::db::messages::{Message, NewMessage};
use sms_shared::domain::status::Status;

use crate::helpers::*;

const FAST: (&str, &str) = ("AGENT_RATE_LIMIT_PER_MIN", "100000");

/// A staged, pending message of `agent`, created `age_ms` milliseconds ago.
fn staged(agent: ObjectId, priority_weight: i32, age_ms: i64) -> Message {
    let now = DateTime::now().timestamp_millis();
    let created_at = DateTime::from_millis(now - age_ms);
    Message::pending(NewMessage {
        request_id: ObjectId::new(),
        api_key_id: None,
        client_name: "SafeShop".into(),
        agent_id: agent,
        template_id: ObjectId::new(),
        to: "+84901234567".into(),
        text: format!("Your code is {}", &ObjectId::new().to_hex()[18..]),
        priority_weight,
        created_at,
    })
    .staged_at(created_at)
}

/// `m` put in `status` as if it had got there normally (lease live for a minute).
fn in_status(mut m: Message, status: Status) -> Message {
    let now = DateTime::now();
    let later = DateTime::from_millis(now.timestamp_millis() + 60_000);
    m.status = status;
    if status != Status::Pending && status != Status::Canceled {
        m.lease_id = Some(uuid::Uuid::new_v4().to_string());
        m.lease_expires_at = Some(later);
        m.leased_at = Some(now);
        m.attempts = 1;
    }
    if matches!(status, Status::Sending | Status::Sent | Status::Delivered) {
        m.sending_at = Some(now);
    }
    if matches!(status, Status::Sent | Status::Delivered) {
        m.sent_at = Some(now);
    }
    if status == Status::Delivered {
        m.delivered_at = Some(now);
    }
    if status == Status::Failed {
        m.failed_at = Some(now);
        m.last_error = Some("RADIO_OFF".into());
    }
    if status == Status::Canceled {
        m.last_error = Some("DUPLICATE_RECENT".into());
    }
    m
}

async fn insert(app: &TestApp, messages: &[Message]) {
    app.db.messages.insert_many(messages).await.unwrap();
}

async fn load(app: &TestApp, id: ObjectId) -> Message {
    app.db
        .messages
        .find(id)
        .await
        .unwrap()
        .expect("message exists")
}

fn oid(hex: &str) -> ObjectId {
    ObjectId::parse_str(hex).unwrap()
}

/// An app with one registered agent: (app, agent_id, agent_token).
async fn app_with_agent(overrides: &[(&str, &str)]) -> (TestApp, ObjectId, String) {
    let app = spawn_app_with(overrides).await;
    let (id, token) = app.register_agent("agent-001").await;
    (app, oid(&id), token)
}

/// `GET /agent/jobs/next?limit=` answered 200; returns the body.
async fn poll(app: &TestApp, token: &str, limit: i64) -> Value {
    let res = app
        .get(
            &format!("/sms/agent/jobs/next?limit={limit}"),
            Auth::Bearer(token),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK, "poll status");
    res.json().await.unwrap()
}

fn job_ids(body: &Value) -> Vec<String> {
    body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["message_id"].as_str().unwrap().to_owned())
        .collect()
}

/// `POST /agent/messages/report` answered 200; returns `results`.
async fn report(app: &TestApp, token: &str, items: Value) -> Vec<Value> {
    let res = app
        .post(
            "/sms/agent/messages/report",
            Auth::Bearer(token),
            json!({ "messages": items }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK, "report status");
    let body: Value = res.json().await.unwrap();
    body["results"].as_array().unwrap().clone()
}

/// The value of a metric sample (`name` may carry labels) on `/metrics`, 0 when absent.
async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app.get("/metrics", Auth::None).await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn snapshot(m: &Message) -> bson::Document {
    bson::to_document(m).unwrap()
}

#[tokio::test]
async fn jobs_are_leased_highest_priority_first_then_oldest() {
    let (app, agent, token) = app_with_agent(&[FAST]).await;
    let low = staged(agent, 10, 50_000);
    let high_new = staged(agent, 90, 1_000);
    let high_old = staged(agent, 90, 30_000);
    let mid = staged(agent, 50, 40_000);
    // Same priority and age: the id breaks the tie.
    let mut twin_a = staged(agent, 50, 0);
    let mut twin_b = staged(agent, 50, 0);
    twin_b.created_at = mid.created_at;
    twin_a.created_at = mid.created_at;
    insert(
        &app,
        &[
            low.clone(),
            high_new.clone(),
            twin_b.clone(),
            mid.clone(),
            high_old.clone(),
            twin_a.clone(),
        ],
    )
    .await;
    let mut mids = [mid.id, twin_a.id, twin_b.id];
    mids.sort();

    let before = DateTime::now().timestamp_millis();
    let body = poll(&app, &token, 10).await;
    let expected: Vec<String> = [high_old.id, high_new.id, mids[0], mids[1], mids[2], low.id]
        .iter()
        .map(|i| i.to_hex())
        .collect();
    assert_eq!(job_ids(&body), expected);
    assert!(body["retry_after_seconds"].is_null());

    let job = &body["jobs"][0];
    assert_eq!(job["id"], job["message_id"]);
    assert_eq!(job["to"], "+84901234567");
    assert_eq!(job["text"], high_old.text.as_str());
    assert_eq!(job["request_id"], high_old.request_id.to_hex().as_str());
    assert_eq!(job["priority_weight"], 90);
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["segments"], 1);
    assert_eq!(job["encoding"], "GSM-7");
    let lease_id = job["lease_id"].as_str().unwrap();
    let parsed = uuid::Uuid::parse_str(lease_id).unwrap();
    assert_eq!(parsed.get_version_num(), 4);
    let expires = chrono::DateTime::parse_from_rfc3339(job["lease_expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    assert!(job["lease_expires_at"].as_str().unwrap().ends_with('Z'));
    assert!(
        (before + 300_000 - 1_000..=DateTime::now().timestamp_millis() + 300_000)
            .contains(&expires),
        "lease lasts LEASE_SECONDS"
    );

    let stored = load(&app, high_old.id).await;
    assert_eq!(stored.status, Status::Assigned);
    assert_eq!(stored.lease_id.as_deref(), Some(lease_id));
    assert_eq!(stored.attempts, 1);
    assert_eq!(stored.lease_expires_at.unwrap().timestamp_millis(), expires);
    assert!(stored.leased_at.unwrap().timestamp_millis() >= before);

    // Everything is held now: nothing more, and a hint when to come back.
    let again = poll(&app, &token, 10).await;
    assert_eq!(job_ids(&again), Vec::<String>::new());
    assert_eq!(again["retry_after_seconds"], 5);
}

#[tokio::test]
async fn limit_defaults_to_10_is_capped_at_100_and_must_be_positive() {
    let (app, agent, token) = app_with_agent(&[FAST]).await;
    let messages: Vec<Message> = (0..130).map(|i| staged(agent, 50, i)).collect();
    insert(&app, &messages).await;

    for bad in ["0", "-3"] {
        let res = app
            .get(
                &format!("/agent/jobs/next?limit={bad}"),
                Auth::Bearer(&token),
            )
            .await;
        let body = assert_error(res, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
        assert!(body["errors"]["limit"].is_array(), "{body}");
    }
    let res = app
        .get("/agent/jobs/next?limit=many", Auth::Bearer(&token))
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    let res = app.get("/agent/jobs/next", Auth::Bearer(&token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(job_ids(&body).len(), 10);
    assert_eq!(job_ids(&poll(&app, &token, 1000).await).len(), 100);
    assert_eq!(job_ids(&poll(&app, &token, 1000).await).len(), 20);
    let assigned = app
        .db
        .messages
        .collection()
        .count_documents(doc! {"status": "ASSIGNED"})
        .await
        .unwrap();
    assert_eq!(assigned, 130);
}

#[tokio::test]
async fn only_the_agents_own_staged_leasable_messages_are_handed_out() {
    let (app, agent, token) = app_with_agent(&[FAST]).await;
    let (other, _) = app.register_agent("agent-002").await;
    let pending = staged(agent, 50, 10_000);
    let mut expired = in_status(staged(agent, 50, 5_000), Status::Assigned);
    expired.lease_expires_at = Some(DateTime::from_millis(
        DateTime::now().timestamp_millis() - 1,
    ));
    // Reported ASSIGNED without ever being leased: no lease to wait for.
    let mut lease_less = staged(agent, 50, 1_000);
    lease_less.status = Status::Assigned;
    let live = in_status(staged(agent, 99, 0), Status::Assigned);
    let mut unstaged = staged(agent, 99, 0);
    unstaged.staged = false;
    unstaged.staged_at = None;
    let foreign = staged(oid(&other), 99, 0);
    let mut later: Vec<Message> = [
        Status::Sending,
        Status::Sent,
        Status::Delivered,
        Status::Failed,
        Status::Canceled,
    ]
    .into_iter()
    .map(|s| in_status(staged(agent, 99, 0), s))
    .collect();
    // A SENDING message whose lease ran out is still never handed out again.
    later[0].lease_expires_at = Some(DateTime::from_millis(0));
    let mut all = vec![
        pending.clone(),
        expired.clone(),
        lease_less.clone(),
        live.clone(),
        unstaged.clone(),
        foreign.clone(),
    ];
    all.extend(later.iter().cloned());
    insert(&app, &all).await;
    let before: HashMap<ObjectId, bson::Document> =
        all.iter().map(|m| (m.id, snapshot(m))).collect();

    let body = poll(&app, &token, 100).await;
    assert_eq!(
        job_ids(&body),
        vec![
            pending.id.to_hex(),
            expired.id.to_hex(),
            lease_less.id.to_hex()
        ]
    );
    assert_eq!(
        body["jobs"][1]["attempts"], 2,
        "a re-lease is another attempt"
    );
    for m in [&live, &unstaged, &foreign].into_iter().chain(later.iter()) {
        assert_eq!(
            snapshot(&load(&app, m.id).await),
            before[&m.id],
            "{} untouched",
            m.status
        );
    }
}

#[tokio::test]
async fn an_expired_lease_is_leased_again_with_a_new_lease_id() {
    let (app, agent, token) = app_with_agent(&[FAST, ("LEASE_SECONDS", "1")]).await;
    let messages: Vec<Message> = (0..3).map(|i| staged(agent, 50, 100 - i)).collect();
    insert(&app, &messages).await;

    let first = poll(&app, &token, 10).await;
    assert_eq!(job_ids(&first).len(), 3);
    let first_lease = first["jobs"][0]["lease_id"].as_str().unwrap().to_owned();
    // While the lease is live nobody gets them.
    assert!(job_ids(&poll(&app, &token, 10).await).is_empty());

    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let second = poll(&app, &token, 10).await;
    assert_eq!(job_ids(&second), job_ids(&first));
    let second_lease = second["jobs"][0]["lease_id"].as_str().unwrap();
    assert_ne!(second_lease, first_lease);
    for job in second["jobs"].as_array().unwrap() {
        assert_eq!(job["attempts"], 2);
        assert_eq!(job["lease_id"], second_lease);
    }
    for m in &messages {
        let stored = load(&app, m.id).await;
        assert_eq!(stored.status, Status::Assigned);
        assert_eq!(stored.lease_id.as_deref(), Some(second_lease));
        assert_eq!(stored.attempts, 2);
    }
    assert_eq!(metric(&app, "sms_leases_total").await, 6.0);
    assert_eq!(metric(&app, "sms_lease_expiries_total").await, 3.0);
}

#[tokio::test]
async fn twenty_concurrent_agents_never_share_a_live_lease() {
    const AGENTS: usize = 20;
    const PER_AGENT: usize = 50;
    const POLLERS_PER_AGENT: usize = 2;
    let app = Arc::new(spawn_app_with(&[FAST]).await);
    let mut agents = Vec::new();
    let mut messages = Vec::new();
    for a in 0..AGENTS {
        let (id, token) = app.register_agent(&format!("agent-{a:03}")).await;
        let id = oid(&id);
        messages.extend((0..PER_AGENT).map(|i| staged(id, (i as i32 * 37) % 101, i as i64)));
        agents.push((id, token));
    }
    insert(&app, &messages).await;

    let started = Instant::now();
    let mut tasks = Vec::new();
    for (a, (agent, token)) in agents.iter().enumerate() {
        let received = Arc::new(AtomicUsize::new(0));
        for p in 0..POLLERS_PER_AGENT {
            let (app, token, received, agent) =
                (app.clone(), token.clone(), received.clone(), *agent);
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                let mut polls = 0;
                while received.load(Ordering::SeqCst) < PER_AGENT {
                    polls += 1;
                    assert!(polls < 500, "agent {a} poller {p} is starving");
                    let limit = 1 + ((a * 7 + p * 3 + polls) % 12) as i64;
                    let body = poll(&app, &token, limit).await;
                    let jobs = body["jobs"].as_array().unwrap();
                    assert!(jobs.len() as i64 <= limit);
                    received.fetch_add(jobs.len(), Ordering::SeqCst);
                    for j in jobs {
                        got.push((
                            agent,
                            oid(j["message_id"].as_str().unwrap()),
                            j["lease_id"].as_str().unwrap().to_owned(),
                        ));
                    }
                }
                got
            }));
        }
    }
    let mut leases: HashMap<ObjectId, (ObjectId, String)> = HashMap::new();
    for t in tasks {
        for (agent, id, lease) in t.await.unwrap() {
            assert!(
                leases.insert(id, (agent, lease)).is_none(),
                "message {id} was handed out twice"
            );
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "leased {} messages to {AGENTS} agents x {POLLERS_PER_AGENT} pollers in {elapsed:?}",
        leases.len()
    );
    assert_eq!(leases.len(), AGENTS * PER_AGENT);

    let now = DateTime::now();
    let stored: Vec<Message> = app
        .db
        .messages
        .collection()
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(stored.len(), AGENTS * PER_AGENT);
    for m in &stored {
        let (agent, lease) = &leases[&m.id];
        assert_eq!(&m.agent_id, agent, "leased to its own agent");
        assert_eq!(m.status, Status::Assigned);
        assert_eq!(m.attempts, 1, "leased exactly once");
        assert_eq!(
            m.lease_id.as_ref(),
            Some(lease),
            "the lease the poller got is the live one"
        );
        assert!(m.lease_expires_at.unwrap() > now);
    }
    for (_, token) in &agents {
        assert!(job_ids(&poll(&app, token, 100).await).is_empty());
    }
    assert_eq!(
        metric(&app, "sms_leases_total").await,
        (AGENTS * PER_AGENT) as f64
    );
    assert_eq!(metric(&app, "sms_lease_expiries_total").await, 0.0);
}

#[tokio::test]
async fn a_job_goes_through_its_lifecycle() {
    let (app, agent, token) = app_with_agent(&[FAST]).await;
    let sent = staged(agent, 50, 2);
    let failed = staged(agent, 50, 1);
    insert(&app, &[sent.clone(), failed.clone()]).await;
    let body = poll(&app, &token, 10).await;
    let lease = body["jobs"][0]["lease_id"].as_str().unwrap().to_owned();
    let (s, f) = (sent.id.to_hex(), failed.id.to_hex());

    let before = DateTime::now();
    let long_error = "x".repeat(600);
    let results = report(
        &app,
        &token,
        json!([
            {"message_id": s, "status": "SENDING", "lease_id": lease},
            {"message_id": s, "status": "SENT", "lease_id": lease},
            {"message_id": f, "status": "SENDING"},
            {"message_id": f, "status": "FAILED", "error": long_error},
        ]),
    )
    .await;
    assert_eq!(
        Value::Array(results),
        json!([
            {"message_id": s, "ok": true, "status": "SENDING"},
            {"message_id": s, "ok": true, "status": "SENT"},
            {"message_id": f, "ok": true, "status": "SENDING"},
            {"message_id": f, "ok": true, "status": "FAILED"},
        ])
    );
    let m = load(&app, sent.id).await;
    assert_eq!(m.status, Status::Sent);
    assert!(m.sending_at.unwrap() >= before && m.sent_at.unwrap() >= m.sending_at.unwrap());
    assert!(m.updated_at >= before);
    let m = load(&app, failed.id).await;
    assert_eq!(m.status, Status::Failed);
    assert!(m.failed_at.unwrap() >= before);
    assert_eq!(m.last_error.unwrap(), "x".repeat(500));

    // A retried report is a harmless no-op; the delivery receipt completes the message.
    let results = report(
        &app,
        &token,
        json!([
            {"message_id": s, "status": "SENT", "lease_id": lease},
            {"message_id": s, "status": "DELIVERED"},
            {"message_id": s, "status": "SENT"},
        ]),
    )
    .await;
    assert_eq!(
        Value::Array(results),
        json!([
            {"message_id": s, "ok": true, "status": "SENT"},
            {"message_id": s, "ok": true, "status": "DELIVERED"},
            {"message_id": s, "ok": false, "status": "DELIVERED", "error": "INVALID_TRANSITION"},
        ])
    );
    let m = load(&app, sent.id).await;
    assert_eq!(m.status, Status::Delivered);
    assert!(m.delivered_at.unwrap() >= m.sent_at.unwrap());
    assert_eq!(
        metric(&app, "sms_reports_total{status=\"SENT\"}").await,
        1.0
    );
    assert_eq!(
        metric(&app, "sms_reports_total{status=\"DELIVERED\"}").await,
        1.0
    );
    assert_eq!(
        metric(&app, "sms_reports_total{status=\"SENDING\"}").await,
        2.0
    );
    assert_eq!(
        metric(
            &app,
            "sms_reports_rejected_total{reason=\"INVALID_TRANSITION\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn every_transition_follows_the_contract() {
    use Status::*;
    // The contract's list, written out rather than derived from the code under test.
    let allowed = [
        (Pending, Assigned),
        (Pending, Sending),
        (Pending, Sent),
        (Pending, Failed),
        (Assigned, Sending),
        (Assigned, Sent),
        (Assigned, Failed),
        (Sending, Sent),
        (Sending, Failed),
        (Sent, Delivered),
    ];
    let (app, agent, token) = app_with_agent(&[FAST]).await;
    let mut cases = Vec::new();
    for from in Status::ALL {
        for to in Status::ALL {
            cases.push((from, to, in_status(staged(agent, 50, 0), from)));
        }
    }
    let messages: Vec<Message> = cases.iter().map(|(_, _, m)| m.clone()).collect();
    insert(&app, &messages).await;
    let items: Vec<Value> = cases
        .iter()
        .map(|(_, to, m)| json!({"message_id": m.id.to_hex(), "status": to.as_str(), "error": "E"}))
        .collect();
    let results = report(&app, &token, Value::Array(items)).await;
    assert_eq!(results.len(), 49);

    for ((from, to, m), result) in cases.iter().zip(&results) {
        let case = format!("{from} -> {to}: {result}");
        assert_eq!(result["message_id"], m.id.to_hex().as_str(), "{case}");
        let stored = load(&app, m.id).await;
        if from == to {
            assert_eq!(result["ok"], true, "{case}");
            assert_eq!(result["status"], from.as_str(), "{case}");
            assert!(result.get("error").is_none(), "{case}");
            assert_eq!(
                snapshot(&stored),
                snapshot(m),
                "{case}: a repeat changes nothing"
            );
        } else if allowed.contains(&(*from, *to)) {
            assert_eq!(result["ok"], true, "{case}");
            assert_eq!(result["status"], to.as_str(), "{case}");
            assert_eq!(stored.status, *to, "{case}");
            assert!(stored.updated_at > m.updated_at, "{case}");
            let stamp = match to {
                Sending => stored.sending_at,
                Sent => stored.sent_at,
                Failed => stored.failed_at,
                Delivered => stored.delivered_at,
                _ => Some(stored.updated_at),
            };
            assert!(
                stamp.is_some_and(|t| t >= stored.updated_at),
                "{case}: time recorded"
            );
            if *to == Failed {
                assert_eq!(stored.last_error.as_deref(), Some("E"), "{case}");
            }
        } else {
            assert_eq!(result["ok"], false, "{case}");
            assert_eq!(result["error"], "INVALID_TRANSITION", "{case}");
            assert_eq!(result["status"], from.as_str(), "{case}");
            assert_eq!(snapshot(&stored), snapshot(m), "{case}: nothing changed");
        }
    }
}

#[tokio::test]
async fn reports_from_another_agent_are_refused_without_revealing_anything() {
    let (app, agent, token) = app_with_agent(&[FAST]).await;
    let (_, intruder) = app.register_agent("agent-666").await;
    let mine = staged(agent, 50, 0);
    insert(&app, std::slice::from_ref(&mine)).await;
    let lease = poll(&app, &token, 10).await["jobs"][0]["lease_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = snapshot(&load(&app, mine.id).await);

    // The intruder cannot see it, nor change it even with the right lease id.
    assert!(job_ids(&poll(&app, &intruder, 10).await).is_empty());
    let results = report(
        &app,
        &intruder,
        json!([
            {"message_id": mine.id.to_hex(), "status": "SENT", "lease_id": lease},
            {"message_id": mine.id.to_hex(), "status": "FAILED"},
            {"message_id": ObjectId::new().to_hex(), "status": "SENT"},
        ]),
    )
    .await;
    for r in &results {
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!(r["error"], "NOT_FOUND", "{r}");
        assert!(r["status"].is_null(), "no status revealed: {r}");
    }
    assert_eq!(snapshot(&load(&app, mine.id).await), before);
    assert_eq!(
        metric(&app, "sms_reports_rejected_total{reason=\"NOT_FOUND\"}").await,
        3.0
    );

    // A message its own agent cannot see yet (not staged) is just as unknown.
    let mut unstaged = staged(agent, 50, 0);
    unstaged.staged = false;
    insert(&app, std::slice::from_ref(&unstaged)).await;
    let results = report(
        &app,
        &token,
        json!([{"message_id": unstaged.id.to_hex(), "status": "SENDING"}]),
    )
    .await;
    assert_eq!(results[0]["error"], "NOT_FOUND");
    assert_eq!(load(&app, unstaged.id).await.status, Status::Pending);
}

#[tokio::test]
async fn report_batches_are_validated() {
    let (app, agent, token) = app_with_agent(&[FAST]).await;
    let m = staged(agent, 50, 0);
    insert(&app, std::slice::from_ref(&m)).await;
    let url = "/sms/agent/messages/report";

    let empty = app
        .post(url, Auth::Bearer(&token), json!({"messages": []}))
        .await;
    assert_error(empty, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
    let item = json!({"message_id": m.id.to_hex(), "status": "SENDING"});
    let too_many = app
        .post(
            url,
            Auth::Bearer(&token),
            json!({"messages": vec![item.clone(); 501]}),
        )
        .await;
    assert_error(too_many, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
    let unknown_field = app
        .post(
            url,
            Auth::Bearer(&token),
            json!({"messages": [{"message_id": m.id.to_hex(), "status": "SENT", "agent_id": "x"}]}),
        )
        .await;
    assert_eq!(unknown_field.status(), StatusCode::BAD_REQUEST);
    let unknown_top = app
        .post(
            url,
            Auth::Bearer(&token),
            json!({"messages": [item], "force": true}),
        )
        .await;
    assert_eq!(unknown_top.status(), StatusCode::BAD_REQUEST);
    let no_auth = app.post(url, Auth::None, json!({"messages": [item]})).await;
    assert_error(no_auth, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    assert_eq!(load(&app, m.id).await.status, Status::Pending);

    // 500 items are fine; unknown statuses and malformed ids are refused item by item.
    let mut items = vec![json!({"message_id": m.id.to_hex(), "status": "SENDING"}); 498];
    items.push(json!({"message_id": m.id.to_hex(), "status": "sent"}));
    items.push(json!({"message_id": "not-an-id", "status": "SENT"}));
    let results = report(&app, &token, Value::Array(items)).await;
    assert_eq!(results.len(), 500);
    assert_eq!(
        results[0],
        json!({"message_id": m.id.to_hex(), "ok": true, "status": "SENDING"})
    );
    assert_eq!(
        results[497],
        json!({"message_id": m.id.to_hex(), "ok": true, "status": "SENDING"})
    );
    assert_eq!(
        results[498],
        json!({"message_id": m.id.to_hex(), "ok": false, "status": null, "error": "INVALID_STATUS"})
    );
    assert_eq!(
        results[499],
        json!({"message_id": "not-an-id", "ok": false, "status": null, "error": "NOT_FOUND"})
    );
    assert_eq!(load(&app, m.id).await.status, Status::Sending);
}

#[tokio::test]
async fn a_late_report_with_a_stale_lease_changes_nothing() {
    let (app, agent, token) = app_with_agent(&[FAST, ("LEASE_SECONDS", "1")]).await;
    let m = staged(agent, 50, 0);
    insert(&app, std::slice::from_ref(&m)).await;
    let old = poll(&app, &token, 1).await["jobs"][0]["lease_id"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let new = poll(&app, &token, 1).await["jobs"][0]["lease_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(old, new);
    let before = snapshot(&load(&app, m.id).await);

    // The phone that held the old lease wakes up and reports.
    let results = report(
        &app,
        &token,
        json!([
            {"message_id": m.id.to_hex(), "status": "SENDING", "lease_id": old},
            {"message_id": m.id.to_hex(), "status": "FAILED", "lease_id": old, "error": "late"},
            {"message_id": m.id.to_hex(), "status": "ASSIGNED", "lease_id": old},
        ]),
    )
    .await;
    for r in &results {
        assert_eq!(
            r,
            &json!({"message_id": m.id.to_hex(), "ok": false, "status": "ASSIGNED", "error": "STALE_LEASE"})
        );
    }
    assert_eq!(snapshot(&load(&app, m.id).await), before);
    assert_eq!(
        metric(&app, "sms_reports_rejected_total{reason=\"STALE_LEASE\"}").await,
        3.0
    );

    // The current lease holder's report goes through.
    let results = report(
        &app,
        &token,
        json!([{"message_id": m.id.to_hex(), "status": "SENDING", "lease_id": new}]),
    )
    .await;
    assert_eq!(results[0]["ok"], true);
    assert_eq!(load(&app, m.id).await.status, Status::Sending);
    // Once SENDING, it is never handed out again, even with its lease long gone.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert!(job_ids(&poll(&app, &token, 10).await).is_empty());
}

#[tokio::test]
async fn pacing_caps_each_agent_per_rolling_minute() {
    let (app, agent, token) = app_with_agent(&[("AGENT_RATE_LIMIT_PER_MIN", "5")]).await;
    let (other, other_token) = app.register_agent("agent-002").await;
    let mut messages: Vec<Message> = (0..20).map(|i| staged(agent, 50, i)).collect();
    messages.extend((0..20).map(|i| staged(oid(&other), 50, i)));
    insert(&app, &messages).await;

    let first = poll(&app, &token, 10).await;
    assert_eq!(job_ids(&first).len(), 5);
    assert!(first["retry_after_seconds"].is_null());
    let second = poll(&app, &token, 10).await;
    assert!(job_ids(&second).is_empty());
    let retry = second["retry_after_seconds"].as_i64().unwrap();
    assert!(
        (50..=60).contains(&retry),
        "retry after {retry}s: when the first lease leaves the window"
    );

    // Another agent has its own allowance.
    assert_eq!(job_ids(&poll(&app, &other_token, 3).await).len(), 3);
    assert_eq!(job_ids(&poll(&app, &other_token, 3).await).len(), 2);
    assert!(job_ids(&poll(&app, &other_token, 3).await).is_empty());

    let assigned = app
        .db
        .messages
        .collection()
        .count_documents(doc! {"agent_id": agent, "status": "ASSIGNED"})
        .await
        .unwrap();
    assert_eq!(assigned, 5);
}

#[tokio::test]
async fn re_leases_count_against_the_pacing_cap() {
    let (app, agent, token) =
        app_with_agent(&[("AGENT_RATE_LIMIT_PER_MIN", "3"), ("LEASE_SECONDS", "1")]).await;
    let messages: Vec<Message> = (0..3).map(|i| staged(agent, 50, i)).collect();
    insert(&app, &messages).await;
    assert_eq!(job_ids(&poll(&app, &token, 10).await).len(), 3);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let body = poll(&app, &token, 10).await;
    assert!(
        job_ids(&body).is_empty(),
        "the expired leases must wait for the window"
    );
    assert!(body["retry_after_seconds"].as_i64().unwrap() > 0);
    for m in &messages {
        assert_eq!(load(&app, m.id).await.attempts, 1);
    }
}

#[tokio::test]
async fn concurrent_polls_on_two_replicas_never_exceed_the_cap() {
    let (app, agent, token) = app_with_agent(&[("AGENT_RATE_LIMIT_PER_MIN", "5")]).await;
    // A second API process on the same database.
    let replica = spawn_app_from(app.vars.clone()).await;
    let messages: Vec<Message> = (0..40).map(|i| staged(agent, 50, i)).collect();
    insert(&app, &messages).await;
    let (app, replica) = (Arc::new(app), Arc::new(replica));

    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let target = if i % 2 == 0 {
                app.clone()
            } else {
                replica.clone()
            };
            let token = token.clone();
            tokio::spawn(async move { job_ids(&poll(&target, &token, 3).await) })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        got.extend(t.await.unwrap());
    }
    assert!(got.len() <= 5, "{} messages leased concurrently", got.len());
    eprintln!(
        "12 concurrent polls on two replicas leased {} of 5",
        got.len()
    );

    // Whatever the race left unused is still available, and never more than the cap.
    for _ in 0..5 {
        got.extend(job_ids(&poll(&replica, &token, 10).await));
    }
    assert_eq!(got.len(), 5);
    assert_eq!(got.iter().collect::<HashSet<_>>().len(), 5);
    let assigned = app
        .db
        .messages
        .collection()
        .count_documents(doc! {"status": "ASSIGNED"})
        .await
        .unwrap();
    assert_eq!(assigned, 5);
    assert_eq!(
        app.db
            .agent_rate
            .used(agent, sms_shared::time::now())
            .await
            .unwrap(),
        5
    );
}

#[tokio::test]
async fn the_reconciler_fails_messages_stuck_in_sending() {
    let (app, agent, token) = app_with_agent(&[
        FAST,
        ("SENDING_TIMEOUT_SECONDS", "1"),
        ("RECONCILE_INTERVAL_MS", "200"),
    ])
    .await;
    let stuck = staged(agent, 60, 0);
    let held = staged(agent, 50, 0);
    insert(&app, &[stuck.clone(), held.clone()]).await;
    assert_eq!(job_ids(&poll(&app, &token, 10).await).len(), 2);
    let results = report(
        &app,
        &token,
        json!([{"message_id": stuck.id.to_hex(), "status": "SENDING"}]),
    )
    .await;
    assert_eq!(results[0]["ok"], true);

    let deadline = Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let m = load(&app, stuck.id).await;
        if m.status == Status::Failed {
            break m;
        }
        assert!(Instant::now() < deadline, "still {} after 10 s", m.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(failed.last_error.as_deref(), Some("SENDING_TIMEOUT"));
    let waited = failed.failed_at.unwrap().timestamp_millis()
        - failed.sending_at.unwrap().timestamp_millis();
    assert!(waited >= 1_000, "failed after {waited} ms");
    assert_eq!(load(&app, held.id).await.status, Status::Assigned);
    assert_eq!(metric(&app, "sms_sending_timeouts_total").await, 1.0);

    // Never sent again, and the phone's late success report cannot revive it.
    assert!(job_ids(&poll(&app, &token, 10).await).is_empty());
    let results = report(
        &app,
        &token,
        json!([{"message_id": stuck.id.to_hex(), "status": "SENT"}]),
    )
    .await;
    assert_eq!(results[0]["error"], "INVALID_TRANSITION");
    assert_eq!(results[0]["status"], "FAILED");

    // The gauge counts what the agent still holds: the one live lease.
    let gauge = format!(
        "sms_agent_in_flight_messages{{agent_id=\"{}\"}}",
        agent.to_hex()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&app, &gauge).await != 1.0 {
        assert!(
            Instant::now() < deadline,
            "in-flight gauge never settled at 1"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_disabled_agent_gets_401_and_its_messages_stay_untouched() {
    let (app, agent, token) = app_with_agent(&[FAST]).await;
    let pending = staged(agent, 50, 0);
    let assigned = in_status(staged(agent, 50, 0), Status::Assigned);
    insert(&app, &[pending.clone(), assigned.clone()]).await;

    let res = app
        .request(
            Method::PATCH,
            &format!("/sms/admin/agents/{}", agent.to_hex()),
            Auth::Operator,
            Some(json!({"is_active": false})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);

    let res = app
        .get("/sms/agent/jobs/next?limit=10", Auth::Bearer(&token))
        .await;
    assert_error(res, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let res = app
        .post(
            "/sms/agent/messages/report",
            Auth::Bearer(&token),
            json!({"messages": [
                {"message_id": assigned.id.to_hex(), "status": "SENT", "lease_id": assigned.lease_id},
            ]}),
        )
        .await;
    assert_error(res, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    for m in [&pending, &assigned] {
        assert_eq!(snapshot(&load(&app, m.id).await), snapshot(m));
    }
    assert_eq!(metric(&app, "sms_leases_total").await, 0.0);
}
