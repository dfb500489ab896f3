//! Internal errors: the contract's 500 body, whose detail names the cause only for an app whose
//! own configuration has `DJANGO_DEBUG` on outside production.

use mongodb::bson::{doc, oid::ObjectId, Document};
use reqwest::StatusCode;

use crate::helpers::*;

/// Stores a message document the API cannot read and asks for it: an internal error.
async fn unreadable_message(app: &TestApp) -> String {
    let id = ObjectId::new();
    app.db
        .database
        .collection::<Document>("sms_messages")
        .insert_one(doc! {"_id": id, "status": 42})
        .await
        .unwrap();
    let res = app
        .get(&format!("/sms/messages/{}", id.to_hex()), Auth::Operator)
        .await;
    let body = assert_error(res, StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR").await;
    body["detail"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn each_app_shows_internal_causes_as_its_own_configuration_says() {
    // Three apps in one process: what one shows must not depend on how the others were built.
    let debug = spawn_app_with(&[("DJANGO_DEBUG", "1")]).await;
    let quiet = spawn_app_with(&[("DJANGO_DEBUG", "0")]).await;
    let production = spawn_app_with(&[("DJANGO_DEBUG", "1"), ("APP_ENV", "production")]).await;

    let shown = unreadable_message(&debug).await;
    assert!(
        shown.starts_with("internal error: ") && shown.len() > "internal error: ".len(),
        "{shown}"
    );
    assert_eq!(unreadable_message(&quiet).await, "internal error");
    assert_eq!(unreadable_message(&production).await, "internal error");
    let shown_again = unreadable_message(&debug).await;
    assert!(shown_again.starts_with("internal error: "), "{shown_again}");
}
