//! `POST /agent/messages/report`: the lifecycle of a job, the contract's transitions, and the
//! reports that must change nothing (another agent's, stale leases, malformed batches).

use std::time::Duration;

use mongodb::bson::{oid::ObjectId, DateTime};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sms_shared::db::messages::Message;
use sms_shared::domain::status::Status;

use crate::helpers::*;

#[tokio::test]
async fn a_job_goes_through_its_lifecycle() {
    let (app, agent, token) = app_with_agent(&[FAST]).await;
    let sent = staged(agent, 50, 2);
    let failed = staged(agent, 50, 1);
    insert(&app, &[sent.clone(), failed.clone()]).await;
    let body = poll(&app, &token, 10).await;
    let lease = body["jobs"][0]["lease_id"].as_str().unwrap().to_owned();
    let (s, f) = (sent.id.to_hex(), failed.id.to_hex());

    let before = DateTime::now();
    let long_error = "x".repeat(600);
    let results = report(
        &app,
        &token,
        json!([
            {"message_id": s, "status": "SENDING", "lease_id": lease},
            {"message_id": s, "status": "SENT", "lease_id": lease},
            {"message_id": f, "status": "SENDING"},
            {"message_id": f, "status": "FAILED", "error": long_error},
        ]),
    )
    .await;
    assert_eq!(
        Value::Array(results),
        json!([
            {"message_id": s, "ok": true, "status": "SENDING"},
            {"message_id": s, "ok": true, "status": "SENT"},
            {"message_id": f, "ok": true, "status": "SENDING"},
            {"message_id": f, "ok": true, "status": "FAILED"},
        ])
    );
    let m = load(&app, sent.id).await;
    assert_eq!(m.status, Status::Sent);
    assert!(m.sending_at.unwrap() >= before && m.sent_at.unwrap() >= m.sending_at.unwrap());
    assert!(m.updated_at >= before);
    let m = load(&app, failed.id).await;
    assert_eq!(m.status, Status::Failed);
    assert!(m.failed_at.unwrap() >= before);
    assert_eq!(m.last_error.unwrap(), "x".repeat(500));

    // A retried report is a harmless no-op; the delivery receipt completes the message.
    let results = report(
        &app,
        &token,
        json!([
            {"message_id": s, "status": "SENT", "lease_id": lease},
            {"message_id": s, "status": "DELIVERED"},
            {"message_id": s, "status": "SENT"},
        ]),
    )
    .await;
    assert_eq!(
        Value::Array(results),
        json!([
            {"message_id": s, "ok": true, "status": "SENT"},
            {"message_id": s, "ok": true, "status": "DELIVERED"},
            {"message_id": s, "ok": false, "status": "DELIVERED", "error": "INVALID_TRANSITION"},
        ])
    );
    let m = load(&app, sent.id).await;
    assert_eq!(m.status, Status::Delivered);
    assert!(m.delivered_at.unwrap() >= m.sent_at.unwrap());
    assert_eq!(
        metric(&app, "sms_reports_total{status=\"SENT\"}").await,
        1.0
    );
    assert_eq!(
        metric(&app, "sms_reports_total{status=\"DELIVERED\"}").await,
        1.0
    );
    assert_eq!(
        metric(&app, "sms_reports_total{status=\"SENDING\"}").await,
        2.0
    );
    assert_eq!(
        metric(
            &app,
            "sms_reports_rejected_total{reason=\"INVALID_TRANSITION\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn every_transition_follows_the_contract() {
    use Status::*;
    // The contract's list, written out rather than derived from the code under test.
    let allowed = [
        (Pending, Assigned),
        (Pending, Sending),
        (Pending, Sent),
        (Pending, Failed),
        (Assigned, Sending),
        (Assigned, Sent),
        (Assigned, Failed),
        (Sending, Sent),
        (Sending, Failed),
        (Sent, Delivered),
    ];
    let (app, agent, token) = app_with_agent(&[FAST]).await;
    let mut cases = Vec::new();
    for from in Status::ALL {
        for to in Status::ALL {
            cases.push((from, to, in_status(staged(agent, 50, 0), from)));
        }
    }
    let messages: Vec<Message> = cases.iter().map(|(_, _, m)| m.clone()).collect();
    insert(&app, &messages).await;
    let items: Vec<Value> = cases
        .iter()
        .map(|(_, to, m)| json!({"message_id": m.id.to_hex(), "status": to.as_str(), "error": "E"}))
        .collect();
    let results = report(&app, &token, Value::Array(items)).await;
    assert_eq!(results.len(), 49);

    for ((from, to, m), result) in cases.iter().zip(&results) {
        let case = format!("{from} -> {to}: {result}");
        assert_eq!(result["message_id"], m.id.to_hex().as_str(), "{case}");
        let stored = load(&app, m.id).await;
        if from == to {
            assert_eq!(result["ok"], true, "{case}");
            assert_eq!(result["status"], from.as_str(), "{case}");
            assert!(result.get("error").is_none(), "{case}");
            assert_eq!(
                snapshot(&stored),
                snapshot(m),
                "{case}: a repeat changes nothing"
            );
        } else if allowed.contains(&(*from, *to)) {
            assert_eq!(result["ok"], true, "{case}");
            assert_eq!(result["status"], to.as_str(), "{case}");
            assert_eq!(stored.status, *to, "{case}");
            assert!(stored.updated_at > m.updated_at, "{case}");
            let stamp = match to {
                Sending => stored.sending_at,
                Sent => stored.sent_at,
                Failed => stored.failed_at,
                Delivered => stored.delivered_at,
                _ => Some(stored.updated_at),
            };
            assert!(
                stamp.is_some_and(|t| t >= stored.updated_at),
                "{case}: time recorded"
            );
            if *to == Failed {
                assert_eq!(stored.last_error.as_deref(), Some("E"), "{case}");
            }
        } else {
            assert_eq!(result["ok"], false, "{case}");
            assert_eq!(result["error"], "INVALID_TRANSITION", "{case}");
            assert_eq!(result["status"], from.as_str(), "{case}");
            assert_eq!(snapshot(&stored), snapshot(m), "{case}: nothing changed");
        }
    }
}

#[tokio::test]
async fn reports_from_another_agent_are_refused_without_revealing_anything() {
    let (app, agent, token) = app_with_agent(&[FAST]).await;
    let (_, intruder) = app.register_agent("agent-666").await;
    let mine = staged(agent, 50, 0);
    insert(&app, std::slice::from_ref(&mine)).await;
    let lease = poll(&app, &token, 10).await["jobs"][0]["lease_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = snapshot(&load(&app, mine.id).await);

    // The intruder cannot see it, nor change it even with the right lease id.
    assert!(job_ids(&poll(&app, &intruder, 10).await).is_empty());
    let results = report(
        &app,
        &intruder,
        json!([
            {"message_id": mine.id.to_hex(), "status": "SENT", "lease_id": lease},
            {"message_id": mine.id.to_hex(), "status": "FAILED"},
            {"message_id": ObjectId::new().to_hex(), "status": "SENT"},
        ]),
    )
    .await;
    for r in &results {
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!(r["error"], "NOT_FOUND", "{r}");
        assert!(r["status"].is_null(), "no status revealed: {r}");
    }
    assert_eq!(snapshot(&load(&app, mine.id).await), before);
    assert_eq!(
        metric(&app, "sms_reports_rejected_total{reason=\"NOT_FOUND\"}").await,
        3.0
    );

    // A message its own agent cannot see yet (not staged) is just as unknown.
    let mut unstaged = staged(agent, 50, 0);
    unstaged.staged = false;
    insert(&app, std::slice::from_ref(&unstaged)).await;
    let results = report(
        &app,
        &token,
        json!([{"message_id": unstaged.id.to_hex(), "status": "SENDING"}]),
    )
    .await;
    assert_eq!(results[0]["error"], "NOT_FOUND");
    assert_eq!(load(&app, unstaged.id).await.status, Status::Pending);
}

#[tokio::test]
async fn report_batches_are_validated() {
    let (app, agent, token) = app_with_agent(&[FAST]).await;
    let m = staged(agent, 50, 0);
    insert(&app, std::slice::from_ref(&m)).await;
    let url = "/sms/agent/messages/report";

    let empty = app
        .post(url, Auth::Bearer(&token), json!({"messages": []}))
        .await;
    assert_error(empty, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
    let item = json!({"message_id": m.id.to_hex(), "status": "SENDING"});
    let too_many = app
        .post(
            url,
            Auth::Bearer(&token),
            json!({"messages": vec![item.clone(); 501]}),
        )
        .await;
    assert_error(too_many, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
    let unknown_field = app
        .post(
            url,
            Auth::Bearer(&token),
            json!({"messages": [{"message_id": m.id.to_hex(), "status": "SENT", "agent_id": "x"}]}),
        )
        .await;
    assert_eq!(unknown_field.status(), StatusCode::BAD_REQUEST);
    let unknown_top = app
        .post(
            url,
            Auth::Bearer(&token),
            json!({"messages": [item], "force": true}),
        )
        .await;
    assert_eq!(unknown_top.status(), StatusCode::BAD_REQUEST);
    let no_auth = app.post(url, Auth::None, json!({"messages": [item]})).await;
    assert_error(no_auth, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    assert_eq!(load(&app, m.id).await.status, Status::Pending);

    // 500 items are fine; unknown statuses and malformed ids are refused item by item.
    let mut items = vec![json!({"message_id": m.id.to_hex(), "status": "SENDING"}); 498];
    items.push(json!({"message_id": m.id.to_hex(), "status": "sent"}));
    items.push(json!({"message_id": "not-an-id", "status": "SENT"}));
    let results = report(&app, &token, Value::Array(items)).await;
    assert_eq!(results.len(), 500);
    assert_eq!(
        results[0],
        json!({"message_id": m.id.to_hex(), "ok": true, "status": "SENDING"})
    );
    assert_eq!(
        results[497],
        json!({"message_id": m.id.to_hex(), "ok": true, "status": "SENDING"})
    );
    assert_eq!(
        results[498],
        json!({"message_id": m.id.to_hex(), "ok": false, "status": null, "error": "INVALID_STATUS"})
    );
    assert_eq!(
        results[499],
        json!({"message_id": "not-an-id", "ok": false, "status": null, "error": "NOT_FOUND"})
    );
    assert_eq!(load(&app, m.id).await.status, Status::Sending);
}

#[tokio::test]
async fn a_late_report_with_a_stale_lease_changes_nothing() {
    let (app, agent, token) = app_with_agent(&[FAST, ("LEASE_SECONDS", "1")]).await;
    let m = staged(agent, 50, 0);
    insert(&app, std::slice::from_ref(&m)).await;
    let old = poll(&app, &token, 1).await["jobs"][0]["lease_id"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let new = poll(&app, &token, 1).await["jobs"][0]["lease_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(old, new);
    let before = snapshot(&load(&app, m.id).await);

    // The phone that held the old lease wakes up and reports.
    let results = report(
        &app,
        &token,
        json!([
            {"message_id": m.id.to_hex(), "status": "SENDING", "lease_id": old},
            {"message_id": m.id.to_hex(), "status": "FAILED", "lease_id": old, "error": "late"},
            {"message_id": m.id.to_hex(), "status": "ASSIGNED", "lease_id": old},
        ]),
    )
    .await;
    for r in &results {
        assert_eq!(
            r,
            &json!({"message_id": m.id.to_hex(), "ok": false, "status": "ASSIGNED", "error": "STALE_LEASE"})
        );
    }
    assert_eq!(snapshot(&load(&app, m.id).await), before);
    assert_eq!(
        metric(&app, "sms_reports_rejected_total{reason=\"STALE_LEASE\"}").await,
        3.0
    );

    // The current lease holder's report goes through.
    let results = report(
        &app,
        &token,
        json!([{"message_id": m.id.to_hex(), "status": "SENDING", "lease_id": new}]),
    )
    .await;
    assert_eq!(results[0]["ok"], true);
    assert_eq!(load(&app, m.id).await.status, Status::Sending);
    // Once SENDING, it is never handed out again, even with its lease long gone.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert!(job_ids(&poll(&app, &token, 10).await).is_empty());
}

#[tokio::test]
async fn a_batch_of_reports_is_decided_item_by_item() {
    let (app, agent, token) = app_with_agent(&[FAST]).await;
    let (intruder, intruder_token) = app.register_agent("agent-667").await;
    let intruder = ObjectId::parse_str(&intruder).unwrap();
    let mine: Vec<Message> = (0..6).map(|i| staged(agent, 50, 6 - i)).collect();
    let theirs = staged(intruder, 50, 0);
    insert(&app, &mine).await;
    insert(&app, std::slice::from_ref(&theirs)).await;
    let lease = poll(&app, &token, 10).await["jobs"][0]["lease_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(job_ids(&poll(&app, &intruder_token, 10).await).len(), 1);
    let [a, b, c, d, e, f] = [0, 1, 2, 3, 4, 5].map(|i| mine[i].id.to_hex());
    let x = theirs.id.to_hex();

    // Reports sharing a status and lease go together; a foreign or stale one among them
    // changes nothing and is answered as if it came alone.
    let results = report(
        &app,
        &token,
        json!([
            {"message_id": a, "status": "SENT", "lease_id": lease},
            {"message_id": x, "status": "SENT", "lease_id": lease},
            {"message_id": b, "status": "SENT", "lease_id": lease},
            {"message_id": c, "status": "SENT", "lease_id": "another-lease"},
            {"message_id": d, "status": "SENDING", "lease_id": lease},
            {"message_id": e, "status": "SENDING", "lease_id": lease},
            {"message_id": f, "status": "FAILED", "error": "no credit"},
        ]),
    )
    .await;
    assert_eq!(
        Value::Array(results),
        json!([
            {"message_id": a, "ok": true, "status": "SENT"},
            {"message_id": x, "ok": false, "status": null, "error": "NOT_FOUND"},
            {"message_id": b, "ok": true, "status": "SENT"},
            {"message_id": c, "ok": false, "status": "ASSIGNED", "error": "STALE_LEASE"},
            {"message_id": d, "ok": true, "status": "SENDING"},
            {"message_id": e, "ok": true, "status": "SENDING"},
            {"message_id": f, "ok": true, "status": "FAILED"},
        ])
    );

    let receipts = json!([
        {"message_id": a, "status": "DELIVERED", "lease_id": lease},
        {"message_id": b, "status": "DELIVERED", "lease_id": lease},
        {"message_id": c, "status": "DELIVERED"},
        {"message_id": d, "status": "SENT", "lease_id": lease},
        {"message_id": e, "status": "SENT", "lease_id": lease},
    ]);
    let expected = json!([
        {"message_id": a, "ok": true, "status": "DELIVERED"},
        {"message_id": b, "ok": true, "status": "DELIVERED"},
        {"message_id": c, "ok": false, "status": "ASSIGNED", "error": "INVALID_TRANSITION"},
        {"message_id": d, "ok": true, "status": "SENT"},
        {"message_id": e, "ok": true, "status": "SENT"},
    ]);
    let results = report(&app, &token, receipts.clone()).await;
    assert_eq!(Value::Array(results), expected);
    // The same batch again changes nothing and answers the same.
    let results = report(&app, &token, receipts).await;
    assert_eq!(Value::Array(results), expected);

    let status = |m: &Message| m.status;
    let mut now = Vec::new();
    for m in mine.iter().chain([&theirs]) {
        now.push(status(&load(&app, m.id).await));
    }
    use Status::*;
    assert_eq!(
        now,
        [Delivered, Delivered, Assigned, Sent, Sent, Failed, Assigned]
    );
    assert_eq!(
        load(&app, mine[5].id).await.last_error.as_deref(),
        Some("no credit")
    );
    for (status, n) in [
        ("SENT", 4.0),
        ("DELIVERED", 2.0),
        ("SENDING", 2.0),
        ("FAILED", 1.0),
    ] {
        let name = format!("sms_reports_total{{status=\"{status}\"}}");
        assert_eq!(metric(&app, &name).await, n, "{status}");
    }
    counters_match_a_recount(&app).await;
}
