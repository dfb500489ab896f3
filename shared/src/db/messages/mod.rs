//! `sms_messages`: one document per recipient. The document is also its own outbox record
//! (`published`), and carries its staging, lease and delivery state.
//!
//! This file holds the document, its filters and the plain reads and writes; each stage of a
//! message's life has its own file of queries on the same [`Messages`] handle:
//! - `outbox.rs`: which events still need publishing, and marking them published (the API);
//! - `staging.rs`: marking messages staged once their job exists, or cancelling duplicates (the
//!   dispatcher);
//! - `leasing.rs`: recording on the messages the leases polls took on their jobs;
//! - `status_reports.rs`: applying an agent's report of what became of a message;
//! - `report_batch.rs`: the same for many messages of one agent's report at once;
//! - `pool.rs`: pool messages going back to their pool (a stale holder, a retryable failure);
//! - `reconcile.rs`: failing messages whose job stayed in `SENDING` too long;
//! - `transition.rs`: status changes and the counters they move (each counted once);
//! - `retention.rs`: the TTL index removing settled messages after `MESSAGE_RETENTION_DAYS`;
//! - `listing.rs`: the message lists and searches, each query shape on an index of its own.
//!
//! The live work (what phones may lease or hold) is in `db::jobs`; these documents are the
//! history.

use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime, Document};
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

use super::bulk_gate::BulkGate;
use super::hints::Hints;
use crate::domain::status::Status;

mod leasing;
mod listing;
mod outbox;
mod pool;
mod reconcile;
mod report_batch;
mod retention;
mod staging;
mod status_reports;
mod transition;

pub use leasing::Recorded;
pub use listing::indexes as list_indexes;
pub use outbox::OutboxRow;
pub use report_batch::{GroupOutcome, ReportGroup};
pub use retention::{RetentionChange, RETENTION_INDEX};
pub use status_reports::{Report, ReportOutcome, MAX_ERROR_CHARS};
pub use transition::{count_transitions, gathered, settles};

/// One recipient of a request: its text, status, and its outbox, staging and lease state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub request_id: ObjectId,
    /// The tenant: the API key that sent it, `None` for operator sends.
    pub api_key_id: Option<ObjectId>,
    pub client_name: String,
    /// The agent it is pinned to, or for a pool message the agent that leased it last (`None`
    /// while no agent holds it).
    #[serde(default)]
    pub agent_id: Option<ObjectId>,
    /// A pool message's lanes: the agents that may lease it (ids in hex, or
    /// [`EVERY_AGENT`](crate::db::jobs::EVERY_AGENT)); `None` for a message pinned to `agent_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<Vec<String>>,
    pub template_id: ObjectId,
    pub to: String,
    pub text: String,
    pub status: Status,
    pub priority_weight: i32,
    pub segments: i32,
    pub encoding: String,
    pub created_at: DateTime,
    pub updated_at: DateTime,
    /// Outbox marker: set once RabbitMQ confirmed the message's event.
    pub published: bool,
    #[serde(default)]
    pub published_at: Option<DateTime>,
    /// Visible to agents only once a dispatcher staged it.
    pub staged: bool,
    #[serde(default)]
    pub staged_at: Option<DateTime>,
    #[serde(default)]
    pub lease_id: Option<String>,
    #[serde(default)]
    pub lease_expires_at: Option<DateTime>,
    #[serde(default)]
    pub leased_at: Option<DateTime>,
    pub attempts: i32,
    #[serde(default)]
    pub sending_at: Option<DateTime>,
    #[serde(default)]
    pub sent_at: Option<DateTime>,
    #[serde(default)]
    pub delivered_at: Option<DateTime>,
    #[serde(default)]
    pub failed_at: Option<DateTime>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// When it reached `SENT`, `DELIVERED`, `FAILED` or `CANCELED` (the retention clock).
    #[serde(default)]
    pub settled_at: Option<DateTime>,
}

