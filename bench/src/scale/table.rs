//! The figures of one scale run: JSON for machines, a markdown table for people.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use super::calls::Timed;
use super::load::Loaded;
use super::ScaleArgs;

/// Figures of one `sms-bench scale` run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScaleReport {
    pub messages: u64,
    pub agents: u64,
    pub days: u32,
    pub request_size: u64,
    pub poll_limit: u64,
    pub repeats: u64,
    pub warmups: u64,
    /// When the timing started (RFC 3339).
    pub measured_at: String,
    pub load: Loaded,
    /// `GET /reports/summary`'s `total` after the recount: every loaded message.
    pub summary_total: i64,
    pub calls: Vec<Timed>,
}

impl ScaleReport {
    pub fn new(args: &ScaleArgs) -> Self {
        Self {
            messages: args.messages as u64,
            agents: args.agents as u64,
            days: args.days,
            request_size: args.request_size as u64,
            poll_limit: args.poll_limit as u64,
            repeats: args.repeats as u64,
            warmups: args.warmups as u64,
            ..Self::default()
        }
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let body = serde_json::to_string_pretty(self)?;
        std::fs::write(path, body + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// The calls as a markdown table, with the load's figures above it.
    pub fn table(&self) -> String {
        let l = &self.load;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} messages ({} final, {} live) in {} requests over {} days and {} agents; \
             loaded in {:.1} s ({:.0}/s), counters recounted in {:.1} s ({} days); \
             summary total {}\n",
            l.messages,
            l.history,
            l.live,
            l.requests,
            self.days,
            self.agents,
            l.insert_seconds,
            l.insert_msgs_per_s,
            l.recount_seconds,
            l.recount_days,
            self.summary_total
        );
        let _ = writeln!(
            out,
            "| call | median ms | p90 ms | plain find median ms | ratio | target | met | plan |"
        );
        let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- | --- |");
        for c in &self.calls {
            let opt = |v: Option<f64>, digits: usize| {
                v.map_or_else(|| "".to_owned(), |v| format!("{v:.digits$}"))
            };
            let _ = writeln!(
                out,
                "| {} `{}` | {:.1} | {:.1} | {} | {} | {} | {} | {} |",
                c.name,
                c.path,
                c.median_ms,
                c.p90_ms,
                opt(c.plain_median_ms, 1),
                opt(c.ratio, 2),
                c.target,
                if c.met { "yes" } else { "**no**" },
                c.plans.as_ref().map_or_else(String::new, |p| p.brief()),
            );
        }
        out
    }
}
