//! `sms_messages`: one document per recipient. The document is also its own outbox record
//! (`published`), and carries its staging, lease and delivery state.

use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime, Document};
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

use crate::domain::status::Status;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub request_id: ObjectId,
    /// The tenant: the API key that sent it, `None` for operator sends.
    pub api_key_id: Option<ObjectId>,
    pub client_name: String,
    pub agent_id: ObjectId,
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
}

/// What a new message is made of; the rest of a [`Message`] starts empty.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub request_id: ObjectId,
    pub api_key_id: Option<ObjectId>,
    pub client_name: String,
    pub agent_id: ObjectId,
    pub template_id: ObjectId,
    pub to: String,
    pub text: String,
    pub priority_weight: i32,
    pub created_at: DateTime,
}

impl Message {
    /// A `PENDING` message as a request stores it: neither published nor staged, with its
    /// encoding and segment count taken from its text.
    pub fn pending(new: NewMessage) -> Self {
        let (encoding, parts) = crate::domain::segments::count(&new.text);
        Self {
            id: ObjectId::new(),
            request_id: new.request_id,
            api_key_id: new.api_key_id,
            client_name: new.client_name,
            agent_id: new.agent_id,
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

/// A message's id, its request's id and when it was accepted: what its event carries.
pub type OutboxRow = (ObjectId, ObjectId, DateTime);

#[derive(Clone)]
pub struct Messages(Collection<Message>);

impl Messages {
    pub fn new(db: &Database) -> Self {
        Self(db.collection("sms_messages"))
    }

    pub fn collection(&self) -> &Collection<Message> {
        &self.0
    }

    pub async fn create_indexes(&self) -> mongodb::error::Result<()> {
        super::ensure_indexes(
            &self.0,
            vec![
                super::index(doc! {"request_id": 1, "_id": 1}, false, "request"),
                super::index(doc! {"api_key_id": 1, "created_at": -1}, false, "tenant_created"),
                super::index(doc! {"created_at": 1, "_id": 1}, false, "created_id"),
                super::index(doc! {"status": 1, "created_at": -1}, false, "status_created"),
                super::index(doc! {"to": 1, "created_at": -1}, false, "to_created"),
                super::index(
                    doc! {"agent_id": 1, "staged": 1, "status": 1, "priority_weight": -1, "created_at": 1},
                    false,
                    "lease_queue",
                ),
                super::index(doc! {"published": 1, "created_at": 1}, false, "outbox"),
                super::index(doc! {"staged": 1, "published_at": 1}, false, "unstaged"),
                super::index(doc! {"status": 1, "sending_at": 1}, false, "sending_timeout"),
            ],
        )
        .await
    }

    /// Inserts a request's messages in bulk (the driver splits large batches).
    pub async fn insert_many(&self, messages: &[Message]) -> mongodb::error::Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        self.0
            .insert_many(messages)
            .ordered(false)
            .await
            .map(|_| ())
    }

    pub async fn delete_request(&self, request_id: ObjectId) -> mongodb::error::Result<()> {
        self.0
            .delete_many(doc! {"request_id": request_id})
            .await
            .map(|_| ())
    }

    /// Marks messages whose events RabbitMQ confirmed.
    pub async fn mark_published(&self, ids: &[ObjectId]) -> mongodb::error::Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let r = self
            .0
            .update_many(
                doc! {"_id": {"$in": ids}, "published": false},
                doc! {"$set": {"published": true, "published_at": DateTime::now()}},
            )
            .await?;
        Ok(r.modified_count)
    }

    /// Moves the publication time of republished messages to now.
    pub async fn touch_published(&self, ids: &[ObjectId]) -> mongodb::error::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.0
            .update_many(
                doc! {"_id": {"$in": ids}},
                doc! {"$set": {"published_at": DateTime::now()}},
            )
            .await
            .map(|_| ())
    }

    /// Messages whose events are still unconfirmed and older than `before` (oldest first).
    pub async fn unpublished(
        &self,
        before: DateTime,
        limit: i64,
    ) -> mongodb::error::Result<Vec<OutboxRow>> {
        self.outbox_rows(
            doc! {"published": false, "created_at": {"$lt": before}},
            doc! {"published": 1, "created_at": 1},
            limit,
        )
        .await
    }

