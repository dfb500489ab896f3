//! API keys restricted to some agents: `agent_ids` on `POST /admin/api-keys` and on
//! `PATCH /admin/api-keys/{id}` (which also changes the daily quota), shown in the list,
//! audited, validated like every input, and in force from the key's next call.

use mongodb::bson::{doc, oid::ObjectId};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

async fn create_key(app: &TestApp, body: Value) -> reqwest::Response {
    app.post("/sms/admin/api-keys", Auth::Operator, body).await
}

async fn listed_key(app: &TestApp, id: &str) -> Value {
    listed_item(app, "/sms/admin/api-keys", "id", id).await
}

#[tokio::test]
async fn a_key_is_restricted_on_creation_and_changed_by_patch() {
    let app = spawn_app().await;
    let s = app.sender().await;
    let (b, _) = fleet(&app, 1).await.remove(0);
    let res = create_key(
        &app,
        json!({"client_name": "clinic-a", "scopes": ["sms:send"], "agent_ids": [s.agent_id, s.agent_id]}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.unwrap();
    assert_eq!(
        created["agent_ids"],
        json!([s.agent_id]),
        "duplicates count once"
    );
    let (id, key) = (
        created["id"].as_str().unwrap().to_owned(),
        created["plain_key"].as_str().unwrap().to_owned(),
    );
    assert_eq!(
        listed_key(&app, &id).await["agent_ids"],
        json!([s.agent_id])
    );
    let unrestricted = &listed_key(&app, &s.key_id).await["agent_ids"];
    assert_eq!(unrestricted, &Value::Null);

    let to_b = json!({"agent_id": b.to_hex()});
    let refused = send(&app, &key, &s.template_id, to_b.clone(), 1).await;
    assert_error(refused, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;

    let path = format!("/sms/admin/api-keys/{id}");
    let res = patch(
        &app,
        &path,
        json!({"agent_ids": [s.agent_id, b.to_hex()], "rate_limit_per_day": 1}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let changed: Value = res.json().await.unwrap();
    assert_eq!(changed["agent_ids"], json!([s.agent_id, b.to_hex()]));
    assert_eq!(
        (
            changed["rate_limit_per_day"].as_i64(),
            changed.get("plain_key")
        ),
        (Some(1), None)
    );
    assert_eq!(changed["client_name"], "clinic-a", "untouched");
    assert_eq!(
        send(&app, &key, &s.template_id, to_b.clone(), 1)
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    let over = send(
        &app,
        &key,
        &s.template_id,
        json!({"agent_id": s.agent_id}),
        1,
    )
    .await;
    assert_error(over, StatusCode::TOO_MANY_REQUESTS, "QUOTA_EXCEEDED").await;

    let res = patch(
        &app,
        &path,
        json!({"agent_ids": null, "rate_limit_per_day": 100}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        listed_key(&app, &id).await["agent_ids"],
        Value::Null,
        "lifted"
    );
    let other = fleet(&app, 1).await.remove(0).0;
    let body = json!({"agent_id": other.to_hex()});
    assert_eq!(
        send(&app, &key, &s.template_id, body, 2).await.status(),
        StatusCode::ACCEPTED
    );

    let logs = app
        .db
        .audit_logs
        .list(&Default::default(), &first_page(10))
        .await
        .unwrap()
        .items;
    let updates: Vec<_> = logs
        .iter()
        .filter(|l| l.action == "api_key.update")
        .collect();
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[0].target_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        updates[0].details.get("agent_ids"),
        Some(&mongodb::bson::Bson::Null)
    );
    assert_eq!(updates[1].details.get_array("agent_ids").unwrap().len(), 2);
    let create = logs
        .iter()
        .find(|l| l.action == "api_key.create" && l.target_id.as_deref() == Some(id.as_str()))
        .unwrap();
    assert_eq!(create.details.get_array("agent_ids").unwrap().len(), 1);
}

#[tokio::test]
async fn bad_agent_lists_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let s = app.sender().await;
    let (disabled, _) = fleet(&app, 1).await.remove(0);
    let off = patch(
        &app,
        &format!("/sms/admin/agents/{}", disabled.to_hex()),
        json!({"is_active": false}),
    )
    .await;
    assert_eq!(off.status(), StatusCode::OK);
    let unknown = ObjectId::new().to_hex();

    let bad = json!([s.agent_id, unknown, disabled.to_hex(), "x"]);
    let res = create_key(
        &app,
        json!({"client_name": "c", "scopes": ["sms:send"], "agent_ids": bad}),
    )
    .await;
    let body = assert_error(res, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
    assert_eq!(
        body["errors"],
        json!({
            "agent_ids[1]": ["unknown agent"],
            "agent_ids[2]": ["agent is disabled"],
            "agent_ids[3]": ["unknown agent"],
        })
    );
    let res = create_key(
        &app,
        json!({"client_name": "c", "scopes": ["sms:send"], "agent_ids": []}),
    )
    .await;
    let body = assert_error(res, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
    assert_eq!(
        body["errors"]["agent_ids"],
        json!(["at least one agent; null for any agent"])
    );
    assert_eq!(
        app.count("api_keys", doc! {}).await,
        1,
        "only the sender's key"
    );

    let path = format!("/sms/admin/api-keys/{}", s.key_id);
    let before = listed_key(&app, &s.key_id).await;
    for (body, field) in [
        (json!({"agent_ids": [unknown]}), "agent_ids[0]"),
        (json!({"agent_ids": []}), "agent_ids"),
        (json!({"rate_limit_per_day": 0}), "rate_limit_per_day"),
        (
            json!({"agent_ids": [s.agent_id], "rate_limit_per_day": -1}),
            "rate_limit_per_day",
        ),
    ] {
        let res = patch(&app, &path, body).await;
        let err = assert_error(res, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
        assert!(err["errors"][field].is_array(), "{err}");
    }
    let res = patch(&app, &path, json!({"scopes": ["sms:read"]})).await;
    assert_error(res, StatusCode::BAD_REQUEST, "INVALID_JSON").await;
    let res = patch(
        &app,
        &format!("/sms/admin/api-keys/{unknown}"),
        json!({"agent_ids": null}),
    )
    .await;
    assert_error(res, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    assert_eq!(listed_key(&app, &s.key_id).await, before);
    let logs = app
        .db
        .audit_logs
        .list(&Default::default(), &first_page(20))
        .await
        .unwrap()
        .items;
    assert!(logs.iter().all(|l| l.action != "api_key.update"));
}
