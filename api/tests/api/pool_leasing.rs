//! Leasing from pools: a poll takes the agent's pinned jobs and its pools' jobs together in lease
//! order (two ranges of one index, merged), a pool job whose lease ran out goes to whichever
//! agent polls next, and the reconciler gives a silent agent's `ASSIGNED` pool jobs back to
//! their pool (never `SENDING` ones, never pinned ones), after which the silent phone's late
//! reports change nothing.

use std::time::Duration;

use mongodb::bson::{doc, oid::ObjectId, DateTime};
use serde_json::json;
use sms_shared::db::jobs::{CandidateQuery, Job, LEASE_ORDER_INDEX};
use sms_shared::domain::status::Status;

use crate::helpers::*;

async fn job(app: &TestApp, id: ObjectId) -> Option<Job> {
    app.db.jobs.find(id).await.unwrap()
}

#[tokio::test]
async fn an_agent_leases_its_pinned_and_pool_jobs_together_in_lease_order() {
    let (app, a, token) = app_with_agent(&[FAST]).await;
    let b = fleet(&app, 1).await.remove(0).0;
    let pinned = staged(a, 50, 60_000);
    let everyone = for_everyone(90, 1_000);
    let ours = for_pool(&[a, b], 70, 2_000);
    let pinned_urgent = staged(a, 70, 30_000);
    let not_for_a = [for_pool(&[b], 99, 0), staged(b, 80, 0)];
    let mut all = vec![
        pinned.clone(),
        everyone.clone(),
        ours.clone(),
        pinned_urgent.clone(),
    ];
    all.extend(not_for_a.iter().cloned());
    insert(&app, &all).await;

    let body = poll(&app, &token, 10).await;
    let expected: Vec<String> = [&everyone, &pinned_urgent, &ours, &pinned]
        .iter()
        .map(|m| m.id.to_hex())
        .collect();
    assert_eq!(job_ids(&body), expected, "priority first, then oldest");
    for m in [&everyone, &ours, &pinned] {
        let stored = load(&app, m.id).await;
        assert_eq!(
            (stored.status, stored.agent_id),
            (Status::Assigned, Some(a))
        );
    }
    for m in &not_for_a {
        assert_eq!(load(&app, m.id).await.status, Status::Pending);
    }
    counters_match_a_recount(&app).await;
}

#[tokio::test]
async fn a_poll_merges_two_ranges_of_the_lease_order_index() {
    let (app, a, token) = app_with_agent(&[FAST]).await;
    let mut waiting: Vec<_> = (0..15).map(|i| staged(a, 50, 10_000 - i)).collect();
    waiting.extend((0..15).map(|i| for_everyone(50, 5_000 - i)));
    insert(&app, &waiting).await;
    assert_eq!(job_ids(&poll(&app, &token, 10).await).len(), 10);

    let q = CandidateQuery::new(a, 10, DateTime::now());
    let explained = app
        .db
        .database
        .run_command(doc! {"explain": q.find_command(), "verbosity": "executionStats"})
        .await
        .unwrap();
    let stages = plan_stages(&explained);
    let names: Vec<&str> = stages.iter().map(|(s, _)| s.as_str()).collect();
    assert!(names.contains(&"SORT_MERGE"), "{stages:?}");
    let scans: Vec<_> = stages.iter().filter(|(s, _)| s == "IXSCAN").collect();
    assert_eq!(scans.len(), 2, "one range per lane: {stages:?}");
    assert!(scans
        .iter()
        .all(|(_, index)| index.as_deref() == Some(LEASE_ORDER_INDEX)));
    assert!(
        !names.contains(&"COLLSCAN") && !names.contains(&"SORT"),
        "{names:?}"
    );
    let (keys, docs) = examined(&explained);
    // The 10 wanted, behind the 10 the agent holds, from two ranges.
    assert!(keys <= 22, "{keys} keys examined");
    assert!(docs <= 21, "{docs} documents examined");
}

#[tokio::test]
async fn a_pool_job_whose_lease_ran_out_goes_to_the_next_agent_that_polls() {
    let (app, _, token_a) = app_with_agent(&[FAST, ("LEASE_SECONDS", "1")]).await;
    let (b, token_b) = fleet(&app, 1).await.remove(0);
    let m = for_everyone(50, 0);
    insert(&app, std::slice::from_ref(&m)).await;
    let first = poll(&app, &token_a, 10).await;
    let old_lease = first["jobs"][0]["lease_id"].as_str().unwrap().to_owned();
    assert!(job_ids(&poll(&app, &token_b, 10).await).is_empty(), "held");

    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let second = poll(&app, &token_b, 10).await;
    assert_eq!(job_ids(&second), vec![m.id.to_hex()]);
    assert_eq!(second["jobs"][0]["attempts"], 2);
    let stored = load(&app, m.id).await;
    assert_eq!((stored.agent_id, stored.attempts), (Some(b), 2));
    assert_eq!(job(&app, m.id).await.unwrap().holder, Some(b));

    let before = snapshot(&stored);
    let late = report(
        &app,
        &token_a,
        json!([{"message_id": m.id.to_hex(), "status": "SENDING", "lease_id": old_lease}]),
    )
    .await;
    assert_eq!(late[0]["error"], "NOT_FOUND", "no longer A's: {late:?}");
    assert_eq!(snapshot(&load(&app, m.id).await), before);
    assert_eq!(load(&app, m.id).await.agent_id, Some(b));
    counters_match_a_recount(&app).await;
}

