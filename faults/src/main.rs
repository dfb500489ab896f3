//! `sms-faults`: runs the reliability scenarios one after another against real binaries and
//! prints, for each, the lost and duplicated counts. Exits non-zero if any scenario fails.
//!
//! Usage: `sms-faults --api-bin PATH --dispatcher-bin PATH --mongo-bin PATH [--only SCENARIO]...
//! [--logs DIR]`, or `sms-faults --list` (`scripts/faults.sh` builds the binaries with the
//! `fault-injection` feature and runs it).

// The scenario report on standard output is what this program is for.
#![allow(clippy::print_stdout)]

mod cli;
mod count;
mod proxy;
mod scenarios;
mod stack;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use cli::Cli;
use scenarios::{Ctx, SCENARIOS};
use stack::Mongo;

/// A scenario that has not settled by then has failed.
const SCENARIO_LIMIT: Duration = Duration::from_secs(600);

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.list {
        for (i, s) in SCENARIOS.iter().enumerate() {
            println!("{:>2}  {:<28} {}", i + 1, s.slug, s.title);
        }
        return ExitCode::SUCCESS;
    }
    let Some(bins) = cli.bins() else {
        Cli::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--api-bin, --dispatcher-bin and --mongo-bin are required",
            )
            .exit();
    };
    let work = std::env::temp_dir().join(format!("sms-faults-{}", std::process::id()));
    let logs = cli.logs.clone().unwrap_or_else(|| work.join("logs"));
    let mongo = match Mongo::start(bins.mongo.clone(), work.join("mongo")).await {
        Ok(m) => m,
        Err(e) => {
            eprintln!("sms-faults: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut ctx = Ctx {
        bins,
        mongo,
        logs: logs.clone(),
        amqp_url: cli.amqp_url.clone(),
    };
    let (mut passed, mut failed) = (0, 0);
    for (i, scenario) in SCENARIOS.iter().enumerate() {
        if !cli.selects(i) {
            continue;
        }
        let (n, name) = (i + 1, scenario.title);
        let started = Instant::now();
        let outcome = tokio::time::timeout(SCENARIO_LIMIT, (scenario.play)(&mut ctx)).await;
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            Ok(Ok(tally)) if tally.lost == 0 && tally.duplicated == 0 => {
                passed += 1;
                println!("scenario {n:>2} PASS {name}: {tally} in {secs:.1}s");
            }
            Ok(Ok(tally)) => {
                failed += 1;
                println!("scenario {n:>2} FAIL {name}: {tally} in {secs:.1}s");
            }
            Ok(Err(e)) => {
                failed += 1;
                println!("scenario {n:>2} FAIL {name}: {e:#} after {secs:.1}s");
            }
            Err(_) => {
                failed += 1;
                println!(
                    "scenario {n:>2} FAIL {name}: did not settle within {}s",
                    SCENARIO_LIMIT.as_secs()
                );
            }
        }
        // Whatever happened, leave the broker running for the next scenario.
        let _ = stack::rabbitmqctl(&["start_app"]).await;
    }
    ctx.mongo.stop().await;
    if failed == 0 {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        println!("process logs are in {}", logs.display());
    }
    println!("faults: {passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
