//! One benchmark run against a live deployment.
//!
//! Phases, in order: set-up through the API (API key, approved template, agents, the OTP agent);
//! the raw database yardsticks (`raw`, `raw_pipeline`); OTPs with nothing else going on
//! (`otp`); submission of every message by concurrent API clients; waiting until the
//! dispatchers staged them all; simulated agents leasing and reporting until every message is
//! final (agents start once staging is complete, so that each of these phases is timed on its
//! own); the pipeline under load with OTPs beside it (`pipeline`): a fresh N messages, agents
//! long-polling from the start; then the database is checked for lost and duplicated messages
//! of all phases (`verify`).

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use futures::StreamExt;
use mongodb::bson::{doc, oid::ObjectId, Document};
use mongodb::Collection;
use secrecy::SecretString;
use sms_shared::auth::JwtKeys;
use sms_shared::config::JwtConfig;
use sms_testkit::{Api, Behaviour, Ledger};

use crate::cli::{required, BenchArgs};
use crate::crew::Crew;
use crate::otp::{self, OtpAgent, OtpTarget};
use crate::otp_steps;
use crate::progress::Progress;
use crate::report::{percentile, rate, BenchReport};
use crate::workload::{self, RequestPlan};
use crate::{db_top, pipeline, raw, raw_pipeline, verify};

/// Most jobs the API hands out per poll.
const MAX_POLL_LIMIT: usize = 100;
/// Shortest pause between two staging counts.
const COUNT_EVERY: Duration = Duration::from_millis(250);

/// What the set-up created through the API.
pub struct Fixture {
    pub api_key: String,
    pub template_id: String,
    /// `(agent_id, agent_token)` per simulated agent.
    pub agents: Vec<(ObjectId, String)>,
    /// The agent the OTPs are pinned to.
    pub otp_agent: (ObjectId, String),
}

