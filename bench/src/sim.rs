//! Simulated phones: each polls `GET /agent/jobs/next`, "sends" what it leased and reports
//! `SENDING`, `SENT`/`FAILED` and `DELIVERED` in batches, like the Android agent does.
//!
//! Every job received is recorded in a shared [`Ledger`] with its lease id and agent, so a
//! message handed out twice while an earlier lease was still live, or to two agents, is caught.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;

use crate::client::{self, Api, Job, ReportItem};

/// How the simulated phones behave.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Jobs asked for per poll.
    pub poll_limit: usize,
    /// Report `SENDING` before sending.
    pub report_sending: bool,
    /// Time one message takes to send (messages of a poll are sent one after the other).
    pub send_delay: Duration,
    /// Share of messages whose sending fails.
    pub failure_rate: f64,
    /// Longest pause after an empty poll, whatever `retry_after_seconds` says (`None`: obey it).
    pub max_idle_wait: Option<Duration>,
    /// Heartbeat period (`None`: no heartbeats).
    pub heartbeat_every: Option<Duration>,
}

/// One simulated phone.
#[derive(Debug, Clone)]
pub struct SimAgent {
    /// Index among the simulated phones (what the ledger records).
    pub index: usize,
    pub label: String,
    pub token: String,
    /// Messages after which it stops (`None`: runs until cancelled).
    pub target: Option<u64>,
}

/// One hand-out of a message to a phone.
#[derive(Debug, Clone)]
struct Receipt {
    agent: usize,
    lease_id: String,
    received_at: DateTime<Utc>,
    lease_expires_at: Option<DateTime<Utc>>,
}

/// Everything the phones saw, shared between them.
#[derive(Default)]
pub struct Ledger {
    receipts: Mutex<HashMap<String, Vec<Receipt>>>,
    rejections: Mutex<BTreeMap<String, u64>>,
    pub polls: AtomicU64,
    pub empty_polls: AtomicU64,
    pub poll_errors: AtomicU64,
    pub leased: AtomicU64,
    pub sent: AtomicU64,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub report_errors: AtomicU64,
    pub heartbeats: AtomicU64,
    first_lease: Mutex<Option<Instant>>,
    last_report: Mutex<Option<Instant>>,
}

impl Ledger {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn record(&self, agent: usize, jobs: &[Job]) {
        let now = Utc::now();
        let mut receipts = self.receipts.lock().expect("ledger lock");
        for j in jobs {
            receipts
                .entry(j.message_id.clone())
                .or_default()
                .push(Receipt {
                    agent,
                    lease_id: j.lease_id.clone(),
                    received_at: now,
                    lease_expires_at: j.lease_expires_at,
                });
        }
    }

    fn reject(&self, reason: &str) {
        self.report_errors.fetch_add(1, Ordering::Relaxed);
        *self
            .rejections
            .lock()
            .expect("ledger lock")
            .entry(reason.to_owned())
            .or_default() += 1;
    }

