//! `POST /agent/register` for a known device needs proof (its current token, the registration
//! secret in force, or an operator JWT), and `POST /admin/agents/{id}/rotate-token`; every token
//! issued is in the audit log with what proved it.

use mongodb::bson::{doc, Document};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sms_shared::db::audit_logs::AuditLog;

use crate::helpers::*;

/// The agent document of `device_id` as stored.
async fn stored(app: &TestApp, device_id: &str) -> Document {
    app.db
        .database
        .collection::<Document>("agents")
        .find_one(doc! {"device_id": device_id})
        .await
        .unwrap()
        .expect("agent stored")
}

/// Audit entries of agent tokens, oldest first.
async fn token_audit(app: &TestApp) -> Vec<AuditLog> {
    let mut logs = app
        .db
        .audit_logs
        .list(&Default::default(), &first_page(100))
        .await
        .unwrap()
        .items;
    logs.retain(|l| l.action == "agent.rotate_token" || l.action == "agent.register");
    logs.reverse();
    logs
}

async fn heartbeat(app: &TestApp, token: &str) -> StatusCode {
    app.post("/agent/heartbeat", Auth::Bearer(token), json!({}))
        .await
        .status()
}

async fn register(app: &TestApp, auth: Auth<'_>, body: Value) -> reqwest::Response {
    app.post("/sms/agent/register", auth, body).await
}

/// Asserts a 401 that reveals nothing about the agent and returns its body.
async fn refused(res: reqwest::Response, code: &str) -> Value {
    assert_eq!(
        res.headers()[reqwest::header::WWW_AUTHENTICATE],
        "Bearer",
        "401 with WWW-Authenticate"
    );
    let body = assert_error(res, StatusCode::UNAUTHORIZED, code).await;
    assert!(body.get("agent_id").is_none(), "{body}");
    assert!(body.get("agent_token").is_none(), "{body}");
    body
}

