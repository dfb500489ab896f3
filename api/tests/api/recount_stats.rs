//! `sms-api recount-stats`: it repairs the counters of the days it covers and no others, stays
//! right while transitions flow, and the summary's queries (counters and edge messages) each
//! run on their index.

use mongodb::bson::{doc, oid::ObjectId, Bson, Document};
use sms_api::commands::{recount_stats, RecountStats};
use sms_shared::db::messages::MessageFilter;
use sms_shared::db::stats::{Counted, Piece, Transition};
use sms_shared::domain::status::Status;

use crate::helpers::*;
use crate::summary_counters::*;

fn day(s: &str) -> Option<chrono::NaiveDate> {
    Some(s.parse().unwrap())
}

/// A message of `day` in `status`, changed to FAILED without its counters, as a crash between
/// the two writes leaves it.
async fn lose_a_count(app: &TestApp, day: &str) {
    let start = at(&format!("{day}T00:00:00Z"));
    let end = mongodb::bson::DateTime::from_millis(start.timestamp_millis() + DAY_MS);
    let found = raw_messages(app)
        .find_one_and_update(
            doc! {"created_at": {"$gte": start, "$lt": end}, "status": "SENDING"},
            doc! {"$set": {"status": "FAILED"}},
        )
        .await
        .unwrap();
    assert!(found.is_some(), "a SENDING message on {day}");
}

/// `sms-api recount-stats ARGS` against the app's database.
fn cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sms-api"))
        .env_clear()
        .envs(app.vars.iter())
        .arg("recount-stats")
        .args(args)
        .output()
        .unwrap()
}

/// The summary's query of `q`, as the API builds it.
fn filter_of(q: &Q) -> MessageFilter {
    MessageFilter {
        from: q.from.map(parse_time),
        until: q.to.map(parse_time),
        agent_id: q.agent,
        tenant: q.key,
        status: q.status,
        ..MessageFilter::default()
    }
}

fn one_day(d: &'static str, next: &'static str) -> Q {
    Q {
        from: Some(d),
        to: Some(next),
        ..Q::default()
    }
}

