//! MongoDB access: one module per collection, each a typed wrapper with its queries.
//!
//! Only single-document atomic operations (and `update_many` stamped with a unique id) are used,
//! so a standalone `mongod` without transactions is enough.

use std::time::Duration;

use anyhow::Context;
use futures::TryStreamExt;
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::ClientOptions;
use mongodb::{Client, Database};

use crate::config::MongoConfig;

pub mod agent_rate;
pub mod agents;
pub mod api_keys;
pub mod audit_logs;
pub mod bulk_gate;
pub mod dedup;
pub mod hints;
pub mod jobs;
pub mod login_throttle;
pub mod messages;
pub mod paging;
pub mod quota;
pub mod reports;
pub mod requests;
pub mod settings;
pub mod stats;
pub mod templates;
pub mod users;

/// Handles to every collection of the service.
#[derive(Clone)]
pub struct Db {
    pub database: Database,
    pub users: users::Users,
    pub api_keys: api_keys::ApiKeys,
    pub agents: agents::Agents,
    pub settings: settings::Settings,
    pub audit_logs: audit_logs::AuditLogs,
    pub templates: templates::Templates,
    pub requests: requests::Requests,
    pub messages: messages::Messages,
    pub jobs: jobs::Jobs,
    pub reports: reports::Reports,
    pub dedup: dedup::Dedup,
    pub login_throttle: login_throttle::LoginThrottle,
    pub stats: stats::Stats,
    pub quota: quota::Quota,
    pub agent_rate: agent_rate::AgentRate,
    /// `MESSAGE_RETENTION_DAYS`, applied by [`Db::create_indexes`]; `None` keeps messages forever.
    pub message_retention: Option<Duration>,
}

impl Db {
    /// Connects lazily (the driver connects on first use) with bounded server selection.
    pub async fn connect(config: &MongoConfig, app_name: &str) -> anyhow::Result<Self> {
        let mut options = ClientOptions::parse(config.uri.expose_secret())
            .await
            .context("parsing MONGO_URI")?;
        options.app_name = Some(app_name.to_owned());
        options.server_selection_timeout = Some(Duration::from_secs(5));
        options.connect_timeout = Some(Duration::from_secs(5));
        if options.max_pool_size.is_none() {
            options.max_pool_size = Some(50);
        }
        let client = Client::with_options(options).context("creating MongoDB client")?;
        let mut db = Self::new(client.database(&config.db));
        db.message_retention = config.message_retention;
        Ok(db)
    }

    pub fn new(database: Database) -> Self {
        let hints = hints::Hints::new(&database);
        Self {
            users: users::Users::new(&database),
            api_keys: api_keys::ApiKeys::new(&database),
            agents: agents::Agents::new(&database),
            settings: settings::Settings::new(&database),
            audit_logs: audit_logs::AuditLogs::new(&database, hints.clone()),
            templates: templates::Templates::new(&database),
            requests: requests::Requests::new(&database),
            messages: messages::Messages::new(&database, hints.clone()),
            jobs: jobs::Jobs::new(&database, hints.clone()),
            reports: reports::Reports::new(&database),
            dedup: dedup::Dedup::new(&database),
            login_throttle: login_throttle::LoginThrottle::new(&database),
            stats: stats::Stats::new(&database, hints.clone()),
            quota: quota::Quota::new(&database),
            agent_rate: agent_rate::AgentRate::new(&database),
            message_retention: None,
            database,
        }
    }

    /// Bulk writes to `sms_messages` and to `sms_jobs` take turns, at most `writes` at a time to
    /// each (0: no limit); writes carrying a message of `priority_weight` ≥ `fast_lane_priority`
    /// never wait (`bulk_gate`). Each bulk write's wait is recorded in `waits`, labelled with
    /// the collection.
    pub fn gate_bulk_writes(
        mut self,
        writes: usize,
        fast_lane_priority: i32,
        waits: &prometheus::HistogramVec,
    ) -> Self {
        let gate = |collection: &str| {
            bulk_gate::BulkGate::new(writes, fast_lane_priority)
                .recording(waits.with_label_values(&[collection]))
        };
        let messages = gate(self.messages.collection().name());
        let jobs = gate(self.jobs.collection().name());
        self.messages = self.messages.gated(messages);
        self.jobs = self.jobs.gated(jobs);
        self
    }

    /// Round-trips a `ping` to the server.
    pub async fn ping(&self) -> anyhow::Result<()> {
        self.database
            .run_command(mongodb::bson::doc! {"ping": 1})
            .await
            .map(|_| ())
            .context("pinging MongoDB")
    }