#[tokio::test]
async fn a_known_device_without_proof_is_refused_and_nothing_changes() {
    let app = spawn_app().await;
    let (id, old) = app.register_agent("phone-1").await;
    let (_, other_token) = app.register_agent("phone-2").await;
    // Rotated once, so that `old` is a replaced token.
    let res = register(&app, Auth::Bearer(&old), json!({"device_id": "phone-1"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let current = body["agent_token"].as_str().unwrap().to_owned();
    let before = stored(&app, "phone-1").await;
    let other_before = stored(&app, "phone-2").await;
    let audit_before = token_audit(&app).await.len();

    let forged = "scsms_agent_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    for (what, auth) in [
        ("no credential", Auth::None),
        ("another device's token", Auth::Bearer(&other_token)),
        ("a replaced token", Auth::Bearer(&old)),
        ("a forged token", Auth::Bearer(forged)),
        ("garbage", Auth::Bearer("not-a-token")),
    ] {
        for rotate in [true, false] {
            let res = register(
                &app,
                auth,
                json!({"device_id": "phone-1", "label": "thief", "rotate_token": rotate}),
            )
            .await;
            let body = refused(res, "AGENT_PROOF_REQUIRED").await;
            assert!(
                !body.to_string().contains(&id),
                "{what}: the agent id leaked: {body}"
            );
        }
    }
    // A secret sent while none is configured proves nothing either.
    let res = register(
        &app,
        Auth::None,
        json!({"device_id": "phone-1", "registration_secret": "guess"}),
    )
    .await;
    refused(res, "AGENT_PROOF_REQUIRED").await;

    assert_eq!(
        stored(&app, "phone-1").await,
        before,
        "the agent is untouched"
    );
    assert_eq!(stored(&app, "phone-2").await, other_before);
    assert_eq!(heartbeat(&app, &current).await, StatusCode::OK);
    assert_eq!(token_audit(&app).await.len(), audit_before);
}

#[tokio::test]
async fn the_current_token_rotates_its_own_device_and_is_audited() {
    let app = spawn_app().await;
    let (id, first) = app.register_agent("phone-1").await;

    let res = register(
        &app,
        Auth::Bearer(&first),
        json!({"device_id": "phone-1", "label": "Clinic A", "rotate_token": false}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["agent_id"], id.as_str());
    assert!(body["agent_token"].is_null());
    assert_eq!(body["label"], "Clinic A");
    assert_eq!(heartbeat(&app, &first).await, StatusCode::OK);

    let res = register(&app, Auth::Bearer(&first), json!({"device_id": "phone-1"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let second = body["agent_token"].as_str().unwrap().to_owned();
    assert_eq!(heartbeat(&app, &first).await, StatusCode::UNAUTHORIZED);
    assert_eq!(heartbeat(&app, &second).await, StatusCode::OK);
    assert_eq!(
        stored(&app, "phone-1").await.get_str("token_hash").unwrap(),
        sms_shared::domain::token::digest(&second)
    );

    let audit = token_audit(&app).await;
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert_eq!(audit[0].action, "agent.register");
    assert_eq!(audit[0].actor, format!("agent:{id}"));
    assert_eq!(
        audit[0].details,
        doc! {"proof": "none", "device_id": "phone-1"}
    );
    let rotation = &audit[1];
    assert_eq!(rotation.action, "agent.rotate_token");
    assert_eq!(rotation.actor, format!("agent:{id}"));
    assert_eq!(rotation.target_type, "agent");
    assert_eq!(rotation.target_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        rotation.details,
        doc! {"proof": "agent_token", "device_id": "phone-1"}
    );
    assert_eq!(rotation.ip.as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn a_disabled_agents_own_token_is_no_proof_but_operators_rotate_it() {
    let app = spawn_app().await;
    let (id, token) = app.register_agent("phone-off").await;
    let res = app
        .request(
            Method::PATCH,
            &format!("/admin/agents/{id}"),
            Auth::Operator,
            Some(json!({"is_active": false})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let before = stored(&app, "phone-off").await;

    let res = register(
        &app,
        Auth::Bearer(&token),
        json!({"device_id": "phone-off"}),
    )
    .await;
    refused(res, "AGENT_PROOF_REQUIRED").await;
    assert_eq!(stored(&app, "phone-off").await, before);

    // An operator's JWT on the registration itself.
    let res = register(
        &app,
        Auth::Operator,
        json!({"device_id": "phone-off", "label": "returned"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["agent_id"], id.as_str());
    assert_eq!(body["is_active"], false, "rotating does not enable");
    assert_eq!(body["label"], "returned");
    let fresh = body["agent_token"].as_str().unwrap().to_owned();
    assert_eq!(heartbeat(&app, &fresh).await, StatusCode::UNAUTHORIZED);

    // And the operators' own route.
    let res = app
        .post(
            &format!("/sms/admin/agents/{id}/rotate-token"),
            Auth::Operator,
            json!({}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["agent_id"], id.as_str());
    assert_eq!(body["device_id"], "phone-off");
    assert_eq!(body["label"], "returned", "the route keeps the label");
    assert_eq!(body["is_active"], false);
    let newest = body["agent_token"].as_str().unwrap().to_owned();
    assert!(newest.starts_with("scsms_agent_"));

    app.request(
        Method::PATCH,
        &format!("/admin/agents/{id}"),
        Auth::Operator,
        Some(json!({"is_active": true})),
    )
    .await;
    assert_eq!(heartbeat(&app, &newest).await, StatusCode::OK);
    assert_eq!(heartbeat(&app, &fresh).await, StatusCode::UNAUTHORIZED);
    assert_eq!(heartbeat(&app, &token).await, StatusCode::UNAUTHORIZED);

    let audit = token_audit(&app).await;
    let rotations: Vec<_> = audit
        .iter()
        .filter(|l| l.action == "agent.rotate_token")
        .map(|l| (l.actor.as_str(), l.details.get_str("proof").unwrap()))
        .collect();
    assert_eq!(
        rotations,
        [
            ("test-operator", "operator_jwt"),
            ("test-operator", "operator_jwt")
        ]
    );
}

#[tokio::test]
async fn the_operators_rotation_route_needs_a_jwt_and_a_known_agent() {
    let app = spawn_app().await;
    let (id, token) = app.register_agent("phone-1").await;
    let before = stored(&app, "phone-1").await;
    let path = format!("/admin/agents/{id}/rotate-token");
    for auth in [Auth::None, Auth::Bearer(&token)] {
        let res = app.post(&path, auth, json!({})).await;
        assert_error(res, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    }
    for missing in ["0123456789abcdef01234567", "nope"] {
        let res = app
            .post(
                &format!("/admin/agents/{missing}/rotate-token"),
                Auth::Operator,
                json!({}),
            )
            .await;
        assert_error(res, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    }
    assert_eq!(stored(&app, "phone-1").await, before);
    assert_eq!(heartbeat(&app, &token).await, StatusCode::OK);
    assert_eq!(token_audit(&app).await.len(), 1, "only the registration");
}

#[tokio::test]
async fn with_a_secret_in_force_the_secret_proves_and_refusals_look_alike() {
    let app = spawn_app_with(&[("AGENT_REGISTRATION_SECRET", "env-secret")]).await;
    let res = register(
        &app,
        Auth::None,
        json!({"device_id": "phone-1", "registration_secret": "env-secret"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    let (id, first) = (
        body["agent_id"].as_str().unwrap().to_owned(),
        body["agent_token"].as_str().unwrap().to_owned(),
    );
    let before = stored(&app, "phone-1").await;

    // Known and unknown devices get the same answer without the secret.
    let mut answers = Vec::new();
    for device in ["phone-1", "phone-unknown"] {
        for secret in [json!(null), json!("wrong")] {
            let res = register(
                &app,
                Auth::None,
                json!({"device_id": device, "registration_secret": secret}),
            )
            .await;
            answers.push(refused(res, "UNAUTHORIZED").await);
        }
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    // Its own token does not replace the secret in force.
    let res = register(&app, Auth::Bearer(&first), json!({"device_id": "phone-1"})).await;
    refused(res, "UNAUTHORIZED").await;
    assert_eq!(stored(&app, "phone-1").await, before);
    assert_eq!(app.count("agents", doc! {}).await, 1);

    // The seed's flow: the same registration again, with the secret, rotates.
    let res = register(
        &app,
        Auth::None,
        json!({"device_id": "phone-1", "label": "Android-01", "registration_secret": "env-secret"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["agent_id"], id.as_str());
    let second = body["agent_token"].as_str().unwrap().to_owned();
    assert_eq!(heartbeat(&app, &first).await, StatusCode::UNAUTHORIZED);
    assert_eq!(heartbeat(&app, &second).await, StatusCode::OK);

    // An operator's JWT does not replace the secret either; with it, the operator is the proof.
    let res = register(&app, Auth::Operator, json!({"device_id": "phone-2"})).await;
    refused(res, "UNAUTHORIZED").await;
    assert_eq!(app.count("agents", doc! {"device_id": "phone-2"}).await, 0);
    let with_secret =
        |device: &str| json!({"device_id": device, "registration_secret": "env-secret"});
    let res = register(&app, Auth::Operator, with_secret("phone-2")).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = register(&app, Auth::Operator, with_secret("phone-1")).await;
    assert_eq!(res.status(), StatusCode::OK);

    let audit: Vec<(String, String, String)> = token_audit(&app)
        .await
        .into_iter()
        .map(|l| {
            (
                l.action,
                l.actor,
                l.details.get_str("proof").unwrap().to_owned(),
            )
        })
        .collect();
    let own = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    assert_eq!(
        audit,
        [
            own(
                "agent.register",
                "registration-secret",
                "registration_secret"
            ),
            own(
                "agent.rotate_token",
                "registration-secret",
                "registration_secret"
            ),
            own("agent.register", "test-operator", "operator_jwt"),
            own("agent.rotate_token", "test-operator", "operator_jwt"),
        ]
    );
}

#[tokio::test]
async fn a_cleared_secret_proves_nothing_even_if_the_environment_has_one() {
    let app = spawn_app_with(&[("AGENT_REGISTRATION_SECRET", "env-secret")]).await;
    let res = register(
        &app,
        Auth::None,
        json!({"device_id": "phone-1", "registration_secret": "env-secret"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = app
        .request(
            Method::PUT,
            "/admin/agent/registration-secret",
            Auth::Operator,
            Some(json!({"registration_secret": ""})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let before = stored(&app, "phone-1").await;
    let res = register(
        &app,
        Auth::None,
        json!({"device_id": "phone-1", "registration_secret": "env-secret"}),
    )
    .await;
    refused(res, "AGENT_PROOF_REQUIRED").await;
    assert_eq!(stored(&app, "phone-1").await, before);
    // New devices register freely again.
    let res = register(&app, Auth::None, json!({"device_id": "phone-2"})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn racing_rotations_with_one_token_have_one_winner() {
    let app = spawn_app().await;
    let (_, token) = app.register_agent("phone-1").await;
    let attempts =
        (0..8).map(|_| register(&app, Auth::Bearer(&token), json!({"device_id": "phone-1"})));
    let answers = futures::future::join_all(attempts).await;
    let mut winners = Vec::new();
    for res in answers {
        match res.status() {
            StatusCode::OK => {
                let body: Value = res.json().await.unwrap();
                winners.push(body["agent_token"].as_str().unwrap().to_owned());
            }
            StatusCode::CONFLICT => {
                assert_error(res, StatusCode::CONFLICT, "ROTATION_CONFLICT").await;
            }
            _ => {
                refused(res, "AGENT_PROOF_REQUIRED").await;
            }
        }
    }
    assert_eq!(winners.len(), 1, "exactly one rotation wins");
    assert_eq!(
        stored(&app, "phone-1").await.get_str("token_hash").unwrap(),
        sms_shared::domain::token::digest(&winners[0])
    );
    assert_eq!(heartbeat(&app, &winners[0]).await, StatusCode::OK);
    let rotations = token_audit(&app)
        .await
        .into_iter()
        .filter(|l| l.action == "agent.rotate_token")
        .count();
    assert_eq!(rotations, 1, "only the winner is in the audit log");
}

#[tokio::test]
async fn racing_first_registrations_create_one_agent() {
    let app = spawn_app().await;
    let attempts = (0..8).map(|_| register(&app, Auth::None, json!({"device_id": "phone-new"})));
    let answers = futures::future::join_all(attempts).await;
    let mut created = Vec::new();
    for res in answers {
        match res.status() {
            StatusCode::CREATED => {
                let body: Value = res.json().await.unwrap();
                created.push(body["agent_token"].as_str().unwrap().to_owned());
            }
            StatusCode::CONFLICT => {
                assert_error(res, StatusCode::CONFLICT, "ROTATION_CONFLICT").await;
            }
            _ => {
                refused(res, "AGENT_PROOF_REQUIRED").await;
            }
        }
    }
    assert_eq!(created.len(), 1);
    assert_eq!(
        app.count("agents", doc! {"device_id": "phone-new"}).await,
        1
    );
    assert_eq!(heartbeat(&app, &created[0]).await, StatusCode::OK);
    assert_eq!(token_audit(&app).await.len(), 1);
}
