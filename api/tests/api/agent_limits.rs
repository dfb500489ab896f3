//! Per-phone limits: `PATCH /admin/agents/{id}` sets (or clears) an agent's own
//! `rate_limit_per_min`, `max_per_30min` and `daily_limit`; leasing never hands out more than
//! any of them allows, however many polls run at once on however many API processes; and
//! `GET /admin/agents` shows what each agent leased today and what it may still lease.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{Duration, Utc};
use mongodb::bson::{doc, oid::ObjectId};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sms_shared::db::agent_rate::{DayCount, RateReservation};
use sms_shared::db::messages::Message;

use crate::helpers::*;

async fn set_limits(app: &TestApp, agent: ObjectId, limits: Value) -> Value {
    let res = patch(
        app,
        &format!("/sms/admin/agents/{}", agent.to_hex()),
        limits,
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

/// The agent as `GET /admin/agents` lists it.
async fn listed(app: &TestApp, agent: ObjectId) -> Value {
    listed_item(app, "/sms/admin/agents", "agent_id", &agent.to_hex()).await
}

/// `polls` polls of `limit` at once, alternately on `app` and `replica`; the ids they got.
async fn concurrent_polls(
    app: &Arc<TestApp>,
    replica: &Arc<TestApp>,
    token: &str,
    polls: usize,
    limit: i64,
) -> Vec<String> {
    let tasks: Vec<_> = (0..polls)
        .map(|i| {
            let target = if i % 2 == 0 {
                app.clone()
            } else {
                replica.clone()
            };
            let token = token.to_owned();
            tokio::spawn(async move { job_ids(&poll(&target, &token, limit).await) })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        got.extend(t.await.unwrap());
    }
    got
}

#[tokio::test]
async fn operators_set_and_clear_an_agents_limits() {
    let (app, agent, _) = app_with_agent(&[]).await;
    let path = format!("/sms/admin/agents/{}", agent.to_hex());
    let view = set_limits(
        &app,
        agent,
        json!({"rate_limit_per_min": 3, "max_per_30min": 30, "daily_limit": 500}),
    )
    .await;
    assert_eq!(
        (
            &view["rate_limit_per_min"],
            &view["max_per_30min"],
            &view["daily_limit"]
        ),
        (&json!(3), &json!(30), &json!(500))
    );
    assert_eq!(view["is_active"], true, "untouched");
    assert_eq!(
        view["remaining"],
        json!({"per_min": 3, "per_30min": 30, "today": 500})
    );

    let view = set_limits(&app, agent, json!({"max_per_30min": null})).await;
    assert_eq!(view["max_per_30min"], Value::Null, "cleared");
    assert_eq!(
        (
            view["rate_limit_per_min"].as_i64(),
            view["daily_limit"].as_i64()
        ),
        (Some(3), Some(500))
    );
    assert_eq!(view["remaining"]["per_30min"], Value::Null);

    for (body, field) in [
        (json!({"rate_limit_per_min": 0}), "rate_limit_per_min"),
        (json!({"max_per_30min": -5}), "max_per_30min"),
        (json!({"daily_limit": 2_000_000_000}), "daily_limit"),
    ] {
        let err = assert_error(
            patch(&app, &path, body).await,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
        )
        .await;
        assert!(err["errors"][field].is_array(), "{err}");
    }
    assert_error(
        patch(&app, &path, json!({"rate_limit": 3})).await,
        StatusCode::BAD_REQUEST,
        "INVALID_JSON",
    )
    .await;
    let unknown = format!("/sms/admin/agents/{}", ObjectId::new().to_hex());
    assert_error(
        patch(&app, &unknown, json!({"daily_limit": 3})).await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    )
    .await;
    let stored = app.db.agents.find(agent).await.unwrap().unwrap();
    assert_eq!(
        (
            stored.rate_limit_per_min,
            stored.max_per_30min,
            stored.daily_limit
        ),
        (Some(3), None, Some(500))
    );

    let logs = app
        .db
        .audit_logs
        .list(&Default::default(), &first_page(10))
        .await
        .unwrap()
        .items;
    let limits: Vec<_> = logs.iter().filter(|l| l.action == "agent.limits").collect();
    assert_eq!(limits.len(), 2, "one entry per accepted change");
    assert_eq!(
        limits[0].details.get("max_per_30min"),
        Some(&mongodb::bson::Bson::Null)
    );
    assert_eq!(limits[0].details.get_i64("daily_limit").ok(), Some(500));
}

#[tokio::test]
async fn an_agents_own_rate_overrides_the_default_under_concurrent_polls() {
    let (app, agent, token) = app_with_agent(&[FAST]).await;
    set_limits(&app, agent, json!({"rate_limit_per_min": 4})).await;
    let messages: Vec<Message> = (0..30).map(|i| staged(agent, 50, i)).collect();
    insert(&app, &messages).await;
    let replica = Arc::new(spawn_app_from(app.vars.clone()).await);
    let app = Arc::new(app);

    let mut got = concurrent_polls(&app, &replica, &token, 12, 3).await;
    assert!(got.len() <= 4, "{} leased at once", got.len());
    for _ in 0..4 {
        got.extend(job_ids(&poll(&app, &token, 10).await));
    }
    assert_eq!(got.len(), 4, "exactly the agent's own rate");
    assert_eq!(got.iter().collect::<HashSet<_>>().len(), 4);
    let full = poll(&app, &token, 10).await;
    assert!((1..=60).contains(&full["retry_after_seconds"].as_i64().unwrap()));
}

#[tokio::test]
async fn the_30_minute_cap_counts_leases_older_than_a_minute() {
    let (app, agent, token) = app_with_agent(&[FAST]).await;
    set_limits(&app, agent, json!({"max_per_30min": 5})).await;
    insert(
        &app,
        &(0..20).map(|i| staged(agent, 50, i)).collect::<Vec<_>>(),
    )
    .await;
    // Leases of ten minutes ago count; those of 31 minutes ago do not.
    let ledger = app.db.database.collection::<RateReservation>("agent_rate");
    for (minutes, n) in [(10, 2), (31, 100)] {
        let at = Utc::now() - Duration::minutes(minutes);
        ledger
            .insert_one(RateReservation {
                id: ObjectId::new(),
                agent_id: agent,
                at: sms_shared::time::to_bson(at),
                n,
                settled: true,
                expires_at: sms_shared::time::to_bson(Utc::now() + Duration::hours(1)),
            })
            .await
            .unwrap();
    }
    let replica = Arc::new(spawn_app_from(app.vars.clone()).await);
    let app = Arc::new(app);
    let mut got = concurrent_polls(&app, &replica, &token, 10, 2).await;
    for _ in 0..3 {
        got.extend(job_ids(&poll(&replica, &token, 10).await));
    }
    assert_eq!(got.len(), 3, "5 per 30 minutes, 2 already used");
    let view = listed(&app, agent).await;
    assert_eq!(view["remaining"]["per_30min"], 0);
}

#[tokio::test]
async fn the_daily_cap_holds_under_concurrent_polls_on_two_replicas() {
    let (app, agent, token) = app_with_agent(&[FAST]).await;
    set_limits(&app, agent, json!({"daily_limit": 6})).await;
    insert(
        &app,
        &(0..40).map(|i| staged(agent, 50, i)).collect::<Vec<_>>(),
    )
    .await;
    let replica = Arc::new(spawn_app_from(app.vars.clone()).await);
    let app = Arc::new(app);

    let mut got = concurrent_polls(&app, &replica, &token, 20, 2).await;
    assert!(got.len() <= 6, "{} leased at once", got.len());
    for _ in 0..6 {
        got.extend(job_ids(&poll(&app, &token, 10).await));
    }
    assert_eq!(got.len(), 6);
    let full = poll(&replica, &token, 10).await;
    assert!(job_ids(&full).is_empty());
    assert!((1..=60).contains(&full["retry_after_seconds"].as_i64().unwrap()));
    let view = listed(&app, agent).await;
    assert_eq!(
        (
            view["sends_today"].as_i64(),
            view["remaining"]["today"].as_i64()
        ),
        (Some(6), Some(0))
    );
    assert_eq!(
        app.count("sms_messages", doc! {"status": "ASSIGNED"}).await,
        6
    );
}

#[tokio::test]
async fn the_agent_list_shows_todays_sends_and_what_remains() {
    let (app, agent, token) = app_with_agent(&[("AGENT_RATE_LIMIT_PER_MIN", "10")]).await;
    let (idle, _) = fleet(&app, 1).await.remove(0);
    set_limits(
        &app,
        agent,
        json!({"max_per_30min": 30, "daily_limit": 100}),
    )
    .await;
    insert(
        &app,
        &(0..3).map(|i| staged(agent, 50, i)).collect::<Vec<_>>(),
    )
    .await;
    // Yesterday's count is not today's.
    let yesterday = Utc::now() - Duration::days(1);
    app.db
        .database
        .collection::<DayCount>("agent_days")
        .insert_one(DayCount {
            id: format!("{}:{}", agent.to_hex(), yesterday.format("%Y-%m-%d")),
            agent_id: agent,
            day: yesterday.format("%Y-%m-%d").to_string(),
            n: 77,
            expires_at: sms_shared::time::to_bson(Utc::now() + Duration::days(1)),
        })
        .await
        .unwrap();
    assert_eq!(job_ids(&poll(&app, &token, 10).await).len(), 3);

    let view = listed(&app, agent).await;
    assert_eq!(view["sends_today"], 3);
    assert_eq!(
        view["remaining"],
        json!({"per_min": 7, "per_30min": 27, "today": 97})
    );
    assert!(view["last_poll_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    let other = listed(&app, idle).await;
    assert_eq!(other["sends_today"], 0);
    assert_eq!(
        other["remaining"],
        json!({"per_min": 10, "per_30min": null, "today": null})
    );
    assert_eq!(
        (&other["rate_limit_per_min"], &other["last_poll_at"]),
        (&Value::Null, &Value::Null)
    );
}

#[tokio::test]
async fn without_a_daily_limit_today_counts_what_was_leased_and_a_later_limit_sees_it() {
    let (app, agent, token) = app_with_agent(&[FAST]).await;
    let staged_now = |n: i64| {
        (0..n)
            .map(|i| staged(agent, 50, i))
            .collect::<Vec<Message>>()
    };
    insert(&app, &staged_now(3)).await;
    assert_eq!(job_ids(&poll(&app, &token, 10).await).len(), 3);
    assert!(job_ids(&poll(&app, &token, 10).await).is_empty());
    let view = listed(&app, agent).await;
    assert_eq!(
        (&view["sends_today"], &view["remaining"]["today"]),
        (&json!(3), &Value::Null)
    );

    set_limits(&app, agent, json!({"daily_limit": 5})).await;
    insert(&app, &staged_now(4)).await;
    assert_eq!(job_ids(&poll(&app, &token, 10).await).len(), 2);
    let view = listed(&app, agent).await;
    assert_eq!(
        (&view["sends_today"], &view["remaining"]["today"]),
        (&json!(5), &json!(0))
    );
}
