//! `GET /agent/jobs/next`: which staged messages an agent gets, in which order and under which
//! lease, how its polls are paced by `AGENT_RATE_LIMIT_PER_MIN`, and that a disabled agent gets
//! nothing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::bson::{self, doc, oid::ObjectId, DateTime};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sms_shared::db::messages::Message;
use sms_shared::domain::status::Status;

use crate::helpers::*;

#[tokio::test]
async fn jobs_are_leased_highest_priority_first_then_oldest() {
    let (app, agent, token) = app_with_agent(&[FAST]).await;
    let low = staged(agent, 10, 50_000);
    let high_new = staged(agent, 90, 1_000);
    let high_old = staged(agent, 90, 30_000);
    let mid = staged(agent, 50, 40_000);
    // Same priority and age: the id breaks the tie.
    let mut twin_a = staged(agent, 50, 0);
    let mut twin_b = staged(agent, 50, 0);
    twin_b.created_at = mid.created_at;
    twin_a.created_at = mid.created_at;
    insert(
        &app,
        &[
            low.clone(),
            high_new.clone(),
            twin_b.clone(),
            mid.clone(),
            high_old.clone(),
            twin_a.clone(),
        ],
    )
    .await;
    let mut mids = [mid.id, twin_a.id, twin_b.id];
    mids.sort();

    let before = DateTime::now().timestamp_millis();
    let body = poll(&app, &token, 10).await;
    let expected: Vec<String> = [high_old.id, high_new.id, mids[0], mids[1], mids[2], low.id]
        .iter()
        .map(|i| i.to_hex())
        .collect();
    assert_eq!(job_ids(&body), expected);
    assert!(body["retry_after_seconds"].is_null());

    let job = &body["jobs"][0];
    assert_eq!(job["id"], job["message_id"]);
    assert_eq!(job["to"], "+84901234567");
    assert_eq!(job["text"], high_old.text.as_str());
    assert_eq!(job["request_id"], high_old.request_id.to_hex().as_str());
    assert_eq!(job["priority_weight"], 90);
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["segments"], 1);
    assert_eq!(job["encoding"], "GSM-7");
    let lease_id = job["lease_id"].as_str().unwrap();
    let parsed = uuid::Uuid::parse_str(lease_id).unwrap();
    assert_eq!(parsed.get_version_num(), 4);
    let expires = chrono::DateTime::parse_from_rfc3339(job["lease_expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    assert!(job["lease_expires_at"].as_str().unwrap().ends_with('Z'));
    assert!(
        (before + 300_000 - 1_000..=DateTime::now().timestamp_millis() + 300_000)
            .contains(&expires),
        "lease lasts LEASE_SECONDS"
    );

    let stored = load(&app, high_old.id).await;
    assert_eq!(stored.status, Status::Assigned);
    assert_eq!(stored.lease_id.as_deref(), Some(lease_id));
    assert_eq!(stored.attempts, 1);
    assert_eq!(stored.lease_expires_at.unwrap().timestamp_millis(), expires);
    assert!(stored.leased_at.unwrap().timestamp_millis() >= before);

    // Everything is held now: nothing more, and a hint when to come back.
    let again = poll(&app, &token, 10).await;
    assert_eq!(job_ids(&again), Vec::<String>::new());
    assert_eq!(again["retry_after_seconds"], 5);
}

#[tokio::test]
async fn limit_defaults_to_10_is_capped_at_100_and_must_be_positive() {
    let (app, agent, token) = app_with_agent(&[FAST]).await;
    let messages: Vec<Message> = (0..130).map(|i| staged(agent, 50, i)).collect();
    insert(&app, &messages).await;

    for bad in ["0", "-3"] {
        let res = app
            .get(
                &format!("/agent/jobs/next?limit={bad}"),
                Auth::Bearer(&token),
            )
            .await;
        let body = assert_error(res, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
        assert!(body["errors"]["limit"].is_array(), "{body}");
    }
    let res = app
        .get("/agent/jobs/next?limit=many", Auth::Bearer(&token))
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    let res = app.get("/agent/jobs/next", Auth::Bearer(&token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(job_ids(&body).len(), 10);
    assert_eq!(job_ids(&poll(&app, &token, 1000).await).len(), 100);
    assert_eq!(job_ids(&poll(&app, &token, 1000).await).len(), 20);
    let assigned = app
        .db
        .messages
        .collection()
        .count_documents(doc! {"status": "ASSIGNED"})
        .await
        .unwrap();
    assert_eq!(assigned, 130);
}

#[tokio::test]
async fn only_the_agents_own_staged_leasable_messages_are_handed_out() {
    let (app, agent, token) = app_with_agent(&[FAST]).await;
    let (other, _) = app.register_agent("agent-002").await;
    let pending = staged(agent, 50, 10_000);
    let mut expired = in_status(staged(agent, 50, 5_000), Status::Assigned);
    expired.lease_expires_at = Some(DateTime::from_millis(
        DateTime::now().timestamp_millis() - 1,
    ));
    // Reported ASSIGNED without ever being leased: no lease to wait for.
    let mut lease_less = staged(agent, 50, 1_000);
    lease_less.status = Status::Assigned;
    let live = in_status(staged(agent, 99, 0), Status::Assigned);
    let mut unstaged = staged(agent, 99, 0);
    unstaged.staged = false;
    unstaged.staged_at = None;
    let foreign = staged(oid(&other), 99, 0);
    let mut later: Vec<Message> = [
        Status::Sending,
        Status::Sent,
        Status::Delivered,
        Status::Failed,
        Status::Canceled,
    ]
    .into_iter()
    .map(|s| in_status(staged(agent, 99, 0), s))
    .collect();
    // A SENDING message whose lease ran out is still never handed out again.
    later[0].lease_expires_at = Some(DateTime::from_millis(0));
    let mut all = vec![
        pending.clone(),
        expired.clone(),
        lease_less.clone(),
        live.clone(),
        unstaged.clone(),
        foreign.clone(),
    ];
    all.extend(later.iter().cloned());
    insert(&app, &all).await;
    let before: HashMap<ObjectId, bson::Document> =
        all.iter().map(|m| (m.id, snapshot(m))).collect();

    let body = poll(&app, &token, 100).await;
    assert_eq!(
        job_ids(&body),
        vec![
            pending.id.to_hex(),
            expired.id.to_hex(),
            lease_less.id.to_hex()
        ]
    );
    assert_eq!(
        body["jobs"][1]["attempts"], 2,
        "a re-lease is another attempt"
    );
    for m in [&live, &unstaged, &foreign].into_iter().chain(later.iter()) {
        assert_eq!(
            snapshot(&load(&app, m.id).await),
            before[&m.id],
            "{} untouched",
            m.status
        );
    }
}

#[tokio::test]
async fn an_expired_lease_is_leased_again_with_a_new_lease_id() {
    let (app, agent, token) = app_with_agent(&[FAST, ("LEASE_SECONDS", "1")]).await;
    let messages: Vec<Message> = (0..3).map(|i| staged(agent, 50, 100 - i)).collect();
    insert(&app, &messages).await;

    let first = poll(&app, &token, 10).await;
    assert_eq!(job_ids(&first).len(), 3);
    let first_lease = first["jobs"][0]["lease_id"].as_str().unwrap().to_owned();
    // While the lease is live nobody gets them.
    assert!(job_ids(&poll(&app, &token, 10).await).is_empty());

    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let second = poll(&app, &token, 10).await;
    assert_eq!(job_ids(&second), job_ids(&first));
    let second_lease = second["jobs"][0]["lease_id"].as_str().unwrap();
    assert_ne!(second_lease, first_lease);
    for job in second["jobs"].as_array().unwrap() {
        assert_eq!(job["attempts"], 2);
        assert_eq!(job["lease_id"], second_lease);
    }
    for m in &messages {
        let stored = load(&app, m.id).await;
        assert_eq!(stored.status, Status::Assigned);
        assert_eq!(stored.lease_id.as_deref(), Some(second_lease));
        assert_eq!(stored.attempts, 2);
    }
    assert_eq!(metric(&app, "sms_leases_total").await, 6.0);
    assert_eq!(metric(&app, "sms_lease_expiries_total").await, 3.0);
}

#[tokio::test]
async fn twenty_concurrent_agents_never_share_a_live_lease() {
    const AGENTS: usize = 20;
    const PER_AGENT: usize = 50;
    const POLLERS_PER_AGENT: usize = 2;
    let app = Arc::new(spawn_app_with(&[FAST]).await);
    let mut agents = Vec::new();
    let mut messages = Vec::new();
    for a in 0..AGENTS {
        let (id, token) = app.register_agent(&format!("agent-{a:03}")).await;
        let id = oid(&id);
        messages.extend((0..PER_AGENT).map(|i| staged(id, (i as i32 * 37) % 101, i as i64)));
        agents.push((id, token));
    }
    insert(&app, &messages).await;

    let started = Instant::now();
    let mut tasks = Vec::new();
    for (a, (agent, token)) in agents.iter().enumerate() {
        let received = Arc::new(AtomicUsize::new(0));
        for p in 0..POLLERS_PER_AGENT {
            let (app, token, received, agent) =
                (app.clone(), token.clone(), received.clone(), *agent);
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                let mut polls = 0;
                while received.load(Ordering::SeqCst) < PER_AGENT {
                    polls += 1;
                    assert!(polls < 500, "agent {a} poller {p} is starving");
                    let limit = 1 + ((a * 7 + p * 3 + polls) % 12) as i64;
                    let body = poll(&app, &token, limit).await;
                    let jobs = body["jobs"].as_array().unwrap();
                    assert!(jobs.len() as i64 <= limit);
                    received.fetch_add(jobs.len(), Ordering::SeqCst);
                    for j in jobs {
                        got.push((
                            agent,
                            oid(j["message_id"].as_str().unwrap()),
                            j["lease_id"].as_str().unwrap().to_owned(),
                        ));
                    }
                }
                got
            }));
        }
    }
    let mut leases: HashMap<ObjectId, (ObjectId, String)> = HashMap::new();
    for t in tasks {
        for (agent, id, lease) in t.await.unwrap() {
            assert!(
                leases.insert(id, (agent, lease)).is_none(),
                "message {id} was handed out twice"
            );
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "leased {} messages to {AGENTS} agents x {POLLERS_PER_AGENT} pollers in {elapsed:?}",
        leases.len()
    );
    assert_eq!(leases.len(), AGENTS * PER_AGENT);

    let now = DateTime::now();
    let stored: Vec<Message> = all_messages(&app).await;
    assert_eq!(stored.len(), AGENTS * PER_AGENT);
    for m in &stored {
        let (agent, lease) = &leases[&m.id];
        assert_eq!(m.agent_id.as_ref(), Some(agent), "leased to its own agent");
        assert_eq!(m.status, Status::Assigned);
        assert_eq!(m.attempts, 1, "leased exactly once");
        assert_eq!(
            m.lease_id.as_ref(),
            Some(lease),
            "the lease the poller got is the live one"
        );
        assert!(m.lease_expires_at.unwrap() > now);
    }
    for (_, token) in &agents {
        assert!(job_ids(&poll(&app, token, 100).await).is_empty());
    }
    assert_eq!(
        metric(&app, "sms_leases_total").await,
        (AGENTS * PER_AGENT) as f64
    );
    assert_eq!(metric(&app, "sms_lease_expiries_total").await, 0.0);
}

#[tokio::test]
async fn pacing_caps_each_agent_per_rolling_minute() {
    let (app, agent, token) = app_with_agent(&[("AGENT_RATE_LIMIT_PER_MIN", "5")]).await;
    let (other, other_token) = app.register_agent("agent-002").await;
    let mut messages: Vec<Message> = (0..20).map(|i| staged(agent, 50, i)).collect();
    messages.extend((0..20).map(|i| staged(oid(&other), 50, i)));
    insert(&app, &messages).await;

    let first = poll(&app, &token, 10).await;
    assert_eq!(job_ids(&first).len(), 5);
    assert!(first["retry_after_seconds"].is_null());
    let second = poll(&app, &token, 10).await;
    assert!(job_ids(&second).is_empty());
    let retry = second["retry_after_seconds"].as_i64().unwrap();
    assert!(
        (50..=60).contains(&retry),
        "retry after {retry}s: when the first lease leaves the window"
    );

    // Another agent has its own allowance.
    assert_eq!(job_ids(&poll(&app, &other_token, 3).await).len(), 3);
    assert_eq!(job_ids(&poll(&app, &other_token, 3).await).len(), 2);
    assert!(job_ids(&poll(&app, &other_token, 3).await).is_empty());

    let assigned = app
        .db
        .messages
        .collection()
        .count_documents(doc! {"agent_id": agent, "status": "ASSIGNED"})
        .await
        .unwrap();
    assert_eq!(assigned, 5);
}

#[tokio::test]
async fn re_leases_count_against_the_pacing_cap() {
    let (app, agent, token) =
        app_with_agent(&[("AGENT_RATE_LIMIT_PER_MIN", "3"), ("LEASE_SECONDS", "1")]).await;
    let messages: Vec<Message> = (0..3).map(|i| staged(agent, 50, i)).collect();
    insert(&app, &messages).await;
    assert_eq!(job_ids(&poll(&app, &token, 10).await).len(), 3);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let body = poll(&app, &token, 10).await;
    assert!(
        job_ids(&body).is_empty(),
        "the expired leases must wait for the window"
    );
    assert!(body["retry_after_seconds"].as_i64().unwrap() > 0);
    for m in &messages {
        assert_eq!(load(&app, m.id).await.attempts, 1);
    }
}

#[tokio::test]
async fn concurrent_polls_on_two_replicas_never_exceed_the_cap() {
    let (app, agent, token) = app_with_agent(&[("AGENT_RATE_LIMIT_PER_MIN", "5")]).await;
    // A second API process on the same database.
    let replica = spawn_app_from(app.vars.clone()).await;
    let messages: Vec<Message> = (0..40).map(|i| staged(agent, 50, i)).collect();
    insert(&app, &messages).await;
    let (app, replica) = (Arc::new(app), Arc::new(replica));

    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let target = if i % 2 == 0 {
                app.clone()
            } else {
                replica.clone()
            };
            let token = token.clone();
            tokio::spawn(async move { job_ids(&poll(&target, &token, 3).await) })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        got.extend(t.await.unwrap());
    }
    assert!(got.len() <= 5, "{} messages leased concurrently", got.len());
    eprintln!(
        "12 concurrent polls on two replicas leased {} of 5",
        got.len()
    );

    // Whatever the race left unused is still available, and never more than the cap.
    for _ in 0..5 {
        got.extend(job_ids(&poll(&replica, &token, 10).await));
    }
    assert_eq!(got.len(), 5);
    assert_eq!(got.iter().collect::<HashSet<_>>().len(), 5);
    let assigned = app
        .db
        .messages
        .collection()
        .count_documents(doc! {"status": "ASSIGNED"})
        .await
        .unwrap();
    assert_eq!(assigned, 5);
    assert_eq!(
        app.db
            .agent_rate
            .used(agent, sms_shared::time::now())
            .await
            .unwrap(),
        5
    );
}

#[tokio::test]
async fn a_disabled_agent_gets_401_and_its_messages_stay_untouched() {
    let (app, agent, token) = app_with_agent(&[FAST]).await;
    let pending = staged(agent, 50, 0);
    let assigned = in_status(staged(agent, 50, 0), Status::Assigned);
    insert(&app, &[pending.clone(), assigned.clone()]).await;

    let res = app
        .request(
            Method::PATCH,
            &format!("/sms/admin/agents/{}", agent.to_hex()),
            Auth::Operator,
            Some(json!({"is_active": false})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);

    let res = app
        .get("/sms/agent/jobs/next?limit=10", Auth::Bearer(&token))
        .await;
    assert_error(res, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let res = app
        .post(
            "/sms/agent/messages/report",
            Auth::Bearer(&token),
            json!({"messages": [
                {"message_id": assigned.id.to_hex(), "status": "SENT", "lease_id": assigned.lease_id},
            ]}),
        )
        .await;
    assert_error(res, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    for m in [&pending, &assigned] {
        assert_eq!(snapshot(&load(&app, m.id).await), snapshot(m));
    }
    assert_eq!(metric(&app, "sms_leases_total").await, 0.0);
}