    /// Pending messages whose event was confirmed before `before` but which no dispatcher has
    /// staged: their event was lost with a broker's data or dead-lettered after too many
    /// redeliveries during a long database outage. Oldest first.
    pub async fn published_unstaged(
        &self,
        before: DateTime,
        limit: i64,
    ) -> mongodb::error::Result<Vec<OutboxRow>> {
        self.outbox_rows(
            doc! {"staged": false, "published_at": {"$lt": before}, "status": Status::Pending.as_str()},
            doc! {"staged": 1, "published_at": 1},
            limit,
        )
        .await
    }

    /// What the outbox needs to rebuild an event, for the messages matching `filter`.
    async fn outbox_rows(
        &self,
        filter: Document,
        sort: Document,
        limit: i64,
    ) -> mongodb::error::Result<Vec<OutboxRow>> {
        #[derive(Deserialize)]
        struct Row {
            #[serde(rename = "_id")]
            id: ObjectId,
            request_id: ObjectId,
            created_at: DateTime,
        }
        let rows: Vec<Row> = self
            .0
            .clone_with_type::<Row>()
            .find(filter)
            .projection(doc! {"_id": 1, "request_id": 1, "created_at": 1})
            .sort(sort)
            .limit(limit)
            .await?
            .try_collect()
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.id, r.request_id, r.created_at))
            .collect())
    }

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

    /// A page of messages, newest first, with the total matching count.
    pub async fn list(
        &self,
        filter: &MessageFilter,
        limit: i64,
        skip: u64,
    ) -> mongodb::error::Result<(Vec<Message>, u64)> {
        let f = filter.to_document();
        let total = self.0.count_documents(f.clone()).await?;
        let sort = if filter.request_id.is_some() {
            doc! {"request_id": 1, "_id": 1}
        } else {
            doc! {"created_at": -1, "_id": -1}
        };
        let items = self
            .0
            .find(f)
            .sort(sort)
            .skip(skip)
            .limit(limit)
            .await?
            .try_collect()
            .await?;
        Ok((items, total))
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

    /// Makes pending, unstaged messages visible to their agents. Idempotent: returns how many
    /// were staged now (the others were staged or settled earlier).
    pub async fn stage_many(&self, ids: &[ObjectId], now: DateTime) -> mongodb::error::Result<u64> {
        let r = self
            .0
            .update_many(
                doc! {"_id": {"$in": ids}, "staged": false, "status": Status::Pending.as_str()},
                // A staged message's event evidently reached the broker: mark it published
                // too, which spares the API that write. `stagings` makes "staged twice"
                // countable by the fault scenarios.
                doc! {
                    "$set": {"staged": true, "staged_at": now, "updated_at": now, "published": true},
                    "$inc": {"stagings": 1},
                },
            )
            .await?;
        Ok(r.modified_count)
    }

    /// Cancels pending, unstaged messages as recent duplicates. Idempotent: returns how many
    /// were cancelled now.
    pub async fn cancel_duplicates(
        &self,
        ids: &[ObjectId],
        now: DateTime,
    ) -> mongodb::error::Result<u64> {
        let r = self
            .0
            .update_many(
                doc! {"_id": {"$in": ids}, "staged": false, "status": Status::Pending.as_str()},
                doc! {
                    "$set": {
                        "status": Status::Canceled.as_str(),
                        "last_error": "DUPLICATE_RECENT",
                        "staged_at": now,
                        "updated_at": now,
                        "published": true,
                    },
                    "$inc": {"stagings": 1},
                },
            )
            .await?;
        Ok(r.modified_count)
    }
}

/// A batch of messages leased by one poll.
#[derive(Debug, Clone, Default)]
pub struct Leased {
    /// The leased messages, highest `priority_weight` first, then oldest.
    pub messages: Vec<Message>,
    /// How many of them were `ASSIGNED` before, with an expired lease.
    pub re_leased: u64,
}

