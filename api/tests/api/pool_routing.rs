//! `POST /requests` with and without `agent_id`: a named agent pins the messages as before; no
//! agent (or `agent_ids`) makes a pool, leased by any of its active agents, the message showing
//! no agent until one leases it; a key restricted to some agents may use only those, and any
//! other agent is answered exactly like an unknown one.

use mongodb::bson::{doc, oid::ObjectId};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sms_shared::db::jobs::Job;
use sms_shared::domain::status::Status;

use crate::helpers::*;

async fn jobs(app: &TestApp) -> Vec<Job> {
    use futures::TryStreamExt;
    app.db
        .jobs
        .collection()
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

async fn request_doc(app: &TestApp, res: reqwest::Response) -> (String, Value) {
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let id = res.json::<Value>().await.unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let view = app
        .get(&format!("/sms/requests/{id}"), Auth::Operator)
        .await
        .json::<Value>()
        .await
        .unwrap();
    (id, view)
}

async fn message_views(app: &TestApp, request_id: &str) -> Vec<Value> {
    let res = app
        .get(
            &format!("/sms/messages?request_id={request_id}"),
            Auth::Operator,
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json::<Value>().await.unwrap()["items"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn a_request_without_an_agent_goes_to_whichever_active_agent_polls() {
    let app = spawn_app_with(&[FAST]).await;
    let s = app.sender().await;
    let others = fleet(&app, 2).await;
    let res = send(&app, &s.key, &s.template_id, json!({}), 3).await;
    let (request_id, view) = request_doc(&app, res).await;
    assert_eq!(
        (&view["agent_id"], &view["agent_ids"]),
        (&Value::Null, &Value::Null)
    );
    for m in message_views(&app, &request_id).await {
        assert_eq!(m["agent_id"], Value::Null, "no agent holds it yet: {m}");
    }
    stage(&app).await;
    for j in jobs(&app).await {
        assert_eq!(
            (j.lanes, j.pool, j.holder),
            (vec!["*".to_owned()], true, None)
        );
    }
    // Nobody holds them: counted in the totals, under no agent, and with an empty agent cell.
    let summary: Value = app
        .get("/sms/reports/summary", Auth::Operator)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (summary["total"].as_i64(), &summary["by_agent"]),
        (Some(3), &json!([]))
    );
    let csv = app
        .get("/sms/reports/export.csv", Auth::Operator)
        .await
        .text()
        .await
        .unwrap();
    let mut rows = csv::Reader::from_reader(csv.as_bytes());
    let agent_column = rows
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "agent_id")
        .unwrap();
    let cells: Vec<String> = rows
        .records()
        .map(|r| r.unwrap()[agent_column].to_owned())
        .collect();
    assert_eq!(cells, ["", "", ""], "no agent yet");

    let tokens = [&s.agent_token, &others[0].1, &others[1].1];
    let agents = [oid(&s.agent_id), others[0].0, others[1].0];
    let mut holder_of = std::collections::HashMap::new();
    for (token, agent) in tokens.iter().zip(agents) {
        let got = job_ids(&poll(&app, token, 1).await);
        assert_eq!(got.len(), 1, "every agent of the pool gets one");
        holder_of.insert(got[0].clone(), agent);
    }
    for m in message_views(&app, &request_id).await {
        let id = m["message_id"].as_str().unwrap();
        assert_eq!(m["agent_id"], hex(holder_of[id]), "the holder is shown");
        assert_eq!(
            (m["status"].as_str(), m["attempts"].as_i64()),
            (Some("ASSIGNED"), Some(1))
        );
    }
    let res = app
        .get(
            &format!("/sms/messages/all?agent_id={}", others[0].0.to_hex()),
            Auth::Operator,
        )
        .await;
    let found: Value = res.json().await.unwrap();
    assert_eq!(found["total"], 1, "agent_id= finds what that agent leased");
    counters_match_a_recount(&app).await;
}

#[tokio::test]
async fn a_subset_pool_is_leased_by_its_agents_only() {
    let app = spawn_app_with(&[FAST]).await;
    let s = app.sender().await;
    let a = oid(&s.agent_id);
    let others = fleet(&app, 2).await;
    let (b, outsider) = (&others[0], &others[1]);
    let target = json!({"agent_ids": [a.to_hex(), b.0.to_hex(), a.to_hex()]});
    let (request_id, view) =
        request_doc(&app, send(&app, &s.key, &s.template_id, target, 4).await).await;
    assert_eq!(view["agent_id"], Value::Null);
    assert_eq!(
        view["agent_ids"],
        json!([a.to_hex(), b.0.to_hex()]),
        "duplicates count once"
    );
    stage(&app).await;
    for j in jobs(&app).await {
        assert_eq!(j.lanes, vec![a.to_hex(), b.0.to_hex()]);
        assert!(j.pool);
    }

    assert!(job_ids(&poll(&app, &outsider.1, 10).await).is_empty());
    assert_eq!(job_ids(&poll(&app, &b.1, 3).await).len(), 3);
    assert_eq!(job_ids(&poll(&app, &s.agent_token, 10).await).len(), 1);
    let held_by_b = message_views(&app, &request_id)
        .await
        .iter()
        .filter(|m| m["agent_id"] == hex(b.0))
        .count();
    assert_eq!(held_by_b, 3);
    counters_match_a_recount(&app).await;
}

#[tokio::test]
async fn a_request_naming_its_agent_is_pinned_as_before() {
    let app = spawn_app_with(&[FAST]).await;
    let s = app.sender().await;
    let other = fleet(&app, 1).await.remove(0);
    let res = app
        .submit(&s, &[("0901234567", "1"), ("0901234568", "2")])
        .await;
    let (request_id, view) = request_doc(&app, res).await;
    assert_eq!(view["agent_id"], json!(s.agent_id));
    assert_eq!(view["agent_ids"], Value::Null);
    for m in message_views(&app, &request_id).await {
        assert_eq!(m["agent_id"], json!(s.agent_id), "pinned from the start");
    }
    stage(&app).await;
    for j in jobs(&app).await {
        assert_eq!((&j.lanes, j.pool), (&vec![s.agent_id.clone()], false));
        assert_eq!(j.pinned_agent(), Some(oid(&s.agent_id)));
    }
    assert!(job_ids(&poll(&app, &other.1, 10).await).is_empty());
    assert_eq!(job_ids(&poll(&app, &s.agent_token, 10).await).len(), 2);
    counters_match_a_recount(&app).await;
}

#[tokio::test]
async fn pool_requests_are_validated_whole_and_a_refusal_stores_nothing() {
    let app = spawn_app().await;
    let s = app.sender().await;
    let disabled = fleet(&app, 1).await.remove(0).0;
    let res = patch(
        &app,
        &format!("/sms/admin/agents/{}", disabled.to_hex()),
        json!({"is_active": false}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);

    let both = json!({"agent_id": s.agent_id, "agent_ids": [s.agent_id]});
    let body = assert_error(
        send(&app, &s.key, &s.template_id, both, 1).await,
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
    )
    .await;
    assert_eq!(
        body["errors"]["agent_ids"],
        json!(["give either agent_id or agent_ids, not both"])
    );

    let none = json!({"agent_ids": []});
    let body = assert_error(
        send(&app, &s.key, &s.template_id, none, 1).await,
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
    )
    .await;
    assert_eq!(
        body["errors"]["agent_ids"],
        json!(["at least one agent is required"])
    );

    let many: Vec<String> = (0..101).map(|_| ObjectId::new().to_hex()).collect();
    let body = assert_error(
        send(&app, &s.key, &s.template_id, json!({"agent_ids": many}), 1).await,
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
    )
    .await;
    assert_eq!(body["errors"]["agent_ids"], json!(["at most 100 agents"]));

    let mixed =
        json!({"agent_ids": [s.agent_id, ObjectId::new().to_hex(), disabled.to_hex(), "nope"]});
    let body = assert_error(
        send(&app, &s.key, &s.template_id, mixed, 1).await,
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
    )
    .await;
    assert_eq!(
        body["errors"],
        json!({
            "agent_ids[1]": ["unknown agent"],
            "agent_ids[2]": ["agent is disabled"],
            "agent_ids[3]": ["unknown agent"],
        })
    );

    // With every agent disabled, a pool of every agent has nobody to send.
    let res = patch(
        &app,
        &format!("/sms/admin/agents/{}", s.agent_id),
        json!({"is_active": false}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = assert_error(
        send(&app, &s.key, &s.template_id, json!({}), 1).await,
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
    )
    .await;
    assert_eq!(
        body["errors"]["agent_id"],
        json!(["no active agent can send these messages"])
    );

    assert_eq!(app.count("sms_requests", doc! {}).await, 0);
    assert_eq!(app.count("sms_messages", doc! {}).await, 0);
    let used = app
        .db
        .quota
        .used_today(oid(&s.key_id), sms_shared::time::now())
        .await
        .unwrap();
    assert_eq!(used, 0, "no quota spent");
}

/// A key restricted to `agents`.
async fn restricted_key(app: &TestApp, agents: &[ObjectId]) -> String {
    let ids: Vec<String> = agents.iter().map(|a| a.to_hex()).collect();
    let res = app
        .post(
            "/sms/admin/api-keys",
            Auth::Operator,
            json!({"client_name": "clinic-a", "scopes": ["sms:send", "sms:read"], "agent_ids": ids}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json::<Value>().await.unwrap()["plain_key"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_restricted_key_naming_another_agent_gets_the_unknown_agent_answer() {
    let app = spawn_app().await;
    let s = app.sender().await;
    let others = fleet(&app, 2).await;
    let (outside, outside_disabled) = (others[0].0, others[1].0);
    let res = patch(
        &app,
        &format!("/sms/admin/agents/{}", outside_disabled.to_hex()),
        json!({"is_active": false}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let key = restricted_key(&app, &[oid(&s.agent_id)]).await;
    let nobody = ObjectId::new().to_hex();

    let answer = |target: Value| {
        let (app, key, template) = (&app, &key, &s.template_id);
        async move {
            let res = send(app, key, template, target, 1).await;
            let status = res.status();
            (status, res.json::<Value>().await.unwrap())
        }
    };
    let unknown = answer(json!({"agent_id": nobody})).await;
    assert_eq!(unknown.0, StatusCode::BAD_REQUEST);
    assert_eq!(unknown.1["errors"], json!({"agent_id": ["unknown agent"]}));
    for agent in [outside, outside_disabled] {
        assert_eq!(answer(json!({"agent_id": agent.to_hex()})).await, unknown);
    }
    let unknown_in_pool = answer(json!({"agent_ids": [s.agent_id, nobody]})).await;
    assert_eq!(
        unknown_in_pool.1["errors"],
        json!({"agent_ids[1]": ["unknown agent"]})
    );
    for agent in [outside, outside_disabled] {
        let pool = json!({"agent_ids": [s.agent_id, agent.to_hex()]});
        assert_eq!(answer(pool).await, unknown_in_pool);
    }
    assert_eq!(app.count("sms_messages", doc! {}).await, 0);

    let pinned = send(
        &app,
        &key,
        &s.template_id,
        json!({"agent_id": s.agent_id}),
        1,
    )
    .await;
    assert_eq!(
        pinned.status(),
        StatusCode::ACCEPTED,
        "its own agent is fine"
    );
}

#[tokio::test]
async fn a_restricted_keys_pool_is_its_own_agents() {
    let app = spawn_app_with(&[FAST]).await;
    let s = app.sender().await;
    let others = fleet(&app, 2).await;
    let (b, outsider) = (&others[0], &others[1]);
    let mine = [oid(&s.agent_id), b.0];
    let key = restricted_key(&app, &mine).await;
    let (_, view) = request_doc(&app, send(&app, &key, &s.template_id, json!({}), 4).await).await;
    assert_eq!(view["agent_ids"], json!([s.agent_id, b.0.to_hex()]));
    stage(&app).await;
    for j in jobs(&app).await {
        assert_eq!(j.lanes, vec![s.agent_id.clone(), b.0.to_hex()]);
    }
    assert!(job_ids(&poll(&app, &outsider.1, 10).await).is_empty());
    assert_eq!(job_ids(&poll(&app, &b.1, 10).await).len(), 4);
    let leased = app
        .count(
            "sms_messages",
            doc! {"agent_id": b.0, "status": Status::Assigned.as_str()},
        )
        .await;
    assert_eq!(leased, 4);
}
