//! `sms-faults`: runs the reliability scenarios one after another against real binaries and
//! prints, for each, the lost and duplicated counts. Exits non-zero if any scenario fails.
//!
//! Usage: `sms-faults --api-bin PATH --dispatcher-bin PATH --mongo-bin PATH [--only N] [--logs DIR]`
//! (`scripts/faults.sh` builds the binaries with the `fault-injection` feature and runs it).

// The scenario report on standard output is what this program is for.
#![allow(clippy::print_stdout)]

mod client;
mod count;
mod phones;
mod scenarios;
mod stack;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use scenarios::{Ctx, NAMES};
use stack::{Bins, Mongo};

/// A scenario that has not settled by then has failed.
const SCENARIO_LIMIT: Duration = Duration::from_secs(600);

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(api), Some(dispatcher), Some(mongo)) = (
        arg(&args, "--api-bin"),
        arg(&args, "--dispatcher-bin"),
        arg(&args, "--mongo-bin"),
    ) else {
        eprintln!("usage: sms-faults --api-bin PATH --dispatcher-bin PATH --mongo-bin PATH [--only N] [--logs DIR]");
        return ExitCode::from(2);
    };
    let only: Option<usize> = arg(&args, "--only").and_then(|n| n.parse().ok());
    let work = std::env::temp_dir().join(format!("sms-faults-{}", std::process::id()));
    let logs = arg(&args, "--logs")
        .map(PathBuf::from)
        .unwrap_or_else(|| work.join("logs"));
    let bins = Bins {
        api: api.into(),
        dispatcher: dispatcher.into(),
        mongo: mongo.into(),
    };
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
    };
    let (mut passed, mut failed) = (0, 0);
    for (i, name) in NAMES.iter().enumerate() {
        let n = i + 1;
        if only.is_some_and(|o| o != n) {
            continue;
        }
        let started = Instant::now();
        let outcome = tokio::time::timeout(SCENARIO_LIMIT, scenarios::run(n, &mut ctx)).await;
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