/// What an agent's report did to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    /// The message moved to the reported status.
    Applied(Status),
    /// The message already had the reported status: nothing changed.
    Unchanged(Status),
    /// Not this agent's staged message (or no such message); reveals nothing.
    NotFound,
    /// The contract does not allow the move from the current status.
    InvalidTransition(Status),
    /// The report's `lease_id` is not the message's current lease.
    StaleLease(Status),
}

/// The longest `last_error` an agent may store.
pub const MAX_ERROR_CHARS: usize = 500;

/// Staged messages of `agent` that may be leased at `now`: pending, or assigned with an
/// expired lease (or none: an agent may report `ASSIGNED` without leasing). `SENDING` and later
/// are never handed out again.
fn leasable(agent: ObjectId, now: DateTime) -> Document {
    doc! {
        "agent_id": agent,
        "staged": true,
        "$or": [
            {"status": Status::Pending.as_str()},
            {"status": Status::Assigned.as_str(), "lease_expires_at": {"$lte": now}},
            {"status": Status::Assigned.as_str(), "lease_expires_at": Bson::Null},
        ],
    }
}

/// The lease order: highest priority first, then oldest.
fn lease_order() -> Document {
    doc! {"priority_weight": -1, "created_at": 1, "_id": 1}
}

impl Messages {
    /// Leases up to `limit` of `agent`'s staged messages under the fresh `lease_id`.
    ///
    /// Candidates are picked in lease order, then claimed by one `update_many` that repeats the
    /// leasable filter, so a message another poll claimed in between is skipped, and read back
    /// by the lease id. Two polls never hold the same message while its lease is live.
    pub async fn lease(
        &self,
        agent: ObjectId,
        limit: i64,
        lease_id: &str,
        lease_for: std::time::Duration,
        now: DateTime,
    ) -> mongodb::error::Result<Leased> {
        if limit <= 0 {
            return Ok(Leased::default());
        }
        #[derive(Deserialize)]
        struct Candidate {
            #[serde(rename = "_id")]
            id: ObjectId,
            status: Status,
        }
        let candidates: Vec<Candidate> = self
            .0
            .clone_with_type::<Candidate>()
            .find(leasable(agent, now))
            .projection(doc! {"_id": 1, "status": 1})
            .sort(lease_order())
            .limit(limit)
            .await?
            .try_collect()
            .await?;
        if candidates.is_empty() {
            return Ok(Leased::default());
        }
        let ids: Vec<ObjectId> = candidates.iter().map(|c| c.id).collect();
        let expires = DateTime::from_millis(now.timestamp_millis() + lease_for.as_millis() as i64);
        let mut filter = leasable(agent, now);
        filter.insert("_id", doc! {"$in": &ids});
        let claimed = self
            .0
            .update_many(
                filter,
                doc! {
                    "$set": {
                        "status": Status::Assigned.as_str(),
                        "lease_id": lease_id,
                        "lease_expires_at": expires,
                        "leased_at": now,
                        "updated_at": now,
                    },
                    "$inc": {"attempts": 1},
                },
            )
            .await?;
        if claimed.modified_count == 0 {
            return Ok(Leased::default());
        }
        let messages: Vec<Message> = self
            .0
            .find(doc! {"_id": {"$in": &ids}, "lease_id": lease_id})
            .sort(lease_order())
            .await?
            .try_collect()
            .await?;
        let re_leased = messages
            .iter()
            .filter(|m| {
                candidates
                    .iter()
                    .any(|c| c.id == m.id && c.status == Status::Assigned)
            })
            .count() as u64;
        Ok(Leased {
            messages,
            re_leased,
        })
    }