/// What a new message is made of; the rest of a [`Message`] starts empty.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub request_id: ObjectId,
    pub api_key_id: Option<ObjectId>,
    pub client_name: String,
    /// Where it goes: pinned to one agent, or to a pool.
    pub route: Route,
    pub template_id: ObjectId,
    pub to: String,
    pub text: String,
    pub priority_weight: i32,
    pub created_at: DateTime,
}

/// Which agents may lease a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Only this agent, always (the request named `agent_id`).
    Pinned(ObjectId),
    /// Any active agent of these lanes (agent ids in hex, or
    /// [`EVERY_AGENT`](crate::db::jobs::EVERY_AGENT)); the one that leases it holds it.
    Pool(Vec<String>),
}

impl Message {
    /// A `PENDING` message as a request stores it: neither published nor staged, with its
    /// encoding and segment count taken from its text. Its id carries `created_at`'s second,
    /// so the lists' `_id` order and ranges are creation order and time ranges.
    pub fn pending(new: NewMessage) -> Self {
        let (encoding, parts) = crate::domain::segments::count(&new.text);
        let (agent_id, pool) = match new.route {
            Route::Pinned(agent) => (Some(agent), None),
            Route::Pool(lanes) => (None, Some(lanes)),
        };
        Self {
            id: super::paging::id_at(new.created_at),
            request_id: new.request_id,
            api_key_id: new.api_key_id,
            client_name: new.client_name,
            agent_id,
            pool,
            template_id: new.template_id,
            to: new.to,
            text: new.text,
            status: Status::Pending,
            priority_weight: new.priority_weight,
            segments: parts as i32,
            encoding: encoding.as_str().to_owned(),
            created_at: new.created_at,
            updated_at: new.created_at,
            published: false,
            published_at: None,
            staged: false,
            staged_at: None,
            lease_id: None,
            lease_expires_at: None,
            leased_at: None,
            attempts: 0,
            sending_at: None,
            sent_at: None,
            delivered_at: None,
            failed_at: None,
            last_error: None,
            settled_at: None,
        }
    }

    /// Who may lease it: its pool's lanes, or the lane of the agent it is pinned to.
    pub fn lanes(&self) -> Vec<String> {
        match (&self.pool, self.agent_id) {
            (Some(lanes), _) => lanes.clone(),
            (None, Some(agent)) => vec![crate::db::jobs::lane(agent)],
            (None, None) => Vec::new(),
        }
    }

    /// The same message published and staged at `at`, as a dispatcher leaves it.
    pub fn staged_at(self, at: DateTime) -> Self {
        Self {
            published: true,
            published_at: Some(at),
            staged: true,
            staged_at: Some(at),
            ..self
        }
    }
}

/// Filters of message listings; the tenant filter is applied by the caller's credential.
#[derive(Debug, Default, Clone)]
pub struct MessageFilter {
    pub tenant: Option<ObjectId>,
    pub request_id: Option<ObjectId>,
    pub status: Option<Status>,
    pub agent_id: Option<ObjectId>,
    pub to: Option<String>,
    pub from: Option<DateTime>,
    pub until: Option<DateTime>,
}

impl MessageFilter {
    /// The MongoDB filter of the fields that are set.
    pub fn to_document(&self) -> Document {
        let mut f = doc! {};
        if let Some(t) = self.tenant {
            f.insert("api_key_id", t);
        }
        if let Some(r) = self.request_id {
            f.insert("request_id", r);
        }
        if let Some(s) = self.status {
            f.insert("status", s.as_str());
        }
        if let Some(a) = self.agent_id {
            f.insert("agent_id", a);
        }
        if let Some(to) = &self.to {
            f.insert("to", to);
        }
        let mut created = doc! {};
        if let Some(t) = self.from {
            created.insert("$gte", t);
        }
        if let Some(t) = self.until {
            created.insert("$lt", t);
        }
        if !created.is_empty() {
            f.insert("created_at", created);
        }
        f
    }
}

/// Messages one insert of a request's messages writes at most.
pub const INSERT_PIECE: usize = 100;

