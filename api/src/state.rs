//! Shared application state: a cheap clone around one `Arc`.

use std::ops::Deref;
use std::sync::Arc;

use sms_shared::amqp::Publisher;
use sms_shared::auth::JwtKeys;
use sms_shared::db::Db;
use sms_shared::metrics::Metrics;
use tokio_util::task::TaskTracker;

use crate::background::backlog::Backlog;
use crate::background::outbox::ClientWrites;
use crate::config::Config;
use crate::login_guard::HashGate;
use crate::wake::WakeHub;

pub struct App {
    pub config: Config,
    pub db: Db,
    pub publisher: Publisher,
    pub jwt: JwtKeys,
    pub metrics: Metrics,
    /// Background publishes started by requests; awaited at shutdown.
    pub tasks: TaskTracker,
    /// Request inserts in flight, which outbox publishes and marks let pass first.
    pub client_writes: ClientWrites,
    /// Password checks, at most one per core at a time.
    pub hash_gate: HashGate,
    /// Where long polls wait for wake events.
    pub wake: Arc<WakeHub>,
    /// Whether the dispatchers are working through a backlog, as last asked.
    pub backlog: Backlog,
}

#[derive(Clone)]
pub struct AppState(Arc<App>);

impl AppState {
    pub fn new(app: App) -> Self {
        Self(Arc::new(app))
    }
}

impl Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}
