//! What the scenarios share: a scenario's stack with its operator, fixture and phones
//! ([`Run`]), waiting for a condition, and a channel to the broker.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mongodb::bson::Document;
use secrecy::SecretString;
use sms_shared::auth::JwtKeys;
use sms_shared::config::JwtConfig;
use sms_testkit::client::is_unreachable;
use sms_testkit::recipients::{otp_request, recipients};
use sms_testkit::{Api, Behaviour, Ledger, Phone};

use super::Ctx;
use crate::count::{self, Tally};
use crate::stack::{Stack, JWT_SECRET};

/// How long a request to the API may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A client of the API at `url`, with the scenarios' request timeout.
pub fn client(url: &str) -> anyhow::Result<Api> {
    Api::with_timeout(url, REQUEST_TIMEOUT)
}

/// Keys that sign (and verify) operator tokens with `secret`.
pub fn keys(secret: &str) -> JwtKeys {
    JwtKeys::new(&JwtConfig {
        secret: SecretString::from(secret.to_owned()),
        access_minutes: 60,
        issuer: None,
        audience: None,
    })
}

/// An operator token signed with `secret`, valid for an hour.
pub fn operator_token(secret: &str) -> anyhow::Result<String> {
    keys(secret).issue_for("fault-drill", chrono::Duration::hours(1))
}

/// How the scenarios' phones behave: up to 100 jobs a poll, each sent at once and reported
/// `SENT` then `DELIVERED`; a report that fails is not repeated.
pub fn drill_phone() -> Behaviour {
    Behaviour {
        report_attempts: 1,
        ..Behaviour::prompt(100)
    }
}

/// A key, an approved template and agents, ready to send.
#[derive(Clone, Debug)]
pub struct Setup {
    pub key: String,
    pub template_id: String,
    /// `(agent_id, agent_token)` per registered phone.
    pub agents: Vec<(String, String)>,
}

impl Setup {
    /// Key, approved template (`Ma OTP {CODE}`) and `agents` registered phones.
    pub async fn create(api: &Api, operator: &str, agents: usize) -> anyhow::Result<Self> {
        let key = api.create_api_key(operator, "drill", 1_000_000).await?;
        let template = format!("drill-{}", uuid::Uuid::new_v4());
        let template_id = api
            .approved_template(operator, &template, "Ma OTP {CODE}")
            .await?;
        let mut list = Vec::new();
        for i in 0..agents {
            let device = format!("drill-phone-{i}-{}", uuid::Uuid::new_v4());
            let agent = api
                .register_agent(&device, &format!("phone {i}"), None)
                .await?;
            list.push((agent.agent_id, agent.agent_token));
        }
        Ok(Self {
            key,
            template_id,
            agents: list,
        })
    }

    /// Submits one request through agent number `agent`; `Ok(Some((request_id, total)))` on
    /// 202, `Ok(None)` when the API went away.
    pub async fn submit(
        &self,
        api: &Api,
        agent: usize,
        recipients: &[(String, String)],
    ) -> anyhow::Result<Option<(String, usize)>> {
        let body = otp_request(
            &self.template_id,
            &self.agents[agent].0,
            recipients.iter().cloned(),
        );
        match api.submit(&self.key, &body).await {
            Ok(accepted) => Ok(Some((accepted.request_id, recipients.len()))),
            Err(e) if is_unreachable(&e) => Ok(None),
            Err(e) => Err(e.context("submit")),
        }
    }
}

/// One scenario's stack, with what the scenario accepted and what its phones saw.
pub struct Run {
    pub stack: Stack,
    pub api: Api,
    pub operator: String,
    pub db: mongodb::Database,
    pub setup: Setup,
    pub ledger: Arc<Ledger>,
    /// `(request_id, total)` of every accepted request.
    pub accepted: Vec<(String, usize)>,
}

impl Run {
    /// Starts the API (with `overrides` and an optional crash point) and sets up `agents` phones.
    pub async fn start(
        ctx: &Ctx,
        overrides: &[(&str, &str)],
        api_fault: Option<&str>,
        agents: usize,
    ) -> anyhow::Result<Self> {
        let mut stack = Stack::new(
            ctx.bins.clone(),
            ctx.mongo.uri(),
            ctx.amqp_url.clone(),
            ctx.logs.clone(),
            overrides,
        );
        stack.start_api(api_fault).await?;
        let api = client(&stack.api_url())?;
        let operator = operator_token(JWT_SECRET)?;
        let setup = Setup::create(&api, &operator, agents).await?;
        let db = mongodb::Client::with_uri_str(&stack.mongo_uri)
            .await?
            .database(&stack.db_name);
        Ok(Self {
            stack,
            api,
            operator,
            db,
            setup,
            ledger: Ledger::new(),
            accepted: Vec::new(),
        })
    }

