//! Reports over `sms_messages`: the operators' summary (one aggregation) and the CSV export's
//! cursor. Both select messages by `created_at` with the same [`MessageFilter`].

use std::collections::{BTreeMap, HashMap};

use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime, Document};
use mongodb::{Collection, Cursor, Database};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use super::messages::MessageFilter;
use crate::domain::status::Status;

/// How many messages are in each status. Serialises as a map holding every status, zeros
/// included, in the status machine's order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts([i64; Status::ALL.len()]);

impl StatusCounts {
    pub fn get(&self, status: Status) -> i64 {
        self.0[Self::slot(status)]
    }

    pub fn add(&mut self, status: Status, n: i64) {
        self.0[Self::slot(status)] += n;
    }

    pub fn total(&self) -> i64 {
        self.0.iter().sum()
    }

    fn slot(status: Status) -> usize {
        Status::ALL
            .iter()
            .position(|s| *s == status)
            .expect("every status is in Status::ALL")
    }
}

impl Serialize for StatusCounts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for status in Status::ALL {
            map.serialize_entry(status.as_str(), &self.get(status))?;
        }
        map.end()
    }
}

/// The schema of the map [`StatusCounts`] serialises to: every status, as a required count.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for StatusCounts {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let mut object = ObjectBuilder::new().description(Some(
            "How many messages are in each status; every status is present.",
        ));
        for status in Status::ALL {
            object = object
                .property(
                    status.as_str(),
                    ObjectBuilder::new().schema_type(Type::Integer).format(Some(
                        utoipa::openapi::SchemaFormat::KnownFormat(
                            utoipa::openapi::KnownFormat::Int64,
                        ),
                    )),
                )
                .required(status.as_str());
        }
        object.build().into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for StatusCounts {}

/// Counts of one group of messages (a day, an agent, an API key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: i64,
    pub segments: i64,
    pub by_status: StatusCounts,
}

impl Counts {
    fn add(&mut self, status: Status, n: i64, segments: i64) {
        self.total += n;
        self.segments += segments;
        self.by_status.add(status, n);
    }
}

/// Messages of one API key; `api_key_id` is `None` for operator sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyCounts {
    pub api_key_id: Option<ObjectId>,
    pub client_name: String,
    pub counts: Counts,
}

/// The operators' summary of the messages matching a filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub counts: Counts,
    /// UTC days (`YYYY-MM-DD`), oldest first.
    pub by_day: Vec<(String, Counts)>,
    /// Busiest agent first.
    pub by_agent: Vec<(ObjectId, Counts)>,
    /// Busiest API key first.
    pub by_api_key: Vec<ApiKeyCounts>,
}

/// One CSV row's worth of a message: only the exported fields are read from MongoDB.
#[derive(Debug, Clone, Deserialize)]
pub struct ExportRow {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub request_id: ObjectId,
    #[serde(default)]
    pub client_name: String,
    pub agent_id: ObjectId,
    pub to: String,
    /// Kept as stored, so one odd document cannot break an export halfway.
    pub status: String,
    #[serde(default)]
    pub segments: i64,
    pub created_at: DateTime,
    #[serde(default)]
    pub sent_at: Option<DateTime>,
    #[serde(default)]
    pub delivered_at: Option<DateTime>,
    #[serde(default)]
    pub last_error: Option<String>,
}

/// Messages sent per CSV cursor batch; the export writes one chunk per batch.
pub const EXPORT_BATCH: u32 = 500;

#[derive(Clone)]
pub struct Reports(Collection<Document>);

impl Reports {
    pub fn new(db: &Database) -> Self {
        Self(db.collection("sms_messages"))
    }

