//! Rebuilding the counters of whole UTC days from `sms_messages`: the repair after a crash
//! between a message's update and its counters' `$inc`, and how counters are made for messages
//! loaded in bulk (`sms-api recount-stats`).
//!
//! A day is recounted in three steps: note the version `v` of each of its counter documents,
//! count its messages by hour, agent, API key and status, then, after a pause (`settle`) long
//! enough for the transitions in flight to land their `$inc`, write each document only if its
//! version did not move: replace it, insert it (it did not exist) or delete it (no message
//! counts in it any more). A document whose version moved was changed by a transition that the
//! count may or may not have seen, so its day is counted again, up to [`ATTEMPTS`] times. Traffic
//! may therefore flow during a recount. What remains is a transition whose `$inc` comes later
//! than `settle` after its message update: it may be counted twice, as a crash between the two
//! loses one count; a later recount repairs either.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Context;
use chrono::NaiveDate;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, DateTime, Document};

use super::{as_i64, Bucket, Delta, Key, Stats};
use crate::domain::status::Status;

/// How many times a day whose counters traffic kept moving is counted.
pub const ATTEMPTS: u32 = 5;

/// The default pause between counting and writing: transitions land their `$inc` within
/// milliseconds of their message update.
pub const SETTLE: Duration = Duration::from_secs(2);

/// Days counted before one pause; their counts are held in memory until written.
const CHUNK_DAYS: usize = 7;

const DAY_MS: i64 = 86_400_000;

/// What a recount did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recounted {
    /// Days recounted.
    pub days: u64,
    /// Counter documents written (replaced or created).
    pub written: u64,
    /// Counter documents removed: no message counts in them any more.
    pub removed: u64,
    /// Days counted again because a transition moved their counters meanwhile.
    pub retried: u64,
}

/// One day's counter documents (`_id` and version, by granularity) as they were before the
/// count, and as its messages say they should be.
struct DayCount {
    day: NaiveDate,
    before: HashMap<(Bucket, String), Option<i64>>,
    after: BTreeMap<Key, Delta>,
}

/// Writes of one day: how many succeeded, and how many found their document moved.
#[derive(Default)]
struct Written {
    written: u64,
    removed: u64,
    moved: u64,
}

fn start_of(day: NaiveDate) -> i64 {
    day.and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc()
        .timestamp_millis()
}

/// A version condition: `v` as read, or absent as read.
fn version_is(v: Option<i64>) -> Bson {
    match v {
        Some(v) => Bson::Int64(v),
        None => Bson::Document(doc! {"$exists": false}),
    }
}

impl Stats {
    /// Rebuilds the counters of the UTC days `first..=last` from the messages created on them,
    /// pausing `settle` between counting and writing (see the module documentation). Fails when
    /// traffic kept moving a day's counters through [`ATTEMPTS`] counts.
    pub async fn recount(
        &self,
        first: NaiveDate,
        last: NaiveDate,
        settle: Duration,
    ) -> anyhow::Result<Recounted> {
        let mut pending: Vec<NaiveDate> = first.iter_days().take_while(|d| *d <= last).collect();
        let mut out = Recounted {
            days: pending.len() as u64,
            ..Recounted::default()
        };
        for _ in 0..ATTEMPTS {
            let mut moved = Vec::new();
            for chunk in pending.chunks(CHUNK_DAYS) {
                let mut counts = Vec::with_capacity(chunk.len());
                for day in chunk {
                    counts.push(self.count_day(*day).await?);
                }
                tokio::time::sleep(settle).await;
                for count in counts {
                    let day = count.day;
                    let w = self.write_day(count).await?;
                    out.written += w.written;
                    out.removed += w.removed;
                    if w.moved > 0 {
                        moved.push(day);
                    }
                }
                tracing::info!(days = chunk.len(), from = %chunk[0], "counters recounted");
            }
            if moved.is_empty() {
                return Ok(out);
            }
            out.retried += moved.len() as u64;
            pending = moved;
        }
        let days: Vec<String> = pending.iter().map(ToString::to_string).collect();
        anyhow::bail!(
            "transitions kept moving the counters of {} through {ATTEMPTS} counts; \
             run the recount again when traffic on those days is quieter",
            days.join(", ")
        )
    }

    /// The UTC days of the oldest and the newest message, if any.
    pub async fn message_days(&self) -> mongodb::error::Result<Option<(NaiveDate, NaiveDate)>> {
        let mut days = Vec::with_capacity(2);
        for order in [1, -1] {
            let mut find = self
                .messages
                .find_one(doc! {})
                .sort(doc! {"created_at": order, "_id": order})
                .projection(doc! {"_id": 0, "created_at": 1});
            if let Some(hint) = self.hints.name("created_id").await? {
                find = find.hint(hint);
            }
            let found = find.await?;
            let Some(t) = found.and_then(|d| d.get_datetime("created_at").ok().copied()) else {
                return Ok(None);
            };
            days.push(crate::time::from_bson(t).date_naive());
        }
        Ok(Some((days[0], days[1])))
    }

