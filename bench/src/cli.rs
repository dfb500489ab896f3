//! Command line: `sms-bench [OPTIONS]` runs the benchmark, `sms-bench agent-sim [OPTIONS]` runs
//! simulated phones.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "sms-bench",
    version,
    about = "Benchmarks a SafeCare SMS deployment end to end, or simulates its Android agents",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub bench: BenchArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs simulated phones that lease, "send" and report messages until stopped.
    AgentSim(SimArgs),
    /// Loads a large message history into a deployment's database and times its reads.
    Scale(crate::scale::ScaleArgs),
    /// Deletes the RabbitMQ exchanges and queues of an AMQP_PREFIX (used by scripts/bench.sh).
    #[command(hide = true)]
    RemoveAmqp {
        #[arg(long, env = "AMQP_URL")]
        amqp_url: String,
        #[arg(long, env = "AMQP_PREFIX")]
        amqp_prefix: String,
    },
}

/// Options of the benchmark run.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Base URL of the API, e.g. http://127.0.0.1:8000 (or .../sms).
    #[arg(long, env = "SMS_BENCH_API", required = true)]
    pub api: Option<String>,
    /// MongoDB connection string of the deployment's database.
    #[arg(long, env = "MONGO_URI", required = true)]
    pub mongo_uri: Option<String>,
    /// The deployment's database name (MONGO_DB).
    #[arg(long, env = "MONGO_DB", required = true)]
    pub mongo_db: Option<String>,
    /// The API's JWT_SECRET, to mint an operator token.
    #[arg(long, env = "JWT_SECRET", required = true, hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// `iss` claim of the operator token, when the API sets JWT_ISSUER.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// `aud` claim of the operator token, when the API sets JWT_AUDIENCE.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Messages to send.
    #[arg(long, default_value_t = 20_000)]
    pub messages: usize,
    /// Simulated agents; the messages are spread evenly across them.
    #[arg(long, default_value_t = 20)]
    pub agents: usize,
    /// Concurrent API clients submitting requests (and concurrent batches of the raw insert).
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Most recipients per request (the API's MAX_RECIPIENTS_PER_REQUEST).
    #[arg(long, default_value_t = 5_000)]
    pub batch_size: usize,
    /// Jobs each agent asks for per poll.
    #[arg(long, default_value_t = 50)]
    pub poll_limit: usize,
    /// Give up waiting for staging, and separately for delivery, after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Where to write the figures as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Options of `sms-bench agent-sim`.
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// Base URL of the API, e.g. http://127.0.0.1:8000 (or .../sms).
    #[arg(long, env = "SMS_BENCH_API")]
    pub api: String,
    /// Phones to simulate when registering (devices sim-1..N).
    #[arg(long, default_value_t = 1)]
    pub agents: usize,
    /// Registration secret, when the server requires one.
    #[arg(long, env = "AGENT_REGISTRATION_SECRET", hide_env_values = true)]
    pub registration_secret: Option<String>,
    /// Use existing agent tokens instead of registering (one phone per token; repeatable).
    #[arg(long = "token", conflicts_with_all = ["registration_secret", "agents"])]
    pub tokens: Vec<String>,
    /// Prefix of the registered device ids.
    #[arg(long, default_value = "sim")]
    pub device_prefix: String,
    /// Time each message takes to "send".
    #[arg(long, default_value_t = 200)]
    pub send_delay_ms: u64,
    /// Share of messages that fail to send (0.0 to 1.0).
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub failure_rate: f64,
    /// Jobs asked for per poll.
    #[arg(long, default_value_t = 10)]
    pub poll_limit: usize,
    /// Stop after this many seconds; 0 runs until Ctrl-C.
    #[arg(long, default_value_t = 0)]
    pub duration_secs: u64,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err("must be between 0.0 and 1.0".into())
    }
}

/// A required benchmark option, present once clap has checked the command line.
pub(crate) fn required<'a>(value: &'a Option<String>, flag: &str) -> anyhow::Result<&'a str> {
    value
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("{flag} is required"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_options_parse_with_defaults() {
        let cli = Cli::try_parse_from([
            "sms-bench",
            "--api",
            "http://127.0.0.1:8000",
            "--mongo-uri",
            "mongodb://127.0.0.1:27017",
            "--mongo-db",
            "db_sms",
            "--jwt-secret",
            "s",
            "--json",
            "out.json",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.bench.messages, 20_000);
        assert_eq!(cli.bench.agents, 20);
        assert_eq!(cli.bench.batch_size, 5_000);
        assert_eq!(cli.bench.json, Some(PathBuf::from("out.json")));
    }

    #[test]
    fn a_later_option_overrides_an_earlier_default() {
        let cli = Cli::try_parse_from([
            "sms-bench",
            "--api",
            "a",
            "--mongo-uri",
            "m",
            "--mongo-db",
            "d",
            "--jwt-secret",
            "s",
            "--messages",
            "20000",
            "--agents",
            "20",
            "--messages",
            "300",
        ])
        .unwrap();
        assert_eq!(cli.bench.messages, 300);
        assert_eq!(cli.bench.agents, 20);
    }

    #[test]
    fn agent_sim_needs_no_bench_options() {
        let cli = Cli::try_parse_from([
            "sms-bench",
            "agent-sim",
            "--api",
            "http://x",
            "--token",
            "a",
            "--token",
            "b",
            "--failure-rate",
            "0.25",
        ])
        .unwrap();
        let Some(Command::AgentSim(sim)) = cli.command else {
            panic!("agent-sim expected");
        };
        assert_eq!(sim.tokens, ["a", "b"]);
        assert_eq!(sim.failure_rate, 0.25);
    }

    #[test]
    fn failure_rate_outside_zero_to_one_is_refused() {
        let r = Cli::try_parse_from([
            "sms-bench",
            "agent-sim",
            "--api",
            "http://x",
            "--failure-rate",
            "1.5",
        ]);
        assert!(r.is_err());
    }
}
