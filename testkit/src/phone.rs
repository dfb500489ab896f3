//! Simulated phones: each leases with `GET /agent/jobs/next`, "sends" what it leased and reports
//! `SENDING`, `SENT`/`FAILED` and `DELIVERED` in batches, like the Android agent does. Every job
//! received and every accepted `SENT` goes into the shared [`Ledger`].

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;

use crate::client::{self, Api, Job, Jobs, ReportItem};
use crate::ledger::Ledger;

/// How a simulated phone behaves.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Jobs asked for per poll.
    pub poll_limit: usize,
    /// Seconds each poll waits for a job when none is there (`wait`; 0: plain polls).
    pub wait_seconds: u64,
    /// Report `SENDING` before sending.
    pub report_sending: bool,
    /// Die right after reporting `SENDING`: never send, never report again.
    pub vanish_after_sending: bool,
    /// Time one message takes to send (messages of a poll are sent one after the other).
    pub send_delay: Duration,
    /// Share of messages whose sending fails.
    pub failure_rate: f64,
    /// Longest pause after an empty poll, whatever `retry_after_seconds` says (`None`: obey it).
    pub max_idle_wait: Option<Duration>,
    /// Heartbeat period (`None`: no heartbeats).
    pub heartbeat_every: Option<Duration>,
    /// Tries per report batch before giving it up (the same report again is a harmless no-op).
    pub report_attempts: u32,
}

impl Behaviour {
    /// A phone that asks for `poll_limit` jobs (plain polls), sends each at once and reports it
    /// `SENT` then `DELIVERED`; it obeys `retry_after_seconds`, sends no heartbeats and tries a
    /// report three times.
    pub fn prompt(poll_limit: usize) -> Self {
        Self {
            poll_limit,
            wait_seconds: 0,
            report_sending: false,
            vanish_after_sending: false,
            send_delay: Duration::ZERO,
            failure_rate: 0.0,
            max_idle_wait: None,
            heartbeat_every: None,
            report_attempts: 3,
        }
    }
}

/// One simulated phone: an app instance holding an agent's token.
#[derive(Clone)]
pub struct Phone {
    api: Api,
    /// The agent whose token this is; the ledger tells agents apart by it.
    pub agent: String,
    /// This app instance, in logs and in the ledger's findings.
    pub label: String,
    pub token: String,
}

/// Why a phone stopped, and what it made final.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub finished: u64,
    /// Why it stopped early, if it did.
    pub stopped_by: Option<String>,
}

impl Phone {
    /// Phone `label` of `agent`, holding its `token`.
    pub fn new(api: Api, agent: &str, label: &str, token: &str) -> Self {
        Self {
            api,
            agent: agent.to_owned(),
            label: label.to_owned(),
            token: token.to_owned(),
        }
    }

    /// Leases up to `limit` jobs and records them in `ledger`.
    pub async fn lease(&self, ledger: &Ledger, limit: usize) -> anyhow::Result<Jobs> {
        self.lease_waiting(ledger, limit, 0).await
    }

