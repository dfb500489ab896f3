//! The benchmark's figures: JSON for machines, a table for people.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use std::sync::atomic::Ordering;

use anyhow::Context;
use serde::Serialize;

use crate::otp::OtpFigures;
use crate::otp_steps::OtpSteps;
use crate::pipeline::PipelineFigures;

/// Figures of one benchmark run. Rates are messages (or jobs) per second over the phase's wall
/// time; see `BENCHMARKS.md` for what each phase covers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BenchReport {
    pub messages: u64,
    pub agents: u64,
    pub clients: u64,
    pub requests: u64,
    /// Messages the API accepted (202).
    pub accepted: u64,

    pub raw_insert_msgs_per_s: f64,
    pub raw_find_and_modify_per_s: f64,
    pub submit_msgs_per_s: f64,
    pub submit_p50_ms: f64,
    pub submit_p99_ms: f64,
    pub stage_msgs_per_s: f64,
    pub lease_jobs_per_s: f64,
    pub e2e_seconds: f64,
    /// Accepted messages not `DELIVERED`, `FAILED` or `CANCELED` at the end.
    pub lost: u64,
    /// Messages handed out twice under live leases or to two agents, or leased more than once
    /// according to the database.
    pub duplicated: u64,

    /// `submit_msgs_per_s / raw_insert_msgs_per_s`.
    pub submit_vs_raw_insert: f64,
    /// `lease_jobs_per_s / raw_find_and_modify_per_s`.
    pub lease_vs_raw_find_and_modify: f64,

    /// Every write one message needs, done directly in batches of the run's request and poll
    /// sizes (`raw_pipeline`).
    pub raw_pipeline_msgs_per_s: f64,
    /// A fresh N messages, first `POST` to last final report, agents long-polling throughout.
    pub pipeline_msgs_per_s: f64,
    /// `pipeline_msgs_per_s / raw_pipeline_msgs_per_s`.
    pub pipeline_vs_raw_pipeline: f64,
    /// `POST` to lease of OTPs with nothing else going on.
    pub otp_idle_p50_ms: f64,
    pub otp_idle_p99_ms: f64,
    /// `POST` to lease of OTPs while the pipeline's bulk is submitted and staged.
    pub otp_p50_ms: f64,
    pub otp_p99_ms: f64,
    /// Of those OTPs, from sending the `POST` to its acceptance (`created_at`).
    pub otp_post_to_accepted_p50_ms: f64,
    pub otp_post_to_accepted_p99_ms: f64,
    /// Of those OTPs, from acceptance to a dispatcher staging them (`created_at` to `staged_at`).
    pub otp_accept_to_staged_p50_ms: f64,
    pub otp_accept_to_staged_p99_ms: f64,
    /// Of those OTPs, from staging to a poll claiming their job (`staged_at` to `leased_at`).
    pub otp_staged_to_leased_p50_ms: f64,
    pub otp_staged_to_leased_p99_ms: f64,
    /// Of those OTPs, from the claim (`leased_at`) to the poll's answer arriving.
    pub otp_leased_to_answer_p50_ms: f64,
    pub otp_leased_to_answer_p99_ms: f64,

    pub raw_insert_seconds: f64,
    pub raw_find_and_modify_seconds: f64,
    /// Secondary indexes on the scratch collection (copied from `sms_messages`).
    pub raw_indexes: u64,
    /// Documents the naive lease loop found (every inserted one, when the raw phases worked).
    pub raw_leased: u64,
    pub submit_seconds: f64,
    pub submit_max_ms: f64,
    pub stage_seconds: f64,
    pub lease_seconds: f64,
    pub raw_pipeline_seconds: f64,
    /// Scratch messages `DELIVERED` at the end of the raw pipeline (all N when it worked).
    pub raw_pipeline_delivered: u64,
    /// Secondary indexes on the raw pipeline's scratch messages, jobs and dedup collections.
    pub raw_pipeline_indexes: [usize; 3],
    pub pipeline_accepted: u64,
    /// Pipeline messages the agents made final.
    pub pipeline_finished: u64,
    pub pipeline_seconds: f64,
    pub pipeline_submit_seconds: f64,
    /// First `POST` of the pipeline until none of its messages was left unstaged.
    pub pipeline_stage_seconds: f64,
    pub pipeline_polls: u64,
    pub pipeline_empty_polls: u64,
    /// Where the database spent the pipeline phase (`db_top`), busiest collection first.
    pub pipeline_db_top: Vec<crate::db_top::TopRow>,
    pub otp_idle_sent: u64,
    pub otp_idle_received: u64,
    pub otp_idle_max_ms: f64,
    pub otp_sent: u64,
    pub otp_received: u64,
    pub otp_max_ms: f64,
    /// Messages accepted over all phases (wave one, pipeline, OTPs): what `lost` counts from.
    pub accepted_total: u64,

    pub delivered: u64,
    pub failed: u64,
    pub canceled: u64,
    /// Duplicates seen by the simulated phones.
    pub duplicated_by_agents: u64,
    /// Messages of the run whose `attempts` is above 1.
    pub db_leased_more_than_once: u64,
    pub polls: u64,
    pub empty_polls: u64,
    pub poll_errors: u64,
    pub report_errors: u64,
    pub report_rejections: BTreeMap<String, u64>,
    /// Final status counts of the run's messages in the database.
    pub status_counts: BTreeMap<String, u64>,
    /// Set when a phase gave up waiting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timed_out: Option<String>,
    pub started_at: String,
}

