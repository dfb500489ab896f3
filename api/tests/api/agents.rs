use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn registration_is_open_when_no_secret_is_configured() {
    let app = spawn_app().await;
    let res = app
        .post(
            "/sms/agent/register",
            Auth::None,
            json!({"device_id": "agent-001", "label": "Android-01"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert!(body["agent_token"]
        .as_str()
        .unwrap()
        .starts_with("scsms_agent_"));
    let agent = app
        .db
        .agents
        .find(mongodb::bson::oid::ObjectId::parse_str(body["agent_id"].as_str().unwrap()).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        agent.token_hash,
        sms_shared::domain::token::digest(body["agent_token"].as_str().unwrap())
    );
    assert_eq!(agent.label, "Android-01");
}

#[tokio::test]
async fn env_secret_applies_until_the_database_overrides_it() {
    let app = spawn_app_with(&[("AGENT_REGISTRATION_SECRET", "env-secret")]).await;
    let get: Value = app
        .get("/sms/admin/agent/registration-secret", Auth::Operator)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        get,
        json!({"registration_secret": "env-secret", "configured": true})
    );

    let wrong = app
        .post(
            "/agent/register",
            Auth::None,
            json!({"device_id": "a1", "registration_secret": "nope"}),
        )
        .await;
    assert_error(wrong, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let missing = app
        .post("/agent/register", Auth::None, json!({"device_id": "a1"}))
        .await;
    assert_error(missing, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let ok = app
        .post(
            "/agent/register",
            Auth::None,
            json!({"device_id": "a1", "registration_secret": "env-secret"}),
        )
        .await;
    assert_eq!(ok.status(), StatusCode::CREATED);

    // The database value wins.
    let put = app
        .request(
            Method::PUT,
            "/sms/admin/agent/registration-secret",
            Auth::Operator,
            Some(json!({"registration_secret": "db-secret"})),
        )
        .await;
    assert_eq!(put.status(), StatusCode::OK);
    let get: Value = app
        .get("/admin/agent/registration-secret", Auth::Operator)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        get,
        json!({"registration_secret": "db-secret", "configured": true})
    );
    let old = app
        .post(
            "/agent/register",
            Auth::None,
            json!({"device_id": "a2", "registration_secret": "env-secret"}),
        )
        .await;
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    let new = app
        .post(
            "/agent/register",
            Auth::None,
            json!({"device_id": "a2", "registration_secret": "db-secret"}),
        )
        .await;
    assert_eq!(new.status(), StatusCode::CREATED);

    // An empty value disables the secret: registration is open again.
    app.request(
        Method::PUT,
        "/admin/agent/registration-secret",
        Auth::Operator,
        Some(json!({"registration_secret": ""})),
    )
    .await;
    let get: Value = app
        .get("/admin/agent/registration-secret", Auth::Operator)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        get,
        json!({"registration_secret": null, "configured": false})
    );
    let open = app
        .post("/agent/register", Auth::None, json!({"device_id": "a3"}))
        .await;
    assert_eq!(open.status(), StatusCode::CREATED);

    let logs = app
        .db
        .audit_logs
        .list(&Default::default(), &first_page(10))
        .await
        .unwrap()
        .items;
    let actions: Vec<&str> = logs.iter().map(|l| l.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "agent.register",
            "registration_secret.disable",
            "agent.register",
            "registration_secret.set",
            "agent.register"
        ]
    );
}

#[tokio::test]
async fn registration_secret_routes_need_an_operator() {
    let app = spawn_app().await;
    assert_eq!(
        app.get("/admin/agent/registration-secret", Auth::None)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let res = app
        .request(
            Method::PUT,
            "/admin/agent/registration-secret",
            Auth::None,
            Some(json!({"registration_secret": "x"})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.db.settings.registration_secret().await.unwrap(), None);
}

#[tokio::test]
async fn re_registering_rotates_the_token_unless_told_not_to() {
    let app = spawn_app().await;
    let (id, first) = app.register_agent("agent-001").await;
    let hb = |t: String| {
        let app = &app;
        async move {
            app.post("/agent/heartbeat", Auth::Bearer(&t), json!({}))
                .await
                .status()
        }
    };
    assert_eq!(hb(first.clone()).await, StatusCode::OK);

    // rotate_token=false keeps the old token (the current one proves the device).
    let res = app
        .post(
            "/agent/register",
            Auth::Bearer(&first),
            json!({"device_id": "agent-001", "rotate_token": false}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["agent_id"], id.as_str());
    assert!(body["agent_token"].is_null());
    assert_eq!(hb(first.clone()).await, StatusCode::OK);

    // The default rotates: the old token stops working at once.
    let res = app
        .post(
            "/agent/register",
            Auth::Bearer(&first),
            json!({"device_id": "agent-001"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["agent_id"], id.as_str());
    let second = body["agent_token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert_eq!(hb(first).await, StatusCode::UNAUTHORIZED);
    assert_eq!(hb(second).await, StatusCode::OK);
}

#[tokio::test]
async fn heartbeat_records_device_facts_and_online_state() {
    let app = spawn_app().await;
    let (id, token) = app.register_agent("agent-hb").await;
    let list: Value = app
        .get("/admin/agents", Auth::Operator)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"][0]["online"], false);
    assert!(list["items"][0]["last_seen_at"].is_null());

    let res = app
        .post(
            "/sms/agent/heartbeat",
            Auth::Bearer(&token),
            json!({"battery": 87, "signal": -70, "app_version": "2.3.1"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["ok"], true);
    assert!(body["server_time"].as_str().unwrap().ends_with('Z'));

    let list: Value = app
        .get("/sms/admin/agents", Auth::Operator)
        .await
        .json()
        .await
        .unwrap();
    let agent = &list["items"][0];
    assert_eq!(agent["agent_id"], id.as_str());
    assert_eq!(agent["device_id"], "agent-hb");
    assert_eq!(agent["online"], true);
    assert_eq!(agent["is_active"], true);
    assert!(agent["last_seen_at"].is_string());
    assert_eq!(agent["device"]["app_version"], "2.3.1");

    let bad = app
        .post(
            "/agent/heartbeat",
            Auth::Bearer(&token),
            json!({"battery": 150}),
        )
        .await;
    assert_error(bad, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
    let unknown = app
        .post(
            "/agent/heartbeat",
            Auth::Bearer(&token),
            json!({"root": true}),
        )
        .await;
    assert_error(unknown, StatusCode::BAD_REQUEST, "INVALID_JSON").await;
    let anon = app.post("/agent/heartbeat", Auth::None, json!({})).await;
    assert_error(anon, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let forged = app
        .post(
            "/agent/heartbeat",
            Auth::Bearer("scsms_agent_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            json!({}),
        )
        .await;
    assert_error(forged, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn a_disabled_agent_gets_401_at_once() {
    let app = spawn_app().await;
    let (id, token) = app.register_agent("agent-off").await;
    let res = app
        .request(
            Method::PATCH,
            &format!("/sms/admin/agents/{id}"),
            Auth::Operator,
            Some(json!({"is_active": false})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["is_active"], false);
    let hb = app
        .post("/agent/heartbeat", Auth::Bearer(&token), json!({}))
        .await;
    assert_error(hb, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;

    let res = app
        .request(
            Method::PATCH,
            &format!("/admin/agents/{id}"),
            Auth::Operator,
            Some(json!({"is_active": true})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        app.post("/agent/heartbeat", Auth::Bearer(&token), json!({}))
            .await
            .status(),
        StatusCode::OK
    );

    let missing = app
        .request(
            Method::PATCH,
            "/admin/agents/0123456789abcdef01234567",
            Auth::Operator,
            Some(json!({"is_active": false})),
        )
        .await;
    assert_error(missing, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    let logs = app
        .db
        .audit_logs
        .list(&Default::default(), &first_page(10))
        .await
        .unwrap()
        .items;
    assert_eq!(
        logs.iter().map(|l| l.action.as_str()).collect::<Vec<_>>(),
        ["agent.enable", "agent.disable", "agent.register"]
    );
}
