//! `GET /reports/summary` from the counters: the messages created in `[from, to)` by status, UTC
//! day, agent and API key, at a cost bounded by the number of counter documents in the range and
//! at most two hours of messages, however many messages the history holds.
//!
//! [`plan`] cuts the range into pieces: the whole UTC days inside it are read from `stats_daily`,
//! the whole hours of its partial edge days from `stats_hourly`, and what is left (less than an
//! hour at each end) from the messages themselves. Each piece is one query whose filter leads
//! with the field of the index it names as hint; [`queries`] exposes them so their plans can be
//! checked.

use std::collections::{BTreeMap, HashMap};

use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime, Document};

use super::plan::{plan, Piece};
use super::{as_i64, Bucket, Stats};
use crate::db::messages::MessageFilter;
use crate::db::reports::{ApiKeyCounts, Counts, Summary};
use crate::domain::status::Status;

/// One query of a summary, exactly as it is issued: an aggregation of the documents matching
/// `filter` (on index `hint`) into counts by day and by (agent, API key).
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryQuery {
    pub piece: Piece,
    /// `stats_daily`, `stats_hourly` or `sms_messages`.
    pub collection: &'static str,
    pub filter: Document,
    /// The name of the index the query is meant to use.
    pub hint: &'static str,
    /// Only this status is counted.
    pub status: Option<Status>,
}

/// The queries of the summary of the messages matching `filter` (its `from`, `until`,
/// `tenant`, `agent_id` and `status`).
pub fn queries(filter: &MessageFilter) -> Vec<SummaryQuery> {
    let from = filter.from.map(|t| t.timestamp_millis());
    let until = filter.until.map(|t| t.timestamp_millis());
    plan(from, until)
        .into_iter()
        .map(|piece| match piece {
            Piece::Days(lo, hi) => counter_query(piece, Bucket::Day, lo, hi, filter),
            Piece::Hours(lo, hi) => counter_query(piece, Bucket::Hour, Some(lo), Some(hi), filter),
            Piece::Messages(lo, hi) => message_query(piece, lo, hi, filter),
        })
        .collect()
}

/// Counter documents of one granularity in `[lo, hi)`. The filter leads with the agent (index
/// `agent`), else the API key (`api_key`), else the bucket's start (`day` or `hour`).
fn counter_query(
    piece: Piece,
    bucket: Bucket,
    lo: Option<i64>,
    hi: Option<i64>,
    f: &MessageFilter,
) -> SummaryQuery {
    let field = bucket.field();
    let mut filter = Document::new();
    let hint = match (f.agent_id, f.tenant) {
        (Some(agent), _) => {
            filter.insert("agent_id", agent);
            "agent"
        }
        (None, Some(key)) => {
            filter.insert("api_key_id", key);
            "api_key"
        }
        (None, None) => field,
    };
    let mut range = Document::new();
    if let Some(lo) = lo {
        range.insert("$gte", DateTime::from_millis(lo));
    }
    if let Some(hi) = hi {
        range.insert("$lt", DateTime::from_millis(hi));
    }
    if !range.is_empty() {
        filter.insert(field, range);
    }
    if let (Some(_), Some(key)) = (f.agent_id, f.tenant) {
        filter.insert("api_key_id", key);
    }
    SummaryQuery {
        piece,
        collection: match bucket {
            Bucket::Day => "stats_daily",
            Bucket::Hour => "stats_hourly",
        },
        filter,
        hint,
        status: f.status,
    }
}

/// The messages created in `[lo, hi)` matching the other filters, on index `created_id`.
fn message_query(piece: Piece, lo: i64, hi: i64, f: &MessageFilter) -> SummaryQuery {
    let mut filter = doc! {"created_at": {
        "$gte": DateTime::from_millis(lo),
        "$lt": DateTime::from_millis(hi),
    }};
    if let Some(key) = f.tenant {
        filter.insert("api_key_id", key);
    }
    if let Some(agent) = f.agent_id {
        filter.insert("agent_id", agent);
    }
    if let Some(status) = f.status {
        filter.insert("status", status.as_str());
    }
    SummaryQuery {
        piece,
        collection: "sms_messages",
        filter,
        hint: "created_id",
        status: f.status,
    }
}