    /// Messages handed out more than once while an earlier lease was live (or whose expiry is
    /// unknown), or handed to two different agents.
    pub fn duplicated(&self) -> Vec<String> {
        let receipts = self.receipts.lock().expect("ledger lock");
        receipts
            .iter()
            .filter(|(_, r)| is_duplicated(r))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Distinct messages received.
    pub fn distinct_received(&self) -> usize {
        self.receipts.lock().expect("ledger lock").len()
    }

    /// Rejected reports by error code.
    pub fn rejections(&self) -> BTreeMap<String, u64> {
        self.rejections.lock().expect("ledger lock").clone()
    }

    /// From the first lease that returned jobs to the last accepted report.
    pub fn lease_window(&self) -> Option<(Instant, Instant)> {
        let first = (*self.first_lease.lock().expect("ledger lock"))?;
        let last = (*self.last_report.lock().expect("ledger lock"))?;
        Some((first, last))
    }

    fn mark_first_lease(&self, at: Instant) {
        let mut first = self.first_lease.lock().expect("ledger lock");
        if first.is_none_or(|f| at < f) {
            *first = Some(at);
        }
    }

    fn mark_report(&self) {
        let now = Instant::now();
        let mut last = self.last_report.lock().expect("ledger lock");
        if last.is_none_or(|l| now > l) {
            *last = Some(now);
        }
    }

    /// Messages that reached a final status through the phones' reports.
    pub fn finished(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }
}

fn is_duplicated(receipts: &[Receipt]) -> bool {
    receipts.iter().enumerate().any(|(i, a)| {
        receipts[i + 1..].iter().any(|b| {
            if a.agent != b.agent {
                return true;
            }
            if a.lease_id == b.lease_id {
                return false;
            }
            let (earlier, later) = if a.received_at <= b.received_at {
                (a, b)
            } else {
                (b, a)
            };
            earlier
                .lease_expires_at
                .is_none_or(|expires| later.received_at < expires)
        })
    })
}

/// What a phone did, for the caller's summary.
#[derive(Debug, Clone, Default)]
pub struct AgentOutcome {
    pub finished: u64,
    /// Why it stopped early, if it did.
    pub stopped_by: Option<String>,
}

/// Runs one phone until it finished its `target`, `stop` is cancelled, or its token is refused.
/// `on_finished` is called with the number of messages each report batch made final.
pub async fn run_agent(
    api: Api,
    agent: SimAgent,
    behaviour: Behaviour,
    ledger: Arc<Ledger>,
    stop: CancellationToken,
    on_finished: impl Fn(u64) + Send + Sync,
) -> AgentOutcome {
    let mut outcome = AgentOutcome::default();
    let mut next_heartbeat = Instant::now();
    loop {
        if stop.is_cancelled() || agent.target.is_some_and(|t| outcome.finished >= t) {
            return outcome;
        }
        if let Some(period) = behaviour.heartbeat_every {
            if Instant::now() >= next_heartbeat {
                match api.heartbeat(&agent.token).await {
                    Ok(()) => {
                        ledger.heartbeats.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => tracing::warn!(agent = %agent.label, error = %e, "heartbeat failed"),
                }
                next_heartbeat = Instant::now() + period;
            }
        }
        let asked = Instant::now();
        ledger.polls.fetch_add(1, Ordering::Relaxed);
        let jobs = match api.next_jobs(&agent.token, behaviour.poll_limit).await {
            Ok(j) => j,
            Err(e) => {
                ledger.poll_errors.fetch_add(1, Ordering::Relaxed);
                if client::has_status(&e, StatusCode::UNAUTHORIZED) {
                    tracing::error!(agent = %agent.label, "token refused; this agent stops");
                    outcome.stopped_by = Some("token refused (401)".into());
                    return outcome;
                }
                tracing::warn!(agent = %agent.label, error = %e, "poll failed");
                pause(&stop, Duration::from_secs(2)).await;
                continue;
            }
        };
        if jobs.jobs.is_empty() {
            ledger.empty_polls.fetch_add(1, Ordering::Relaxed);
            let mut wait = Duration::from_secs(jobs.retry_after_seconds.unwrap_or(5).max(1) as u64);
            if let Some(max) = behaviour.max_idle_wait {
                wait = wait.min(max);
            }
            pause(&stop, wait).await;
            continue;
        }
        ledger.mark_first_lease(asked);
        ledger
            .leased
            .fetch_add(jobs.jobs.len() as u64, Ordering::Relaxed);
        ledger.record(agent.index, &jobs.jobs);
        let done = deliver(&api, &agent, &behaviour, &ledger, &jobs.jobs).await;
        outcome.finished += done;
        on_finished(done);
    }
}

/// Sends one poll's jobs and reports them; returns how many became final.
async fn deliver(
    api: &Api,
    agent: &SimAgent,
    behaviour: &Behaviour,
    ledger: &Ledger,
    jobs: &[Job],
) -> u64 {
    let item = |j: &Job, status: &'static str, error: Option<String>| ReportItem {
        message_id: j.message_id.clone(),
        status,
        lease_id: j.lease_id.clone(),
        error,
    };
    let mut live: Vec<&Job> = jobs.iter().collect();
    if behaviour.report_sending {
        let items: Vec<ReportItem> = live.iter().map(|j| item(j, "SENDING", None)).collect();
        let accepted = report(api, agent, ledger, &items).await;
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
            item(
                j,
                "FAILED",
                Some("RESULT_ERROR_GENERIC_FAILURE (simulated)".into()),
            )
        } else {
            item(j, "SENT", None)
        });
    }
    let accepted = report(api, agent, ledger, &outcomes).await;
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
    let accepted = report(api, agent, ledger, &delivered).await;
    let n = delivered
        .iter()
        .filter(|d| accepted.contains(&d.message_id))
        .count() as u64;
    ledger.delivered.fetch_add(n, Ordering::Relaxed);
    finished + n
}

/// Sends a report batch; returns the ids the API accepted.
async fn report(
    api: &Api,
    agent: &SimAgent,
    ledger: &Ledger,
    items: &[ReportItem],
) -> std::collections::HashSet<String> {
    let mut accepted = std::collections::HashSet::new();
    if items.is_empty() {
        return accepted;
    }
    // A failed request is retried a few times: the same report again is a harmless no-op.
    for attempt in 0..3 {
        match api.report(&agent.token, items).await {
            Ok(results) => {
                for r in results {
                    if r.ok {
                        accepted.insert(r.message_id);
                    } else {
                        ledger.reject(r.error.as_deref().unwrap_or("UNKNOWN"));
                    }
                }
                ledger.mark_report();
                return accepted;
            }
            Err(e) => {
                tracing::warn!(agent = %agent.label, attempt, error = %e, "report failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    for _ in items {
        ledger.reject("REQUEST_FAILED");
    }
    accepted
}

async fn pause(stop: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(agent: usize, lease: &str, at_s: i64, expires_s: Option<i64>) -> Receipt {
        let base = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        Receipt {
            agent,
            lease_id: lease.into(),
            received_at: base + chrono::Duration::seconds(at_s),
            lease_expires_at: expires_s.map(|s| base + chrono::Duration::seconds(s)),
        }
    }

    #[test]
    fn one_hand_out_is_not_a_duplicate() {
        assert!(!is_duplicated(&[receipt(0, "a", 0, Some(300))]));
        assert!(!is_duplicated(&[
            receipt(0, "a", 0, Some(300)),
            receipt(0, "a", 1, Some(300))
        ]));
    }

    #[test]
    fn a_second_lease_while_the_first_is_live_is_a_duplicate() {
        assert!(is_duplicated(&[
            receipt(0, "a", 0, Some(300)),
            receipt(0, "b", 10, Some(310))
        ]));
        assert!(is_duplicated(&[
            receipt(0, "b", 10, Some(310)),
            receipt(0, "a", 0, Some(300))
        ]));
        assert!(is_duplicated(&[
            receipt(0, "a", 0, None),
            receipt(0, "b", 900, None)
        ]));
    }

    #[test]
    fn a_new_lease_after_expiry_is_legitimate() {
        assert!(!is_duplicated(&[
            receipt(0, "a", 0, Some(300)),
            receipt(0, "b", 301, Some(601))
        ]));
    }

    #[test]
    fn two_agents_is_always_a_duplicate() {
        assert!(is_duplicated(&[
            receipt(0, "a", 0, Some(300)),
            receipt(1, "a", 400, Some(700))
        ]));
    }
}
