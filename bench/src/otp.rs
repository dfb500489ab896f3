//! OTP latency: one-recipient requests with `priority_weight` 100, one every 100 ms, pinned to
//! one agent of their own that long-polls (`GET /agent/jobs/next?limit=50&wait=25`) and reports
//! what it gets `SENT`, then `DELIVERED`. Each OTP's latency runs from just before its `POST
//! /requests` is sent to the moment the agent's poll answer holding it arrives. Every OTP goes to
//! its own recipient, which is how the answer is matched to its request.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use sms_shared::domain::phone;
use sms_testkit::client::ReportItem;
use sms_testkit::{Api, Ledger, Phone};
use tokio_util::sync::CancellationToken;

use crate::workload;

/// Time between two OTP requests.
pub const EVERY: Duration = Duration::from_millis(100);
/// Seconds each of the OTP agent's polls waits for a job.
const WAIT_SECONDS: u64 = 25;
/// Jobs the OTP agent asks for per poll.
const POLL_LIMIT: usize = 50;
/// The OTPs' priority.
const PRIORITY: u8 = 100;
/// OTPs of the idle phase (5 s of them).
pub const IDLE_COUNT: usize = 50;
/// The first recipient number of the OTPs, far from the bulk's.
pub const FIRST_RECIPIENT: usize = 50_000_000;

/// Where the OTPs go and who sends them.
#[derive(Clone)]
pub struct OtpTarget {
    pub api: Api,
    pub api_key: String,
    pub template_id: String,
    /// The dedicated agent's id (hex) and token.
    pub agent_id: String,
    pub token: String,
    pub run_id: String,
}

/// What one OTP phase measured.
#[derive(Debug, Clone, Default)]
pub struct OtpFigures {
    /// OTP requests sent, and accepted (202).
    pub sent: u64,
    pub accepted: u64,
    /// OTPs the agent received.
    pub received: u64,
    /// `POST` to poll answer, per OTP received.
    pub latencies_ms: Vec<f64>,
    /// Per recipient received, the wall clock (Unix milliseconds) when its `POST` was sent and
    /// when the poll answer holding it arrived: the outer steps of `otp_steps`.
    pub wall_ms: HashMap<String, (i64, i64)>,
}

/// Per recipient, when (monotonic, and wall clock in Unix milliseconds).
type Times = Arc<Mutex<HashMap<String, (Instant, i64)>>>;

/// Now, as [`Times`] holds it.
fn stamp() -> (Instant, i64) {
    (
        Instant::now(),
        sms_shared::time::bson_now().timestamp_millis(),
    )
}

/// The dedicated OTP agent, long-polling from [`OtpAgent::start`] to [`OtpAgent::stop`]. It
/// runs across both OTP phases: a long poll abandoned in between could still lease the next
/// phase's first OTP on the server's side and hand it to nobody.
pub struct OtpAgent {
    received_at: Times,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl OtpAgent {
    /// Starts the agent's long polls; every job it receives is recorded in `ledger`.
    pub async fn start(t: &OtpTarget, ledger: Arc<Ledger>) -> Self {
        let received_at: Times = Arc::default();
        let stop = CancellationToken::new();
        let task = tokio::spawn(agent_loop(
            t.clone(),
            ledger,
            received_at.clone(),
            stop.clone(),
        ));
        // Let the first long poll reach the API before the first OTP.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Self {
            received_at,
            stop,
            task,
        }
    }

    /// Stops the agent once nothing more is sent to it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await.context("OTP agent task")
    }
}

