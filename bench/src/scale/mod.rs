//! `sms-bench scale`: how the reads of a deployment hold up as its history grows.
//!
//! One run loads `--messages` message documents straight into the deployment's database —
//! built with the service's own constructors, so they are shaped exactly as the API and the
//! dispatchers leave them — rebuilds the report counters from them as `sms-api recount-stats`
//! does, and then times the reads a phone, a client and an operator make, each next to what the
//! database itself takes for the same `find` (see [`calls`]). Owner, agents and template are
//! created through the API first, as `sms-bench` does, so ownership is real.

use std::path::PathBuf;

use anyhow::{ensure, Context};
use clap::Args;
use mongodb::bson::oid::ObjectId;
use secrecy::SecretString;
use sms_shared::auth::JwtKeys;
use sms_shared::config::JwtConfig;
use sms_shared::db::Db;
use sms_testkit::Api;

pub mod calls;
pub mod load;
pub mod plans;
pub mod table;

pub use table::ScaleReport;

/// Options of `sms-bench scale`.
#[derive(Debug, Clone, Args)]
pub struct ScaleArgs {
    /// Base URL of the API, e.g. http://127.0.0.1:8000 (or .../sms).
    #[arg(long, env = "SMS_BENCH_API")]
    pub api: String,
    /// MongoDB connection string of the deployment's database.
    #[arg(long, env = "MONGO_URI")]
    pub mongo_uri: String,
    /// The deployment's database name (MONGO_DB); it should hold no other messages.
    #[arg(long, env = "MONGO_DB")]
    pub mongo_db: String,
    /// The API's JWT_SECRET, to mint an operator token.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
    /// `iss` claim of the operator token, when the API sets JWT_ISSUER.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// `aud` claim of the operator token, when the API sets JWT_AUDIENCE.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Message documents to load (history plus the live ones).
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: usize,
    /// Agents the messages are spread over.
    #[arg(long, default_value_t = 20)]
    pub agents: usize,
    /// Days of history, ending a few minutes ago.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// Messages per request.
    #[arg(long, default_value_t = 1_000)]
    pub request_size: usize,
    /// Live messages per agent: staged, `PENDING`, with their jobs, for the polls to lease.
    #[arg(long, default_value_t = 30)]
    pub live_per_agent: usize,
    /// Jobs each timed poll asks for.
    #[arg(long, default_value_t = 10)]
    pub poll_limit: usize,
    /// Timed repetitions of each call.
    #[arg(long, default_value_t = 15)]
    pub repeats: usize,
    /// Untimed calls before the timed ones.
    #[arg(long, default_value_t = 2)]
    pub warmups: usize,
    /// Where to write the figures as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Who the loaded history belongs to, created through the API.
pub struct Owner {
    /// The plain API key, for the client's calls.
    pub api_key: String,
    pub api_key_id: ObjectId,
    pub client_name: String,
    pub template_id: ObjectId,
    /// `(agent_id, agent_token)`.
    pub agents: Vec<(ObjectId, String)>,
}

/// Loads the history, recounts the counters and times the calls.
pub async fn run(args: &ScaleArgs) -> anyhow::Result<ScaleReport> {
    ensure!(args.messages > 0, "--messages must be at least 1");
    ensure!(args.agents > 0, "--agents must be at least 1");
    ensure!(args.request_size > 0, "--request-size must be at least 1");
    ensure!(args.repeats > 0, "--repeats must be at least 1");
    ensure!(
        args.agents * args.live_per_agent < args.messages,
        "--messages must exceed the live messages (--agents × --live-per-agent)"
    );
    ensure!(
        (1..=100).contains(&args.poll_limit),
        "--poll-limit must be between 1 and 100"
    );
    let api = Api::new(&args.api)?;
    let client = mongodb::Client::with_uri_str(&args.mongo_uri)
        .await
        .context("connecting to MongoDB")?;
    let db = Db::new(client.database(&args.mongo_db));
    let jwt = operator_token(args)?;
    let owner = set_up(&api, &db, &jwt, args).await?;

    let mut report = ScaleReport::new(args);
    report.load = load::load(&db, &owner, args).await?;
    report.summary_total = calls::summary_total(&api, &jwt).await?;
    ensure!(
        report.summary_total == args.messages as i64,
        "the all-time summary counts {} messages, {} were loaded",
        report.summary_total,
        args.messages
    );
    report.measured_at = sms_shared::time::now().to_rfc3339();
    report.calls = calls::measure(&api, &db, &jwt, &owner, &report.load, args).await?;
    if let Some(path) = &args.json {
        report.write_json(path)?;
    }
    Ok(report)
}

/// An operator token, valid for a day, signed with `--jwt-secret`.
fn operator_token(args: &ScaleArgs) -> anyhow::Result<String> {
    let keys = JwtKeys::new(&JwtConfig {
        secret: SecretString::from(args.jwt_secret.clone()),
        access_minutes: 24 * 60,
        issuer: args.jwt_issuer.clone(),
        audience: args.jwt_audience.clone(),
    });
    keys.issue_for("sms-bench", chrono::Duration::hours(24))
}

/// The API key, approved template and agents, made through the API as `sms-bench` makes them.
async fn set_up(api: &Api, db: &Db, jwt: &str, args: &ScaleArgs) -> anyhow::Result<Owner> {
    let run = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
    let client_name = format!("sms-bench scale {run}");
    let api_key = api.create_api_key(jwt, &client_name, 1_000_000).await?;
    let template = api
        .approved_template(jwt, &format!("scale-otp-{run}"), crate::workload::TEMPLATE)
        .await?;
    let secret = api.registration_secret(jwt).await?;
    let mut agents = Vec::with_capacity(args.agents);
    for i in 1..=args.agents {
        let device = format!("scale-{run}-{i}");
        let agent = api
            .register_agent(&device, &device, secret.as_deref())
            .await?;
        agents.push((ObjectId::parse_str(&agent.agent_id)?, agent.agent_token));
    }
    let key = db
        .api_keys
        .list()
        .await?
        .into_iter()
        .find(|k| k.client_name == client_name)
        .context("the API key just created is not in the database")?;
    Ok(Owner {
        api_key,
        api_key_id: key.id,
        client_name,
        template_id: ObjectId::parse_str(&template)?,
        agents,
    })
}