/// `a / b`, 0 when `b` is 0.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// Messages per second for `n` in `secs`.
pub fn rate(n: u64, secs: f64) -> f64 {
    ratio(n as f64, secs)
}

/// The `q`-quantile (0..=1) of `values` by nearest rank.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (q * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

impl BenchReport {
    /// Fills the two ratios from the measured rates.
    pub fn compute_ratios(&mut self) {
        self.submit_vs_raw_insert = ratio(self.submit_msgs_per_s, self.raw_insert_msgs_per_s);
        self.lease_vs_raw_find_and_modify =
            ratio(self.lease_jobs_per_s, self.raw_find_and_modify_per_s);
        self.pipeline_vs_raw_pipeline =
            ratio(self.pipeline_msgs_per_s, self.raw_pipeline_msgs_per_s);
    }

    /// The figures of the OTPs sent with nothing else going on.
    pub fn set_otp_idle(&mut self, f: &OtpFigures) {
        self.otp_idle_sent = f.accepted;
        self.otp_idle_received = f.received;
        self.otp_idle_p50_ms = percentile(&f.latencies_ms, 0.50);
        self.otp_idle_p99_ms = percentile(&f.latencies_ms, 0.99);
        self.otp_idle_max_ms = f.latencies_ms.iter().copied().fold(0.0, f64::max);
    }

    /// The figures of the OTPs sent while the pipeline's bulk was submitted and staged.
    pub fn set_otp_steps(&mut self, s: &OtpSteps) {
        self.otp_post_to_accepted_p50_ms = percentile(&s.to_accepted_ms, 0.50);
        self.otp_post_to_accepted_p99_ms = percentile(&s.to_accepted_ms, 0.99);
        self.otp_leased_to_answer_p50_ms = percentile(&s.to_answer_ms, 0.50);
        self.otp_leased_to_answer_p99_ms = percentile(&s.to_answer_ms, 0.99);
        self.otp_accept_to_staged_p50_ms = percentile(&s.to_staged_ms, 0.50);
        self.otp_accept_to_staged_p99_ms = percentile(&s.to_staged_ms, 0.99);
        self.otp_staged_to_leased_p50_ms = percentile(&s.to_leased_ms, 0.50);
        self.otp_staged_to_leased_p99_ms = percentile(&s.to_leased_ms, 0.99);
    }

    pub fn set_otp_busy(&mut self, f: &OtpFigures) {
        self.otp_sent = f.accepted;
        self.otp_received = f.received;
        self.otp_p50_ms = percentile(&f.latencies_ms, 0.50);
        self.otp_p99_ms = percentile(&f.latencies_ms, 0.99);
        self.otp_max_ms = f.latencies_ms.iter().copied().fold(0.0, f64::max);
    }

    /// The figures of the pipeline phase.
    pub fn set_pipeline(&mut self, p: &PipelineFigures) {
        self.pipeline_accepted = p.accepted;
        self.pipeline_finished = p.finished;
        self.pipeline_seconds = p.elapsed.as_secs_f64();
        self.pipeline_msgs_per_s = rate(p.finished, self.pipeline_seconds);
        self.pipeline_submit_seconds = p.submit.as_secs_f64();
        self.pipeline_stage_seconds = p.staged.as_secs_f64();
        self.pipeline_polls = p.ledger.polls.load(Ordering::Relaxed);
        self.pipeline_empty_polls = p.ledger.empty_polls.load(Ordering::Relaxed);
        if let Some(t) = &p.timed_out {
            let before = self.timed_out.take();
            self.timed_out = Some(before.map_or(t.clone(), |b| format!("{b}; {t}")));
        }
    }

