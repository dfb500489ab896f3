use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use sms_bench::progress::Progress;
use sms_bench::{Cli, Command};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs();
    let result = match cli.command {
        Some(Command::AgentSim(args)) => agent_sim(args).await,
        Some(Command::Scale(args)) => scale(args).await,
        Some(Command::RemoveAmqp {
            amqp_url,
            amqp_prefix,
        }) => sms_testkit::cleanup::remove_amqp(&amqp_url, &amqp_prefix).await,
        None => bench(cli.bench).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sms-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr so that stdout holds only the progress bars and the summary.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
}

async fn bench(args: sms_bench::BenchArgs) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let progress = if stdout.is_terminal() {
        Progress::visible()
    } else {
        Progress::hidden()
    };
    let report = sms_bench::bench::run(&args, &progress).await?;
    let mut out = stdout.lock();
    writeln!(out, "\nSafeCare SMS benchmark\n{}", report.table())?;
    if !report.pipeline_db_top.is_empty() {
        let top = sms_bench::db_top::table(&report.pipeline_db_top);
        writeln!(out, "\nDatabase time during the pipeline (`top`)\n{top}")?;
    }
    if let Some(path) = &args.json {
        writeln!(out, "figures written to {}", path.display())?;
    }
    Ok(())
}

async fn scale(args: sms_bench::scale::ScaleArgs) -> anyhow::Result<()> {
    let report = sms_bench::scale::run(&args).await?;
    writeln!(
        std::io::stdout(),
        "\nSafeCare SMS at scale\n{}",
        report.table()
    )?;
    Ok(())
}

async fn agent_sim(args: sms_bench::SimArgs) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        sms_shared::signal::shutdown_signal().await;
        on_signal.cancel();
    });
    let summary = sms_bench::agent_sim::run(&args, stop).await?;
    tracing::info!("{summary}");
    Ok(())
}