/// The `sms_messages` collection. Its queries are spread over this module's files, one file per
/// stage of a message's life.
#[derive(Clone)]
pub struct Messages(Collection<Message>, Hints, BulkGate);

impl Messages {
    pub fn new(db: &Database, hints: Hints) -> Self {
        Self(db.collection("sms_messages"), hints, BulkGate::default())
    }

    /// The same collection, its bulk writes taking turns at `gate`.
    pub fn gated(self, gate: BulkGate) -> Self {
        Self(self.0, self.1, gate)
    }

    pub fn collection(&self) -> &Collection<Message> {
        &self.0
    }

    pub async fn create_indexes(&self) -> mongodb::error::Result<()> {
        super::ensure_indexes(
            &self.0,
            vec![
                super::index(
                    doc! {"request_id": 1, "_id": 1},
                    false,
                    list_indexes::REQUEST,
                ),
                // The CSV export's order.
                super::index(doc! {"created_at": 1, "_id": 1}, false, "created_id"),
                list_indexes::TENANT.model(),
                list_indexes::STATUS.model(),
                list_indexes::AGENT.model(),
                list_indexes::TENANT_STATUS.model(),
                list_indexes::TENANT_AGENT.model(),
                list_indexes::AGENT_STATUS.model(),
                list_indexes::TENANT_AGENT_STATUS.model(),
                list_indexes::TO.model(),
            ],
        )
        .await?;
        // Replaced by the list indexes above.
        super::drop_indexes(&self.0, &["tenant_created", "status_created", "to_created"]).await?;
        self.create_outbox_indexes().await
    }

    /// Inserts a request's messages in bulk, [`INSERT_PIECE`] at a time: the database applies
    /// the writes to this collection one after another, so another write (a one-time password's
    /// insert, a staging mark) waits for one piece, never for a whole 5,000-recipient request.
    /// Bulk pieces take turns (`BulkGate`).
    pub async fn insert_many(&self, messages: &[Message]) -> mongodb::error::Result<()> {
        for piece in messages.chunks(INSERT_PIECE) {
            let priorities = piece.iter().map(|m| m.priority_weight);
            let insert = self.0.insert_many(piece).ordered(false);
            self.2.write(priorities, insert).await?;
        }
        Ok(())
    }

    /// Deletes a request's messages (undoing a store that failed half-way).
    pub async fn delete_request(&self, request_id: ObjectId) -> mongodb::error::Result<()> {
        self.0
            .delete_many(doc! {"request_id": request_id})
            .await
            .map(|_| ())
    }

    /// The message with this id, whoever it belongs to.
    pub async fn find(&self, id: ObjectId) -> mongodb::error::Result<Option<Message>> {
        self.0.find_one(doc! {"_id": id}).await
    }

    /// The message if `tenant` may see it (`None`: an operator sees all).
    pub async fn find_for(
        &self,
        id: ObjectId,
        tenant: Option<ObjectId>,
    ) -> mongodb::error::Result<Option<Message>> {
        let mut f = doc! {"_id": id};
        if let Some(key) = tenant {
            f.insert("api_key_id", key);
        }
        self.0.find_one(f).await
    }

    /// How many of a request's messages are in each status.
    pub async fn status_counts(
        &self,
        request_id: ObjectId,
    ) -> mongodb::error::Result<Vec<(String, i64)>> {
        let mut cursor = self
            .0
            .aggregate(vec![
                doc! {"$match": {"request_id": request_id}},
                doc! {"$group": {"_id": "$status", "n": {"$sum": 1}}},
            ])
            .await?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await? {
            let status = d.get_str("_id").unwrap_or_default().to_owned();
            let n = match d.get("n") {
                Some(Bson::Int32(n)) => *n as i64,
                Some(Bson::Int64(n)) => *n,
                Some(Bson::Double(n)) => *n as i64,
                _ => 0,
            };
            out.push((status, n));
        }
        Ok(out)
    }