/// Runs the benchmark and returns its figures (also written to `--json` when given).
pub async fn run(args: &BenchArgs, progress: &Progress) -> anyhow::Result<BenchReport> {
    ensure!(args.messages > 0, "--messages must be at least 1");
    ensure!(args.agents > 0, "--agents must be at least 1");
    ensure!(args.clients > 0, "--clients must be at least 1");
    ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    ensure!(
        (1..=MAX_POLL_LIMIT).contains(&args.poll_limit),
        "--poll-limit must be between 1 and {MAX_POLL_LIMIT}"
    );
    let api = Api::new(required(&args.api, "--api")?)?;
    let mongo = mongodb::Client::with_uri_str(required(&args.mongo_uri, "--mongo-uri")?)
        .await
        .context("connecting to MongoDB")?;
    let db = mongo.database(required(&args.mongo_db, "--mongo-db")?);
    let jwt = operator_token(args)?;
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
    let mut report = BenchReport {
        messages: args.messages as u64,
        agents: args.agents as u64,
        clients: args.clients as u64,
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ..Default::default()
    };

    let fixture = set_up(&api, &jwt, &run_id, args).await?;
    let agent_ids: Vec<ObjectId> = fixture.agents.iter().map(|(id, _)| *id).collect();

    // The requests of the run; the raw insert uses their sizes as its batches.
    let plans = workload::plan(args.messages, args.agents, args.batch_size);
    let batches: Vec<usize> = plans.iter().map(|p| p.messages.len()).collect();
    let figures = raw::run(&db, &run_id, &batches, args.clients, &agent_ids, progress).await?;
    report.raw_indexes = figures.indexes as u64;
    report.raw_leased = figures.leased;
    report.raw_insert_seconds = figures.insert.as_secs_f64();
    report.raw_find_and_modify_seconds = figures.find_and_modify.as_secs_f64();
    report.raw_insert_msgs_per_s = rate(report.messages, report.raw_insert_seconds);
    report.raw_find_and_modify_per_s = rate(figures.leased, report.raw_find_and_modify_seconds);
    let piped = raw_pipeline::run(
        &db,
        &run_id,
        &plans,
        args.clients,
        args.poll_limit,
        &agent_ids,
        progress,
    )
    .await?;
    report.raw_pipeline_seconds = piped.elapsed.as_secs_f64();
    report.raw_pipeline_msgs_per_s = rate(piped.messages, report.raw_pipeline_seconds);
    report.raw_pipeline_delivered = piped.delivered;
    report.raw_pipeline_indexes = [piped.indexes.0, piped.indexes.1, piped.indexes.2];

    // OTPs with nothing else going on, to an agent that long-polls until the end of the run.
    let otp_target = OtpTarget {
        api: api.clone(),
        api_key: fixture.api_key.clone(),
        template_id: fixture.template_id.clone(),
        agent_id: fixture.otp_agent.0.to_hex(),
        token: fixture.otp_agent.1.clone(),
        run_id: run_id.clone(),
    };
    let otp_ledger = Ledger::new();
    let otp_agent = OtpAgent::start(&otp_target, otp_ledger.clone()).await;
    let idle_for = otp::EVERY * otp::IDLE_COUNT as u32 - otp::EVERY / 2;
    let idle = otp::measure(
        &otp_target,
        &otp_agent,
        0,
        tokio::time::sleep(idle_for),
        Duration::from_secs(30),
    )
    .await?;
    report.set_otp_idle(&idle);

    let messages: Collection<Document> = db.collection("sms_messages");
    let of_run = doc! {"agent_id": {"$in": &agent_ids}};

    // Submission, with staging counted from the first request on.
    report.requests = plans.len() as u64;
    let started = Instant::now();
    let submitted = submit(&api, &fixture, &run_id, &plans, args.clients, progress).await?;
    report.submit_seconds = submitted.elapsed.as_secs_f64();
    report.accepted = submitted.accepted;
    report.submit_msgs_per_s = rate(submitted.accepted, report.submit_seconds);
    report.submit_p50_ms = percentile(&submitted.latencies_ms, 0.50);
    report.submit_p99_ms = percentile(&submitted.latencies_ms, 0.99);
    report.submit_max_ms = submitted.latencies_ms.iter().copied().fold(0.0, f64::max);

    let stage_bar = progress.bar("staged", submitted.accepted);
    let staged = wait_staged(
        &messages,
        of_run.clone(),
        submitted.accepted,
        started,
        Duration::from_secs(args.timeout_secs),
        &stage_bar,
    )
    .await?;
    stage_bar.finish();
    report.stage_seconds = staged.elapsed.as_secs_f64();
    report.stage_msgs_per_s = rate(staged.staged, report.stage_seconds);
    if !staged.complete {
        report.timed_out = Some(format!(
            "staging: {} of {} staged after {} s",
            staged.staged, args.messages, args.timeout_secs
        ));
    }

    // Leasing and reporting.
    let targets = verify::agent_targets(&messages, &plans, &agent_ids).await?;
    let lease_bar = progress.bar("leased + reported", targets.iter().sum());
    let behaviour = Behaviour {
        max_idle_wait: Some(Duration::from_millis(200)),
        ..Behaviour::prompt(args.poll_limit)
    };
    let label = |n| format!("bench-{run_id}-{n}");
    let mut crew = Crew::start(
        &api,
        &fixture.agents,
        &targets,
        &behaviour,
        label,
        &lease_bar,
    );
    if !crew.finish(Duration::from_secs(args.timeout_secs)).await? {
        report.timed_out = Some(format!(
            "delivery: {} of {} final after {} s",
            crew.ledger.finished(),
            targets.iter().sum::<u64>(),
            args.timeout_secs
        ));
    }
    lease_bar.finish();
    let ledger = crew.ledger;

    let finished = ledger.finished();
    if let Some((first, last)) = ledger.lease_window() {
        report.lease_seconds = last.saturating_duration_since(first).as_secs_f64();
        report.lease_jobs_per_s = rate(finished, report.lease_seconds);
        report.e2e_seconds = last.saturating_duration_since(started).as_secs_f64();
    }
    report.polls = ledger.polls.load(std::sync::atomic::Ordering::Relaxed);
    report.empty_polls = ledger
        .empty_polls
        .load(std::sync::atomic::Ordering::Relaxed);
    report.poll_errors = ledger
        .poll_errors
        .load(std::sync::atomic::Ordering::Relaxed);
    report.report_errors = ledger
        .report_errors
        .load(std::sync::atomic::Ordering::Relaxed);
    report.report_rejections = ledger.rejections();

    // The pipeline under load, with OTPs while its bulk is submitted and staged.
    let bulk = pipeline::shifted(&plans, args.messages);
    let busy_since = sms_shared::time::bson_now();
    let top_before = db_top::read(&mongo).await;
    let piped = pipeline::run(
        &api,
        &fixture,
        &run_id,
        &bulk,
        args,
        &messages,
        of_run.clone(),
        &otp_target,
        &otp_agent,
        progress,
    )
    .await?;
    if let (Some(before), Some(after)) = (top_before, db_top::read(&mongo).await) {
        report.pipeline_db_top = db_top::difference(&before, &after, db.name());
    }
    otp_agent.stop().await?;
    report.set_pipeline(&piped);
    report.set_otp_busy(&piped.otp);
    let steps = otp_steps::read(
        &messages,
        fixture.otp_agent.0,
        busy_since,
        &piped.otp.wall_ms,
    )
    .await?;
    report.set_otp_steps(&steps);

    // What the database says about every message of the run.
    let mut everyone = agent_ids.clone();
    everyone.push(fixture.otp_agent.0);
    let accepted = report.accepted + piped.accepted + idle.accepted + piped.otp.accepted;
    let ledgers = [&*ledger, &*piped.ledger, &*otp_ledger];
    let all = doc! {"agent_id": {"$in": &everyone}};
    verify::check(&messages, all, accepted, &ledgers, &mut report).await?;

    report.compute_ratios();
    if let Some(path) = &args.json {
        report.write_json(path)?;
    }
    Ok(report)
}