    /// Applies `agent`'s report that message `id` reached `status`.
    ///
    /// One conditional update on `{_id, agent_id, staged, status in allowed predecessors}` (and
    /// the lease when `lease_id` is given) decides; only when it matches nothing is the message
    /// read to explain why. A late or foreign report therefore never changes anything.
    pub async fn report(
        &self,
        agent: ObjectId,
        id: ObjectId,
        status: Status,
        lease_id: Option<&str>,
        error: Option<&str>,
        now: DateTime,
    ) -> mongodb::error::Result<ReportOutcome> {
        let predecessors: Vec<&str> = Status::allowed_predecessors(status)
            .into_iter()
            .map(Status::as_str)
            .collect();
        let mut filter = doc! {
            "_id": id,
            "agent_id": agent,
            "staged": true,
            "status": {"$in": predecessors},
        };
        if let Some(lease) = lease_id {
            filter.insert("lease_id", lease);
        }
        let mut set = doc! {"status": status.as_str(), "updated_at": now};
        match status {
            Status::Sending => {
                set.insert("sending_at", now);
            }
            Status::Sent => {
                set.insert("sent_at", now);
            }
            Status::Delivered => {
                set.insert("delivered_at", now);
            }
            Status::Failed => {
                set.insert("failed_at", now);
                if let Some(e) = error.map(str::trim).filter(|e| !e.is_empty()) {
                    set.insert(
                        "last_error",
                        e.chars().take(MAX_ERROR_CHARS).collect::<String>(),
                    );
                }
            }
            _ => {}
        }
        // Statuses only move forward, so a second try can only differ if the message was staged
        // in between; two rounds settle every case.
        for _ in 0..2 {
            if !Status::allowed_predecessors(status).is_empty() {
                let r = self
                    .0
                    .update_one(filter.clone(), doc! {"$set": set.clone()})
                    .await?;
                if r.matched_count == 1 {
                    return Ok(ReportOutcome::Applied(status));
                }
            }
            let Some(current) = self.0.find_one(doc! {"_id": id}).await? else {
                return Ok(ReportOutcome::NotFound);
            };
            if current.agent_id != agent || !current.staged {
                return Ok(ReportOutcome::NotFound);
            }
            if lease_id.is_some_and(|l| current.lease_id.as_deref() != Some(l)) {
                return Ok(ReportOutcome::StaleLease(current.status));
            }
            if current.status == status {
                return Ok(ReportOutcome::Unchanged(current.status));
            }
            if !current.status.can_become(status) {
                return Ok(ReportOutcome::InvalidTransition(current.status));
            }
        }
        // Still looks applicable yet never matched: report it as the conflict it is.
        let current = self
            .0
            .find_one(doc! {"_id": id})
            .await?
            .map_or(Status::Pending, |m| m.status);
        Ok(ReportOutcome::InvalidTransition(current))
    }

    /// Fails every message stuck in `SENDING` since before `cutoff` with `SENDING_TIMEOUT`.
    /// They are never handed out again.
    pub async fn fail_sending_timeouts(
        &self,
        cutoff: DateTime,
        now: DateTime,
    ) -> mongodb::error::Result<u64> {
        let r = self
            .0
            .update_many(
                doc! {"status": Status::Sending.as_str(), "sending_at": {"$lte": cutoff}},
                doc! {"$set": {
                    "status": Status::Failed.as_str(),
                    "last_error": "SENDING_TIMEOUT",
                    "failed_at": now,
                    "updated_at": now,
                }},
            )
            .await?;
        Ok(r.modified_count)
    }

    /// Messages each agent holds at `now`: `ASSIGNED` with a live lease, plus `SENDING`.
    pub async fn in_flight_by_agent(
        &self,
        now: DateTime,
    ) -> mongodb::error::Result<Vec<(ObjectId, i64)>> {
        let mut cursor = self
            .0
            .aggregate(vec![
                doc! {"$match": {"$or": [
                    {"status": Status::Assigned.as_str(), "lease_expires_at": {"$gt": now}},
                    {"status": Status::Sending.as_str()},
                ]}},
                doc! {"$group": {"_id": "$agent_id", "n": {"$sum": 1}}},
            ])
            .await?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await? {
            let Ok(agent) = d.get_object_id("_id") else {
                continue;
            };
            let n = match d.get("n") {
                Some(Bson::Int32(n)) => i64::from(*n),
                Some(Bson::Int64(n)) => *n,
                Some(Bson::Double(n)) => *n as i64,
                _ => 0,
            };
            out.push((agent, n));
        }
        Ok(out)
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
            agent_id: ObjectId::new(),
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
}
