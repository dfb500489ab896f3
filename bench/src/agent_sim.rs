//! `sms-bench agent-sim`: simulated phones against any server, for manual and load testing.
//! They register (or use given tokens), heartbeat every 30 s, lease, "send" with a delay and an
//! optional failure rate, and report `SENDING`, `SENT`/`FAILED` and `DELIVERED` until stopped.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::ensure;
use sms_testkit::{Api, Behaviour, Ledger, Phone};
use tokio_util::sync::CancellationToken;

use crate::cli::SimArgs;

/// How often a phone heartbeats.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(30);
/// How often totals are logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Totals of a simulator run.
#[derive(Debug, Clone, Default)]
pub struct SimSummary {
    pub agents: usize,
    pub seconds: f64,
    pub leased: u64,
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    pub rejected_reports: u64,
    pub duplicated: usize,
}

impl std::fmt::Display for SimSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} agent(s), {:.0} s: leased {}, sent {}, delivered {}, failed {}, rejected reports {}, duplicated {}",
            self.agents,
            self.seconds,
            self.leased,
            self.sent,
            self.delivered,
            self.failed,
            self.rejected_reports,
            self.duplicated
        )
    }
}

/// Runs the phones until `stop` is cancelled or `--duration-secs` pass.
pub async fn run(args: &SimArgs, stop: CancellationToken) -> anyhow::Result<SimSummary> {
    ensure!(
        (1..=100).contains(&args.poll_limit),
        "--poll-limit must be between 1 and 100"
    );
    let api = Api::new(&args.api)?;
    let tokens: Vec<(String, String)> = if args.tokens.is_empty() {
        ensure!(args.agents > 0, "--agents must be at least 1");
        let mut out = Vec::with_capacity(args.agents);
        for i in 1..=args.agents {
            let device = format!("{}-{i}", args.device_prefix);
            let agent = api
                .register_agent(&device, &device, args.registration_secret.as_deref())
                .await?;
            tracing::info!(%device, agent_id = %agent.agent_id, "registered");
            out.push((device, agent.agent_token));
        }
        out
    } else {
        args.tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("token-{}", i + 1), t.clone()))
            .collect()
    };
    let behaviour = Behaviour {
        report_sending: true,
        send_delay: Duration::from_millis(args.send_delay_ms),
        failure_rate: args.failure_rate,
        heartbeat_every: Some(HEARTBEAT_EVERY),
        ..Behaviour::prompt(args.poll_limit)
    };
    if args.duration_secs > 0 {
        let stop = stop.clone();
        let after = Duration::from_secs(args.duration_secs);
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(after) => stop.cancel(),
            }
        });
    }
    let ledger = Ledger::new();
    let started = Instant::now();
    let logger = tokio::spawn(log_totals(ledger.clone(), stop.clone()));
    let mut phones = tokio::task::JoinSet::new();
    for (label, token) in tokens {
        // Each phone is its own agent: the label stands for the agent in the ledger.
        phones.spawn(Phone::new(api.clone(), &label, &label, &token).run(
            behaviour.clone(),
            ledger.clone(),
            None,
            stop.clone(),
            |_| {},
        ));
    }
    let agents = phones.len();
    while let Some(r) = phones.join_next().await {
        if let Ok(outcome) = r {
            if let Some(why) = outcome.stopped_by {
                tracing::warn!("an agent stopped: {why}");
            }
        }
    }
    stop.cancel();
    let _ = logger.await;
    Ok(summary(&ledger, agents, started.elapsed()))
}

fn summary(ledger: &Ledger, agents: usize, elapsed: Duration) -> SimSummary {
    SimSummary {
        agents,
        seconds: elapsed.as_secs_f64(),
        leased: ledger.leased.load(Ordering::Relaxed),
        sent: ledger.sent.load(Ordering::Relaxed),
        delivered: ledger.delivered.load(Ordering::Relaxed),
        failed: ledger.failed.load(Ordering::Relaxed),
        rejected_reports: ledger.report_errors.load(Ordering::Relaxed),
        duplicated: ledger.duplicated().len(),
    }
}

async fn log_totals(ledger: Arc<Ledger>, stop: CancellationToken) {
    let started = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(LOG_EVERY) => {}
        }
        let s = summary(&ledger, 0, started.elapsed());
        tracing::info!(
            leased = s.leased,
            sent = s.sent,
            delivered = s.delivered,
            failed = s.failed,
            rejected_reports = s.rejected_reports,
            "totals"
        );
    }
}