    /// Submits `n` recipients from `offset` on through agent number `agent`.
    pub async fn submit(&mut self, agent: usize, offset: usize, n: usize) -> anyhow::Result<()> {
        let r = self
            .setup
            .submit(&self.api, agent, &recipients(offset, n))
            .await?
            .context("API unreachable")?;
        self.accepted.push(r);
        Ok(())
    }

    /// Messages of the scenario's database matching `filter` (0 when the count fails).
    pub async fn count(&self, filter: Document) -> u64 {
        self.db
            .collection::<Document>("sms_messages")
            .count_documents(filter)
            .await
            .unwrap_or(0)
    }

    /// Phones drain every job until all accepted messages are final (bounded), then count.
    pub async fn settle(mut self, limit_secs: u64) -> anyhow::Result<Tally> {
        let db = self.db.clone();
        let accepted = self.accepted.clone();
        drain(
            &self.api,
            &self.ledger,
            &self.setup.agents,
            Duration::from_secs(limit_secs),
            || {
                let (db, accepted) = (db.clone(), accepted.clone());
                async move { count::settled(&db, &accepted).await }
            },
        )
        .await;
        let duplicates = self.ledger.duplicates();
        for d in &duplicates {
            eprintln!("{}", d.why);
        }
        let tally = count::tally(&self.db, &self.accepted, duplicates.len()).await;
        self.stack.cleanup().await;
        tally
    }
}

/// Runs every phone until `done()` says so or `limit` passes. Errors (API restarting) are retried.
async fn drain<F, Fut>(
    api: &Api,
    ledger: &Ledger,
    agents: &[(String, String)],
    limit: Duration,
    mut done: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    // Two app instances per phone poll at once, as a restarted app might.
    let phones: Vec<Phone> = agents
        .iter()
        .flat_map(|a| [a, a])
        .enumerate()
        .map(|(i, (agent, token))| {
            Phone::new(api.clone(), agent, &format!("{agent}#{}", i % 2), token)
        })
        .collect();
    let behaviour = drill_phone();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let polls = phones
            .iter()
            .map(|phone| async { phone.poll_once(&behaviour, ledger).await.unwrap_or(0) });
        let got: usize = futures::future::join_all(polls).await.into_iter().sum();
        if got == 0 {
            if done().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if tokio::time::Instant::now() > deadline {
            return done().await;
        }
    }
}

/// Waits up to `secs` for `check` to hold; returns whether it did.
pub async fn eventually<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check().await
}

/// Whether the API behind `api` consumes wakes and RabbitMQ reports at least `dispatchers`
/// dispatchers on both message queues (bounded).
pub async fn ready(api: &Api, dispatchers: u64) -> bool {
    eventually(90, || async {
        let health = api.text("/health").await.unwrap_or_default();
        let consuming = serde_json::from_str::<serde_json::Value>(&health)
            .ok()
            .and_then(|h| h["dispatchers"].as_u64())
            .unwrap_or(0);
        metric(api, "sms_wake_subscribed").await == Some(1.0) && consuming >= dispatchers
    })
    .await
}

/// Waits until `n` long polls wait in the API behind `api`.
pub async fn wait_for_polls(api: &Api, n: usize) -> anyhow::Result<()> {
    let waiting = eventually(15, || async {
        metric(api, "sms_agent_long_polls").await == Some(n as f64)
    })
    .await;
    anyhow::ensure!(waiting, "{n} long polls are not waiting");
    Ok(())
}

/// The value of an unlabelled metric of the API behind `api`.
pub async fn metric(api: &Api, name: &str) -> Option<f64> {
    let text = api.text("/metrics").await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A connection and channel to the machine's RabbitMQ.
pub async fn amqp_channel(url: &str) -> anyhow::Result<(lapin::Connection, lapin::Channel)> {
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    Ok((conn, ch))
}