impl SummaryQuery {
    /// `$match`, then one `$facet` adding up the counts of each UTC day (`by_day`, keyed by
    /// `YYYY-MM-DD`) and of each agent and API key (`by_pair`): a few hundred groups at most,
    /// however many documents match.
    pub fn pipeline(&self) -> Vec<Document> {
        let counters = !matches!(self.piece, Piece::Messages(..));
        let date = match self.piece {
            Piece::Days(..) => "$day",
            Piece::Hours(..) => "$hour",
            Piece::Messages(..) => "$created_at",
        };
        let statuses = self.status.map_or(Status::ALL.to_vec(), |s| vec![s]);
        let mut sums = Document::new();
        for s in statuses {
            let (n, segments) = if counters {
                (
                    Bson::from(format!("$n.{s}")),
                    Bson::from(format!("$segments.{s}")),
                )
            } else {
                let is = doc! {"$eq": ["$status", s.as_str()]};
                (
                    doc! {"$cond": [is.clone(), 1, 0]}.into(),
                    doc! {"$cond": [is, "$segments", 0]}.into(),
                )
            };
            sums.insert(format!("n_{s}"), doc! {"$sum": n});
            sums.insert(format!("s_{s}"), doc! {"$sum": segments});
        }
        let mut by_day = doc! {"_id": {"$dateToString": {
            "format": "%Y-%m-%d", "date": date, "timezone": "UTC",
        }}};
        by_day.extend(sums.clone());
        let mut by_pair = doc! {
            "_id": {"agent_id": "$agent_id", "api_key_id": "$api_key_id"},
            "client_name": {"$max": "$client_name"},
        };
        by_pair.extend(sums);
        vec![
            doc! {"$match": self.filter.clone()},
            doc! {"$facet": {
                "by_day": [{"$group": by_day}],
                "by_pair": [{"$group": by_pair}],
            }},
        ]
    }
}

/// A group's non-zero counts: messages and segments by status. Statuses this service does not
/// know are never asked for.
fn counts_of(group: &Document) -> Vec<(Status, i64, i64)> {
    Status::ALL
        .into_iter()
        .map(|s| {
            let n = as_i64(group.get(format!("n_{s}")));
            (s, n, as_i64(group.get(format!("s_{s}"))))
        })
        .filter(|(_, n, segments)| *n != 0 || *segments != 0)
        .collect()
}

/// The summary being added up.
#[derive(Default)]
struct Tally {
    counts: Counts,
    days: BTreeMap<String, Counts>,
    agents: HashMap<ObjectId, Counts>,
    keys: HashMap<Option<ObjectId>, ApiKeyCounts>,
}

impl Tally {
    /// Adds one query's groups: the totals and days from `by_day`, the agents and keys from
    /// `by_pair` (both count the same documents).
    fn add(&mut self, facets: &Document) {
        for group in groups(facets, "by_day") {
            let day = group.get_str("_id").unwrap_or_default();
            for (status, n, segments) in counts_of(&group) {
                self.counts.add(status, n, segments);
                let counts = self.days.entry(day.to_owned()).or_default();
                counts.add(status, n, segments);
            }
        }
        for group in groups(facets, "by_pair") {
            let counts = counts_of(&group);
            if counts.is_empty() {
                continue;
            }
            let pair = group.get_document("_id").ok();
            let agent_id = pair.and_then(|p| p.get_object_id("agent_id").ok());
            let api_key_id = pair.and_then(|p| p.get_object_id("api_key_id").ok());
            let key = self.keys.entry(api_key_id).or_insert_with(|| ApiKeyCounts {
                api_key_id,
                client_name: String::new(),
                counts: Counts::default(),
            });
            // A key's name is copied onto each of its messages, so they agree; operator sends
            // (no key) show one of their names.
            let client_name = group.get_str("client_name").unwrap_or_default();
            if client_name > key.client_name.as_str() {
                key.client_name = client_name.to_owned();
            }
            for (status, n, segments) in counts {
                key.counts.add(status, n, segments);
                // Messages no agent holds yet count in the totals, days and keys only.
                if let Some(agent) = agent_id {
                    let counts = self.agents.entry(agent).or_default();
                    counts.add(status, n, segments);
                }
            }
        }
    }

    /// Days oldest first, agents and keys busiest first; groups counting nothing are left out.
    fn finish(self) -> Summary {
        let by_day = self
            .days
            .into_iter()
            .filter(|(_, c)| !c.by_status.is_zero())
            .collect();
        let mut by_agent: Vec<(ObjectId, Counts)> = self
            .agents
            .into_iter()
            .filter(|(_, c)| !c.by_status.is_zero())
            .collect();
        by_agent.sort_by(|(a, ca), (b, cb)| cb.total.cmp(&ca.total).then(a.cmp(b)));
        let mut by_api_key: Vec<ApiKeyCounts> = self
            .keys
            .into_values()
            .filter(|k| !k.counts.by_status.is_zero())
            .collect();
        by_api_key.sort_by(|a, b| {
            b.counts
                .total
                .cmp(&a.counts.total)
                .then(a.api_key_id.cmp(&b.api_key_id))
        });
        Summary {
            counts: self.counts,
            by_day,
            by_agent,
            by_api_key,
        }
    }
}

/// The groups of one facet.
fn groups(facets: &Document, name: &str) -> Vec<Document> {
    facets
        .get_array(name)
        .map(|a| a.iter().filter_map(|g| g.as_document().cloned()).collect())
        .unwrap_or_default()
}

impl Stats {
    /// The summary of the messages matching `filter` (see the module documentation): its
    /// [`queries`] run concurrently and their counts are added up.
    pub async fn summary(&self, filter: &MessageFilter) -> mongodb::error::Result<Summary> {
        let queries = queries(filter);
        let facets = futures::future::try_join_all(queries.iter().map(|q| self.run(q))).await?;
        let mut tally = Tally::default();
        facets.iter().for_each(|f| tally.add(f));
        Ok(tally.finish())
    }

