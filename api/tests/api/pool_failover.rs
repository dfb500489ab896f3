//! Retryable failures: a pool message whose phone reports `FAILED` with `retryable: true` goes
//! back to its pool for an agent that has not failed it yet, until it has had
//! `MAX_SEND_ATTEMPTS` leases; a pinned one, or one no other agent can take, fails at once.

use mongodb::bson::{oid::ObjectId, DateTime};
use serde_json::{json, Value};
use sms_shared::domain::status::Status;

use crate::helpers::*;

/// Leases `m` with `token` and reports it failed, retryable; returns the report's result.
async fn lease_and_fail(app: &TestApp, token: &str, m: ObjectId) -> Value {
    let body = poll(app, token, 10).await;
    assert_eq!(job_ids(&body), vec![m.to_hex()], "the message is leased");
    let lease = body["jobs"][0]["lease_id"].as_str().unwrap();
    let results = report(
        app,
        token,
        json!([{
            "message_id": m.to_hex(), "status": "FAILED", "lease_id": lease,
            "error": "RESULT_ERROR_LIMIT_EXCEEDED", "retryable": true,
        }]),
    )
    .await;
    results[0].clone()
}

#[tokio::test]
async fn a_retryable_failure_gives_a_pool_message_to_another_agent() {
    let (app, a, token_a) = app_with_agent(&[FAST]).await;
    let (b, token_b) = fleet(&app, 1).await.remove(0);
    let m = for_everyone(50, 0);
    insert(&app, std::slice::from_ref(&m)).await;

    let result = lease_and_fail(&app, &token_a, m.id).await;
    assert_eq!(
        result,
        json!({"message_id": m.id.to_hex(), "ok": true, "status": "PENDING"})
    );
    let stored = load(&app, m.id).await;
    assert_eq!((stored.status, stored.agent_id), (Status::Pending, None));
    assert_eq!(
        stored.last_error.as_deref(),
        Some("RESULT_ERROR_LIMIT_EXCEEDED")
    );
    assert_eq!((stored.lease_id, stored.attempts), (None, 1));
    let job = app.db.jobs.find(m.id).await.unwrap().unwrap();
    assert_eq!(
        (job.status, job.holder, job.tried_by.clone()),
        (Status::Pending, None, vec![a])
    );

    // The phone did not get an answer and sends the same report again: the same result.
    let again = report(
        &app,
        &token_a,
        json!([{"message_id": m.id.to_hex(), "status": "FAILED", "retryable": true}]),
    )
    .await;
    assert_eq!(again[0]["status"], "PENDING");
    assert!(
        job_ids(&poll(&app, &token_a, 10).await).is_empty(),
        "not to A again"
    );
    let taken = poll(&app, &token_b, 10).await;
    assert_eq!(job_ids(&taken), vec![m.id.to_hex()]);
    assert_eq!(taken["jobs"][0]["attempts"], 2);
    assert_eq!(load(&app, m.id).await.agent_id, Some(b));
    assert_eq!(metric(&app, "sms_pool_requeues_total").await, 1.0, "once");
    counters_match_a_recount(&app).await;
}

#[tokio::test]
async fn after_max_send_attempts_a_retryable_failure_is_final() {
    let (app, _, token_a) = app_with_agent(&[FAST, ("MAX_SEND_ATTEMPTS", "2")]).await;
    let others = fleet(&app, 2).await;
    let m = for_everyone(50, 0);
    insert(&app, std::slice::from_ref(&m)).await;

    assert_eq!(
        lease_and_fail(&app, &token_a, m.id).await["status"],
        "PENDING"
    );
    let second = lease_and_fail(&app, &others[0].1, m.id).await;
    assert_eq!(
        second,
        json!({"message_id": m.id.to_hex(), "ok": true, "status": "FAILED"}),
        "two leases: no third"
    );
    let stored = load(&app, m.id).await;
    assert_eq!((stored.status, stored.attempts), (Status::Failed, 2));
    assert_eq!(
        stored.last_error.as_deref(),
        Some("RESULT_ERROR_LIMIT_EXCEEDED")
    );
    assert!(stored.settled_at.is_some());
    assert!(app.db.jobs.find(m.id).await.unwrap().is_none());
    assert!(job_ids(&poll(&app, &others[1].1, 10).await).is_empty());
    counters_match_a_recount(&app).await;
}

