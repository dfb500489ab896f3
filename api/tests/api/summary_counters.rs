//! `GET /reports/summary` reads counters; these tests hold every figure it gives against a
//! count made straight from `sms_messages`, over ranges cut at days, hours and minutes, with
//! every filter, after a recount and after live transitions.

use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime, Document};
use reqwest::StatusCode;
use serde_json::Value;
use sms_api::commands::{recount_stats, RecountStats};
use sms_shared::db::messages::{Message, NewMessage, Route};
use sms_shared::db::stats::{Counted, Place, Recounted, Transition};
use sms_shared::domain::status::Status;

use crate::helpers::*;

mod expected;

pub use expected::{counted_from_messages, parse_time};

pub const CLINIC: &str = "Phòng khám Hà Nội";

pub fn at(rfc3339: &str) -> DateTime {
    DateTime::from_millis(
        chrono::DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_millis(),
    )
}

/// Rebuilds every counter from the messages, as `sms-api recount-stats --settle-ms 0` does.
pub async fn rebuild_counters(app: &TestApp) -> Recounted {
    let args = RecountStats {
        from: None,
        to: None,
        settle_ms: 0,
    };
    recount_stats(&app.db, &args).await.expect("recount")
}

/// A message as a request stores it, already staged, in `status`.
pub fn message(
    created_at: DateTime,
    agent_id: ObjectId,
    key: Option<(ObjectId, &str)>,
    status: Status,
    segments: i32,
) -> Message {
    Message {
        status,
        segments,
        ..Message::pending(NewMessage {
            request_id: ObjectId::new(),
            api_key_id: key.map(|(id, _)| id),
            client_name: key.map_or("operator", |(_, name)| name).to_owned(),
            route: Route::Pinned(agent_id),
            template_id: ObjectId::new(),
            to: "+84901234567".to_owned(),
            text: "Mã OTP của bạn là 123456".to_owned(),
            priority_weight: 50,
            created_at,
        })
        .staged_at(created_at)
    }
}

/// Three days of traffic: three agents, two API keys and operator sends, every status, times
/// to the millisecond (some exactly on the bounds the ranges below use), and messages that no
/// agent holds yet.
pub struct Traffic {
    pub agents: [ObjectId; 3],
    pub keys: [ObjectId; 2],
    /// Messages held by no agent (`agent_id: null`).
    pub unheld: Vec<ObjectId>,
    pub total: usize,
}

pub const DAY_MS: i64 = 86_400_000;

pub async fn seed_traffic(app: &TestApp) -> Traffic {
    let agents = [ObjectId::new(), ObjectId::new(), ObjectId::new()];
    let keys = [ObjectId::new(), ObjectId::new()];
    let start = at("2026-11-24T00:00:00Z").timestamp_millis();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut times: Vec<DateTime> = (0..360)
        .map(|_| DateTime::from_millis(start + (next() % (3 * DAY_MS as u64)) as i64))
        .collect();
    for t in [
        "2026-11-24T00:00:00Z",
        "2026-11-24T22:17:05.123Z",
        "2026-11-24T23:59:59.999Z",
        "2026-11-25T00:00:00Z",
        "2026-11-25T01:42:00Z",
        "2026-11-25T10:00:00Z",
        "2026-11-25T10:49:59.999Z",
        "2026-11-25T23:59:59.999Z",
        "2026-11-26T00:00:00Z",
        "2026-11-26T19:10:30.500Z",
        "2026-11-26T23:59:59.999Z",
    ] {
        times.push(at(t));
    }
    let messages: Vec<Message> = times
        .into_iter()
        .map(|t| {
            let r = next();
            let key = match r % 3 {
                0 => None,
                1 => Some((keys[0], "SafeShop")),
                _ => Some((keys[1], CLINIC)),
            };
            let status = Status::ALL[((r >> 8) % 7) as usize];
            let agent = agents[((r >> 16) % 3) as usize];
            message(t, agent, key, status, 1 + ((r >> 24) % 3) as i32)
        })
        .collect();
    app.db.messages.insert_many(&messages).await.unwrap();
    let unheld: Vec<Message> = (0..12)
        .map(|i| {
            let t = DateTime::from_millis(start + i * 6 * 3_600_000 + 1_234);
            message(
                t,
                agents[0],
                Some((keys[0], "SafeShop")),
                Status::Pending,
                1,
            )
        })
        .collect();
    let raw: Vec<Document> = unheld
        .iter()
        .map(|m| {
            let mut d = mongodb::bson::to_document(m).unwrap();
            d.insert("agent_id", Bson::Null);
            d
        })
        .collect();
    raw_messages(app).insert_many(raw).await.unwrap();
    Traffic {
        agents,
        keys,
        unheld: unheld.iter().map(|m| m.id).collect(),
        total: messages.len() + unheld.len(),
    }
}

