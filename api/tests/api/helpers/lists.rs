//! Fixtures of the list tests: message and audit histories inserted straight into their
//! collections at chosen ages, and `explain` of what a list executed, read back as the stages
//! of its plan.

use mongodb::bson::{oid::ObjectId, Bson, DateTime};
use serde_json::Value;
use sms_shared::db::audit_logs::AuditLog;
use sms_shared::db::messages::{Message, NewMessage, Route};
use sms_shared::db::paging::{PageRequest, QuerySpec};
use sms_shared::domain::status::Status;

use super::{in_status, Auth, Sender, TestApp};

const HOUR_MS: i64 = 3_600_000;

/// Ages (hours) of the fixture histories: inside every window of a walk, the open one too.
pub const AGES_H: [f64; 12] = [
    0.1, 0.5, 2.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0,
];

/// The statuses the fixture messages cycle through.
pub const STATUSES: [Status; 3] = [Status::Pending, Status::Sent, Status::Failed];

/// A message of `tenant` pinned to `agent`, in `status`, to `to`, created `age_ms` ago.
pub fn message_at(
    tenant: Option<ObjectId>,
    agent: ObjectId,
    status: Status,
    to: &str,
    age_ms: i64,
) -> Message {
    let created_at = DateTime::from_millis(DateTime::now().timestamp_millis() - age_ms);
    let m = Message::pending(NewMessage {
        request_id: ObjectId::new(),
        api_key_id: tenant,
        client_name: "SafeShop".into(),
        route: Route::Pinned(agent),
        template_id: ObjectId::new(),
        to: to.into(),
        text: "Ma OTP 123456".into(),
        priority_weight: 50,
        created_at,
    })
    .staged_at(created_at);
    in_status(m, status)
}

/// Two clients with an agent each, and a history of messages: every combination of client
/// (or operator), agent, status of [`STATUSES`] and one of three numbers, each at 3 of the
/// ages of [`AGES_H`].
pub struct History {
    pub a: Sender,
    pub b: Sender,
    /// The three numbers, E.164.
    pub numbers: Vec<String>,
}

impl History {
    pub async fn insert(app: &TestApp) -> Self {
        let a = app.sender().await;
        let b = app.sender().await;
        let numbers: Vec<String> = super::numbers(3)
            .iter()
            .map(|n| format!("+84{}", &n[1..]))
            .collect();
        let tenants = [Some(a.key_id.as_str()), Some(b.key_id.as_str()), None];
        let agents = [a.agent_id.as_str(), b.agent_id.as_str()];
        let mut messages = Vec::new();
        let mut c = 0;
        for tenant in tenants {
            for agent in agents {
                for status in STATUSES {
                    for number in &numbers {
                        // Each combination at 3 of the 12 ages, a quarter of them at each age.
                        for (k, age) in AGES_H.iter().enumerate().filter(|(k, _)| (c + k) % 4 == 0)
                        {
                            let age_ms = (age * HOUR_MS as f64) as i64 + (c * 12 + k) as i64;
                            messages.push(message_at(
                                tenant.map(super::oid),
                                super::oid(agent),
                                status,
                                number,
                                age_ms,
                            ));
                        }
                        c += 1;
                    }
                }
            }
        }
        app.db.messages.insert_many(&messages).await.unwrap();
        Self { a, b, numbers }
    }
}

/// Audit entries by `alice` and `bob`, of `key.create` and `key.revoke`, at every age of
/// [`AGES_H`]; returns them.
pub async fn audit_history(app: &TestApp) -> Vec<AuditLog> {
    let mut entries = Vec::new();
    for (i, age) in AGES_H.iter().enumerate() {
        for (j, (actor, action)) in [
            ("alice", "key.create"),
            ("alice", "key.revoke"),
            ("bob", "key.create"),
            ("bob", "key.revoke"),
        ]
        .into_iter()
        .enumerate()
        {
            let age_ms = (age * HOUR_MS as f64) as i64 + (i * 4 + j) as i64;
            let at = DateTime::from_millis(DateTime::now().timestamp_millis() - age_ms);
            let entry = AuditLog {
                id: sms_shared::db::paging::id_at(at),
                at,
                ..AuditLog::new(actor, action, "api_key", None, None, Default::default())
            };
            app.db.audit_logs.insert(&entry).await.unwrap();
            entries.push(entry);
        }
    }
    entries
}

/// A page request as the API makes it.
pub fn page(limit: u64, skip: u64, after: Option<ObjectId>) -> PageRequest {
    PageRequest {
        after,
        skip,
        ..super::first_page(limit)
    }
}

/// The ids of a page the API answered, and the page.
pub async fn api_page(app: &TestApp, path: &str, auth: Auth<'_>) -> (Vec<String>, Value) {
    let res = app.get(path, auth).await;
    assert_eq!(res.status(), reqwest::StatusCode::OK, "{path}");
    let body: Value = res.json().await.unwrap();
    let ids = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    (ids, body)
}

/// What `explain` (executionStats) says of one executed operation.
#[derive(Debug)]
pub struct Plan {
    /// Every stage of the winning plan, outermost first.
    pub stages: Vec<String>,
    /// The index of each `IXSCAN`.
    pub indexes: Vec<String>,
    pub keys_examined: u64,
}

/// Explains `spec` on `collection` as executed.
pub async fn explain(app: &TestApp, collection: &str, spec: &QuerySpec) -> Plan {
    let reply = app
        .db
        .database
        .run_command(spec.explain(collection, "executionStats"))
        .await
        .unwrap();
    let reply = Bson::Document(reply).into_relaxed_extjson();
    // An aggregation's explain holds the query's under its first stage's `$cursor`.
    let query = match reply["stages"][0].get("$cursor") {
        Some(cursor) => cursor.clone(),
        None => reply.clone(),
    };
    let mut plan = Plan {
        stages: Vec::new(),
        indexes: Vec::new(),
        keys_examined: query["executionStats"]["totalKeysExamined"]
            .as_u64()
            .unwrap_or_else(|| panic!("no executionStats in {reply}")),
    };
    collect(&query["queryPlanner"]["winningPlan"], &mut plan);
    plan
}

fn collect(node: &Value, plan: &mut Plan) {
    if let Some(stage) = node["stage"].as_str() {
        plan.stages.push(stage.to_owned());
        if stage == "IXSCAN" {
            plan.indexes
                .push(node["indexName"].as_str().unwrap_or_default().to_owned());
        }
    }
    if let Some(input) = node.get("inputStage") {
        collect(input, plan);
    }
    for input in node["inputStages"].as_array().into_iter().flatten() {
        collect(input, plan);
    }
}

impl Plan {
    /// Asserts an index scan of `index` alone, no collection scan, no in-memory sort, and at
    /// most `max_keys` keys examined.
    pub fn assert_served_by(&self, index: &str, max_keys: u64, what: &str) {
        assert!(
            !self.indexes.is_empty() && self.indexes.iter().all(|i| i == index),
            "{what}: expected IXSCAN on {index}, got {self:?}"
        );
        assert!(
            !self.stages.iter().any(|s| s == "COLLSCAN" || s == "SORT"),
            "{what}: {self:?}"
        );
        assert!(
            self.keys_examined <= max_keys,
            "{what}: {} keys examined, at most {max_keys} expected ({self:?})",
            self.keys_examined
        );
    }
}
