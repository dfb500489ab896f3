//! `sms_jobs`, the phones' live work: staging gives each message exactly one job, a lease hides
//! a job until it runs out, a claim returns its jobs as stored, `SENDING` jobs are never handed
//! out again, `SENT` / `FAILED` remove the job, late and foreign reports change nothing, the
//! reconciler times out `SENDING`, and a poll reads only the lease-order index of `sms_jobs`,
//! whatever `sms_messages` holds.

use std::time::Duration;

use mongodb::bson::{doc, oid::ObjectId, DateTime};
use reqwest::StatusCode;
use serde_json::json;
use sms_dispatcher::Outcome;
use sms_shared::db::jobs::{CandidateQuery, Job, LEASE_ORDER_INDEX};
use sms_shared::db::messages::Message;
use sms_shared::domain::status::Status;

use crate::helpers::*;

async fn job(app: &TestApp, id: ObjectId) -> Option<Job> {
    app.db.jobs.find(id).await.unwrap()
}

#[tokio::test]
async fn staging_gives_each_message_one_job_however_often_its_event_is_handled() {
    let app = spawn_app().await;
    let s = app.sender().await;
    let nums = numbers(20);
    let mut recipients: Vec<(&str, &str)> = nums.iter().map(|n| (n.as_str(), "1357")).collect();
    recipients.push((nums[0].as_str(), "1357"));
    let res = app.submit(&s, &recipients).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let events = all_events(&app).await;
    let payloads: Vec<&[u8]> = events.iter().map(Vec::as_slice).collect();

    // Two dispatchers get the same events at once, then one of them gets them again.
    let (d1, d2) = (dispatcher(&app), dispatcher(&app));
    let (first, second) = tokio::join!(d1.handle_batch(&payloads), d2.handle_batch(&payloads));
    let again = d1.handle_batch(&payloads).await;
    for outcome in first.iter().chain(&second).chain(&again) {
        assert!(
            matches!(
                outcome,
                Outcome::Staged | Outcome::CanceledDuplicate | Outcome::AlreadyDone
            ),
            "{outcome:?}"
        );
    }
    assert!(again
        .iter()
        .all(|o| matches!(o, Outcome::AlreadyDone | Outcome::CanceledDuplicate)));

    assert_eq!(app.count("sms_jobs", doc! {}).await, 20);
    assert_eq!(staged_count(&app).await, 20);
    assert_eq!(
        app.count(
            "sms_messages",
            doc! {"status": "CANCELED", "last_error": "DUPLICATE_RECENT"}
        )
        .await,
        1
    );
    assert_eq!(
        app.count("sms_messages", doc! {"stagings": 1}).await,
        21,
        "each message staged (or cancelled) once"
    );
    let agent = oid(&s.agent_id);
    for m in all_messages(&app).await.iter().filter(|m| m.staged) {
        let j = job(&app, m.id).await.expect("a staged message has its job");
        assert_eq!(j.lanes, vec![agent.to_hex()]);
        assert_eq!((j.status, j.holder, j.attempts), (Status::Pending, None, 0));
        assert_eq!(
            (j.to.as_str(), j.text.as_str()),
            (m.to.as_str(), m.text.as_str())
        );
        assert_eq!(
            (j.created_at, j.priority_weight),
            (m.created_at, m.priority_weight)
        );
        assert!(m.published);
    }
    counters_match_a_recount(&app).await;
}

#[tokio::test]
async fn a_leased_job_is_hidden_while_its_lease_lives_and_leased_again_after() {
    let (app, agent, token) = app_with_agent(&[FAST, ("LEASE_SECONDS", "1")]).await;
    let messages: Vec<Message> = (0..3).map(|i| staged(agent, 50, 10 - i)).collect();
    insert(&app, &messages).await;

    let first = poll(&app, &token, 10).await;
    assert_eq!(job_ids(&first).len(), 3);
    let lease = first["jobs"][0]["lease_id"].as_str().unwrap().to_owned();
    for m in &messages {
        let j = job(&app, m.id).await.unwrap();
        assert_eq!(j.status, Status::Assigned);
        assert_eq!(
            (j.holder, j.lease_id.as_deref()),
            (Some(agent), Some(lease.as_str()))
        );
        assert_eq!(
            j.available_at, j.lease_expires_at,
            "available again when it ends"
        );
        assert_eq!(j.attempts, 1);
    }
    assert!(job_ids(&poll(&app, &token, 10).await).is_empty());

    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let second = poll(&app, &token, 10).await;
    assert_eq!(job_ids(&second), job_ids(&first));
    for (m, j) in messages.iter().zip(second["jobs"].as_array().unwrap()) {
        assert_eq!(j["attempts"], 2);
        assert_eq!(job(&app, m.id).await.unwrap().attempts, 2);
        let stored = load(&app, m.id).await;
        assert_eq!((stored.status, stored.attempts), (Status::Assigned, 2));
        assert_eq!(stored.lease_id.as_deref(), j["lease_id"].as_str());
    }
    counters_match_a_recount(&app).await;
}