    /// Each target of the issue, met or not: `(target, result, met)`.
    pub fn targets(&self) -> Vec<(String, String, bool)> {
        let otps_all = |sent: u64, got: u64| {
            if got < sent {
                format!(" ({} of {sent} never leased)", sent - got)
            } else {
                String::new()
            }
        };
        vec![
            (
                "submit >= 0.5 x raw insert".into(),
                format!("{:.2}", self.submit_vs_raw_insert),
                self.submit_vs_raw_insert >= 0.5,
            ),
            (
                "lease >= 2 x raw find_and_modify".into(),
                format!("{:.2}", self.lease_vs_raw_find_and_modify),
                self.lease_vs_raw_find_and_modify >= 2.0,
            ),
            (
                "pipeline >= 0.5 x raw pipeline".into(),
                format!("{:.2}", self.pipeline_vs_raw_pipeline),
                self.pipeline_vs_raw_pipeline >= 0.5,
            ),
            (
                "otp_p99_ms < 500".into(),
                format!(
                    "{:.0}{}",
                    self.otp_p99_ms,
                    otps_all(self.otp_sent, self.otp_received)
                ),
                self.otp_p99_ms < 500.0 && self.otp_received >= self.otp_sent,
            ),
            (
                "otp_idle_p99_ms < 100".into(),
                format!(
                    "{:.0}{}",
                    self.otp_idle_p99_ms,
                    otps_all(self.otp_idle_sent, self.otp_idle_received)
                ),
                self.otp_idle_p99_ms < 100.0 && self.otp_idle_received >= self.otp_idle_sent,
            ),
            ("lost = 0".into(), self.lost.to_string(), self.lost == 0),
            (
                "duplicated = 0".into(),
                self.duplicated.to_string(),
                self.duplicated == 0,
            ),
        ]
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// A plain-text summary table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut row = |k: &str, v: String, note: &str| {
            let _ = writeln!(out, "  {k:<30} {v:>14}  {note}");
        };
        row(
            "messages / agents / clients",
            format!("{} / {} / {}", self.messages, self.agents, self.clients),
            "",
        );
        row(
            "requests (accepted msgs)",
            format!("{} ({})", self.requests, self.accepted),
            "",
        );
        row(
            "raw insert_many",
            format!("{:.0}/s", self.raw_insert_msgs_per_s),
            &format!(
                "{:.2} s, {} indexes",
                self.raw_insert_seconds, self.raw_indexes
            ),
        );
        row(
            "raw find_and_modify",
            format!("{:.0}/s", self.raw_find_and_modify_per_s),
            &format!("{:.2} s", self.raw_find_and_modify_seconds),
        );
        row(
            "submit (POST /requests)",
            format!("{:.0}/s", self.submit_msgs_per_s),
            &format!(
                "{:.2} s, p50 {:.0} ms, p99 {:.0} ms",
                self.submit_seconds, self.submit_p50_ms, self.submit_p99_ms
            ),
        );
        row(
            "stage (dispatchers)",
            format!("{:.0}/s", self.stage_msgs_per_s),
            &format!("{:.2} s from first submit", self.stage_seconds),
        );
        row(
            "lease + report (agents)",
            format!("{:.0}/s", self.lease_jobs_per_s),
            &format!(
                "{:.2} s, {} polls ({} empty)",
                self.lease_seconds, self.polls, self.empty_polls
            ),
        );
        row("end to end", format!("{:.2} s", self.e2e_seconds), "");
        row(
            "raw pipeline (all writes)",
            format!("{:.0}/s", self.raw_pipeline_msgs_per_s),
            &format!(
                "{:.2} s, {} delivered",
                self.raw_pipeline_seconds, self.raw_pipeline_delivered
            ),
        );
        row(
            "pipeline (long-polling)",
            format!("{:.0}/s", self.pipeline_msgs_per_s),
            &format!(
                "{:.2} s, {} final; submitted in {:.2} s, staged in {:.2} s",
                self.pipeline_seconds,
                self.pipeline_finished,
                self.pipeline_submit_seconds,
                self.pipeline_stage_seconds
            ),
        );
        row(
            "OTP idle p50 / p99",
            format!(
                "{:.0} / {:.0} ms",
                self.otp_idle_p50_ms, self.otp_idle_p99_ms
            ),
            &format!(
                "{} of {} leased, max {:.0} ms",
                self.otp_idle_received, self.otp_idle_sent, self.otp_idle_max_ms
            ),
        );
        row(
            "OTP under bulk p50 / p99",
            format!("{:.0} / {:.0} ms", self.otp_p50_ms, self.otp_p99_ms),
            &format!(
                "{} of {} leased, max {:.0} ms",
                self.otp_received, self.otp_sent, self.otp_max_ms
            ),
        );
        let mut step = |name: &str, p50: f64, p99: f64| {
            row(name, format!("{p50:.0} / {p99:.0} ms"), "");
        };
        step(
            "  POST to accepted p50 / p99",
            self.otp_post_to_accepted_p50_ms,
            self.otp_post_to_accepted_p99_ms,
        );
        step(
            "  accepted to staging p50 / p99",
            self.otp_accept_to_staged_p50_ms,
            self.otp_accept_to_staged_p99_ms,
        );
        step(
            "  staging to lease p50 / p99",
            self.otp_staged_to_leased_p50_ms,
            self.otp_staged_to_leased_p99_ms,
        );
        step(
            "  lease to answer p50 / p99",
            self.otp_leased_to_answer_p50_ms,
            self.otp_leased_to_answer_p99_ms,
        );
        row(
            "submit / raw insert",
            format!("{:.2}", self.submit_vs_raw_insert),
            "target >= 0.5",
        );
        row(
            "lease / raw find_and_modify",
            format!("{:.2}", self.lease_vs_raw_find_and_modify),
            "target >= 2",
        );
        row(
            "pipeline / raw pipeline",
            format!("{:.2}", self.pipeline_vs_raw_pipeline),
            "target >= 0.5",
        );
        row("lost", self.lost.to_string(), "target 0");
        row("duplicated", self.duplicated.to_string(), "target 0");
        row(
            "delivered / failed / canceled",
            format!("{} / {} / {}", self.delivered, self.failed, self.canceled),
            "",
        );
        if self.report_errors > 0 {
            row(
                "rejected reports",
                self.report_errors.to_string(),
                &format!("{:?}", self.report_rejections),
            );
        }
        if let Some(t) = &self.timed_out {
            row("timed out", String::new(), t);
        }
        let _ = writeln!(out, "\nTargets");
        for (target, result, met) in self.targets() {
            let verdict = if met { "PASS" } else { "FAIL" };
            let _ = writeln!(out, "  {verdict}  {target:<34} {result}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 0.5), 2.0);
    }

    #[test]
    fn ratios_never_divide_by_zero() {
        let mut r = BenchReport {
            submit_msgs_per_s: 500.0,
            raw_insert_msgs_per_s: 1000.0,
            lease_jobs_per_s: 10.0,
            ..Default::default()
        };
        r.compute_ratios();
        assert_eq!(r.submit_vs_raw_insert, 0.5);
        assert_eq!(r.lease_vs_raw_find_and_modify, 0.0);
    }

    #[test]
    fn targets_fail_on_slow_or_missing_otps_and_on_losses() {
        let mut r = BenchReport {
            submit_vs_raw_insert: 0.9,
            lease_vs_raw_find_and_modify: 2.5,
            pipeline_vs_raw_pipeline: 0.6,
            otp_p99_ms: 120.0,
            otp_sent: 10,
            otp_received: 10,
            otp_idle_p99_ms: 40.0,
            otp_idle_sent: 50,
            otp_idle_received: 50,
            ..Default::default()
        };
        assert!(r.targets().iter().all(|(_, _, met)| *met));
        r.otp_received = 9;
        r.lost = 1;
        let failed: Vec<String> = r
            .targets()
            .into_iter()
            .filter(|(_, _, met)| !met)
            .map(|(t, _, _)| t)
            .collect();
        assert_eq!(failed, ["otp_p99_ms < 500", "lost = 0"]);
        assert!(r.table().contains("FAIL  lost = 0"));
    }

    #[test]
    fn json_has_the_documented_keys() {
        let v = serde_json::to_value(BenchReport::default()).unwrap();
        for key in [
            "raw_insert_msgs_per_s",
            "raw_find_and_modify_per_s",
            "submit_msgs_per_s",
            "submit_p50_ms",
            "submit_p99_ms",
            "stage_msgs_per_s",
            "lease_jobs_per_s",
            "e2e_seconds",
            "lost",
            "duplicated",
            "submit_vs_raw_insert",
            "lease_vs_raw_find_and_modify",
            "raw_pipeline_msgs_per_s",
            "pipeline_msgs_per_s",
            "pipeline_vs_raw_pipeline",
            "otp_idle_p50_ms",
            "otp_idle_p99_ms",
            "otp_p50_ms",
            "otp_p99_ms",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
    }
}
