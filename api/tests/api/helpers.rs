//! `spawn_app()` and a `TestApp` with one helper per endpoint; the agent protocol's fixtures
//! are in `helpers/agent.rs`, those of jobs and counters in `helpers/live.rs`, those of pools
//! of agents in `helpers/pool.rs`, the relay in front of RabbitMQ in `helpers/broker.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;

use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};
use sms_api::config::Config;
use sms_shared::config::Env;
use sms_shared::db::Db;
use tokio::sync::oneshot;

mod agent;
mod broker;
mod lists;
mod live;
mod pool;
pub use agent::*;
pub use broker::*;
pub use lists::*;
pub use live::*;
pub use pool::*;

pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";
pub const JWT_SECRET: &str = "test-jwt-secret";

pub fn mongo_uri() -> String {
    std::env::var("TEST_MONGO_URI")
        .unwrap_or_else(|_| panic!("TEST_MONGO_URI is not set: run the tests with scripts/test.sh"))
}

pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A unique suffix for database and AMQP names.
pub fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// The environment of one test app: isolated database and AMQP prefix, plus `overrides`.
pub fn test_env(db: &str, prefix: &str, overrides: &[(&str, &str)]) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = [
        ("MONGO_URI", mongo_uri()),
        ("MONGO_DB", db.to_owned()),
        ("AMQP_URL", amqp_url()),
        ("AMQP_PREFIX", prefix.to_owned()),
        ("JWT_SECRET", JWT_SECRET.to_owned()),
        ("ALLOWED_HOSTS", "127.0.0.1,localhost".to_owned()),
        ("HTTP_ADDR", "127.0.0.1:0".to_owned()),
        ("SEED_ADMIN_USERNAME", ADMIN_USER.to_owned()),
        ("SEED_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
        ("OUTBOX_SWEEP_AFTER_MS", "500".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in overrides {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    vars
}

pub fn config_from(vars: &HashMap<String, String>) -> Config {
    let vars = vars.clone();
    Config::from_env(&Env::from_fn(move |k| vars.get(k).cloned()))
        .expect("valid test configuration")
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub db: Db,
    pub config: Config,
    pub vars: HashMap<String, String>,
    pub operator_token: String,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    let id = unique();
    let vars = test_env(&format!("sms_test_{id}"), &format!("test-{id}"), overrides);
    spawn_app_from(vars).await
}

/// Starts the real app with exactly these variables.
pub async fn spawn_app_from(vars: HashMap<String, String>) -> TestApp {
    let config = config_from(&vars);
    let state = sms_api::app::build_state(config.clone())
        .await
        .expect("app state");
    sms_api::commands::create_indexes(&state.db)
        .await
        .expect("indexes");
    sms_api::commands::seed_admin(&state.db, &state.config)
        .await
        .expect("seed admin");
    let db = state.db.clone();
    let operator_token = state.jwt.issue("test-operator").expect("token").0;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    let server = tokio::spawn(async move {
        sms_api::app::run(listener, state, async {
            let _ = rx.await;
        })
        .await
        .expect("server runs");
    });
    TestApp {
        address: format!("http://{addr}"),
        client: reqwest::Client::new(),
        db,
        config,
        vars,
        operator_token,
        shutdown: Some(tx),
        server: Some(server),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<Value>,
    ) -> Response {
        let mut req = self.client.request(method, self.url(path));
        req = match auth {
            Auth::None => req,
            Auth::Operator => req.bearer_auth(&self.operator_token),
            Auth::Bearer(t) => req.bearer_auth(t),
            Auth::ApiKey(k) => req.header("X-API-Key", k),
        };
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.expect("request sent")
    }

    pub async fn get(&self, path: &str, auth: Auth<'_>) -> Response {
        self.request(Method::GET, path, auth, None).await
    }

    pub async fn post(&self, path: &str, auth: Auth<'_>, body: Value) -> Response {
        self.request(Method::POST, path, auth, Some(body)).await
    }

    /// Creates an API key; returns (id, plain_key).
    pub async fn create_api_key(
        &self,
        scopes: &[&str],
        rate_limit: Option<i64>,
    ) -> (String, String) {
        let mut body = json!({"client_name": "SafeShop", "scopes": scopes});
        if let Some(r) = rate_limit {
            body["rate_limit_per_day"] = json!(r);
        }
        let res = self.post("/sms/admin/api-keys", Auth::Operator, body).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: Value = res.json().await.unwrap();
        (
            body["id"].as_str().unwrap().to_owned(),
            body["plain_key"].as_str().unwrap().to_owned(),
        )
    }

    /// Registers an agent; returns (agent_id, agent_token).
    pub async fn register_agent(&self, device_id: &str) -> (String, String) {
        let res = self
            .post(
                "/sms/agent/register",
                Auth::None,
                json!({"device_id": device_id, "label": device_id}),
            )
            .await;
        assert!(res.status().is_success(), "register {}", res.status());
        let body: Value = res.json().await.unwrap();
        (
            body["agent_id"].as_str().unwrap().to_owned(),
            body["agent_token"].as_str().unwrap().to_owned(),
        )
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let db = self.db.database.name().to_owned();
        let prefix = self.config.amqp.prefix.clone();
        // Clean up on a thread of its own: Drop cannot await.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(cleanup(db, prefix));
        })
        .join();
    }
}

/// Drops the test database and the AMQP objects under the test prefix.
pub async fn cleanup(db: String, prefix: String) {
    if let Ok(client) = mongodb::Client::with_uri_str(mongo_uri()).await {
        let _ = client.database(&db).drop().await;
    }
    if let Ok(conn) =
        lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await
    {
        if let Ok(ch) = conn.create_channel().await {
            let t = sms_shared::amqp::Topology::new(&prefix);
            for q in t.queues() {
                let _ = ch.queue_delete(q, Default::default()).await;
            }
            for e in t.exchanges() {
                let _ = ch.exchange_delete(e, Default::default()).await;
            }
        }
        let _ = conn.close(200, "done").await;
    }
}

/// How a test request authenticates.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    None,
    Operator,
    Bearer(&'a str),
    ApiKey(&'a str),
}

/// Asserts the contract's error shape and returns the body.
pub async fn assert_error(res: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(res.status(), status, "status");
    let body: Value = res.json().await.expect("JSON error body");
    assert_eq!(body["code"], code, "code in {body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "detail in {body}"
    );
    body
}

/// Mints an HS256 token with arbitrary claims and secret.
pub fn sign(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub fn minutes_from_now(m: i64) -> i64 {
    chrono::Utc::now().timestamp() + m * 60
}

/// A dispatcher running in this process against the app's database and queue.
pub struct DispatcherHandle {
    pub metrics: sms_shared::metrics::Metrics,
    stop: tokio_util::sync::CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl DispatcherHandle {
    /// Stops consuming, settles what it holds, and waits.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for DispatcherHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TestApp {
    pub fn spawn_dispatcher(&self) -> DispatcherHandle {
        let metrics = sms_shared::metrics::Metrics::new();
        let dispatcher = sms_dispatcher::Dispatcher::new(
            self.db.clone(),
            metrics.clone(),
            self.config.rules.anti_dup_window,
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(sms_dispatcher::run(
            self.config.amqp.clone(),
            32,
            dispatcher,
            stop.clone(),
        ));
        DispatcherHandle {
            metrics,
            stop,
            task: Some(task),
        }
    }

    /// Creates and approves a template; returns its id.
    pub async fn approved_template(&self, name: &str, content: &str) -> String {
        let res = self
            .post(
                "/sms/templates",
                Auth::Operator,
                json!({"name": name, "content": content}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let id = res.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let res = self
            .post(
                &format!("/sms/templates/{id}/approve"),
                Auth::Operator,
                json!({}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        id
    }

    /// A ready sender: an API key with both scopes, an approved `Ma OTP {CODE}` template and an agent.
    pub async fn sender(&self) -> Sender {
        let (key_id, key) = self.create_api_key(&["sms:send", "sms:read"], None).await;
        let template_id = self
            .approved_template(&format!("otp-{}", unique()), "Ma OTP {CODE}")
            .await;
        let (agent_id, agent_token) = self.register_agent(&format!("agent-{}", unique())).await;
        Sender {
            key_id,
            key,
            template_id,
            agent_id,
            agent_token,
        }
    }

    /// Submits one request with `recipients` as `(to, CODE)` pairs.
    pub async fn submit(&self, s: &Sender, recipients: &[(&str, &str)]) -> Response {
        let messages: Vec<Value> = recipients
            .iter()
            .map(|(to, code)| json!({"to": to, "variables": {"CODE": code}}))
            .collect();
        self.post(
            "/sms/requests",
            Auth::ApiKey(&s.key),
            json!({"template_id": s.template_id, "agent_id": s.agent_id, "messages": messages}),
        )
        .await
    }

    /// Counts documents of a collection matching `filter`.
    pub async fn count(&self, collection: &str, filter: mongodb::bson::Document) -> u64 {
        self.db
            .database
            .collection::<mongodb::bson::Document>(collection)
            .count_documents(filter)
            .await
            .unwrap()
    }
}

/// What a test needs to send: key, template and agent.
pub struct Sender {
    pub key_id: String,
    pub key: String,
    pub template_id: String,
    pub agent_id: String,
    pub agent_token: String,
}

/// Polls `check` until it returns true or `secs` pass; returns whether it became true.
pub async fn eventually<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// An id the API handed out as hex.
pub fn oid(hex: &str) -> mongodb::bson::oid::ObjectId {
    mongodb::bson::oid::ObjectId::parse_str(hex).unwrap()
}

/// The value of a metric sample (`name` may carry labels) on `/metrics`, 0 when absent.
pub async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app.get("/metrics", Auth::None).await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `n` distinct valid Vietnamese mobile numbers in national form.
pub fn numbers(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("09{:08}", 10_000_000 + i)).collect()
}

/// The first `limit` items of a list, as the API asks for them.
pub fn first_page(limit: u64) -> sms_shared::db::paging::PageRequest {
    sms_shared::db::paging::PageRequest {
        limit,
        skip: 0,
        after: None,
        total_lookahead: sms_shared::db::paging::TOTAL_LOOKAHEAD,
    }
}

/// Dates every message's publication ten minutes back, as if the broker had confirmed their
/// events long ago (the restage republishes those still unstaged).
pub async fn confirmed_long_ago(app: &TestApp) {
    let long_ago = mongodb::bson::DateTime::from_millis(
        mongodb::bson::DateTime::now().timestamp_millis() - 600_000,
    );
    app.db
        .messages
        .collection()
        .update_many(
            mongodb::bson::doc! {},
            mongodb::bson::doc! {"$set": {"published_at": long_ago}},
        )
        .await
        .unwrap();
}

/// How many messages a dispatcher has staged so far.
pub async fn staged_count(app: &TestApp) -> u64 {
    app.count("sms_messages", mongodb::bson::doc! {"staged": true})
        .await
}