#[tokio::test]
async fn a_claim_returns_its_jobs_as_stored_whether_new_or_leased_before() {
    let (app, agent, _) = app_with_agent(&[]).await;
    let waiting: Vec<Message> = (0..6).map(|i| staged(agent, 50, 1_000 - i)).collect();
    insert(&app, &waiting).await;
    let lease_for = Duration::from_secs(60);
    let stored = |claimed: Vec<Job>| {
        let app = &app;
        async move {
            for j in &claimed {
                assert_eq!(job(app, j.id).await.as_ref(), Some(j));
            }
            claimed
                .iter()
                .map(|j| (j.id, j.attempts))
                .collect::<Vec<_>>()
        }
    };

    // Four new jobs: the claim takes them all.
    let now = DateTime::now();
    let first = app.db.jobs.lease(agent, 4, "lease-1", lease_for, now).await;
    let first = first.unwrap();
    assert_eq!(first.re_leased(), 0);
    let ids: Vec<ObjectId> = waiting.iter().map(|m| m.id).collect();
    let expected: Vec<_> = ids[..4].iter().map(|id| (*id, 1)).collect();
    assert_eq!(stored(first.jobs).await, expected);

    // Their lease ran out: they come again, with the two never leased, in lease order.
    let later = DateTime::from_millis(now.timestamp_millis() + 61_000);
    let second = app
        .db
        .jobs
        .lease(agent, 10, "lease-2", lease_for, later)
        .await;
    let second = second.unwrap();
    assert_eq!(second.re_leased(), 4);
    let attempts = [2, 2, 2, 2, 1, 1];
    let expected: Vec<_> = ids.iter().copied().zip(attempts).collect();
    assert_eq!(stored(second.jobs).await, expected);
}

#[tokio::test]
async fn a_sending_job_is_never_handed_out_again() {
    let (app, agent, token) = app_with_agent(&[FAST, ("LEASE_SECONDS", "1")]).await;
    let m = staged(agent, 50, 0);
    insert(&app, std::slice::from_ref(&m)).await;
    let lease = poll(&app, &token, 10).await["jobs"][0]["lease_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let results = report(
        &app,
        &token,
        json!([{"message_id": m.id.to_hex(), "status": "SENDING", "lease_id": lease}]),
    )
    .await;
    assert_eq!(results[0]["ok"], true);
    let j = job(&app, m.id).await.unwrap();
    assert_eq!((j.status, j.available_at), (Status::Sending, None));
    assert!(j.sending_at.is_some());

    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert!(job_ids(&poll(&app, &token, 10).await).is_empty());
    assert_eq!(job(&app, m.id).await.unwrap().status, Status::Sending);
    assert_eq!(load(&app, m.id).await.status, Status::Sending);
}

