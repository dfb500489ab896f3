use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn seeded_admin_logs_in_and_the_token_works() {
    let app = spawn_app().await;
    let res = app
        .post(
            "/sms/auth/login",
            Auth::None,
            json!({"username": ADMIN_USER, "password": ADMIN_PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 240 * 60);
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(
        app.get("/sms/admin/api-keys", Auth::Bearer(token))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_401() {
    let app = spawn_app().await;
    for body in [
        json!({"username": ADMIN_USER, "password": "wrong"}),
        json!({"username": "ghost", "password": ADMIN_PASSWORD}),
    ] {
        assert_error(
            app.post("/auth/login", Auth::None, body).await,
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
        )
        .await;
    }
}

#[tokio::test]
async fn login_rejects_malformed_and_unknown_fields() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(app.url("/auth/login"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_error(res, StatusCode::BAD_REQUEST, "INVALID_JSON").await;
    let res = app
        .post(
            "/auth/login",
            Auth::None,
            json!({"username": "a", "password": "b", "role": "root"}),
        )
        .await;
    let body = assert_error(res, StatusCode::BAD_REQUEST, "INVALID_JSON").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("unknown field `role`"),
        "{body}"
    );
}

#[tokio::test]
async fn seeding_twice_keeps_one_admin() {
    let app = spawn_app().await;
    let created = sms_api::commands::seed_admin(&app.db, &app.config)
        .await
        .unwrap();
    assert!(!created);
    let user = app
        .db
        .users
        .find_by_username(ADMIN_USER)
        .await
        .unwrap()
        .unwrap();
    assert!(user.password_hash.starts_with("$argon2id$"));
}

#[tokio::test]
async fn bad_operator_tokens_get_401() {
    let app = spawn_app().await;
    use base64::Engine;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let alg_none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(json!({"sub": "x", "exp": minutes_from_now(5)}))
    );
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &json!({"sub": "x", "exp": minutes_from_now(5)}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let cases = [
        ("alg none", alg_none),
        ("HS512", hs512),
        (
            "wrong key",
            sign(
                json!({"sub": "x", "exp": minutes_from_now(5)}),
                "other-secret",
            ),
        ),
        (
            "expired",
            sign(
                json!({"sub": "x", "exp": minutes_from_now(-10)}),
                JWT_SECRET,
            ),
        ),
        ("no exp", sign(json!({"sub": "x"}), JWT_SECRET)),
        (
            "not before",
            sign(
                json!({"sub": "x", "exp": minutes_from_now(10), "nbf": minutes_from_now(5)}),
                JWT_SECRET,
            ),
        ),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (name, token) in cases {
        let res = app.get("/sms/admin/api-keys", Auth::Bearer(&token)).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{name}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["code"], "UNAUTHORIZED", "{name}");
    }
    assert_error(
        app.get("/sms/admin/api-keys", Auth::None).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
    )
    .await;
    // An auth-service token with only `username` works.
    let ext = sign(
        json!({"username": "ops", "exp": minutes_from_now(5)}),
        JWT_SECRET,
    );
    assert_eq!(
        app.get("/sms/admin/api-keys", Auth::Bearer(&ext))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let app = spawn_app_with(&[("JWT_ISSUER", "auth-service"), ("JWT_AUDIENCE", "sms")]).await;
    let good = sign(
        json!({"sub": "x", "exp": minutes_from_now(5), "iss": "auth-service", "aud": "sms"}),
        JWT_SECRET,
    );
    assert_eq!(
        app.get("/admin/api-keys", Auth::Bearer(&good))
            .await
            .status(),
        StatusCode::OK
    );
    let wrong_aud = sign(
        json!({"sub": "x", "exp": minutes_from_now(5), "iss": "auth-service", "aud": "crm"}),
        JWT_SECRET,
    );
    assert_eq!(
        app.get("/admin/api-keys", Auth::Bearer(&wrong_aud))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let missing = sign(json!({"sub": "x", "exp": minutes_from_now(5)}), JWT_SECRET);
    assert_eq!(
        app.get("/admin/api-keys", Auth::Bearer(&missing))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}