#[tokio::test]
async fn a_pinned_retryable_failure_fails_at_once() {
    let (app, a, token) = app_with_agent(&[FAST]).await;
    fleet(&app, 2).await;
    let m = staged(a, 50, 0);
    insert(&app, std::slice::from_ref(&m)).await;
    let result = lease_and_fail(&app, &token, m.id).await;
    assert_eq!(result["status"], "FAILED");
    assert_eq!(load(&app, m.id).await.status, Status::Failed);
    assert!(app.db.jobs.find(m.id).await.unwrap().is_none());
    assert_eq!(metric(&app, "sms_pool_requeues_total").await, 0.0);
    counters_match_a_recount(&app).await;
}

#[tokio::test]
async fn without_another_active_agent_a_retryable_failure_is_final() {
    let (app, a, token) = app_with_agent(&[FAST]).await;
    let (b, _) = fleet(&app, 1).await.remove(0);
    let res = patch(
        &app,
        &format!("/sms/admin/agents/{}", b.to_hex()),
        json!({"is_active": false}),
    )
    .await;
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    let (ours, alone) = (for_pool(&[a, b], 60, 0), for_pool(&[a], 50, 0));
    insert(&app, std::slice::from_ref(&ours)).await;
    assert_eq!(
        lease_and_fail(&app, &token, ours.id).await["status"],
        "FAILED"
    );
    insert(&app, std::slice::from_ref(&alone)).await;
    assert_eq!(
        lease_and_fail(&app, &token, alone.id).await["status"],
        "FAILED"
    );
    counters_match_a_recount(&app).await;
}

/// An app with agents A and B and one pool message that A leased.
struct LeasedByA {
    app: TestApp,
    a: ObjectId,
    token_a: String,
    b: ObjectId,
    token_b: String,
    m: ObjectId,
    lease: String,
}

async fn leased_by_a() -> LeasedByA {
    let (app, a, token_a) = app_with_agent(&[FAST]).await;
    let (b, token_b) = fleet(&app, 1).await.remove(0);
    let m = for_everyone(50, 0);
    insert(&app, std::slice::from_ref(&m)).await;
    let lease = poll(&app, &token_a, 10).await["jobs"][0]["lease_id"]
        .as_str()
        .unwrap()
        .to_owned();
    LeasedByA {
        app,
        a,
        token_a,
        b,
        token_b,
        m: m.id,
        lease,
    }
}

#[tokio::test]
async fn a_retryable_failure_after_sending_returns_the_message_to_the_pool() {
    let LeasedByA {
        app,
        token_a,
        b,
        token_b,
        m,
        lease,
        ..
    } = leased_by_a().await;
    let results = report(
        &app,
        &token_a,
        json!([
            {"message_id": m.to_hex(), "status": "SENDING", "lease_id": lease},
            {"message_id": m.to_hex(), "status": "FAILED", "lease_id": lease,
             "error": "NO_SIGNAL", "retryable": true},
        ]),
    )
    .await;
    assert_eq!(results[1]["status"], "PENDING", "{results:?}");
    let stored = load(&app, m).await;
    assert_eq!((stored.status, stored.agent_id), (Status::Pending, None));
    assert_eq!(job_ids(&poll(&app, &token_b, 10).await), vec![m.to_hex()]);
    assert_eq!(load(&app, m).await.agent_id, Some(b));
    counters_match_a_recount(&app).await;
}

#[tokio::test]
async fn a_crash_between_the_job_and_the_message_is_completed_by_the_next_lease() {
    let LeasedByA {
        app,
        a,
        token_a,
        b,
        token_b,
        m,
        lease,
    } = leased_by_a().await;
    let sending = report(
        &app,
        &token_a,
        json!([{"message_id": m.to_hex(), "status": "SENDING", "lease_id": lease}]),
    )
    .await;
    assert_eq!(sending[0]["ok"], true);
    // A's retryable failure gave the job back; the process died before the message followed.
    let job = app.db.jobs.find(m).await.unwrap().unwrap();
    assert!(app.db.jobs.requeue(&job, a, DateTime::now()).await.unwrap());
    assert_eq!(load(&app, m).await.status, Status::Sending);

    let taken = poll(&app, &token_b, 10).await;
    assert_eq!(
        job_ids(&taken),
        vec![m.to_hex()],
        "B may take it: A gave it back"
    );
    let stored = load(&app, m).await;
    assert_eq!(
        (stored.status, stored.agent_id),
        (Status::Assigned, Some(b))
    );
    let retried = report(
        &app,
        &token_a,
        json!([{"message_id": m.to_hex(), "status": "FAILED", "lease_id": lease, "retryable": true}]),
    )
    .await;
    assert_eq!(retried[0]["error"], "NOT_FOUND", "B holds it now");
    assert_eq!(load(&app, m).await.agent_id, Some(b));
    counters_match_a_recount(&app).await;
}
