//! The message counters (`stats_daily`, `stats_hourly`) follow every status change exactly once:
//! after a mixed run (duplicates, redelivered events, leases that run out, repeated reports,
//! failures, timeouts, delivery receipts, an operator's request) they equal a recount of
//! `sms_messages` grouped by bucket, agent, API key and status.

use std::time::Duration;

use mongodb::bson::doc;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sms_shared::db::stats::Bucket;
use sms_shared::domain::status::Status;

use crate::helpers::*;

fn leases(body: &Value) -> Vec<(String, String)> {
    body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["message_id"].as_str().unwrap().to_owned(),
                j["lease_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn item(job: &(String, String), status: &str) -> Value {
    json!({"message_id": job.0, "status": status, "lease_id": job.1})
}

#[tokio::test]
async fn counters_equal_a_recount_after_a_mixed_run() {
    let app = spawn_app_with(&[
        FAST,
        ("LEASE_SECONDS", "1"),
        ("SENDING_TIMEOUT_SECONDS", "1"),
        ("RECONCILE_INTERVAL_MS", "200"),
    ])
    .await;
    let s = app.sender().await;
    let (agent_two, token_two) = app.register_agent("agent-two").await;
    let running = app.spawn_dispatcher();
    let nums = numbers(10);
    let n = |i: usize| nums[i].as_str();
    let one = [
        (n(0), "1"),
        (n(1), "2"),
        (n(2), "3"),
        (n(3), "4"),
        (n(4), "5"),
        (n(0), "1"),
    ];
    assert_eq!(app.submit(&s, &one).await.status(), StatusCode::ACCEPTED);
    let to_two = |auth, recipients: &[(&str, &str)], agent: &str| {
        let messages: Vec<Value> = recipients
            .iter()
            .map(|(to, code)| json!({"to": to, "variables": {"CODE": code}}))
            .collect();
        let body = json!({"template_id": s.template_id, "agent_id": agent, "messages": messages});
        app.post("/sms/requests", auth, body)
    };
    let res = to_two(
        Auth::ApiKey(&s.key),
        &[(n(5), "6"), (n(6), "7"), (n(7), "8")],
        &agent_two,
    )
    .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let res = to_two(Auth::Operator, &[(n(8), "9"), (n(9), "0")], &s.agent_id).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let all_staged = eventually(20, || async {
        app.count(
            "sms_messages",
            doc! {"$or": [{"staged": true}, {"status": "CANCELED"}]},
        )
        .await
            == 11
    })
    .await;
    assert!(all_staged, "every message staged or cancelled");
    // Every event delivered once more changes nothing.
    let events = all_events(&app).await;
    let payloads: Vec<&[u8]> = events.iter().map(Vec::as_slice).collect();
    dispatcher(&app).handle_batch(&payloads).await;

    // Agent one: sent and delivered, failed, stuck in SENDING, sent twice, three left to expire.
    let jobs = leases(&poll(&app, &s.agent_token, 10).await);
    assert_eq!(jobs.len(), 7);
    let results = report(
        &app,
        &s.agent_token,
        json!([
            item(&jobs[0], "SENDING"),
            item(&jobs[0], "SENT"),
            item(&jobs[0], "DELIVERED"),
            item(&jobs[1], "FAILED"),
            item(&jobs[2], "SENDING"),
            item(&jobs[3], "SENT"),
            item(&jobs[3], "SENT"),
            item(&jobs[3], "SENDING"),
        ]),
    )
    .await;
    let oks: Vec<bool> = results.iter().map(|r| r["ok"] == true).collect();
    assert_eq!(oks, [true, true, true, true, true, true, true, false]);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let again = leases(&poll(&app, &s.agent_token, 10).await);
    assert_eq!(again.len(), 3, "the expired leases");
    report(&app, &s.agent_token, json!([item(&again[0], "SENT")])).await;
    let timed_out = eventually(10, || async {
        app.count("sms_messages", doc! {"last_error": "SENDING_TIMEOUT"})
            .await
            == 1
    })
    .await;
    assert!(timed_out);

    // Agent two sends everything; one receipt comes back.
    let two = leases(&poll(&app, &token_two, 10).await);
    assert_eq!(two.len(), 3);
    let items: Vec<Value> = two.iter().map(|j| item(j, "SENT")).collect();
    report(&app, &token_two, Value::Array(items)).await;
    report(&app, &token_two, json!([item(&two[0], "DELIVERED")])).await;
    running.stop().await;

    for bucket in [Bucket::Day, Bucket::Hour] {
        let counted = counters(&app, bucket).await;
        assert_eq!(counted, recount(&app, bucket).await, "{bucket:?}");
        let total: i64 = counted.values().map(|(n, _)| n).sum();
        assert_eq!(total, 11);
        let by_status = |status: Status| -> i64 {
            counted
                .iter()
                .filter(|(k, _)| k.3 == status.as_str())
                .map(|(_, (n, _))| n)
                .sum()
        };
        assert_eq!(
            [
                Status::Canceled,
                Status::Delivered,
                Status::Sent,
                Status::Failed,
                Status::Assigned
            ]
            .map(by_status),
            [1, 2, 4, 2, 2]
        );
        let operator = counted.keys().filter(|k| k.2.is_none()).count();
        assert!(operator > 0, "the operator's messages count without a key");
    }
}