    /// Creates every index the service relies on (idempotent).
    pub async fn create_indexes(&self) -> anyhow::Result<()> {
        self.users.create_indexes().await.context("users indexes")?;
        self.api_keys
            .create_indexes()
            .await
            .context("api_keys indexes")?;
        self.agents
            .create_indexes()
            .await
            .context("agents indexes")?;
        self.audit_logs
            .create_indexes()
            .await
            .context("audit_logs indexes")?;
        self.templates
            .create_indexes()
            .await
            .context("templates indexes")?;
        self.requests
            .create_indexes()
            .await
            .context("sms_requests indexes")?;
        self.messages
            .create_indexes()
            .await
            .context("sms_messages indexes")?;
        self.messages
            .apply_retention(self.message_retention)
            .await
            .context("sms_messages retention index")?;
        self.jobs
            .create_indexes()
            .await
            .context("sms_jobs indexes")?;
        self.dedup.create_indexes().await.context("dedup indexes")?;
        self.login_throttle
            .create_indexes()
            .await
            .context("login_throttle indexes")?;
        self.stats.create_indexes().await.context("stats indexes")?;
        self.quota
            .create_indexes()
            .await
            .context("quota_usage indexes")?;
        self.agent_rate
            .create_indexes()
            .await
            .context("agent_rate indexes")?;
        Ok(())
    }
}

/// Whether a driver error is a unique-index violation (E11000).
pub fn is_duplicate_key(err: &mongodb::error::Error) -> bool {
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == 11000,
        ErrorKind::Command(e) => e.code == 11000,
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .is_some_and(|errs| errs.iter().any(|e| e.code == 11000)),
        _ => err.to_string().contains("E11000"),
    }
}

/// The filter of the documents `id` names (an id, or `{"$in": [ids]}`) that also match `rest`,
/// written so that the database finds them by `_id` whatever `rest` holds. Some
/// MongoDB-compatible servers route a write's filter through an index only when no top-level
/// operator but `$and` leads it: `{_id: .., $or: [..]}` made SecantusDB scan the whole
/// collection on every such write. As conjuncts, `_id` is looked up and `rest` checked on what it
/// finds; MongoDB plans both shapes alike.
pub(crate) fn by_id_and(
    id: impl Into<mongodb::bson::Bson>,
    rest: mongodb::bson::Document,
) -> mongodb::bson::Document {
    mongodb::bson::doc! {"$and": [{"_id": id.into()}, rest]}
}

/// The `_id`s of `coll`'s documents matching `filter` (read only: no document is fetched
/// whole).
pub(crate) async fn ids_matching<T: Send + Sync>(
    coll: &mongodb::Collection<T>,
    filter: mongodb::bson::Document,
) -> mongodb::error::Result<Vec<mongodb::bson::oid::ObjectId>> {
    #[derive(serde::Deserialize)]
    struct Id {
        #[serde(rename = "_id")]
        id: mongodb::bson::oid::ObjectId,
    }
    let found: Vec<Id> = coll
        .clone_with_type::<Id>()
        .find(filter)
        .projection(mongodb::bson::doc! {"_id": 1})
        .await?
        .try_collect()
        .await?;
    Ok(found.into_iter().map(|i| i.id).collect())
}

/// Creates `models` on `coll`.
pub(crate) async fn ensure_indexes<T: Send + Sync>(
    coll: &mongodb::Collection<T>,
    models: Vec<mongodb::IndexModel>,
) -> mongodb::error::Result<()> {
    coll.create_indexes(models).await.map(|_| ())
}

/// Drops indexes an earlier version created and nothing uses any more; absent ones are fine.
pub(crate) async fn drop_indexes<T: Send + Sync>(
    coll: &mongodb::Collection<T>,
    names: &[&str],
) -> mongodb::error::Result<()> {
    for name in names {
        match coll.drop_index(*name).await {
            Ok(()) => tracing::info!(collection = coll.name(), index = name, "dropped index"),
            // IndexNotFound, NamespaceNotFound.
            Err(e) if matches!(e.kind.as_ref(), ErrorKind::Command(c) if c.code == 27 || c.code == 26) =>
                {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Shorthand for an index with options.
pub(crate) fn index(
    keys: mongodb::bson::Document,
    unique: bool,
    name: &str,
) -> mongodb::IndexModel {
    mongodb::IndexModel::builder()
        .keys(keys)
        .options(
            mongodb::options::IndexOptions::builder()
                .unique(unique.then_some(true))
                .name(name.to_owned())
                .build(),
        )
        .build()
}

/// A TTL index removing documents once `field` (a date) is in the past.
pub(crate) fn ttl_index(field: &str, name: &str) -> mongodb::IndexModel {
    mongodb::IndexModel::builder()
        .keys(mongodb::bson::doc! { field: 1 })
        .options(
            mongodb::options::IndexOptions::builder()
                .expire_after(Duration::from_secs(0))
                .name(name.to_owned())
                .build(),
        )
        .build()
}