#[tokio::test]
async fn a_silent_agents_assigned_pool_jobs_go_back_to_the_pool() {
    let (app, a, token_a) = app_with_agent(&[
        FAST,
        ("AGENT_STALE_SECONDS", "2"),
        ("RECONCILE_INTERVAL_MS", "200"),
    ])
    .await;
    let (_, token_b) = fleet(&app, 1).await.remove(0);
    let (assigned, sending, pinned) = (for_everyone(90, 2), for_everyone(80, 1), staged(a, 70, 0));
    insert(&app, &[assigned.clone(), sending.clone(), pinned.clone()]).await;
    let body = poll(&app, &token_a, 10).await;
    assert_eq!(job_ids(&body).len(), 3);
    let lease = body["jobs"][0]["lease_id"].as_str().unwrap().to_owned();
    let results = report(
        &app,
        &token_a,
        json!([{"message_id": sending.id.to_hex(), "status": "SENDING", "lease_id": lease}]),
    )
    .await;
    assert_eq!(results[0]["ok"], true);
    assert!(
        job_ids(&poll(&app, &token_b, 10).await).is_empty(),
        "all held by A"
    );

    // A goes silent.
    let released = eventually(10, || async {
        job(&app, assigned.id).await.unwrap().holder.is_none()
    })
    .await;
    assert!(
        released,
        "the silent agent's ASSIGNED pool job was released"
    );
    let j = job(&app, assigned.id).await.unwrap();
    assert_eq!((j.status, j.lease_id.as_deref()), (Status::Pending, None));
    let m = load(&app, assigned.id).await;
    assert_eq!(
        (m.status, m.agent_id, m.lease_id.as_deref()),
        (Status::Pending, None, None)
    );
    assert_eq!(
        job(&app, sending.id).await.unwrap().holder,
        Some(a),
        "SENDING stays"
    );
    assert_eq!(load(&app, sending.id).await.status, Status::Sending);
    assert_eq!(
        load(&app, pinned.id).await.agent_id,
        Some(a),
        "pinned stays"
    );
    assert_eq!(job(&app, pinned.id).await.unwrap().status, Status::Assigned);
    assert_eq!(metric(&app, "sms_stale_releases_total").await, 1.0);

    let taken = poll(&app, &token_b, 10).await;
    assert_eq!(job_ids(&taken), vec![assigned.id.to_hex()]);
    assert_eq!(taken["jobs"][0]["attempts"], 2);
    let before = snapshot(&load(&app, assigned.id).await);
    let late = report(
        &app,
        &token_a,
        json!([
            {"message_id": assigned.id.to_hex(), "status": "SENDING", "lease_id": lease},
            {"message_id": assigned.id.to_hex(), "status": "SENT"},
        ]),
    )
    .await;
    assert!(late.iter().all(|r| r["error"] == "NOT_FOUND"), "{late:?}");
    assert_eq!(snapshot(&load(&app, assigned.id).await), before);
    counters_match_a_recount(&app).await;
}

#[tokio::test]
async fn a_release_and_the_holders_report_never_both_apply() {
    let (app, _, token) = app_with_agent(&[FAST]).await;
    let (m1, m2) = (for_everyone(50, 1), for_everyone(50, 0));
    insert(&app, &[m1.clone(), m2.clone()]).await;
    let lease = poll(&app, &token, 10).await["jobs"][0]["lease_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (j1, j2) = (
        job(&app, m1.id).await.unwrap(),
        job(&app, m2.id).await.unwrap(),
    );
    let now = DateTime::now();

    // The report lands first: the release finds the job moved on and does nothing.
    let sent = report(
        &app,
        &token,
        json!([{"message_id": m1.id.to_hex(), "status": "SENDING", "lease_id": lease}]),
    )
    .await;
    assert_eq!(sent[0]["ok"], true);
    assert!(!app.db.jobs.release(&j1, now).await.unwrap());
    assert_eq!(load(&app, m1.id).await.status, Status::Sending);

    // The release lands first: the report is refused and changes nothing.
    assert!(app.db.jobs.release(&j2, now).await.unwrap());
    let moved = app.db.messages.release_to_pool(&j2, now).await.unwrap();
    app.db.stats.apply(moved.as_slice()).await.unwrap();
    let before = snapshot(&load(&app, m2.id).await);
    let late = report(
        &app,
        &token,
        json!([{"message_id": m2.id.to_hex(), "status": "SENDING", "lease_id": lease}]),
    )
    .await;
    assert_eq!(late[0]["error"], "NOT_FOUND");
    assert_eq!(snapshot(&load(&app, m2.id).await), before);
    assert_eq!(load(&app, m2.id).await.agent_id, None);
    counters_match_a_recount(&app).await;
}
