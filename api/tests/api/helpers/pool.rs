//! Fixtures of the pool tests: pool messages as a dispatcher leaves them, a fleet of agents,
//! requests through `POST /requests` staged with the dispatcher's own step, and operators'
//! `PATCH` calls.

use mongodb::bson::oid::ObjectId;
use reqwest::{Method, Response};
use serde_json::{json, Value};
use sms_shared::db::jobs::{lane, EVERY_AGENT};
use sms_shared::db::messages::{Message, Route};

use super::{all_events, dispatcher, numbers, oid, routed, Auth, TestApp};

/// A staged, pending message of the pool of every active agent.
pub fn for_everyone(priority_weight: i32, age_ms: i64) -> Message {
    routed(
        Route::Pool(vec![EVERY_AGENT.to_owned()]),
        priority_weight,
        age_ms,
    )
}

/// A staged, pending message of the pool of `agents`.
pub fn for_pool(agents: &[ObjectId], priority_weight: i32, age_ms: i64) -> Message {
    routed(
        Route::Pool(agents.iter().map(|a| lane(*a)).collect()),
        priority_weight,
        age_ms,
    )
}

/// Registers `n` more agents: `(agent_id, agent_token)` each.
pub async fn fleet(app: &TestApp, n: usize) -> Vec<(ObjectId, String)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let (id, token) = app
            .register_agent(&format!("phone-{}", super::unique()))
            .await;
        out.push((oid(&id), token));
    }
    out
}

/// `PATCH path` as the operator.
pub async fn patch(app: &TestApp, path: &str, body: Value) -> Response {
    app.request(Method::PATCH, path, Auth::Operator, Some(body))
        .await
}

/// `POST /requests` with `key`: the template `Ma OTP {CODE}` to `n` numbers, with `target`'s
/// fields (`agent_id`, `agent_ids`, or none).
pub async fn send(
    app: &TestApp,
    key: &str,
    template_id: &str,
    target: Value,
    n: usize,
) -> Response {
    let messages: Vec<Value> = numbers(n)
        .iter()
        .map(|to| json!({"to": to, "variables": {"CODE": "4821"}}))
        .collect();
    let mut body = json!({"template_id": template_id, "messages": messages});
    for (k, v) in target.as_object().expect("target fields").clone() {
        body[k] = v;
    }
    app.post("/sms/requests", Auth::ApiKey(key), body).await
}

/// Stages every message of the app's database with the dispatcher's step.
pub async fn stage(app: &TestApp) {
    let events = all_events(app).await;
    let payloads: Vec<&[u8]> = events.iter().map(Vec::as_slice).collect();
    dispatcher(app).handle_batch(&payloads).await;
}

/// An agent id as the API shows it.
pub fn hex(id: ObjectId) -> Value {
    json!(id.to_hex())
}

/// The item of the operators' list at `path` whose `field` is `id`.
pub async fn listed_item(app: &TestApp, path: &str, field: &str, id: &str) -> Value {
    let list: Value = app.get(path, Auth::Operator).await.json().await.unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item[field] == id)
        .unwrap_or_else(|| panic!("{id} is not in {path}"))
        .clone()
}
