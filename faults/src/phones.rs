//! Simulated phones that lease, "send" and report, keeping a ledger of every lease they were
//! handed so that two live leases of one message can be detected.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::client::Client;

/// One lease as a phone received it.
#[derive(Clone, Debug)]
pub struct Lease {
    pub phone: String,
    pub lease_id: String,
    pub received_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Everything the phones saw.
#[derive(Default, Clone)]
pub struct Ledger {
    inner: Arc<Mutex<LedgerInner>>,
}

#[derive(Default)]
struct LedgerInner {
    leases: HashMap<String, Vec<Lease>>,
    /// Accepted `SENT` reports per message (a message sent twice would show two).
    sent: HashMap<String, u32>,
}

impl Ledger {
    pub fn record_lease(&self, message_id: &str, lease: Lease) {
        self.inner
            .lock()
            .unwrap()
            .leases
            .entry(message_id.to_owned())
            .or_default()
            .push(lease);
    }

    pub fn record_sent(&self, message_id: &str) {
        *self
            .inner
            .lock()
            .unwrap()
            .sent
            .entry(message_id.to_owned())
            .or_default() += 1;
    }

    /// Messages that were handed out under two different leases at once, or sent twice.
    pub fn duplicated(&self) -> usize {
        let inner = self.inner.lock().unwrap();
        let mut dup: std::collections::HashSet<&String> = inner
            .sent
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(m, _)| m)
            .collect();
        for (message, leases) in &inner.leases {
            for (i, a) in leases.iter().enumerate() {
                for b in &leases[i + 1..] {
                    let overlap = a.lease_id != b.lease_id
                        && a.received_at < b.expires_at
                        && b.received_at < a.expires_at;
                    if overlap {
                        eprintln!(
                            "message {message} held under two live leases: {} ({}) and {} ({})",
                            a.lease_id, a.phone, b.lease_id, b.phone
                        );
                        dup.insert(message);
                    }
                }
            }
        }
        dup.len()
    }
}

fn parse_time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(Utc::now)
}

/// How a phone behaves.
#[derive(Clone, Copy)]
pub enum Behaviour {
    /// Reports SENT and DELIVERED for every job.
    Deliver,
    /// Reports SENDING, then dies (never reports again).
    DieAfterSending,
}

/// Leases once for `token` and handles the jobs; returns how many jobs it got.
pub async fn poll_once(
    client: &Client,
    ledger: &Ledger,
    phone: &str,
    token: &str,
    behaviour: Behaviour,
) -> anyhow::Result<usize> {
    let jobs = client.lease(token, 100).await?;
    let now = Utc::now();
    for job in &jobs {
        ledger.record_lease(
            job["message_id"].as_str().unwrap_or_default(),
            Lease {
                phone: phone.to_owned(),
                lease_id: job["lease_id"].as_str().unwrap_or_default().to_owned(),
                received_at: now,
                expires_at: parse_time(&job["lease_expires_at"]),
            },
        );
    }
    if jobs.is_empty() {
        return Ok(0);
    }
    let report = |status: &str| -> Vec<Value> {
        jobs.iter()
            .map(|j| json!({"message_id": j["message_id"], "status": status, "lease_id": j["lease_id"]}))
            .collect()
    };
    if matches!(behaviour, Behaviour::DieAfterSending) {
        client.report(token, report("SENDING")).await?;
        return Ok(jobs.len());
    }
    for r in client.report(token, report("SENT")).await? {
        // `ok` with status SENT is an accepted send; a repeat would be an ok no-op, so count
        // only the first acceptance of each lease below by using the ledger per message.
        if r["ok"] == true && r["status"] == "SENT" {
            ledger.record_sent(r["message_id"].as_str().unwrap_or_default());
        }
    }
    client.report(token, report("DELIVERED")).await?;
    Ok(jobs.len())
}

/// Runs every phone until `done()` says so or `limit` passes. Errors (API restarting) are retried.
pub async fn drain<F, Fut>(
    client: &Client,
    ledger: &Ledger,
    phones: &[(String, String)],
    limit: Duration,
    mut done: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        // Two app instances per phone poll at once, as a restarted app might.
        let polls =
            phones
                .iter()
                .flat_map(|p| [p, p])
                .enumerate()
                .map(|(i, (agent, token))| async move {
                    let phone = format!("{agent}#{}", i % 2);
                    poll_once(client, ledger, &phone, token, Behaviour::Deliver)
                        .await
                        .unwrap_or(0)
                });
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