#[tokio::test]
async fn a_recount_repairs_lost_and_stale_counts_of_the_days_it_covers() {
    let app = spawn_app().await;
    let traffic = seed_traffic(&app).await;
    rebuild_counters(&app).await;
    lose_a_count(&app, "2026-11-25").await;
    lose_a_count(&app, "2026-11-26").await;
    // Counts on a day that has no messages (a count applied for a message never stored).
    let ghost = Transition {
        message: Counted {
            created_at: at("2026-11-23T08:00:00Z"),
            api_key_id: Some(traffic.keys[0]),
            client_name: "SafeShop".into(),
            segments: 1,
        },
        from: None,
        to: (Status::Sent, Some(traffic.agents[0])),
    };
    app.db.stats.apply(&[ghost]).await.unwrap();
    let (d23, d25, d26) = (
        one_day("2026-11-23", "2026-11-24"),
        one_day("2026-11-25", "2026-11-26"),
        one_day("2026-11-26", "2026-11-27"),
    );
    for q in [&d25, &d26] {
        let (counters, messages) = (summary(&app, q).await, counted_from_messages(&app, q).await);
        assert_eq!(counters["total"], messages["total"]);
        assert_ne!(counters["by_status"], messages["by_status"], "a lost count");
    }
    assert_eq!(summary(&app, &d23).await["total"], 1);

    let args = RecountStats {
        from: day("2026-11-23"),
        to: day("2026-11-25"),
        settle_ms: 0,
    };
    let done = recount_stats(&app.db, &args).await.unwrap();
    assert_eq!((done.days, done.removed, done.retried), (3, 2, 0));
    assert_eq!(summary(&app, &d23).await["total"], 0);
    assert_eq!(
        app.count("stats_daily", doc! {"day": at("2026-11-23T00:00:00Z")})
            .await,
        0,
        "the stale day document is gone"
    );
    assert_summaries_match_messages(&app, &queries(&traffic, &[(d25.from, d25.to)])).await;
    let counters = summary(&app, &d26).await;
    assert_ne!(
        counters["by_status"],
        counted_from_messages(&app, &d26).await["by_status"],
        "a day outside the range is left alone"
    );

    // The command line does the same.
    let out = cli(
        &app,
        &[
            "--from",
            "2026-11-26",
            "--to",
            "2026-11-26",
            "--settle-ms",
            "0",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("report counters rebuilt"));
    assert_summaries_match_messages(&app, &queries(&traffic, &[(None, None)])).await;

    let out = cli(&app, &["--from", "2026-11-26", "--to", "2026-11-25"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--from 2026-11-26 is after --to 2026-11-25"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_recount_while_transitions_flow_ends_equal_to_the_messages() {
    let app = spawn_app().await;
    let traffic = seed_traffic(&app).await;
    let mut pending: Vec<ObjectId> = Vec::new();
    let mut cursor = raw_messages(&app)
        .find(doc! {"status": "PENDING", "agent_id": {"$ne": Bson::Null}})
        .sort(doc! {"_id": 1})
        .await
        .unwrap();
    while cursor.advance().await.unwrap() {
        let m: Document = cursor.deserialize_current().unwrap();
        pending.push(m.get_object_id("_id").unwrap());
    }
    assert!(pending.len() >= 40, "{} pending messages", pending.len());
    let (started, running) = tokio::sync::oneshot::channel();

    let flow = async {
        let mut started = Some(started);
        for id in &pending[..40] {
            let agent = traffic.agents[2];
            transition(&app, *id, (Status::Assigned, Some(agent))).await;
            if let Some(tx) = started.take() {
                let _ = tx.send(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    let recounting = async {
        running.await.unwrap();
        let args = RecountStats {
            from: day("2026-11-24"),
            to: day("2026-11-26"),
            settle_ms: 300,
        };
        recount_stats(&app.db, &args).await
    };
    let ((), done) = tokio::join!(flow, recounting);
    let done = done.expect("the recount ends once traffic is quiet");
    assert!(
        done.retried > 0,
        "traffic moved counters mid-recount: {done:?}"
    );
    assert_summaries_match_messages(&app, &queries(&traffic, &RANGES[..4])).await;
}

#[tokio::test]
async fn a_transition_between_counting_and_writing_sends_its_day_round_again() {
    let app = spawn_app().await;
    let traffic = seed_traffic(&app).await;
    rebuild_counters(&app).await;
    let sending = raw_messages(&app)
        .find_one(doc! {
            "created_at": {"$gte": at("2026-11-25T00:00:00Z"), "$lt": at("2026-11-26T00:00:00Z")},
            "status": "SENDING",
            "agent_id": {"$ne": Bson::Null},
        })
        .await
        .unwrap()
        .unwrap();
    let id = sending.get_object_id("_id").unwrap();
    let agent = sending.get_object_id("agent_id").ok();
    let args = RecountStats {
        from: day("2026-11-25"),
        to: day("2026-11-25"),
        settle_ms: 1_000,
    };
    let late = async {
        // Counted, not yet written: the recount is waiting for transitions in flight.
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        transition(&app, id, (Status::Sent, agent)).await;
    };
    let ((), done) = tokio::join!(late, recount_stats(&app.db, &args));
    let done = done.unwrap();
    assert_eq!(done.retried, 1, "{done:?}");
    assert_summaries_match_messages(&app, &queries(&traffic, &RANGES[1..2])).await;
}

/// What an explain answer says, wherever its server puts it.
#[derive(Default)]
struct Plan {
    stages: Vec<String>,
    indexes: Vec<String>,
    keys_examined: i64,
}

impl Plan {
    fn of(v: &Bson) -> Self {
        let mut plan = Plan::default();
        plan.walk(v);
        plan
    }

    fn walk(&mut self, v: &Bson) {
        match v {
            Bson::Document(d) => {
                for (k, v) in d {
                    match (k.as_str(), v) {
                        ("stage", Bson::String(s)) => self.stages.push(s.clone()),
                        ("indexName", Bson::String(s)) => self.indexes.push(s.clone()),
                        ("totalKeysExamined", Bson::Int32(n)) => self.keys_examined += *n as i64,
                        ("totalKeysExamined", Bson::Int64(n)) => self.keys_examined += n,
                        _ => self.walk(v),
                    }
                }
            }
            Bson::Array(a) => a.iter().for_each(|v| self.walk(v)),
            _ => {}
        }
    }
}

#[tokio::test]
async fn every_summary_query_runs_on_its_index() {
    let app = spawn_app().await;
    let traffic = seed_traffic(&app).await;
    rebuild_counters(&app).await;
    let mut seen: Vec<&str> = Vec::new();
    for q in queries(&traffic, &RANGES) {
        for query in sms_shared::db::stats::queries(&filter_of(&q)) {
            let explain = app
                .db
                .database
                .run_command(doc! {
                    "explain": {
                        "aggregate": query.collection,
                        "pipeline": query.pipeline(),
                        "cursor": {},
                        "hint": query.hint,
                    },
                    "verbosity": "executionStats",
                })
                .await
                .unwrap();
            let plan = Plan::of(&Bson::Document(explain.clone()));
            let context = format!("{q:?} {query:?}: {explain}");
            assert!(plan.stages.iter().any(|s| s == "IXSCAN"), "{context}");
            assert!(
                !plan.stages.iter().any(|s| s == "COLLSCAN" || s == "SORT"),
                "{context}"
            );
            assert!(!plan.indexes.is_empty(), "{context}");
            assert!(plan.indexes.iter().all(|i| i == query.hint), "{context}");
            if let Piece::Messages(lo, hi) = query.piece {
                // Bounded by the messages of the window, whatever the other filters.
                let window = app
                    .count(
                        "sms_messages",
                        doc! {"created_at": {
                            "$gte": mongodb::bson::DateTime::from_millis(lo),
                            "$lt": mongodb::bson::DateTime::from_millis(hi),
                        }},
                    )
                    .await;
                assert!(plan.keys_examined <= window as i64 + 1, "{context}");
            }
            if !seen.contains(&query.hint) {
                seen.push(query.hint);
            }
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        ["agent", "api_key", "created_id", "day", "hour"],
        "every index was checked"
    );
}
