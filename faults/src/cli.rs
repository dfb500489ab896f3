//! Command line of `sms-faults`.

use std::path::PathBuf;

use clap::Parser;

use crate::scenarios::{self, SCENARIOS};
use crate::stack::Bins;

/// Runs the reliability scenarios against real binaries and prints, for each, the lost and
/// duplicated counts.
#[derive(Debug, Parser)]
#[command(
    name = "sms-faults",
    version,
    after_help = "scripts/faults.sh builds the binaries with the fault-injection feature and runs \
                  this program with them. Some scenarios stop and start the machine's RabbitMQ."
)]
pub struct Cli {
    /// The `sms-api` binary, built with the fault-injection feature.
    #[arg(long, value_name = "PATH", required_unless_present = "list")]
    api_bin: Option<PathBuf>,
    /// The `sms-dispatcher` binary, built with the fault-injection feature.
    #[arg(long, value_name = "PATH", required_unless_present = "list")]
    dispatcher_bin: Option<PathBuf>,
    /// The SecantusDB server binary (`secantusd-rs`).
    #[arg(long, value_name = "PATH", required_unless_present = "list")]
    mongo_bin: Option<PathBuf>,
    /// Run only this scenario, by name or number (see --list); repeat for several.
    #[arg(long = "only", value_name = "SCENARIO", value_parser = parse_scenario)]
    only: Vec<usize>,
    /// Where the processes' logs go [default: a temporary folder, kept when a scenario fails].
    #[arg(long, value_name = "DIR")]
    pub logs: Option<PathBuf>,
    /// The RabbitMQ to use. Scenarios stop and start it with `rabbitmqctl`, which reaches the node
    /// named by `RABBITMQ_NODENAME` (the machine's default node when unset): point both at a
    /// separate node to keep the machine's broker running for other work.
    #[arg(
        long,
        value_name = "URL",
        env = "SMS_FAULTS_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// List the scenarios (number, name and title) and exit.
    #[arg(long)]
    pub list: bool,
}

impl Cli {
    /// The binaries under test (all three are required unless `--list` is given).
    pub fn bins(&self) -> Option<Bins> {
        Some(Bins {
            api: self.api_bin.clone()?,
            dispatcher: self.dispatcher_bin.clone()?,
            mongo: self.mongo_bin.clone()?,
        })
    }

    /// Whether scenario row `i` is to run: every one when no `--only` is given.
    pub fn selects(&self, i: usize) -> bool {
        self.only.is_empty() || self.only.contains(&i)
    }
}

/// A scenario's row from its name or number; an unknown one is an error naming every scenario.
fn parse_scenario(value: &str) -> Result<usize, String> {
    scenarios::find(value).ok_or_else(|| {
        let names: Vec<String> = SCENARIOS
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{} {}", i + 1, s.slug))
            .collect();
        format!(
            "no such scenario; give a name or number among: {}",
            names.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BINS: [&str; 6] = [
        "--api-bin",
        "a",
        "--dispatcher-bin",
        "d",
        "--mongo-bin",
        "m",
    ];

    fn parse(extra: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(
            std::iter::once("sms-faults")
                .chain(BINS)
                .chain(extra.iter().copied()),
        )
    }

    #[test]
    fn every_scenario_runs_by_default() {
        let cli = parse(&[]).unwrap();
        assert!((0..SCENARIOS.len()).all(|i| cli.selects(i)));
        assert_eq!(cli.bins().unwrap().dispatcher, PathBuf::from("d"));
    }

    #[test]
    fn only_takes_names_and_numbers_and_repeats() {
        let cli = parse(&["--only", "rabbitmq-restart", "--only", "6"]).unwrap();
        let chosen: Vec<usize> = (0..SCENARIOS.len()).filter(|&i| cli.selects(i)).collect();
        assert_eq!(chosen, [1, 5]);
    }

    #[test]
    fn an_unknown_scenario_is_a_usage_error_listing_the_names() {
        for bad in ["0", "99", "rabbit", ""] {
            let err = parse(&["--only", bad]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
            let text = err.to_string();
            for (i, s) in SCENARIOS.iter().enumerate() {
                assert!(text.contains(&format!("{} {}", i + 1, s.slug)), "{text}");
            }
        }
    }

    #[test]
    fn list_needs_no_binaries_but_running_does() {
        let cli = Cli::try_parse_from(["sms-faults", "--list"]).unwrap();
        assert!(cli.list && cli.bins().is_none());
        let err = Cli::try_parse_from(["sms-faults", "--api-bin", "a"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