    /// The versions of `day`'s counter documents, then its messages counted.
    async fn count_day(&self, day: NaiveDate) -> anyhow::Result<DayCount> {
        let (start, end) = (start_of(day), start_of(day) + DAY_MS);
        let mut before = HashMap::new();
        for bucket in [Bucket::Day, Bucket::Hour] {
            let field = bucket.field();
            let mut find = self
                .collection(bucket)
                .find(doc! {field: {
                    "$gte": DateTime::from_millis(start),
                    "$lt": DateTime::from_millis(end),
                }})
                .projection(doc! {"_id": 1, "v": 1});
            if let Some(hint) = self.hints.name(field).await? {
                find = find.hint(hint);
            }
            let mut cursor = find.await?;
            while let Some(d) = cursor.try_next().await? {
                let id = d.get_str("_id").context("a counter _id")?.to_owned();
                let v = d.get("v").map(|v| as_i64(Some(v)));
                before.insert((bucket, id), v);
            }
        }
        let after = self.count_messages(start, end).await?;
        Ok(DayCount { day, before, after })
    }

    /// The counter documents the messages created in `[start, end)` make up.
    async fn count_messages(
        &self,
        start: i64,
        end: i64,
    ) -> mongodb::error::Result<BTreeMap<Key, Delta>> {
        let pipeline = vec![
            doc! {"$match": {"created_at": {
                "$gte": DateTime::from_millis(start),
                "$lt": DateTime::from_millis(end),
            }}},
            doc! {"$group": {
                "_id": {
                    "hour": {"$dateTrunc": {"date": "$created_at", "unit": "hour"}},
                    "agent_id": "$agent_id",
                    "api_key_id": "$api_key_id",
                    "status": "$status",
                },
                "n": {"$sum": 1},
                "segments": {"$sum": "$segments"},
                "client_name": {"$max": "$client_name"},
            }},
        ];
        let mut aggregate = self.messages.aggregate(pipeline);
        if let Some(hint) = self.hints.name("created_id").await? {
            aggregate = aggregate.hint(hint);
        }
        let mut cursor = aggregate.await?;
        let mut out: BTreeMap<Key, Delta> = BTreeMap::new();
        while let Some(group) = cursor.try_next().await? {
            let Ok(id) = group.get_document("_id") else {
                continue;
            };
            let status = id.get_str("status").ok().and_then(Status::parse);
            let (Some(status), Ok(hour)) = (status, id.get_datetime("hour")) else {
                tracing::warn!(group = %id, "messages with an unknown status are not counted");
                continue;
            };
            let (n, segments) = (as_i64(group.get("n")), as_i64(group.get("segments")));
            let client_name = group.get_str("client_name").unwrap_or_default();
            for bucket in [Bucket::Day, Bucket::Hour] {
                let key = Key {
                    bucket,
                    start: bucket.start(*hour).timestamp_millis(),
                    agent_id: id.get_object_id("agent_id").ok(),
                    api_key_id: id.get_object_id("api_key_id").ok(),
                };
                let delta = out.entry(key).or_default();
                if client_name > delta.client_name.as_str() {
                    delta.client_name = client_name.to_owned();
                }
                delta.add(status, n, segments);
            }
        }
        Ok(out)
    }

    /// Writes a day's recounted documents where their version did not move.
    async fn write_day(&self, count: DayCount) -> mongodb::error::Result<Written> {
        let DayCount {
            mut before, after, ..
        } = count;
        let mut w = Written::default();
        for (key, delta) in after {
            let id = key.id();
            let collection = self.collection(key.bucket);
            let mut document = doc! {"_id": &id};
            document.extend(key.fields());
            document.insert("client_name", &delta.client_name);
            let counts = |m: &BTreeMap<Status, i64>| -> Document {
                m.iter()
                    .map(|(s, n)| (s.as_str().to_owned(), Bson::Int64(*n)))
                    .collect()
            };
            document.insert("n", counts(&delta.n));
            document.insert("segments", counts(&delta.segments));
            match before.remove(&(key.bucket, id.clone())) {
                Some(v) => {
                    document.insert("v", v.unwrap_or(0) + 1);
                    let filter = doc! {"_id": &id, "v": version_is(v)};
                    let r = collection.replace_one(filter, document).await?;
                    if r.matched_count == 1 {
                        w.written += 1;
                    } else {
                        w.moved += 1;
                    }
                }
                None => {
                    document.insert("v", 1_i64);
                    match collection.insert_one(document).await {
                        Ok(_) => w.written += 1,
                        Err(e) if super::super::is_duplicate_key(&e) => w.moved += 1,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        for ((bucket, id), v) in before {
            let filter = doc! {"_id": &id, "v": version_is(v)};
            let r = self.collection(bucket).delete_one(filter).await?;
            if r.deleted_count == 1 {
                w.removed += 1;
            } else {
                w.moved += 1;
            }
        }
        Ok(w)
    }
}