#[tokio::test]
async fn sent_and_failed_remove_the_job_and_a_delivery_receipt_still_lands() {
    let (app, agent, token) = app_with_agent(&[FAST]).await;
    let (sent, failed) = (staged(agent, 50, 2), staged(agent, 50, 1));
    insert(&app, &[sent.clone(), failed.clone()]).await;
    let lease = poll(&app, &token, 10).await["jobs"][0]["lease_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = DateTime::now();
    let results = report(
        &app,
        &token,
        json!([
            {"message_id": sent.id.to_hex(), "status": "SENT", "lease_id": lease},
            {"message_id": failed.id.to_hex(), "status": "FAILED", "error": "NO_SIGNAL"},
        ]),
    )
    .await;
    assert!(results.iter().all(|r| r["ok"] == true), "{results:?}");
    assert_eq!(app.count("sms_jobs", doc! {}).await, 0);
    let s = load(&app, sent.id).await;
    let settled = s.settled_at.expect("SENT settles");
    assert!(settled >= before);
    assert!(load(&app, failed.id).await.settled_at.unwrap() >= before);

    let results = report(
        &app,
        &token,
        json!([
            {"message_id": sent.id.to_hex(), "status": "DELIVERED", "lease_id": lease},
            {"message_id": failed.id.to_hex(), "status": "DELIVERED"},
        ]),
    )
    .await;
    assert_eq!(
        results[0],
        json!({"message_id": sent.id.to_hex(), "ok": true, "status": "DELIVERED"})
    );
    assert_eq!(results[1]["error"], "INVALID_TRANSITION");
    let d = load(&app, sent.id).await;
    assert_eq!(d.status, Status::Delivered);
    assert!(
        d.settled_at.unwrap() >= settled,
        "a receipt moves the clock on"
    );
    counters_match_a_recount(&app).await;
}

#[tokio::test]
async fn late_and_foreign_reports_change_neither_job_nor_message() {
    let (app, agent, token) = app_with_agent(&[FAST, ("LEASE_SECONDS", "1")]).await;
    let (_, intruder) = app.register_agent("agent-666").await;
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
    let (job_before, message_before) = (job(&app, m.id).await, snapshot(&load(&app, m.id).await));

    let id = m.id.to_hex();
    let late = report(
        &app,
        &token,
        json!([
            {"message_id": id, "status": "SENT", "lease_id": old},
            {"message_id": id, "status": "SENDING", "lease_id": old},
        ]),
    )
    .await;
    assert!(late.iter().all(|r| r["error"] == "STALE_LEASE"), "{late:?}");
    let foreign = report(
        &app,
        &intruder,
        json!([
            {"message_id": id, "status": "SENT", "lease_id": new},
            {"message_id": id, "status": "FAILED"},
        ]),
    )
    .await;
    assert!(
        foreign.iter().all(|r| r["error"] == "NOT_FOUND"),
        "{foreign:?}"
    );
    assert_eq!(job(&app, m.id).await, job_before);
    assert_eq!(snapshot(&load(&app, m.id).await), message_before);
    counters_match_a_recount(&app).await;
}

#[tokio::test]
async fn the_reconciler_times_out_sending_jobs() {
    let (app, agent, token) = app_with_agent(&[
        FAST,
        ("SENDING_TIMEOUT_SECONDS", "1"),
        ("RECONCILE_INTERVAL_MS", "200"),
    ])
    .await;
    let (stuck, held) = (staged(agent, 60, 0), staged(agent, 50, 0));
    insert(&app, &[stuck.clone(), held.clone()]).await;
    assert_eq!(job_ids(&poll(&app, &token, 10).await).len(), 2);
    report(
        &app,
        &token,
        json!([{"message_id": stuck.id.to_hex(), "status": "SENDING"}]),
    )
    .await;
    let gone = eventually(10, || async { job(&app, stuck.id).await.is_none() }).await;
    assert!(gone, "the timed-out job was removed");
    let m = load(&app, stuck.id).await;
    assert_eq!(m.status, Status::Failed);
    assert_eq!(m.last_error.as_deref(), Some("SENDING_TIMEOUT"));
    assert!(m.settled_at.is_some());
    assert_eq!(job(&app, held.id).await.unwrap().status, Status::Assigned);
    assert_eq!(metric(&app, "sms_sending_timeouts_total").await, 1.0);
    counters_match_a_recount(&app).await;
}

#[tokio::test]
async fn a_poll_reads_the_lease_order_index_of_live_jobs_only() {
    let (app, agent, token) = app_with_agent(&[FAST]).await;
    let waiting: Vec<Message> = (0..30).map(|i| staged(agent, 50, 1_000 - i)).collect();
    insert(&app, &waiting).await;
    assert_eq!(job_ids(&poll(&app, &token, 10).await).len(), 10);

    let explain = |limit: i64| {
        let app = &app;
        async move {
            let q = CandidateQuery::new(agent, limit, DateTime::now());
            app.db
                .database
                .run_command(doc! {"explain": q.find_command(), "verbosity": "executionStats"})
                .await
                .unwrap()
        }
    };
    let before = explain(10).await;
    let stages = plan_stages(&before);
    let names: Vec<&str> = stages.iter().map(|(s, _)| s.as_str()).collect();
    assert!(
        stages
            .iter()
            .any(|(s, i)| s == "IXSCAN" && i.as_deref() == Some(LEASE_ORDER_INDEX)),
        "{stages:?}"
    );
    assert!(
        !names.contains(&"COLLSCAN") && !names.contains(&"SORT"),
        "{names:?}"
    );
    let (keys, docs) = examined(&before);
    // The 10 wanted, behind the 10 the agent holds.
    assert!((10..=21).contains(&keys), "{keys} keys examined");
    assert!(docs <= 21, "{docs} documents examined");

    // Ten thousand settled messages of the same agent are history: the poll reads the same.
    let history: Vec<Message> = (0..10_000)
        .map(|i| in_status(staged(agent, 99, i), Status::Delivered))
        .collect();
    insert(&app, &history).await;
    assert_eq!(examined(&explain(10).await), (keys, docs));
    let next = poll(&app, &token, 10).await;
    let expected: Vec<String> = waiting[10..20].iter().map(|m| m.id.to_hex()).collect();
    assert_eq!(job_ids(&next), expected);
}
