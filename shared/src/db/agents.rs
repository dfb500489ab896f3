//! `agents`: Android phones that lease and send messages. Tokens are stored as SHA-256 digests.
//!
//! A token only changes through [`Agents::rotate_token`], conditional on the token the caller
//! proved or read, so a rotation never silently undoes another.
//!
//! Each agent also carries its own sending limits (`None`: the service default, or no cap; see
//! `db::agent_rate`) and when it last polled or reported (`last_poll_at`): an agent silent for
//! `AGENT_STALE_SECONDS` has its pool messages given back to their pool by the reconciler.

use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime, Document};
use mongodb::options::ReturnDocument;
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

/// A phone registered as an agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Agent {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub device_id: String,
    pub label: String,
    pub token_hash: String,
    pub is_active: bool,
    pub created_at: DateTime,
    pub updated_at: DateTime,
    #[serde(default)]
    pub last_seen_at: Option<DateTime>,
    /// Facts from the latest heartbeat (battery, signal, app version, ...).
    #[serde(default)]
    pub device: Option<Document>,
    /// The last poll or status report, to within a few seconds (see [`Agents::record_poll`]).
    #[serde(default)]
    pub last_poll_at: Option<DateTime>,
    /// Messages per rolling minute; `None`: `AGENT_RATE_LIMIT_PER_MIN`.
    #[serde(default)]
    pub rate_limit_per_min: Option<i64>,
    /// Messages per rolling 30 minutes; `None`: no cap.
    #[serde(default)]
    pub max_per_30min: Option<i64>,
    /// Messages per UTC day; `None`: no cap.
    #[serde(default)]
    pub daily_limit: Option<i64>,
}

/// The most `last_poll_at` may lag behind: a poll or report writes it only when it is older,
/// so the record costs one write per agent every few seconds, not one per call.
const POLL_RECORD_EVERY: Duration = Duration::from_secs(5);

/// An operator's change of an agent: each field given is set (`Some(None)` clears a limit).
#[derive(Debug, Clone, Default)]
pub struct AgentChanges {
    pub is_active: Option<bool>,
    pub rate_limit_per_min: Option<Option<i64>>,
    pub max_per_30min: Option<Option<i64>>,
    pub daily_limit: Option<Option<i64>>,
}

impl AgentChanges {
    /// Whether it sets or clears a limit.
    pub fn changes_limits(&self) -> bool {
        self.rate_limit_per_min.is_some()
            || self.max_per_30min.is_some()
            || self.daily_limit.is_some()
    }

    fn set(&self) -> Document {
        let mut set = doc! {};
        if let Some(active) = self.is_active {
            set.insert("is_active", active);
        }
        for (field, value) in [
            ("rate_limit_per_min", self.rate_limit_per_min),
            ("max_per_30min", self.max_per_30min),
            ("daily_limit", self.daily_limit),
        ] {
            if let Some(value) = value {
                set.insert(field, value);
            }
        }
        set
    }
}

/// The `agents` collection.
#[derive(Clone)]
pub struct Agents(Collection<Agent>);

impl Agents {
    pub fn new(db: &Database) -> Self {
        Self(db.collection("agents"))
    }

    pub async fn create_indexes(&self) -> mongodb::error::Result<()> {
        super::ensure_indexes(
            &self.0,
            vec![
                super::index(doc! {"device_id": 1}, true, "device_id_unique"),
                super::index(doc! {"token_hash": 1}, true, "token_hash_unique"),
            ],
        )
        .await
    }

    pub async fn find(&self, id: ObjectId) -> mongodb::error::Result<Option<Agent>> {
        self.0.find_one(doc! {"_id": id}).await
    }

    pub async fn find_by_token_hash(&self, hash: &str) -> mongodb::error::Result<Option<Agent>> {
        self.0.find_one(doc! {"token_hash": hash}).await
    }

    pub async fn list(&self) -> mongodb::error::Result<Vec<Agent>> {
        self.0
            .find(doc! {})
            .sort(doc! {"created_at": 1})
            .await?
            .try_collect()
            .await
    }

    /// The agent of a device, active or not.
    pub async fn find_by_device_id(
        &self,
        device_id: &str,
    ) -> mongodb::error::Result<Option<Agent>> {
        self.0.find_one(doc! {"device_id": device_id}).await
    }