/// Sends OTPs `first..` one every 100 ms until `until` completes, then waits up to `settle` for
/// `agent` to receive every accepted one.
pub async fn measure(
    t: &OtpTarget,
    agent: &OtpAgent,
    first: usize,
    until: impl Future<Output = ()>,
    settle: Duration,
) -> anyhow::Result<OtpFigures> {
    let sent_at: Times = Arc::default();
    let received_at = &agent.received_at;
    let mut posts = tokio::task::JoinSet::new();
    let mut ticker = tokio::time::interval(EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(until);
    let mut k = first;
    loop {
        tokio::select! {
            biased;
            _ = ticker.tick() => {}
            _ = &mut until => break,
        }
        let (to, body) = request(t, k);
        k += 1;
        let (api, key, sent_at) = (t.api.clone(), t.api_key.clone(), sent_at.clone());
        posts.spawn(async move {
            sent_at.lock().expect("otp lock").insert(to, stamp());
            api.submit(&key, &body).await.map(|a| a.total as u64)
        });
    }
    let mut figures = OtpFigures {
        sent: (k - first) as u64,
        ..Default::default()
    };
    while let Some(r) = posts.join_next().await {
        match r.context("OTP request task")? {
            Ok(n) => figures.accepted += n,
            Err(e) => tracing::warn!(error = %e, "an OTP request failed"),
        }
    }

    let deadline = Instant::now() + settle;
    while received(&sent_at, received_at) < figures.accepted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let sent_at = sent_at.lock().expect("otp lock");
    let received_at = received_at.lock().expect("otp lock");
    for (to, (sent, sent_wall)) in sent_at.iter() {
        if let Some((got, got_wall)) = received_at.get(to) {
            figures.received += 1;
            let ms = got.saturating_duration_since(*sent).as_secs_f64() * 1000.0;
            figures.latencies_ms.push(ms);
            figures.wall_ms.insert(to.clone(), (*sent_wall, *got_wall));
        }
    }
    Ok(figures)
}

/// OTPs of `sent_at` the agent received.
fn received(sent_at: &Times, received_at: &Times) -> u64 {
    let sent = sent_at.lock().expect("otp lock");
    let got = received_at.lock().expect("otp lock");
    sent.keys().filter(|to| got.contains_key(*to)).count() as u64
}

/// OTP `k`: its recipient as the API stores it (E.164), and its request body.
fn request(t: &OtpTarget, k: usize) -> (String, serde_json::Value) {
    let national = sms_testkit::recipients::phone(FIRST_RECIPIENT + k);
    let to = phone::normalize(&national, "+84", true)
        .unwrap_or_else(|_| format!("+84{}", &national[1..]));
    let code = workload::code(&format!("{}o", t.run_id), k);
    let mut body =
        sms_testkit::recipients::otp_request(&t.template_id, &t.agent_id, [(national, code)]);
    body["priority_weight"] = serde_json::json!(PRIORITY);
    (to, body)
}

/// The OTP agent: long polls until `stop`, noting when each recipient's job arrived, and reports
/// each poll's jobs `SENT`, then `DELIVERED`, beside its next poll (as a phone that keeps its
/// long poll open while it sends), so that its own report round trips never delay a lease.
async fn agent_loop(
    t: OtpTarget,
    ledger: Arc<Ledger>,
    received_at: Times,
    stop: CancellationToken,
) {
    let label = format!("bench-{}-otp", t.run_id);
    let phone = Phone::new(t.api.clone(), &t.agent_id, &label, &t.token);
    let mut reporting = tokio::task::JoinSet::new();
    loop {
        let jobs = tokio::select! {
            _ = stop.cancelled() => break,
            r = phone.lease_waiting(&ledger, POLL_LIMIT, WAIT_SECONDS) => r,
        };
        let jobs = match jobs {
            Ok(j) => j.jobs,
            Err(e) => {
                tracing::warn!(error = %e, "OTP agent: poll failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if jobs.is_empty() {
            continue;
        }
        let now = stamp();
        {
            let mut got = received_at.lock().expect("otp lock");
            for j in &jobs {
                got.entry(j.to.clone()).or_insert(now);
            }
        }
        reporting.spawn(report_both(t.clone(), ledger.clone(), jobs));
        while reporting.try_join_next().is_some() {}
    }
    while reporting.join_next().await.is_some() {}
}

/// Reports `jobs` `SENT`, then those accepted `DELIVERED`.
async fn report_both(t: OtpTarget, ledger: Arc<Ledger>, jobs: Vec<sms_testkit::client::Job>) {
    let sent: Vec<ReportItem> = jobs.iter().map(|j| ReportItem::of(j, "SENT")).collect();
    let ok = report(&t.api, &t.token, &ledger, &sent).await;
    let delivered: Vec<ReportItem> = jobs
        .iter()
        .filter(|j| ok.contains(&j.message_id))
        .map(|j| ReportItem::of(j, "DELIVERED"))
        .collect();
    for j in &delivered {
        ledger.record_sent(&j.message_id);
    }
    ledger
        .sent
        .fetch_add(delivered.len() as u64, Ordering::Relaxed);
    let ok = report(&t.api, &t.token, &ledger, &delivered).await;
    ledger
        .delivered
        .fetch_add(ok.len() as u64, Ordering::Relaxed);
}

/// Sends a report batch; returns the ids the API accepted (refusals go into the ledger).
async fn report(
    api: &Api,
    token: &str,
    ledger: &Ledger,
    items: &[ReportItem],
) -> std::collections::HashSet<String> {
    if items.is_empty() {
        return Default::default();
    }
    match api.report(token, items).await {
        Ok(results) => {
            ledger.mark_report();
            results
                .into_iter()
                .filter_map(|r| {
                    if !r.ok {
                        ledger.reject(r.error.as_deref().unwrap_or("UNKNOWN"));
                    }
                    r.ok.then_some(r.message_id)
                })
                .collect()
        }
        Err(e) => {
            tracing::warn!(error = %e, "OTP agent: report failed");
            for _ in items {
                ledger.reject("REQUEST_FAILED");
            }
            Default::default()
        }
    }
}
