//! Everything the simulated phones saw, shared between them: each job received with its lease,
//! agent and phone, each accepted `SENT`, the rejected reports and running totals.
//!
//! A message is duplicated when it was handed to two different agents, handed out under a second
//! lease while an earlier one was still live (or of unknown expiry), or accepted as `SENT` twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::client::Job;

/// One hand-out of a message to a phone.
#[derive(Debug, Clone)]
struct Receipt {
    agent: Arc<str>,
    phone: Arc<str>,
    lease_id: String,
    received_at: DateTime<Utc>,
    lease_expires_at: Option<DateTime<Utc>>,
}

/// A message the ledger caught handed out or sent twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub message_id: String,
    /// What happened, naming the leases and phones involved.
    pub why: String,
}

/// Everything the phones saw; share it as `Arc<Ledger>`.
#[derive(Default)]
pub struct Ledger {
    receipts: Mutex<HashMap<String, Vec<Receipt>>>,
    /// Accepted `SENT` reports per message.
    sends: Mutex<HashMap<String, u32>>,
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
    /// An empty ledger, ready to share.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Records `jobs` as received now by `phone`, an app instance of `agent`.
    pub fn record(&self, agent: &str, phone: &str, jobs: &[Job]) {
        let now = Utc::now();
        let (agent, phone): (Arc<str>, Arc<str>) = (agent.into(), phone.into());
        let mut receipts = self.receipts.lock().expect("ledger lock");
        for j in jobs {
            receipts
                .entry(j.message_id.clone())
                .or_default()
                .push(Receipt {
                    agent: agent.clone(),
                    phone: phone.clone(),
                    lease_id: j.lease_id.clone(),
                    received_at: now,
                    lease_expires_at: j.lease_expires_at,
                });
        }
    }

    /// Records that the API accepted a `SENT` report of `message_id`.
    pub fn record_sent(&self, message_id: &str) {
        *self
            .sends
            .lock()
            .expect("ledger lock")
            .entry(message_id.to_owned())
            .or_default() += 1;
    }

    /// Records a report the API refused (or that never got an answer), by error code.
    pub fn reject(&self, reason: &str) {
        self.report_errors.fetch_add(1, Ordering::Relaxed);
        *self
            .rejections
            .lock()
            .expect("ledger lock")
            .entry(reason.to_owned())
            .or_default() += 1;
    }

    /// Every duplicated message, by id, with what happened to it.
    pub fn duplicates(&self) -> Vec<Duplicate> {
        let mut found: BTreeMap<String, String> = BTreeMap::new();
        for (id, receipts) in self.receipts.lock().expect("ledger lock").iter() {
            if let Some(why) = duplicated(receipts) {
                found.insert(id.clone(), format!("message {id} {why}"));
            }
        }
        for (id, n) in self.sends.lock().expect("ledger lock").iter() {
            if *n > 1 {
                found
                    .entry(id.clone())
                    .or_insert_with(|| format!("message {id} accepted as SENT {n} times"));
            }
        }
        found
            .into_iter()
            .map(|(message_id, why)| Duplicate { message_id, why })
            .collect()
    }