    /// Leases up to `limit` jobs, waiting up to `wait` seconds for one, and records them in
    /// `ledger`.
    pub async fn lease_waiting(
        &self,
        ledger: &Ledger,
        limit: usize,
        wait: u64,
    ) -> anyhow::Result<Jobs> {
        let asked = Instant::now();
        ledger.polls.fetch_add(1, Ordering::Relaxed);
        let jobs = match self.api.wait_for_jobs(&self.token, limit, wait).await {
            Ok(j) => j,
            Err(e) => {
                ledger.poll_errors.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        if jobs.jobs.is_empty() {
            ledger.empty_polls.fetch_add(1, Ordering::Relaxed);
        } else {
            ledger.mark_first_lease(asked);
            ledger
                .leased
                .fetch_add(jobs.jobs.len() as u64, Ordering::Relaxed);
            ledger.record(&self.agent, &self.label, &jobs.jobs);
        }
        Ok(jobs)
    }

    /// Leases once and handles what came; returns how many jobs it got.
    pub async fn poll_once(&self, behaviour: &Behaviour, ledger: &Ledger) -> anyhow::Result<usize> {
        let jobs = self
            .lease_waiting(ledger, behaviour.poll_limit, behaviour.wait_seconds)
            .await?;
        self.deliver(behaviour, ledger, &jobs.jobs).await;
        Ok(jobs.jobs.len())
    }

    /// Runs until it made `target` messages final, `stop` is cancelled, or its token is refused.
    /// `on_finished` is called with the number of messages each poll made final.
    pub async fn run(
        self,
        behaviour: Behaviour,
        ledger: Arc<Ledger>,
        target: Option<u64>,
        stop: CancellationToken,
        on_finished: impl Fn(u64) + Send + Sync,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        let mut next_heartbeat = Instant::now();
        loop {
            if stop.is_cancelled() || target.is_some_and(|t| outcome.finished >= t) {
                return outcome;
            }
            if let Some(period) = behaviour.heartbeat_every {
                if Instant::now() >= next_heartbeat {
                    match self.api.heartbeat(&self.token).await {
                        Ok(()) => {
                            ledger.heartbeats.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            tracing::warn!(agent = %self.label, error = %e, "heartbeat failed")
                        }
                    }
                    next_heartbeat = Instant::now() + period;
                }
            }
            let leased = self.lease_waiting(&ledger, behaviour.poll_limit, behaviour.wait_seconds);
            let jobs = match leased.await {
                Ok(j) => j,
                Err(e) => {
                    if client::has_status(&e, StatusCode::UNAUTHORIZED) {
                        tracing::error!(agent = %self.label, "token refused; this agent stops");
                        outcome.stopped_by = Some("token refused (401)".into());
                        return outcome;
                    }
                    tracing::warn!(agent = %self.label, error = %e, "poll failed");
                    pause(&stop, Duration::from_secs(2)).await;
                    continue;
                }
            };
            if jobs.jobs.is_empty() {
                let retry_after = jobs.retry_after_seconds.unwrap_or(5);
                if retry_after == 0 && behaviour.wait_seconds > 0 {
                    // A long poll that waited in vain: poll again at once.
                    continue;
                }
                let mut wait = Duration::from_secs(retry_after.max(1) as u64);
                if let Some(max) = behaviour.max_idle_wait {
                    wait = wait.min(max);
                }
                pause(&stop, wait).await;
                continue;
            }
            let done = self.deliver(&behaviour, &ledger, &jobs.jobs).await;
            outcome.finished += done;
            on_finished(done);
        }
    }

    /// Sends one poll's jobs and reports them; returns how many became final.
    async fn deliver(&self, behaviour: &Behaviour, ledger: &Ledger, jobs: &[Job]) -> u64 {
        if jobs.is_empty() {
            return 0;
        }
        let mut live: Vec<&Job> = jobs.iter().collect();
        if behaviour.report_sending || behaviour.vanish_after_sending {
            let items: Vec<ReportItem> =
                live.iter().map(|j| ReportItem::of(j, "SENDING")).collect();
            let accepted = self.report(behaviour, ledger, &items).await;
            if behaviour.vanish_after_sending {
                return 0;
            }
            live.retain(|j| accepted.contains(&j.message_id));
        }
        let mut outcomes = Vec::with_capacity(live.len());
        for j in &live {
            if !behaviour.send_delay.is_zero() {
                tokio::time::sleep(behaviour.send_delay).await;
            }
            let failed =
                behaviour.failure_rate > 0.0 && rand::thread_rng().gen_bool(behaviour.failure_rate);
            outcomes.push(if failed {
                ReportItem {
                    error: Some("RESULT_ERROR_GENERIC_FAILURE (simulated)".into()),
                    ..ReportItem::of(j, "FAILED")
                }
            } else {
                ReportItem::of(j, "SENT")
            });
        }
        let accepted = self.report(behaviour, ledger, &outcomes).await;
        let mut finished = 0;
        let mut delivered = Vec::new();
        for o in &outcomes {
            if !accepted.contains(&o.message_id) {
                continue;
            }
            if o.status == "FAILED" {
                ledger.failed.fetch_add(1, Ordering::Relaxed);
                finished += 1;
            } else {
                ledger.sent.fetch_add(1, Ordering::Relaxed);
                delivered.push(ReportItem {
                    status: "DELIVERED",
                    ..o.clone()
                });
            }
        }
        let accepted = self.report(behaviour, ledger, &delivered).await;
        let n = delivered
            .iter()
            .filter(|d| accepted.contains(&d.message_id))
            .count() as u64;
        ledger.delivered.fetch_add(n, Ordering::Relaxed);
        finished + n
    }

    /// Sends a report batch; returns the ids the API accepted.
    async fn report(
        &self,
        behaviour: &Behaviour,
        ledger: &Ledger,
        items: &[ReportItem],
    ) -> HashSet<String> {
        let mut accepted = HashSet::new();
        if items.is_empty() {
            return accepted;
        }
        let sending: HashSet<&str> = items
            .iter()
            .filter(|i| i.status == "SENT")
            .map(|i| i.message_id.as_str())
            .collect();
        for attempt in 1..=behaviour.report_attempts.max(1) {
            match self.api.report(&self.token, items).await {
                Ok(results) => {
                    for r in results {
                        if !r.ok {
                            ledger.reject(r.error.as_deref().unwrap_or("UNKNOWN"));
                            continue;
                        }
                        // A repeated `SENT` is an accepted no-op that answers the later status.
                        if r.status.as_deref() == Some("SENT")
                            && sending.contains(r.message_id.as_str())
                        {
                            ledger.record_sent(&r.message_id);
                        }
                        accepted.insert(r.message_id);
                    }
                    ledger.mark_report();
                    return accepted;
                }
                Err(e) => {
                    tracing::warn!(agent = %self.label, attempt, error = %e, "report failed");
                    if attempt < behaviour.report_attempts {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
        for _ in items {
            ledger.reject("REQUEST_FAILED");
        }
        accepted
    }
}

async fn pause(stop: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}
