//! `stats_daily` and `stats_hourly`: how many messages are in each status, per UTC day (and hour)
//! of their creation, agent and API key. Reports read these counters instead of scanning
//! `sms_messages`, so their cost does not grow with history.
//!
//! Every status change of a message moves one count from its old (status, agent) to its new one,
//! in the day and hour buckets of the message's `created_at`; a new message adds one `PENDING`.
//! [`Stats::apply`] groups a batch of [`Transition`]s by counter document and issues one atomic
//! `$inc` upsert per document. A transition is applied only by the writer whose conditional update
//! of the message changed it, so a repeated report or a redelivered event counts nothing twice.
//!
//! Every `$inc` also bumps the document's version `v`, so a recount (`recount.rs`, rebuilding
//! whole days from `sms_messages`) replaces a document only if no transition moved it meanwhile.
//! `summary.rs` reads the counters for `GET /reports/summary`.

use std::collections::BTreeMap;

use chrono::{DurationRound, TimeDelta};
use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime, Document};
use mongodb::{Collection, Database};

use super::hints::Hints;
use crate::domain::status::Status;

mod plan;
mod recount;
mod summary;

pub use plan::{plan, Piece};
pub use recount::{Recounted, SETTLE};
pub use summary::{queries, SummaryQuery};

/// What the counters need to know about a message that changes status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub created_at: DateTime,
    /// The tenant; `None` for operator sends.
    pub api_key_id: Option<ObjectId>,
    /// The tenant's name as copied on the message.
    pub client_name: String,
    pub segments: i32,
}

/// Where a message is counted: its status and the agent it is attributed to (`None` until an
/// agent holds it, for messages not pinned to one).
pub type Place = (Status, Option<ObjectId>);

/// One message moving between counted places (`from: None`: it was just created).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub message: Counted,
    pub from: Option<Place>,
    pub to: Place,
}

/// Counter granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bucket {
    Day,
    Hour,
}

impl Bucket {
    /// The start of the bucket holding `t`.
    pub fn start(self, t: DateTime) -> DateTime {
        let t = crate::time::from_bson(t);
        let step = match self {
            Bucket::Day => TimeDelta::days(1),
            Bucket::Hour => TimeDelta::hours(1),
        };
        crate::time::to_bson(t.duration_trunc(step).unwrap_or(t))
    }

    /// The field holding the bucket's start in its documents.
    pub fn field(self) -> &'static str {
        match self {
            Bucket::Day => "day",
            Bucket::Hour => "hour",
        }
    }
}

/// The identity of one counter document.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    bucket: Bucket,
    start: i64,
    agent_id: Option<ObjectId>,
    api_key_id: Option<ObjectId>,
}

impl Key {
    /// The fields naming the document, as `$setOnInsert` and a recount write them.
    fn fields(&self) -> Document {
        doc! {
            self.bucket.field(): DateTime::from_millis(self.start),
            "agent_id": self.agent_id,
            "api_key_id": self.api_key_id,
        }
    }

    fn id(&self) -> String {
        let hex = |id: Option<ObjectId>| id.map_or_else(|| "-".to_owned(), |i| i.to_hex());
        format!(
            "{}|{}|{}",
            self.start,
            hex(self.agent_id),
            hex(self.api_key_id)
        )
    }
}

/// The changes to one counter document.
#[derive(Debug, Default)]
struct Delta {
    client_name: String,
    n: BTreeMap<Status, i64>,
    segments: BTreeMap<Status, i64>,
}

impl Delta {
    fn add(&mut self, status: Status, n: i64, segments: i64) {
        *self.n.entry(status).or_default() += n;
        *self.segments.entry(status).or_default() += segments;
    }

    /// The `$inc` of this delta; empty when everything cancels out.
    fn increments(&self) -> Document {
        let mut inc = Document::new();
        for (status, n) in self.n.iter().filter(|(_, n)| **n != 0) {
            inc.insert(format!("n.{}", status.as_str()), *n);
        }
        for (status, s) in self.segments.iter().filter(|(_, s)| **s != 0) {
            inc.insert(format!("segments.{}", status.as_str()), *s);
        }
        inc
    }
}

/// Groups transitions by counter document, in both granularities.
fn deltas(transitions: &[Transition]) -> BTreeMap<Key, Delta> {
    let mut out: BTreeMap<Key, Delta> = BTreeMap::new();
    for t in transitions {
        let segments = i64::from(t.message.segments);
        for bucket in [Bucket::Day, Bucket::Hour] {
            let start = bucket.start(t.message.created_at).timestamp_millis();
            let mut add = |(status, agent_id): Place, sign: i64| {
                let key = Key {
                    bucket,
                    start,
                    agent_id,
                    api_key_id: t.message.api_key_id,
                };
                let delta = out.entry(key).or_default();
                if t.message.client_name > delta.client_name {
                    delta.client_name = t.message.client_name.clone();
                }
                delta.add(status, sign, sign * segments);
            };
            if let Some(from) = t.from {
                add(from, -1);
            }
            add(t.to, 1);
        }
    }
    out
}

/// A count as stored: `$inc` keeps integers, but be lenient with what another writer left.
fn as_i64(value: Option<&Bson>) -> i64 {
    match value {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(n)) => *n as i64,
        _ => 0,
    }
}