pub fn raw_messages(app: &TestApp) -> mongodb::Collection<Document> {
    app.db.database.collection("sms_messages")
}

/// One summary request's filters.
#[derive(Debug, Clone, Default)]
pub struct Q {
    pub from: Option<&'static str>,
    pub to: Option<&'static str>,
    pub agent: Option<ObjectId>,
    pub key: Option<ObjectId>,
    pub status: Option<Status>,
}

impl Q {
    fn query_string(&self) -> String {
        let mut parts = Vec::new();
        parts.extend(self.from.map(|t| format!("from={t}")));
        parts.extend(self.to.map(|t| format!("to={t}")));
        parts.extend(self.agent.map(|a| format!("agent_id={}", a.to_hex())));
        parts.extend(self.key.map(|k| format!("api_key_id={}", k.to_hex())));
        parts.extend(self.status.map(|s| format!("status={s}")));
        format!("?{}", parts.join("&"))
    }
}

/// Ranges cut at whole days, at hours, at minutes and milliseconds, across midnight, open.
pub const RANGES: [(Option<&str>, Option<&str>); 9] = [
    (None, None),
    (Some("2026-11-25"), Some("2026-11-26")),
    (
        Some("2026-11-24T22:17:05.123Z"),
        Some("2026-11-25T01:42:00Z"),
    ),
    (
        Some("2026-11-24T03:25:00Z"),
        Some("2026-11-26T19:10:30.500Z"),
    ),
    (Some("2026-11-25T10:05:00Z"), Some("2026-11-25T10:50:00Z")),
    (Some("2026-11-25T10:30:00Z"), Some("2026-11-25T11:15:00Z")),
    (
        Some("2026-11-25T23:59:59.999Z"),
        Some("2026-11-26T00:00:00.001Z"),
    ),
    (Some("2026-11-25T10:30:00Z"), None),
    (None, Some("2026-11-25T13:00:00.001Z")),
];

/// Every filter alone and all together, over `ranges`.
pub fn queries(t: &Traffic, ranges: &[(Option<&'static str>, Option<&'static str>)]) -> Vec<Q> {
    let mut out = Vec::new();
    for &(from, to) in ranges {
        let q = Q {
            from,
            to,
            ..Q::default()
        };
        out.push(q.clone());
        out.push(Q {
            agent: Some(t.agents[1]),
            ..q.clone()
        });
        out.push(Q {
            key: Some(t.keys[0]),
            ..q.clone()
        });
        out.push(Q {
            status: Some(Status::Pending),
            ..q.clone()
        });
        out.push(Q {
            agent: Some(t.agents[0]),
            key: Some(t.keys[1]),
            status: Some(Status::Delivered),
            ..q
        });
    }
    out
}

/// The summary's body without the echo of its filters.
pub async fn summary(app: &TestApp, q: &Q) -> Value {
    let query = q.query_string();
    let res = app
        .get(&format!("/sms/reports/summary{query}"), Auth::Operator)
        .await;
    assert_eq!(res.status(), StatusCode::OK, "summary{query}");
    let mut body: Value = res.json().await.unwrap();
    body.as_object_mut().unwrap().remove("filters");
    body
}

/// Asserts that every summary of `queries` equals the count from the messages.
pub async fn assert_summaries_match_messages(app: &TestApp, queries: &[Q]) {
    for q in queries {
        let expected = counted_from_messages(app, q).await;
        assert_eq!(summary(app, q).await, expected, "{q:?}");
    }
}

