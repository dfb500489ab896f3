use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn create_extracts_variables_and_starts_unapproved() {
    let app = spawn_app().await;
    let res = app
        .post(
            "/sms/templates",
            Auth::Operator,
            json!({"name": "otp", "content": "Ma OTP {CODE} cho {NAME}, {CODE}"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let t: Value = res.json().await.unwrap();
    assert_eq!(t["variables"], json!(["CODE", "NAME"]));
    assert_eq!(t["is_approved"], false);
    assert_eq!(t["priority_weight"], Value::Null);
    let id = t["id"].as_str().unwrap();

    let got: Value = app
        .get(&format!("/templates/{id}"), Auth::Operator)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["content"], "Ma OTP {CODE} cho {NAME}, {CODE}");
    let list: Value = app
        .get("/templates", Auth::Operator)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    let dup = app
        .post(
            "/templates",
            Auth::Operator,
            json!({"name": "otp", "content": "x"}),
        )
        .await;
    assert_error(dup, StatusCode::CONFLICT, "TEMPLATE_NAME_TAKEN").await;
}

#[tokio::test]
async fn approve_then_edit_withdraws_the_approval() {
    let app = spawn_app().await;
    let id = app.approved_template("promo", "Giam gia {PCT}%").await;
    let t: Value = app
        .get(&format!("/sms/templates/{id}"), Auth::Operator)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(t["is_approved"], true);
    assert_eq!(t["approved_by"], "test-operator");
    assert!(t["approved_at"].is_string());

    let res = app
        .request(
            Method::PUT,
            &format!("/sms/templates/{id}"),
            Auth::Operator,
            Some(json!({"content": "Sale {PCT}% {CODE}", "priority_weight": 80})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let t: Value = res.json().await.unwrap();
    assert_eq!(t["is_approved"], false);
    assert_eq!(t["approved_at"], Value::Null);
    assert_eq!(t["variables"], json!(["PCT", "CODE"]));
    assert_eq!(t["priority_weight"], 80);

    let logs = app
        .db
        .audit_logs
        .list(&Default::default(), &first_page(10))
        .await
        .unwrap()
        .items;
    let actions: Vec<_> = logs.iter().map(|l| l.action.as_str()).collect();
    assert_eq!(
        actions,
        ["template.update", "template.approve", "template.create"]
    );
}

#[tokio::test]
async fn invalid_templates_are_refused() {
    let app = spawn_app_with(&[("MAX_TEXT_LENGTH", "20")]).await;
    let cases = [
        (json!({"name": "", "content": "x"}), "name"),
        (json!({"name": "a", "content": "  "}), "content"),
        (json!({"name": "a", "content": "x".repeat(21)}), "content"),
        (
            json!({"name": "a", "content": "x", "priority_weight": 101}),
            "priority_weight",
        ),
    ];
    for (body, field) in cases {
        let err = assert_error(
            app.post("/templates", Auth::Operator, body).await,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
        )
        .await;
        assert!(err["errors"][field].is_array(), "{field}: {err}");
    }
    let unknown = app
        .post(
            "/templates",
            Auth::Operator,
            json!({"name": "a", "content": "x", "is_approved": true}),
        )
        .await;
    assert_error(unknown, StatusCode::BAD_REQUEST, "INVALID_JSON").await;
    assert_eq!(app.count("templates", Default::default()).await, 0);
    let empty_update = app
        .request(
            Method::PUT,
            "/templates/0123456789abcdef01234567",
            Auth::Operator,
            Some(json!({})),
        )
        .await;
    assert_error(empty_update, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
}

#[tokio::test]
async fn unknown_templates_are_404_and_anonymous_callers_401() {
    let app = spawn_app().await;
    for path in [
        "/templates/0123456789abcdef01234567",
        "/templates/not-an-id",
    ] {
        assert_error(
            app.get(path, Auth::Operator).await,
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        )
        .await;
    }
    let approve = app
        .post(
            "/templates/0123456789abcdef01234567/approve",
            Auth::Operator,
            json!({}),
        )
        .await;
    assert_error(approve, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    assert_error(
        app.get("/templates", Auth::None).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
    )
    .await;
    let (_, key) = app.create_api_key(&["sms:send", "sms:read"], None).await;
    let res = app
        .post(
            "/templates",
            Auth::ApiKey(&key),
            json!({"name": "a", "content": "b"}),
        )
        .await;
    assert_error(res, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn delete_is_refused_while_requests_reference_the_template() {
    let app = spawn_app().await;
    let unused = app.approved_template("unused", "hello").await;
    let res = app
        .request(
            Method::DELETE,
            &format!("/templates/{unused}"),
            Auth::Operator,
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/templates/{unused}"), Auth::Operator)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    let s = app.sender().await;
    assert_eq!(
        app.submit(&s, &[("0901234567", "1")]).await.status(),
        StatusCode::ACCEPTED
    );
    let res = app
        .request(
            Method::DELETE,
            &format!("/templates/{}", s.template_id),
            Auth::Operator,
            None,
        )
        .await;
    assert_error(res, StatusCode::CONFLICT, "TEMPLATE_IN_USE").await;
    assert_eq!(
        app.get(&format!("/templates/{}", s.template_id), Auth::Operator)
            .await
            .status(),
        StatusCode::OK
    );
}
