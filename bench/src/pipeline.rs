//! The pipeline under load: a fresh set of N messages submitted while the simulated agents
//! already long-poll (`wait=25`) and report what they get `SENT`, then `DELIVERED`, so that
//! submission, staging, leasing and reporting overlap as they do in production. Timed from the
//! first `POST /requests` to the last report that made a message final. While the bulk is being
//! submitted and staged, the OTP agent gets one OTP every 100 ms (`otp`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::bson::Document;
use mongodb::Collection;
use sms_testkit::{Api, Behaviour, Ledger};
use tokio_util::sync::CancellationToken;

use crate::bench::{submit, wait_staged, Fixture};
use crate::cli::BenchArgs;
use crate::crew::Crew;
use crate::otp::{self, OtpAgent, OtpFigures, OtpTarget};
use crate::progress::Progress;
use crate::workload::RequestPlan;

/// Seconds each bulk agent's poll waits for a job.
const WAIT_SECONDS: u64 = 25;
/// Pause between the agents' first polls and the first submission.
const WARM_UP: Duration = Duration::from_millis(500);

/// What the pipeline phase measured.
pub struct PipelineFigures {
    pub accepted: u64,
    /// Messages the agents made final.
    pub finished: u64,
    /// First `POST` to last final report.
    pub elapsed: Duration,
    pub submit: Duration,
    /// First `POST` until no message of the bulk was left unstaged.
    pub staged: Duration,
    pub ledger: Arc<Ledger>,
    /// The OTPs sent while the bulk was submitted and staged.
    pub otp: OtpFigures,
    pub timed_out: Option<String>,
}

/// The bulk's requests: those of `plans` moved to messages `offset..`, so that recipients and
/// codes differ from the earlier phases'.
pub fn shifted(plans: &[RequestPlan], offset: usize) -> Vec<RequestPlan> {
    plans
        .iter()
        .map(|p| RequestPlan {
            agent: p.agent,
            messages: p.messages.start + offset..p.messages.end + offset,
        })
        .collect()
}

/// Runs the phase; `of_run` selects the bulk agents' messages (all earlier ones are final).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    api: &Api,
    fixture: &Fixture,
    run_id: &str,
    plans: &[RequestPlan],
    args: &BenchArgs,
    messages: &Collection<Document>,
    of_run: Document,
    otp_target: &OtpTarget,
    otp_agent: &OtpAgent,
    progress: &Progress,
) -> anyhow::Result<PipelineFigures> {
    let mut targets = vec![0u64; fixture.agents.len()];
    for p in plans {
        targets[p.agent] += p.messages.len() as u64;
    }
    let bar = progress.bar("pipeline: final", targets.iter().sum());
    let behaviour = Behaviour {
        wait_seconds: WAIT_SECONDS,
        max_idle_wait: Some(Duration::from_millis(200)),
        ..Behaviour::prompt(args.poll_limit)
    };
    let label = |n| format!("bench-{run_id}-{n}-pipeline");
    let mut crew = Crew::start(api, &fixture.agents, &targets, &behaviour, label, &bar);
    tokio::time::sleep(WARM_UP).await;

    // The OTPs run from the first submission until the bulk is staged.
    let staged_signal = CancellationToken::new();
    let otps = otp::measure(
        otp_target,
        otp_agent,
        otp::IDLE_COUNT,
        staged_signal.clone().cancelled_owned(),
        Duration::from_secs(60),
    );
    let timeout = Duration::from_secs(args.timeout_secs);
    let started = Instant::now();
    let bulk = async {
        let submitted = submit(api, fixture, run_id, plans, args.clients, progress).await;
        let staged = match &submitted {
            Ok(s) => {
                let stage_bar = progress.bar("pipeline: staged", s.accepted);
                let staged =
                    wait_staged(messages, of_run, s.accepted, started, timeout, &stage_bar).await;
                stage_bar.finish();
                staged
            }
            Err(_) => Err(anyhow::anyhow!("submission failed")),
        };
        staged_signal.cancel();
        (submitted, staged)
    };
    let ((submitted, staged), otp) = tokio::join!(bulk, otps);
    let (submitted, staged, otp) = (submitted?, staged?, otp?);

    let mut timed_out = None;
    let left = timeout.saturating_sub(started.elapsed());
    if !crew.finish(left).await? {
        timed_out = Some(format!(
            "pipeline: {} of {} final after {} s",
            crew.ledger.finished(),
            submitted.accepted,
            args.timeout_secs
        ));
    }
    bar.finish();
    if !staged.complete && timed_out.is_none() {
        timed_out = Some(format!(
            "pipeline staging: {} of {} staged after {} s",
            staged.staged, submitted.accepted, args.timeout_secs
        ));
    }
    let ledger = crew.ledger;
    let elapsed = ledger
        .lease_window()
        .map(|(_, last)| last.saturating_duration_since(started))
        .unwrap_or_default();
    Ok(PipelineFigures {
        accepted: submitted.accepted,
        finished: ledger.finished(),
        elapsed,
        submit: submitted.elapsed,
        staged: staged.elapsed,
        ledger,
        otp,
        timed_out,
    })
}