    /// Reads many messages at once, keyed by id.
    pub async fn find_many(
        &self,
        ids: &[ObjectId],
    ) -> mongodb::error::Result<std::collections::HashMap<ObjectId, Message>> {
        if ids.is_empty() {
            return Ok(Default::default());
        }
        let found: Vec<Message> = self
            .0
            .find(doc! {"_id": {"$in": ids}})
            .await?
            .try_collect()
            .await?;
        Ok(found.into_iter().map(|m| (m.id, m)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(text: &str, at: DateTime) -> NewMessage {
        NewMessage {
            request_id: ObjectId::new(),
            api_key_id: None,
            client_name: "SafeShop".into(),
            route: Route::Pinned(ObjectId::new()),
            template_id: ObjectId::new(),
            to: "+84901234567".into(),
            text: text.into(),
            priority_weight: 70,
            created_at: at,
        }
    }

    #[test]
    fn a_new_message_is_pending_unpublished_and_counted_from_its_text() {
        let at = DateTime::from_millis(1_700_000_000_000);
        let m = Message::pending(new("Mã OTP của bạn là 123456", at));
        assert_eq!(m.status, Status::Pending);
        assert_eq!((m.published, m.staged), (false, false));
        assert_eq!((m.published_at, m.staged_at), (None, None));
        assert_eq!((m.encoding.as_str(), m.segments), ("UCS-2", 1));
        assert_eq!((m.created_at, m.updated_at), (at, at));
        assert_eq!((m.priority_weight, m.attempts), (70, 0));

        let long = "a".repeat(161);
        let m = Message::pending(new(&long, at));
        assert_eq!((m.encoding.as_str(), m.segments), ("GSM-7", 2));

        let later = DateTime::from_millis(1_700_000_001_000);
        let staged = m.clone().staged_at(later);
        assert_eq!((staged.published, staged.staged), (true, true));
        assert_eq!(
            (staged.published_at, staged.staged_at),
            (Some(later), Some(later))
        );
        assert_eq!((staged.id, staged.created_at), (m.id, at));
    }

    #[test]
    fn a_pool_message_has_no_agent_until_leased_and_its_job_keeps_the_pool() {
        let at = DateTime::from_millis(1_700_000_000_000);
        let lanes = vec!["*".to_owned()];
        let m = Message::pending(NewMessage {
            route: Route::Pool(lanes.clone()),
            ..new("Ma OTP 1", at)
        })
        .staged_at(at);
        assert_eq!((m.agent_id, m.pool.as_ref()), (None, Some(&lanes)));
        assert_eq!(m.lanes(), lanes);
        let job = crate::db::jobs::Job::of(&m, at).expect("a pending message has a job");
        assert_eq!(
            (job.lanes.clone(), job.pool, job.holder),
            (lanes, true, None)
        );
        assert_eq!(job.pinned_agent(), None);

        let agent = ObjectId::new();
        let pinned = Message::pending(NewMessage {
            route: Route::Pinned(agent),
            ..new("Ma OTP 2", at)
        });
        assert_eq!((pinned.agent_id, pinned.pool.clone()), (Some(agent), None));
        let job = crate::db::jobs::Job::of(&pinned.staged_at(at), at).unwrap();
        assert_eq!((job.pool, job.pinned_agent()), (false, Some(agent)));
    }

    #[test]
    fn ids_carry_the_creation_second_and_are_unique_in_a_burst() {
        let at = DateTime::from_millis(1_700_000_000_999);
        let burst: Vec<Message> = (0..5_000)
            .map(|_| Message::pending(new("Ma OTP 1", at)))
            .collect();
        let ids: std::collections::HashSet<ObjectId> = burst.iter().map(|m| m.id).collect();
        assert_eq!(ids.len(), burst.len());
        for m in &burst {
            assert_eq!(m.id.timestamp().timestamp_millis(), 1_700_000_000_000);
        }
        let earlier = Message::pending(new("Ma OTP 2", DateTime::from_millis(1_699_999_999_999)));
        assert!(earlier.id < burst[0].id);
    }
}
