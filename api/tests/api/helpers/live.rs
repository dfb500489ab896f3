//! Fixtures of the live-work tests: a request's message events as a dispatcher receives them,
//! the counters next to a recount of `sms_messages`, and the stages of an `explain` plan.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, Bson, Document};
use sms_shared::db::messages::Message;
use sms_shared::db::stats::Bucket;

use super::TestApp;

/// Every message of the app's database.
pub async fn all_messages(app: &TestApp) -> Vec<Message> {
    app.db
        .messages
        .collection()
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// The event payloads of every message of the app's database, as the API publishes them.
pub async fn all_events(app: &TestApp) -> Vec<Vec<u8>> {
    let messages: Vec<Message> = all_messages(app).await;
    messages
        .iter()
        .map(|m| serde_json::to_vec(&sms_api::background::outbox::event(m.into())).unwrap())
        .collect()
}

/// A dispatcher of the app's database, to call its staging step directly.
pub fn dispatcher(app: &TestApp) -> sms_dispatcher::Dispatcher {
    sms_dispatcher::Dispatcher::new(
        app.db.clone(),
        sms_shared::metrics::Metrics::new(),
        app.config.rules.anti_dup_window,
    )
}

/// Counted figures by (bucket start ms, agent, API key, status): (messages, segments).
pub type Figures = BTreeMap<(i64, Option<ObjectId>, Option<ObjectId>, String), (i64, i64)>;

/// What the counters of one granularity hold, leaving out zeros.
pub async fn counters(app: &TestApp, bucket: Bucket) -> Figures {
    let docs: Vec<Document> = app
        .db
        .stats
        .collection(bucket)
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut out = Figures::new();
    for d in docs {
        let start = d.get_datetime(bucket.field()).unwrap().timestamp_millis();
        let id = |f: &str| match d.get(f) {
            Some(Bson::ObjectId(o)) => Some(*o),
            _ => None,
        };
        let n = d.get_document("n").cloned().unwrap_or_default();
        let segments = d.get_document("segments").cloned().unwrap_or_default();
        for (status, value) in n {
            let value = value.as_i64().or(value.as_i32().map(i64::from)).unwrap();
            let s = segments
                .get(&status)
                .and_then(|v| v.as_i64().or(v.as_i32().map(i64::from)))
                .unwrap_or(0);
            if value != 0 || s != 0 {
                out.insert(
                    (start, id("agent_id"), id("api_key_id"), status),
                    (value, s),
                );
            }
        }
    }
    out
}

/// The same figures counted from `sms_messages` one by one.
pub async fn recount(app: &TestApp, bucket: Bucket) -> Figures {
    let messages: Vec<Message> = all_messages(app).await;
    let mut out = Figures::new();
    for m in messages {
        let start = bucket.start(m.created_at).timestamp_millis();
        let key = (
            start,
            m.agent_id,
            m.api_key_id,
            m.status.as_str().to_owned(),
        );
        let e = out.entry(key).or_default();
        e.0 += 1;
        e.1 += i64::from(m.segments);
    }
    out
}

/// Asserts that the day and hour counters hold what `sms_messages` holds.
pub async fn counters_match_a_recount(app: &TestApp) {
    for bucket in [Bucket::Day, Bucket::Hour] {
        assert_eq!(
            counters(app, bucket).await,
            recount(app, bucket).await,
            "{bucket:?} counters"
        );
    }
}

/// Every stage of an `explain` answer's winning plan, outermost first, with its index name.
pub fn plan_stages(explained: &Document) -> Vec<(String, Option<String>)> {
    fn walk(stage: &Document, out: &mut Vec<(String, Option<String>)>) {
        out.push((
            stage.get_str("stage").unwrap_or_default().to_owned(),
            stage.get_str("indexName").ok().map(str::to_owned),
        ));
        if let Ok(inner) = stage.get_document("inputStage") {
            walk(inner, out);
        }
        if let Ok(inner) = stage.get_array("inputStages") {
            for s in inner.iter().filter_map(Bson::as_document) {
                walk(s, out);
            }
        }
    }
    let mut out = Vec::new();
    let plan = explained
        .get_document("queryPlanner")
        .and_then(|q| q.get_document("winningPlan"))
        .expect("a winning plan");
    walk(plan, &mut out);
    out
}

/// `totalKeysExamined` and `totalDocsExamined` of an `explain` answer.
pub fn examined(explained: &Document) -> (i64, i64) {
    let stats = explained.get_document("executionStats").unwrap();
    let n = |f: &str| {
        let v = stats.get(f).unwrap();
        v.as_i64().or(v.as_i32().map(i64::from)).unwrap()
    };
    (n("totalKeysExamined"), n("totalDocsExamined"))
}
