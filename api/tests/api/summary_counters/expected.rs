//! What a summary must say, counted straight from `sms_messages` (the reference the counters
//! are held against).

use std::collections::{BTreeMap, HashMap};

use mongodb::bson::{doc, Bson, DateTime};
use serde_json::{json, Value};
use sms_shared::domain::status::Status;

use super::{at, raw_messages, Q};
use crate::helpers::*;

#[derive(Default)]
struct Group {
    total: i64,
    segments: i64,
    by_status: BTreeMap<String, i64>,
    name: String,
}

impl Group {
    fn json(&self) -> Value {
        let by_status: serde_json::Map<String, Value> = Status::ALL
            .iter()
            .map(|s| {
                let n = self.by_status.get(s.as_str()).copied().unwrap_or(0);
                (s.as_str().to_owned(), json!(n))
            })
            .collect();
        json!({"total": self.total, "segments": self.segments, "by_status": by_status})
    }
}

/// A time filter as the API reads it: RFC 3339, or `YYYY-MM-DD` for midnight UTC.
pub fn parse_time(t: &str) -> DateTime {
    if t.len() == 10 {
        at(&format!("{t}T00:00:00Z"))
    } else {
        at(t)
    }
}

/// What the summary of `q` must say, counted straight from `sms_messages`.
pub async fn counted_from_messages(app: &TestApp, q: &Q) -> Value {
    let mut filter = doc! {};
    let mut created = doc! {};
    created.extend(q.from.map(|t| ("$gte".to_owned(), parse_time(t).into())));
    created.extend(q.to.map(|t| ("$lt".to_owned(), parse_time(t).into())));
    if !created.is_empty() {
        filter.insert("created_at", created);
    }
    filter.extend(q.agent.map(|a| ("agent_id".to_owned(), a.into())));
    filter.extend(q.key.map(|k| ("api_key_id".to_owned(), k.into())));
    filter.extend(q.status.map(|s| ("status".to_owned(), s.as_str().into())));
    let pipeline = vec![
        doc! {"$match": filter},
        doc! {"$group": {
            "_id": {
                "day": {"$dateToString": {"format": "%Y-%m-%d", "date": "$created_at", "timezone": "UTC"}},
                "agent": "$agent_id",
                "key": "$api_key_id",
                "status": "$status",
            },
            "n": {"$sum": 1},
            "segments": {"$sum": "$segments"},
            "name": {"$max": "$client_name"},
        }},
    ];
    let mut cursor = raw_messages(app).aggregate(pipeline).await.unwrap();
    let (mut all, mut days) = (Group::default(), BTreeMap::<String, Group>::new());
    let mut agents = HashMap::<String, Group>::new();
    let mut keys = HashMap::<Option<String>, Group>::new();
    while cursor.advance().await.unwrap() {
        let g = cursor.deserialize_current().unwrap();
        let id = g.get_document("_id").unwrap();
        let status = id.get_str("status").unwrap().to_owned();
        let n = i64::from(g.get_i32("n").unwrap());
        let segments = match g.get("segments").unwrap() {
            Bson::Int32(s) => i64::from(*s),
            other => other.as_i64().unwrap(),
        };
        let name = g.get_str("name").unwrap();
        let mut groups = vec![
            &mut all,
            days.entry(id.get_str("day").unwrap().to_owned())
                .or_default(),
        ];
        let key = id.get_object_id("key").ok().map(|k| k.to_hex());
        groups.push(keys.entry(key).or_default());
        if let Ok(agent) = id.get_object_id("agent") {
            groups.push(agents.entry(agent.to_hex()).or_default());
        }
        for group in groups {
            group.total += n;
            group.segments += segments;
            *group.by_status.entry(status.clone()).or_default() += n;
            group.name = group.name.clone().max(name.to_owned());
        }
    }
    let mut agents: Vec<(String, Group)> = agents.into_iter().collect();
    agents.sort_by(|(a, ga), (b, gb)| gb.total.cmp(&ga.total).then(a.cmp(b)));
    let mut keys: Vec<(Option<String>, Group)> = keys.into_iter().collect();
    keys.sort_by(|(a, ga), (b, gb)| gb.total.cmp(&ga.total).then(a.cmp(b)));
    let mut body = all.json();
    body["by_day"] = days
        .iter()
        .map(|(day, g)| {
            let mut v = g.json();
            v["day"] = json!(day);
            v
        })
        .collect();
    body["by_agent"] = agents
        .iter()
        .map(|(agent, g)| {
            let mut v = g.json();
            v["agent_id"] = json!(agent);
            v
        })
        .collect();
    body["by_api_key"] = keys
        .iter()
        .map(|(key, g)| {
            let mut v = g.json();
            v["api_key_id"] = json!(key);
            v["client_name"] = json!(g.name);
            v
        })
        .collect();
    body
}