    /// Creates the active agent `id` for a new `device_id`; `None` when the device is already
    /// known (a concurrent first registration may have just created it).
    pub async fn create(
        &self,
        id: ObjectId,
        device_id: &str,
        label: &str,
        token_hash: &str,
    ) -> mongodb::error::Result<Option<Agent>> {
        let now = crate::time::bson_now();
        let agent = Agent {
            id,
            device_id: device_id.to_owned(),
            label: label.to_owned(),
            token_hash: token_hash.to_owned(),
            is_active: true,
            created_at: now,
            updated_at: now,
            last_seen_at: None,
            device: None,
            last_poll_at: None,
            rate_limit_per_min: None,
            max_per_30min: None,
            daily_limit: None,
        };
        match self.0.insert_one(&agent).await {
            Ok(_) => Ok(Some(agent)),
            Err(e) if super::is_duplicate_key(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the token of agent `id` (and its label, when given), but only while its token is
    /// still `current_hash`: the one the caller proved or read. Of two racing rotations, one
    /// wins and the other gets `None` and changes nothing.
    pub async fn rotate_token(
        &self,
        id: ObjectId,
        current_hash: &str,
        new_hash: &str,
        label: Option<&str>,
    ) -> mongodb::error::Result<Option<Agent>> {
        let mut set = doc! {"token_hash": new_hash, "updated_at": crate::time::bson_now()};
        if let Some(label) = label {
            set.insert("label", label);
        }
        self.update_if_token(id, current_hash, set).await
    }

    /// Sets the label of agent `id` while its token is still `current_hash`, keeping the token.
    pub async fn relabel(
        &self,
        id: ObjectId,
        current_hash: &str,
        label: &str,
    ) -> mongodb::error::Result<Option<Agent>> {
        self.update_if_token(
            id,
            current_hash,
            doc! {"label": label, "updated_at": crate::time::bson_now()},
        )
        .await
    }

    async fn update_if_token(
        &self,
        id: ObjectId,
        current_hash: &str,
        set: Document,
    ) -> mongodb::error::Result<Option<Agent>> {
        self.0
            .find_one_and_update(
                doc! {"_id": id, "token_hash": current_hash},
                doc! {"$set": set},
            )
            .return_document(ReturnDocument::After)
            .await
    }

    pub async fn heartbeat(&self, id: ObjectId, device: Document) -> mongodb::error::Result<()> {
        self.0
            .update_one(
                doc! {"_id": id},
                doc! {"$set": {"last_seen_at": crate::time::bson_now(), "device": device}},
            )
            .await
            .map(|_| ())
    }

    /// Applies an operator's `changes` to agent `id`; the agent as it is now, `None` if unknown.
    pub async fn update(
        &self,
        id: ObjectId,
        changes: &AgentChanges,
    ) -> mongodb::error::Result<Option<Agent>> {
        let mut set = changes.set();
        if set.is_empty() {
            return self.find(id).await;
        }
        set.insert("updated_at", crate::time::bson_now());
        self.0
            .find_one_and_update(doc! {"_id": id}, doc! {"$set": set})
            .return_document(ReturnDocument::After)
            .await
    }

    /// Records that `agent` polled or reported at `now`, unless the record is fresher than five
    /// seconds, or than a quarter of `stale` (`AGENT_STALE_SECONDS`) when that is shorter. The
    /// record only moves forward, so when the one `agent` was read with is fresh enough already,
    /// nothing is sent to the database.
    pub async fn record_poll(
        &self,
        agent: &Agent,
        now: DateTime,
        stale: Duration,
    ) -> mongodb::error::Result<()> {
        let every = POLL_RECORD_EVERY.min(stale / 4);
        let fresh = DateTime::from_millis(now.timestamp_millis() - every.as_millis() as i64);
        if agent.last_poll_at.is_some_and(|at| at >= fresh) {
            return Ok(());
        }
        let id = agent.id;
        self.0
            .update_one(
                super::by_id_and(
                    id,
                    doc! {"$or": [
                        {"last_poll_at": Bson::Null},
                        {"last_poll_at": {"$lt": fresh}},
                    ]},
                ),
                doc! {"$set": {"last_poll_at": now}},
            )
            .await
            .map(|_| ())
    }

    /// The agents whose last poll or report is older than `cutoff`.
    pub async fn silent_since(&self, cutoff: DateTime) -> mongodb::error::Result<Vec<ObjectId>> {
        let found: Vec<Document> = self
            .0
            .clone_with_type::<Document>()
            .find(doc! {"last_poll_at": {"$lt": cutoff}})
            .projection(doc! {"_id": 1})
            .await?
            .try_collect()
            .await?;
        Ok(found
            .iter()
            .filter_map(|d| d.get_object_id("_id").ok())
            .collect())
    }

    /// Whether an active agent of `lanes` (agent ids in hex, or
    /// [`EVERY_AGENT`](crate::db::jobs::EVERY_AGENT)) is not among `excluded`.
    pub async fn any_active_in(
        &self,
        lanes: &[String],
        excluded: &[ObjectId],
    ) -> mongodb::error::Result<bool> {
        let mut ids = doc! {"$nin": excluded};
        if !lanes.iter().any(|l| l == crate::db::jobs::EVERY_AGENT) {
            let named: Vec<ObjectId> = lanes
                .iter()
                .filter_map(|l| ObjectId::parse_str(l).ok())
                .collect();
            ids.insert("$in", named);
        }
        let found = self
            .0
            .clone_with_type::<Document>()
            .find_one(doc! {"_id": ids, "is_active": true})
            .projection(doc! {"_id": 1})
            .await?;
        Ok(found.is_some())
    }

    /// Of `ids`, the agents that exist, keyed by id.
    pub async fn find_many(
        &self,
        ids: &[ObjectId],
    ) -> mongodb::error::Result<std::collections::HashMap<ObjectId, Agent>> {
        if ids.is_empty() {
            return Ok(Default::default());
        }
        let found: Vec<Agent> = self
            .0
            .find(doc! {"_id": {"$in": ids}})
            .await?
            .try_collect()
            .await?;
        Ok(found.into_iter().map(|a| (a.id, a)).collect())
    }

    /// Whether any agent is active.
    pub async fn any_active(&self) -> mongodb::error::Result<bool> {
        self.any_active_in(&[crate::db::jobs::EVERY_AGENT.to_owned()], &[])
            .await
    }
}
