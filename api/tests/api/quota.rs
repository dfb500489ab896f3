//! The daily quota under concurrency: the first sends of a day race to create the key's counter,
//! and losing that race must never read as "quota exceeded".

use mongodb::bson::doc;
use reqwest::StatusCode;

use crate::helpers::*;

/// Messages counted against the API key `key_id` today.
pub async fn used_today(app: &TestApp, key_id: &str) -> i64 {
    let today = chrono::Utc::now();
    app.db.quota.used_today(oid(key_id), today).await.unwrap()
}

/// `requests` concurrent requests of `each` recipients from the key `s.key`, numbers starting at
/// `first`; returns the status of each.
async fn burst(app: &TestApp, s: &Sender, requests: usize, each: usize, first: usize) -> Vec<u16> {
    let nums = numbers(first + requests * each);
    let futures: Vec<_> = (0..requests)
        .map(|r| {
            let batch: Vec<(&str, &str)> = nums[first + r * each..first + (r + 1) * each]
                .iter()
                .map(|n| (n.as_str(), "42"))
                .collect();
            async move { app.submit(s, &batch).await.status().as_u16() }
        })
        .collect();
    futures::future::join_all(futures).await
}

#[tokio::test]
async fn concurrent_first_sends_that_fit_are_all_accepted() {
    let app = spawn_app().await;
    let mut s = app.sender().await;
    // Several fresh keys, each with a burst that fits its quota exactly: every burst races on
    // creating that key's counter for the day.
    for round in 0..4 {
        let (key_id, key) = app.create_api_key(&["sms:send"], Some(48)).await;
        s.key = key;
        let statuses = burst(&app, &s, 12, 4, round * 48).await;
        assert!(
            statuses.iter().all(|s| *s == 202),
            "round {round}: every request fits the quota: {statuses:?}"
        );
        let used = used_today(&app, &key_id).await;
        assert_eq!(used, 48, "round {round}: the counter holds the sum");
        assert_eq!(
            app.count("sms_messages", doc! {"api_key_id": oid(&key_id)})
                .await,
            48
        );

        let res = app.submit(&s, &[("0912000000", "1")]).await;
        let retry_after: i64 = res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=86_400).contains(&retry_after));
        assert_error(res, StatusCode::TOO_MANY_REQUESTS, "QUOTA_EXCEEDED").await;
        assert_eq!(
            app.count("sms_messages", doc! {"api_key_id": oid(&key_id)})
                .await,
            48,
            "nothing stored for the refused request"
        );
        assert_eq!(
            app.count("sms_requests", doc! {"api_key_id": oid(&key_id)})
                .await,
            12
        );
        let used = used_today(&app, &key_id).await;
        assert_eq!(used, 48, "a refusal takes nothing");
    }
}

#[tokio::test]
async fn a_burst_past_the_quota_accepts_exactly_what_fits() {
    let app = spawn_app().await;
    let mut s = app.sender().await;
    let (key_id, key) = app.create_api_key(&["sms:send"], Some(30)).await;
    s.key = key;
    let statuses = burst(&app, &s, 16, 3, 0).await;
    let accepted = statuses.iter().filter(|s| **s == 202).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((accepted, refused), (10, 6), "{statuses:?}");
    let used = used_today(&app, &key_id).await;
    assert_eq!(used, 30);
    assert_eq!(app.count("sms_messages", doc! {}).await, 30);
    assert_eq!(app.count("sms_requests", doc! {}).await, 10);
}

#[tokio::test]
async fn racing_reservations_on_a_new_day_counter_all_succeed() {
    let app = spawn_app().await;
    let now = chrono::Utc::now();
    for _ in 0..20 {
        let key = mongodb::bson::oid::ObjectId::new();
        let tries: Vec<_> = (0..8)
            .map(|_| app.db.quota.reserve(key, 2, 16, now))
            .collect();
        let results = futures::future::join_all(tries).await;
        let reserved: Vec<bool> = results.into_iter().map(|r| r.unwrap()).collect();
        assert!(reserved.iter().all(|ok| *ok), "{reserved:?}");
        assert_eq!(app.db.quota.used_today(key, now).await.unwrap(), 16);
        assert!(
            !app.db.quota.reserve(key, 1, 16, now).await.unwrap(),
            "a full counter refuses"
        );
        assert_eq!(app.db.quota.used_today(key, now).await.unwrap(), 16);
    }
}