    async fn run(&self, q: &SummaryQuery) -> mongodb::error::Result<Document> {
        let collection = match q.piece {
            Piece::Days(..) => &self.daily,
            Piece::Hours(..) => &self.hourly,
            Piece::Messages(..) => &self.messages,
        };
        let mut aggregate = collection.aggregate(q.pipeline());
        if let Some(hint) = self.hints.name(q.hint).await? {
            aggregate = aggregate.hint(hint);
        }
        let mut cursor = aggregate.await?;
        Ok(cursor.try_next().await?.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-25T00:00:00Z
    const D: i64 = 1_795_564_800_000;
    const HOUR: i64 = 3_600_000;

    #[test]
    fn every_piece_leads_with_its_index_field() {
        let (agent, key) = (ObjectId::new(), ObjectId::new());
        let filter = MessageFilter {
            from: Some(DateTime::from_millis(D + 10 * HOUR + HOUR / 2)),
            until: Some(DateTime::from_millis(D + 48 * HOUR)),
            ..MessageFilter::default()
        };
        let first = |q: &SummaryQuery| q.filter.keys().next().cloned().unwrap_or_default();
        let plain = queries(&filter);
        let shape: Vec<_> = plain.iter().map(|q| (q.hint, first(q))).collect();
        assert_eq!(
            shape,
            [
                ("day", "day"),
                ("hour", "hour"),
                ("created_id", "created_at")
            ]
            .map(|(h, f)| (h, f.to_owned()))
        );
        let by_key = queries(&MessageFilter {
            tenant: Some(key),
            status: Some(Status::Sent),
            ..filter.clone()
        });
        assert_eq!(
            (by_key[0].hint, first(&by_key[0])),
            ("api_key", "api_key_id".into())
        );
        let pipeline = by_key[0].pipeline();
        let group = pipeline[1]
            .get_document("$facet")
            .and_then(|f| f.get_array("by_day"))
            .map(|g| {
                g[0].as_document()
                    .unwrap()
                    .get_document("$group")
                    .unwrap()
                    .clone()
            })
            .unwrap();
        let sums: Vec<&String> = group.keys().filter(|k| *k != "_id").collect();
        assert_eq!(
            sums,
            ["n_SENT", "s_SENT"],
            "only the status asked for is read"
        );
        assert_eq!(group.get_str("n_SENT").ok(), None);
        assert_eq!(
            group.get_document("n_SENT").unwrap(),
            &doc! {"$sum": "$n.SENT"}
        );
        let by_agent = queries(&MessageFilter {
            agent_id: Some(agent),
            tenant: Some(key),
            ..filter
        });
        assert_eq!(
            (by_agent[1].hint, first(&by_agent[1])),
            ("agent", "agent_id".into())
        );
        assert_eq!(by_agent[1].filter.get_object_id("api_key_id"), Ok(key));
        assert_eq!(by_agent[2].filter.get_object_id("agent_id"), Ok(agent));
    }

    #[test]
    fn groups_that_count_nothing_are_left_out() {
        let (agent, other) = (ObjectId::new(), ObjectId::new());
        let pair = |agent: Option<ObjectId>, n: i64, status: &str| {
            let mut g =
                doc! {"_id": {"agent_id": agent, "api_key_id": null}, "client_name": "operator"};
            g.insert(format!("n_{status}"), n);
            g.insert(format!("s_{status}"), n * 2);
            g
        };
        let mut tally = Tally::default();
        tally.add(&doc! {
            "by_day": [
                {"_id": "2026-11-25", "n_PENDING": 2, "s_PENDING": 4, "n_SENT": 1_i64, "s_SENT": 2},
                {"_id": "2026-11-26", "n_ASSIGNED": 0, "s_ASSIGNED": 0},
            ],
            "by_pair": [pair(None, 2, "PENDING"), pair(Some(agent), 1, "SENT"), pair(Some(other), 0, "ASSIGNED")],
        });
        // One message moved from `other` to `agent` in another piece of the range.
        tally.add(&doc! {
            "by_day": [],
            "by_pair": [pair(Some(other), 1, "ASSIGNED"), pair(Some(other), -1, "ASSIGNED")],
        });
        let summary = tally.finish();
        assert_eq!((summary.counts.total, summary.counts.segments), (3, 6));
        let days: Vec<&str> = summary.by_day.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(days, ["2026-11-25"]);
        let agents: Vec<_> = summary.by_agent.iter().map(|(a, _)| *a).collect();
        assert_eq!(
            agents,
            vec![agent],
            "no agent for unheld messages, none for zeros"
        );
        assert_eq!(summary.by_api_key[0].counts.total, 3);
        assert_eq!(summary.by_api_key[0].counts.segments, 2 * 3);
        assert_eq!(summary.by_api_key[0].client_name, "operator");
    }
}