    /// Counts by status, UTC day, agent and API key in one `$facet` aggregation. Each facet
    /// groups by (key, status), so the result stays small however many messages match.
    pub async fn summary(&self, filter: &MessageFilter) -> mongodb::error::Result<Summary> {
        let count = doc! {"n": {"$sum": 1}, "segments": {"$sum": "$segments"}};
        let mut by_day = doc! {"_id": {
            "day": {"$dateToString": {"format": "%Y-%m-%d", "date": "$created_at", "timezone": "UTC"}},
            "status": "$status",
        }};
        by_day.extend(count.clone());
        let mut by_agent = doc! {"_id": {"agent_id": "$agent_id", "status": "$status"}};
        by_agent.extend(count.clone());
        let mut by_api_key = doc! {
            "_id": {"api_key_id": "$api_key_id", "status": "$status"},
            // A key's name is copied onto each of its messages, so they agree; operator sends
            // (no key) show one of their names.
            "client_name": {"$max": "$client_name"},
        };
        by_api_key.extend(count);
        let pipeline = vec![
            doc! {"$match": filter.to_document()},
            doc! {"$facet": {
                "by_day": [{"$group": by_day}],
                "by_agent": [{"$group": by_agent}],
                "by_api_key": [{"$group": by_api_key}],
            }},
        ];
        let mut cursor = self.0.aggregate(pipeline).await?;
        let facets = if cursor.advance().await? {
            cursor.deserialize_current()?
        } else {
            Document::new()
        };

        let mut summary = Summary::default();
        let mut days: BTreeMap<String, Counts> = BTreeMap::new();
        for group in groups(&facets, "by_day") {
            let Some((key, status, n, segments)) = group_counts(&group) else {
                continue;
            };
            let day = key.get_str("day").unwrap_or_default().to_owned();
            summary.counts.add(status, n, segments);
            days.entry(day).or_default().add(status, n, segments);
        }
        summary.by_day = days.into_iter().collect();

        let mut agents: HashMap<ObjectId, Counts> = HashMap::new();
        for group in groups(&facets, "by_agent") {
            let Some((key, status, n, segments)) = group_counts(&group) else {
                continue;
            };
            if let Ok(agent) = key.get_object_id("agent_id") {
                agents.entry(agent).or_default().add(status, n, segments);
            }
        }
        summary.by_agent = agents.into_iter().collect();
        summary
            .by_agent
            .sort_by(|(a, ca), (b, cb)| cb.total.cmp(&ca.total).then(a.cmp(b)));

        let mut keys: HashMap<Option<ObjectId>, ApiKeyCounts> = HashMap::new();
        for group in groups(&facets, "by_api_key") {
            let Some((key, status, n, segments)) = group_counts(&group) else {
                continue;
            };
            let api_key_id = key.get_object_id("api_key_id").ok();
            let client_name = group.get_str("client_name").unwrap_or_default();
            let entry = keys.entry(api_key_id).or_insert_with(|| ApiKeyCounts {
                api_key_id,
                client_name: String::new(),
                counts: Counts::default(),
            });
            if client_name > entry.client_name.as_str() {
                entry.client_name = client_name.to_owned();
            }
            entry.counts.add(status, n, segments);
        }
        summary.by_api_key = keys.into_values().collect();
        summary.by_api_key.sort_by(|a, b| {
            b.counts
                .total
                .cmp(&a.counts.total)
                .then(a.api_key_id.cmp(&b.api_key_id))
        });
        Ok(summary)
    }

    /// The matching messages, oldest first, fetched [`EXPORT_BATCH`] at a time with only the
    /// exported fields.
    pub async fn export(
        &self,
        filter: &MessageFilter,
    ) -> mongodb::error::Result<Cursor<ExportRow>> {
        self.0
            .clone_with_type::<ExportRow>()
            .find(filter.to_document())
            .projection(doc! {
                "_id": 1, "request_id": 1, "client_name": 1, "agent_id": 1, "to": 1, "status": 1,
                "segments": 1, "created_at": 1, "sent_at": 1, "delivered_at": 1, "last_error": 1,
            })
            .sort(doc! {"created_at": 1, "_id": 1})
            // Large ranges may need the server to sort on disk rather than fail.
            .allow_disk_use(true)
            .batch_size(EXPORT_BATCH)
            .await
    }
}

/// The `$group` results of one facet.
fn groups(facets: &Document, name: &str) -> Vec<Document> {
    facets
        .get_array(name)
        .map(|a| a.iter().filter_map(|g| g.as_document().cloned()).collect())
        .unwrap_or_default()
}

/// A group's key, status, message count and segment count; `None` for a status this service
/// does not know.
fn group_counts(group: &Document) -> Option<(&Document, Status, i64, i64)> {
    let key = group.get_document("_id").ok()?;
    let status = Status::parse(key.get_str("status").ok()?)?;
    Some((
        key,
        status,
        as_i64(group.get("n")),
        as_i64(group.get("segments")),
    ))
}

fn as_i64(value: Option<&Bson>) -> i64 {
    match value {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(n)) => *n as i64,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_counts_list_every_status_in_order() {
        let mut c = StatusCounts::default();
        c.add(Status::Sent, 2);
        c.add(Status::Failed, 1);
        c.add(Status::Sent, 3);
        assert_eq!(c.get(Status::Sent), 5);
        assert_eq!(c.total(), 6);
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"PENDING":0,"ASSIGNED":0,"SENDING":0,"SENT":5,"DELIVERED":0,"FAILED":1,"CANCELED":0}"#
        );
    }

    #[test]
    fn groups_with_unknown_statuses_are_skipped() {
        let known =
            doc! {"_id": {"status": "SENT", "day": "2026-11-25"}, "n": 3_i64, "segments": 4};
        let (key, status, n, segments) = group_counts(&known).unwrap();
        assert_eq!(key.get_str("day").unwrap(), "2026-11-25");
        assert_eq!((status, n, segments), (Status::Sent, 3, 4));
        assert!(group_counts(&doc! {"_id": {"status": "LOST"}, "n": 1}).is_none());
    }
}
