use mongodb::bson::doc;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn create_shows_the_key_once_and_stores_only_its_hash() {
    let app = spawn_app().await;
    let res = app
        .post(
            "/sms/admin/api-keys",
            Auth::Operator,
            json!({"client_name": "SafeShop", "scopes": ["sms:send", "sms:read"], "rate_limit_per_day": 5000}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    let plain = body["plain_key"].as_str().unwrap();
    assert!(
        plain.starts_with("scsms_live_") && plain.len() >= 11 + 43,
        "{plain}"
    );
    assert_eq!(body["client_name"], "SafeShop");
    assert_eq!(body["scopes"], json!(["sms:send", "sms:read"]));
    assert_eq!(body["rate_limit_per_day"], 5000);
    assert_eq!(body["is_active"], true);
    assert!(plain.starts_with(body["key_prefix"].as_str().unwrap()));
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'));

    let id = mongodb::bson::oid::ObjectId::parse_str(body["id"].as_str().unwrap()).unwrap();
    let stored = app.db.api_keys.find(id).await.unwrap().unwrap();
    assert_eq!(stored.key_hash, sms_shared::domain::token::digest(plain));
    let raw = app
        .db
        .database
        .collection::<mongodb::bson::Document>("api_keys")
        .find_one(doc! {"_id": id})
        .await
        .unwrap()
        .unwrap();
    assert!(
        !raw.to_string().contains(&plain[11..]),
        "plain key material stored"
    );

    let list: Value = app
        .get("/sms/admin/api-keys", Auth::Operator)
        .await
        .json()
        .await
        .unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert!(items[0].get("plain_key").is_none());
    assert!(items[0].get("key_hash").is_none());
    assert_eq!(items[0]["id"], body["id"]);
}

#[tokio::test]
async fn default_rate_limit_comes_from_the_environment() {
    let app = spawn_app_with(&[("APIKEY_RATE_LIMIT_PER_DAY_DEFAULT", "1234")]).await;
    let res = app
        .post(
            "/admin/api-keys",
            Auth::Operator,
            json!({"client_name": "Clinic", "scopes": ["sms:read"]}),
        )
        .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["rate_limit_per_day"], 1234);
}

#[tokio::test]
async fn invalid_keys_are_refused_and_nothing_is_stored() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"client_name": "", "scopes": ["sms:send"]}),
            "client_name",
        ),
        (json!({"client_name": "A", "scopes": []}), "scopes"),
        (
            json!({"client_name": "A", "scopes": ["sms:admin"]}),
            "scopes[0]",
        ),
        (
            json!({"client_name": "A", "scopes": ["sms:send"], "rate_limit_per_day": 0}),
            "rate_limit_per_day",
        ),
    ];
    for (body, field) in cases {
        let res = app.post("/admin/api-keys", Auth::Operator, body).await;
        let err = assert_error(res, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
        assert!(err["errors"][field].is_array(), "{field}: {err}");
    }
    let res = app
        .post(
            "/admin/api-keys",
            Auth::Operator,
            json!({"client_name": "A", "scopes": ["sms:send"], "is_active": true}),
        )
        .await;
    assert_error(res, StatusCode::BAD_REQUEST, "INVALID_JSON").await;
    assert!(app.db.api_keys.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn admin_routes_need_an_operator() {
    let app = spawn_app().await;
    let (_, key) = app.create_api_key(&["sms:send", "sms:read"], None).await;
    for auth in [Auth::None, Auth::ApiKey(&key)] {
        let res = app.get("/admin/api-keys", auth).await;
        assert_error(res, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    }
}

#[tokio::test]
async fn revoke_marks_the_key_and_is_audited() {
    let app = spawn_app().await;
    let (id, _) = app.create_api_key(&["sms:send"], None).await;
    let res = app
        .request(
            reqwest::Method::DELETE,
            &format!("/sms/admin/api-keys/{id}"),
            Auth::Operator,
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["is_active"], false);
    assert!(body["revoked_at"].is_string());

    let res = app
        .request(
            reqwest::Method::DELETE,
            "/sms/admin/api-keys/0123456789abcdef01234567",
            Auth::Operator,
            None,
        )
        .await;
    assert_error(res, StatusCode::NOT_FOUND, "NOT_FOUND").await;

    let listing = app
        .db
        .audit_logs
        .list(&Default::default(), &first_page(10))
        .await
        .unwrap();
    assert_eq!((listing.total, listing.total_is_lower_bound), (2, false));
    let logs = listing.items;
    assert_eq!(logs[0].action, "api_key.revoke");
    assert_eq!(logs[1].action, "api_key.create");
    assert_eq!(logs[0].actor, "test-operator");
    assert_eq!(logs[0].target_id.as_deref(), Some(id.as_str()));
    assert_eq!(logs[0].ip.as_deref(), Some("127.0.0.1"));
}
