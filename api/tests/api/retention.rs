//! `MESSAGE_RETENTION_DAYS`: settled messages older than that are removed by the TTL index on
//! `settled_at` while live ones, jobs and counters stay; `create-indexes` keeps the index in step
//! with the setting.

use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{doc, DateTime};
use mongodb::IndexModel;
use sms_shared::db::messages::{Message, RetentionChange, RETENTION_INDEX};
use sms_shared::db::stats::Bucket;
use sms_shared::domain::status::Status;

use crate::helpers::*;

const DAY: Duration = Duration::from_secs(86_400);

/// The expiry of the retention index; `None` when there is no such index.
async fn retention(app: &TestApp) -> Option<Option<Duration>> {
    indexes(app)
        .await
        .into_iter()
        .filter_map(|i| i.options)
        .find(|o| o.name.as_deref() == Some(RETENTION_INDEX))
        .map(|o| o.expire_after)
}

async fn indexes(app: &TestApp) -> Vec<IndexModel> {
    app.db
        .messages
        .collection()
        .list_indexes()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test]
async fn settled_messages_go_after_the_retention_period_and_counters_stay() {
    let (app, agent, _) = app_with_agent(&[("MESSAGE_RETENTION_DAYS", "1")]).await;
    assert_eq!(retention(&app).await, Some(Some(DAY)));

    let two_days_ago = DateTime::from_millis(DateTime::now().timestamp_millis() - 2 * 86_400_000);
    let old = |status: Status| {
        let mut m = in_status(staged(agent, 50, 2 * 86_400_000), status);
        m.settled_at = Some(two_days_ago);
        m
    };
    let expired = vec![
        old(Status::Delivered),
        old(Status::Failed),
        old(Status::Canceled),
    ];
    let mut recent = in_status(staged(agent, 50, 2 * 86_400_000), Status::Sent);
    recent.settled_at = Some(DateTime::now());
    // Waiting for or held by a phone: never settled, whatever their age.
    let live = [
        staged(agent, 50, 3 * 86_400_000),
        in_status(staged(agent, 50, 3 * 86_400_000), Status::Sending),
    ];
    let mut all: Vec<Message> = expired.clone();
    all.push(recent.clone());
    all.extend(live.iter().cloned());
    insert(&app, &all).await;
    let counted = counters(&app, Bucket::Day).await;
    // The test server's TTL monitor runs every minute; make it run every second.
    app.db
        .database
        .client()
        .database("admin")
        .run_command(doc! {"setParameter": 1, "ttlMonitorSleepSecs": 1})
        .await
        .unwrap();

    let removed = eventually(20, || async {
        app.count("sms_messages", doc! {}).await == 3
    })
    .await;
    assert!(removed, "the TTL monitor removed the expired messages");
    for m in &expired {
        assert!(app.db.messages.find(m.id).await.unwrap().is_none());
    }
    for m in live.iter().chain([&recent]) {
        assert!(app.db.messages.find(m.id).await.unwrap().is_some());
    }
    assert_eq!(app.count("sms_jobs", doc! {}).await, 2);
    assert_eq!(counters(&app, Bucket::Day).await, counted, "counters stay");
}

#[tokio::test]
async fn create_indexes_keeps_the_retention_index_in_step_with_the_setting() {
    let app = spawn_app().await;
    assert_eq!(retention(&app).await, None, "unset: keep forever");
    let messages = &app.db.messages;
    assert_eq!(
        messages.apply_retention(Some(2 * DAY)).await.unwrap(),
        RetentionChange::Created
    );
    assert_eq!(
        messages.apply_retention(Some(2 * DAY)).await.unwrap(),
        RetentionChange::Unchanged
    );
    assert_eq!(retention(&app).await, Some(Some(2 * DAY)));
    assert_eq!(
        messages.apply_retention(Some(30 * DAY)).await.unwrap(),
        RetentionChange::Changed
    );
    assert_eq!(retention(&app).await, Some(Some(30 * DAY)));

    // The command applies MESSAGE_RETENTION_DAYS as configured: unset drops the index.
    sms_api::commands::create_indexes(&app.db).await.unwrap();
    assert_eq!(retention(&app).await, None);
    let mut db = app.db.clone();
    db.message_retention = Some(7 * DAY);
    sms_api::commands::create_indexes(&db).await.unwrap();
    assert_eq!(retention(&app).await, Some(Some(7 * DAY)));
}