/// An operator token for `sms-bench`, valid for a day, signed with `--jwt-secret` and carrying
/// `--jwt-issuer` / `--jwt-audience` when given.
pub fn operator_token(args: &BenchArgs) -> anyhow::Result<String> {
    let keys = JwtKeys::new(&JwtConfig {
        secret: SecretString::from(required(&args.jwt_secret, "--jwt-secret")?.to_owned()),
        access_minutes: 24 * 60,
        issuer: args.jwt_issuer.clone(),
        audience: args.jwt_audience.clone(),
    });
    keys.issue_for("sms-bench", chrono::Duration::hours(24))
}

async fn set_up(api: &Api, jwt: &str, run_id: &str, args: &BenchArgs) -> anyhow::Result<Fixture> {
    let quota = (args.messages as i64 * 2).clamp(1_000_000, 1_000_000_000);
    let api_key = api
        .create_api_key(jwt, &format!("sms-bench {run_id}"), quota)
        .await?;
    let template_id = api
        .approved_template(jwt, &format!("bench-otp-{run_id}"), workload::TEMPLATE)
        .await?;
    let secret = api.registration_secret(jwt).await?;
    let mut agents = Vec::with_capacity(args.agents);
    for i in 1..=args.agents {
        let device = format!("bench-{run_id}-{i}");
        let agent = api
            .register_agent(&device, &device, secret.as_deref())
            .await?;
        let id = ObjectId::parse_str(&agent.agent_id)
            .with_context(|| format!("agent id {}", agent.agent_id))?;
        agents.push((id, agent.agent_token));
    }
    let device = format!("bench-{run_id}-otp");
    let agent = api
        .register_agent(&device, &device, secret.as_deref())
        .await?;
    let id = ObjectId::parse_str(&agent.agent_id)
        .with_context(|| format!("agent id {}", agent.agent_id))?;
    Ok(Fixture {
        api_key,
        template_id,
        agents,
        otp_agent: (id, agent.agent_token),
    })
}

pub struct Submitted {
    pub elapsed: Duration,
    pub accepted: u64,
    pub latencies_ms: Vec<f64>,
}