    /// The ids of the duplicated messages.
    pub fn duplicated(&self) -> Vec<String> {
        self.duplicates()
            .into_iter()
            .map(|d| d.message_id)
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

    /// Notes a lease asked for at `at` that returned jobs.
    pub fn mark_first_lease(&self, at: Instant) {
        let mut first = self.first_lease.lock().expect("ledger lock");
        if first.is_none_or(|f| at < f) {
            *first = Some(at);
        }
    }

    /// Notes a report batch the API answered.
    pub fn mark_report(&self) {
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

/// Why the hand-outs of one message are a duplicate, if they are.
fn duplicated(receipts: &[Receipt]) -> Option<String> {
    receipts.iter().enumerate().find_map(|(i, a)| {
        receipts[i + 1..].iter().find_map(|b| {
            let (earlier, later) = if a.received_at <= b.received_at {
                (a, b)
            } else {
                (b, a)
            };
            let pair = format!(
                "{} ({}) and {} ({})",
                earlier.lease_id, earlier.phone, later.lease_id, later.phone
            );
            if a.agent != b.agent {
                return Some(format!(
                    "handed to two agents, {} and {}: {pair}",
                    earlier.agent, later.agent
                ));
            }
            let live = a.lease_id != b.lease_id
                && earlier
                    .lease_expires_at
                    .is_none_or(|expires| later.received_at < expires);
            live.then(|| format!("held under two live leases: {pair}"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(agent: &str, lease: &str, at_s: i64, expires_s: Option<i64>) -> Receipt {
        let base = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        Receipt {
            agent: agent.into(),
            phone: format!("{agent}#0").into(),
            lease_id: lease.into(),
            received_at: base + chrono::Duration::seconds(at_s),
            lease_expires_at: expires_s.map(|s| base + chrono::Duration::seconds(s)),
        }
    }

    fn is_duplicated(receipts: &[Receipt]) -> bool {
        duplicated(receipts).is_some()
    }

    #[test]
    fn one_hand_out_is_not_a_duplicate() {
        assert!(!is_duplicated(&[receipt("a0", "a", 0, Some(300))]));
        assert!(!is_duplicated(&[
            receipt("a0", "a", 0, Some(300)),
            receipt("a0", "a", 1, Some(300))
        ]));
    }

    #[test]
    fn a_second_lease_while_the_first_is_live_is_a_duplicate() {
        assert!(is_duplicated(&[
            receipt("a0", "a", 0, Some(300)),
            receipt("a0", "b", 10, Some(310))
        ]));
        assert!(is_duplicated(&[
            receipt("a0", "b", 10, Some(310)),
            receipt("a0", "a", 0, Some(300))
        ]));
        assert!(is_duplicated(&[
            receipt("a0", "a", 0, None),
            receipt("a0", "b", 900, None)
        ]));
    }

    #[test]
    fn a_new_lease_after_expiry_is_legitimate() {
        assert!(!is_duplicated(&[
            receipt("a0", "a", 0, Some(300)),
            receipt("a0", "b", 301, Some(601))
        ]));
    }

    #[test]
    fn two_agents_is_always_a_duplicate() {
        assert!(is_duplicated(&[
            receipt("a0", "a", 0, Some(300)),
            receipt("a1", "a", 400, Some(700))
        ]));
    }

    fn job(message: &str, lease: &str, expires_in_s: i64) -> Job {
        Job {
            message_id: message.into(),
            lease_id: lease.into(),
            lease_expires_at: Some(Utc::now() + chrono::Duration::seconds(expires_in_s)),
            to: String::new(),
            text: String::new(),
        }
    }

    #[test]
    fn the_ledger_names_each_duplicate_once() {
        let ledger = Ledger::default();
        ledger.record(
            "agent-1",
            "agent-1#0",
            &[job("m1", "l1", 300), job("m2", "l2", 300)],
        );
        ledger.record("agent-1", "agent-1#1", &[job("m1", "l3", 300)]);
        ledger.record("agent-1", "agent-1#1", &[job("m3", "l4", -1)]);
        ledger.record("agent-1", "agent-1#0", &[job("m3", "l5", 300)]);
        ledger.record_sent("m2");
        ledger.record_sent("m2");
        ledger.record_sent("m3");
        let found = ledger.duplicates();
        assert_eq!(ledger.duplicated(), ["m1", "m2"]);
        assert_eq!(
            found[0].why,
            "message m1 held under two live leases: l1 (agent-1#0) and l3 (agent-1#1)"
        );
        assert_eq!(found[1].why, "message m2 accepted as SENT 2 times");
        assert_eq!(ledger.distinct_received(), 3);
    }

    #[test]
    fn rejections_are_counted_by_code() {
        let ledger = Ledger::default();
        ledger.reject("STALE_LEASE");
        ledger.reject("STALE_LEASE");
        ledger.reject("NOT_FOUND");
        assert_eq!(ledger.report_errors.load(Ordering::Relaxed), 3);
        assert_eq!(
            ledger.rejections(),
            BTreeMap::from([("NOT_FOUND".into(), 1), ("STALE_LEASE".into(), 2)])
        );
    }
}