#[tokio::test]
async fn summaries_equal_a_count_of_the_messages_for_every_range_and_filter() {
    let app = spawn_app().await;
    let traffic = seed_traffic(&app).await;
    let done = rebuild_counters(&app).await;
    let oldest = chrono::NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
    let today = chrono::Utc::now().date_naive();
    let days = (today - oldest).num_days() + 1;
    assert_eq!(done.days as i64, days, "the oldest message's day to today");
    assert!(done.written > 0);

    let all = counted_from_messages(&app, &Q::default()).await;
    assert_eq!(all["total"], traffic.total, "every message counts");
    let held: i64 = all["by_agent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["total"].as_i64().unwrap())
        .sum();
    assert_eq!(held as usize, traffic.total - traffic.unheld.len());
    assert_summaries_match_messages(&app, &queries(&traffic, &RANGES)).await;
}

/// Moves a message and its counts, as the status transitions do.
pub async fn transition(app: &TestApp, id: ObjectId, to: Place) {
    let m = raw_messages(app)
        .find_one(doc! {"_id": id})
        .await
        .unwrap()
        .unwrap();
    let from: Place = (
        Status::parse(m.get_str("status").unwrap()).unwrap(),
        m.get_object_id("agent_id").ok(),
    );
    raw_messages(app)
        .update_one(
            doc! {"_id": id},
            doc! {"$set": {"status": to.0.as_str(), "agent_id": to.1}},
        )
        .await
        .unwrap();
    app.db
        .stats
        .apply(&[moved(&m, Some(from), to)])
        .await
        .unwrap();
}

/// The transition of message document `m` from `from` to `to`.
pub fn moved(m: &Document, from: Option<Place>, to: Place) -> Transition {
    Transition {
        message: Counted {
            created_at: *m.get_datetime("created_at").unwrap(),
            api_key_id: m.get_object_id("api_key_id").ok(),
            client_name: m.get_str("client_name").unwrap().to_owned(),
            segments: m.get_i32("segments").unwrap(),
        },
        from,
        to,
    }
}

/// The counter documents as sets of non-zero counts, without versions.
async fn counters(app: &TestApp) -> Vec<Document> {
    let mut out = Vec::new();
    for name in ["stats_daily", "stats_hourly"] {
        let mut cursor = app
            .db
            .database
            .collection::<Document>(name)
            .find(doc! {})
            .await
            .unwrap();
        while cursor.advance().await.unwrap() {
            let mut d = cursor.deserialize_current().unwrap();
            d.remove("v");
            for field in ["n", "segments"] {
                let counts: Document = d
                    .get_document(field)
                    .unwrap()
                    .iter()
                    .filter(|(_, n)| n.as_i64() != Some(0))
                    .map(|(s, n)| (s.clone(), n.clone()))
                    .collect();
                d.insert(field, counts);
            }
            if !d.get_document("n").unwrap().is_empty() {
                out.push(d);
            }
        }
    }
    out.sort_by_key(|d| d.get_str("_id").unwrap().to_owned());
    out
}

#[tokio::test]
async fn transitions_keep_the_counters_equal_to_the_messages() {
    let app = spawn_app().await;
    let traffic = seed_traffic(&app).await;
    rebuild_counters(&app).await;
    let agent = Some(traffic.agents[2]);
    // New messages, a pool's leases, sends, deliveries, failures and cancels.
    let new = message(
        at("2026-11-25T10:40:00Z"),
        traffic.agents[1],
        Some((traffic.keys[1], CLINIC)),
        Status::Pending,
        2,
    );
    app.db
        .messages
        .insert_many(std::slice::from_ref(&new))
        .await
        .unwrap();
    let created = mongodb::bson::to_document(&new).unwrap();
    let placed = (Status::Pending, Some(traffic.agents[1]));
    let created = moved(&created, None, placed);
    app.db.stats.apply(&[created]).await.unwrap();
    transition(&app, new.id, (Status::Canceled, Some(traffic.agents[1]))).await;
    use Status::*;
    let paths: [&[Status]; 6] = [
        &[Assigned],
        &[Assigned, Sending],
        &[Assigned, Sending, Sent],
        &[Assigned, Sending, Sent, Delivered],
        &[Assigned, Sending, Failed],
        &[Canceled],
    ];
    for (id, path) in traffic.unheld.iter().zip(paths.iter().cycle()) {
        for status in *path {
            let holder = if *status == Canceled { None } else { agent };
            transition(&app, *id, (*status, holder)).await;
        }
    }
    let before = counters(&app).await;
    assert_summaries_match_messages(&app, &queries(&traffic, &RANGES[..6])).await;

    rebuild_counters(&app).await;
    assert_eq!(
        counters(&app).await,
        before,
        "a recount finds nothing to change"
    );
}
