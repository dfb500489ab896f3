//! Fixtures of the agent protocol's tests: staged messages inserted straight into
//! `sms_messages`, with their jobs in `sms_jobs`, as a dispatcher (and earlier polls and reports)
//! leave them, and the phone's side of polling and reporting.

use mongodb::bson::{self, oid::ObjectId, DateTime};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sms_shared::db::jobs::Job;
use sms_shared::db::messages::{Message, NewMessage, Route};
use sms_shared::domain::status::Status;

use super::{oid, spawn_app_with, Auth, TestApp};

/// Pacing out of the way: tests of leasing and reports poll as often as they like.
pub const FAST: (&str, &str) = ("AGENT_RATE_LIMIT_PER_MIN", "100000");

/// A staged, pending message of `agent`, created `age_ms` milliseconds ago.
pub fn staged(agent: ObjectId, priority_weight: i32, age_ms: i64) -> Message {
    routed(Route::Pinned(agent), priority_weight, age_ms)
}

/// A staged, pending message going `route`, created `age_ms` milliseconds ago.
pub fn routed(route: Route, priority_weight: i32, age_ms: i64) -> Message {
    let now = DateTime::now().timestamp_millis();
    let created_at = DateTime::from_millis(now - age_ms);
    Message::pending(NewMessage {
        request_id: ObjectId::new(),
        api_key_id: None,
        client_name: "SafeShop".into(),
        route,
        template_id: ObjectId::new(),
        to: "+84901234567".into(),
        text: format!("Your code is {}", &ObjectId::new().to_hex()[18..]),
        priority_weight,
        created_at,
    })
    .staged_at(created_at)
}

/// `m` put in `status` as if it had got there normally (lease live for a minute).
pub fn in_status(mut m: Message, status: Status) -> Message {
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

/// Inserts the messages, counted where they stand, and the jobs of those staged and waiting
/// for or held by a phone.
pub async fn insert(app: &TestApp, messages: &[Message]) {
    app.db.messages.insert_many(messages).await.unwrap();
    app.db
        .stats
        .apply(&Message::created(messages))
        .await
        .unwrap();
    let now = DateTime::now();
    let jobs: Vec<Job> = messages
        .iter()
        .filter(|m| m.staged)
        .filter_map(|m| Job::of(m, now))
        .collect();
    let (_, failed) = app.db.jobs.stage(&jobs).await;
    assert!(failed.is_none(), "jobs inserted: {failed:?}");
}

pub async fn load(app: &TestApp, id: ObjectId) -> Message {
    app.db
        .messages
        .find(id)
        .await
        .unwrap()
        .expect("message exists")
}

/// An app with one registered agent: (app, agent_id, agent_token).
pub async fn app_with_agent(overrides: &[(&str, &str)]) -> (TestApp, ObjectId, String) {
    let app = spawn_app_with(overrides).await;
    let (id, token) = app.register_agent("agent-001").await;
    (app, oid(&id), token)
}

/// `GET /agent/jobs/next?limit=` answered 200; returns the body.
pub async fn poll(app: &TestApp, token: &str, limit: i64) -> Value {
    let res = app
        .get(
            &format!("/sms/agent/jobs/next?limit={limit}"),
            Auth::Bearer(token),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK, "poll status");
    res.json().await.unwrap()
}

pub fn job_ids(body: &Value) -> Vec<String> {
    body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["message_id"].as_str().unwrap().to_owned())
        .collect()
}

/// `POST /agent/messages/report` answered 200; returns `results`.
pub async fn report(app: &TestApp, token: &str, items: Value) -> Vec<Value> {
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

pub fn snapshot(m: &Message) -> bson::Document {
    bson::to_document(m).unwrap()
}