/// The counter collections, and the messages they count (read by recounts and by summaries
/// for the edges of their range).
#[derive(Clone)]
pub struct Stats {
    daily: Collection<Document>,
    hourly: Collection<Document>,
    messages: Collection<Document>,
    hints: Hints,
}

impl Stats {
    /// The handles of `stats_daily`, `stats_hourly` and `sms_messages`.
    pub fn new(db: &Database, hints: Hints) -> Self {
        Self {
            daily: db.collection("stats_daily"),
            hourly: db.collection("stats_hourly"),
            messages: db.collection("sms_messages"),
            hints,
        }
    }

    /// The collection of one granularity.
    pub fn collection(&self, bucket: Bucket) -> &Collection<Document> {
        match bucket {
            Bucket::Day => &self.daily,
            Bucket::Hour => &self.hourly,
        }
    }

    /// Indexes on the bucket's start, alone and after the agent or the API key: every summary
    /// and recount query leads with one of them.
    pub async fn create_indexes(&self) -> mongodb::error::Result<()> {
        for bucket in [Bucket::Day, Bucket::Hour] {
            let field = bucket.field();
            super::ensure_indexes(
                self.collection(bucket),
                vec![
                    super::index(doc! {field: 1}, false, field),
                    super::index(doc! {"agent_id": 1, field: 1}, false, "agent"),
                    super::index(doc! {"api_key_id": 1, field: 1}, false, "api_key"),
                ],
            )
            .await?;
        }
        Ok(())
    }

    /// Moves the counts of `transitions`: one `$inc` upsert per counter document they touch.
    pub async fn apply(&self, transitions: &[Transition]) -> mongodb::error::Result<()> {
        let updates = deltas(transitions).into_iter().filter_map(|(key, delta)| {
            let inc = delta.increments();
            (!inc.is_empty()).then(|| self.increment(key, delta.client_name, inc))
        });
        futures::future::try_join_all(updates).await.map(|_| ())
    }

    /// One counter document's `$inc` (and its version's), creating it when missing. Two first
    /// writers of a document race on its `_id`; the loser's duplicate-key error means it exists
    /// now, so it retries.
    async fn increment(
        &self,
        key: Key,
        client_name: String,
        mut inc: Document,
    ) -> mongodb::error::Result<()> {
        inc.insert("v", 1_i64);
        let update = doc! {
            "$inc": inc,
            "$max": {"client_name": client_name},
            "$setOnInsert": key.fields(),
        };
        let filter = doc! {"_id": key.id()};
        let collection = self.collection(key.bucket);
        let mut attempt = 0;
        loop {
            match collection
                .update_one(filter.clone(), update.clone())
                .upsert(true)
                .await
            {
                Err(e) if super::is_duplicate_key(&e) && attempt < 3 => attempt += 1,
                other => return other.map(|_| ()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counted(millis: i64, segments: i32) -> Counted {
        Counted {
            created_at: DateTime::from_millis(millis),
            api_key_id: None,
            client_name: "SafeShop".into(),
            segments,
        }
    }

    #[test]
    fn buckets_start_at_utc_midnight_and_the_hour() {
        // 2026-11-30T13:45:10.500Z
        let t = DateTime::from_millis(1_796_046_310_500);
        assert_eq!(Bucket::Day.start(t).timestamp_millis(), 1_795_996_800_000);
        assert_eq!(Bucket::Hour.start(t).timestamp_millis(), 1_796_043_600_000);
    }

    #[test]
    fn a_transition_moves_one_count_in_each_bucket() {
        let agent = ObjectId::new();
        let created = counted(1_796_046_310_500, 2);
        let out = deltas(&[
            Transition {
                message: created.clone(),
                from: None,
                to: (Status::Pending, Some(agent)),
            },
            Transition {
                message: created,
                from: Some((Status::Pending, Some(agent))),
                to: (Status::Sent, Some(agent)),
            },
        ]);
        assert_eq!(out.len(), 2, "one day and one hour document");
        for delta in out.values() {
            assert_eq!(
                delta.increments(),
                doc! {"n.SENT": 1_i64, "segments.SENT": 2_i64},
                "created then sent: only SENT remains"
            );
        }
    }

    #[test]
    fn a_pool_message_moves_between_agents() {
        let agent = ObjectId::new();
        let out = deltas(&[Transition {
            message: counted(0, 1),
            from: Some((Status::Pending, None)),
            to: (Status::Assigned, Some(agent)),
        }]);
        let unassigned: Vec<_> = out.iter().filter(|(k, _)| k.agent_id.is_none()).collect();
        let assigned: Vec<_> = out
            .iter()
            .filter(|(k, _)| k.agent_id == Some(agent))
            .collect();
        assert_eq!((unassigned.len(), assigned.len()), (2, 2));
        assert_eq!(
            unassigned[0].1.increments(),
            doc! {"n.PENDING": -1_i64, "segments.PENDING": -1_i64}
        );
        assert_eq!(
            assigned[0].1.increments(),
            doc! {"n.ASSIGNED": 1_i64, "segments.ASSIGNED": 1_i64}
        );
    }
}
