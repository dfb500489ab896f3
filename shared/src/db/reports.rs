//! Reports on message traffic: what the operators' summary is made of (counted from the
//! counters, see `stats/summary.rs`) and the CSV export's cursor over `sms_messages`. Both select
//! messages by `created_at` with the same [`MessageFilter`].

use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
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

    /// Whether every status counts zero.
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|n| *n == 0)
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
    /// Adds `n` messages in `status` holding `segments` segments.
    pub fn add(&mut self, status: Status, n: i64, segments: i64) {
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
    /// `None` for a pool message no agent holds.
    #[serde(default)]
    pub agent_id: Option<ObjectId>,
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
        assert!(!c.is_zero());
        assert!(StatusCounts::default().is_zero());
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"PENDING":0,"ASSIGNED":0,"SENDING":0,"SENT":5,"DELIVERED":0,"FAILED":1,"CANCELED":0}"#
        );
    }
}