/// Sends every planned request, `clients` at a time.
pub async fn submit(
    api: &Api,
    fixture: &Fixture,
    run_id: &str,
    plans: &[RequestPlan],
    clients: usize,
    progress: &Progress,
) -> anyhow::Result<Submitted> {
    let bar = progress.bar(
        "submitted",
        plans.iter().map(|p| p.messages.len() as u64).sum(),
    );
    let started = Instant::now();
    let results: Vec<anyhow::Result<(u64, f64)>> = futures::stream::iter(plans)
        .map(|plan| {
            let agent_id = fixture.agents[plan.agent].0.to_hex();
            let body = workload::request_body(run_id, &fixture.template_id, &agent_id, plan);
            let bar = bar.clone();
            async move {
                let sent = Instant::now();
                let accepted = api
                    .submit(&fixture.api_key, &body)
                    .await
                    .with_context(|| format!("submitting {} messages", plan.messages.len()))?;
                let ms = sent.elapsed().as_secs_f64() * 1000.0;
                if accepted.total != plan.messages.len() {
                    bail!(
                        "request {} accepted {} of {} messages",
                        accepted.request_id,
                        accepted.total,
                        plan.messages.len()
                    );
                }
                bar.inc(accepted.total as u64);
                Ok((accepted.total as u64, ms))
            }
        })
        .buffer_unordered(clients)
        .collect()
        .await;
    let elapsed = started.elapsed();
    bar.finish();
    let mut accepted = 0;
    let mut latencies_ms = Vec::with_capacity(results.len());
    for r in results {
        let (n, ms) = r?;
        accepted += n;
        latencies_ms.push(ms);
    }
    Ok(Submitted {
        elapsed,
        accepted,
        latencies_ms,
    })
}

pub struct StageFigures {
    pub elapsed: Duration,
    pub staged: u64,
    pub complete: bool,
}

/// Waits until none of the run's `accepted` messages is still pending unstaged (each is staged
/// or canceled as a duplicate), or until `timeout` after `started` (the first submission).
///
/// Counting scans many documents, so it is spaced to keep the counting below about a tenth of
/// the database's time: the watcher must not slow down the staging it measures.
pub async fn wait_staged(
    messages: &Collection<Document>,
    of_run: Document,
    accepted: u64,
    started: Instant,
    timeout: Duration,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<StageFigures> {
    let mut unstaged = of_run;
    unstaged.insert("staged", false);
    unstaged.insert("status", "PENDING");
    loop {
        let asked = Instant::now();
        let left = messages.count_documents(unstaged.clone()).await?;
        let took = asked.elapsed();
        let done = accepted.saturating_sub(left);
        bar.set_position(done);
        if left == 0 || started.elapsed() > timeout {
            return Ok(StageFigures {
                elapsed: started.elapsed(),
                staged: done,
                complete: left == 0,
            });
        }
        tokio::time::sleep((took * 10).max(COUNT_EVERY)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_operator_token_passes_a_verifier_with_the_same_settings() {
        let mut args = crate::Cli::try_parse_from([
            "sms-bench",
            "--api",
            "a",
            "--mongo-uri",
            "m",
            "--mongo-db",
            "d",
            "--jwt-secret",
            "s3cret",
            "--jwt-issuer",
            "auth",
        ])
        .unwrap()
        .bench;
        let verifier = |issuer: &str| {
            JwtKeys::new(&JwtConfig {
                secret: SecretString::from("s3cret".to_owned()),
                access_minutes: 1,
                issuer: Some(issuer.into()),
                audience: None,
            })
        };
        let token = operator_token(&args).unwrap();
        let claims = verifier("auth").verify(&token).expect("valid token");
        assert_eq!(claims.operator_name(), "sms-bench");
        assert!(claims.exp > chrono::Utc::now().timestamp() + 23 * 3600);
        assert!(verifier("other").verify(&token).is_none());
        args.jwt_secret = None;
        assert!(operator_token(&args).is_err());
    }
}
