//! RabbitMQ is restarted while phones long-poll. The API's wake consumer and the dispatcher
//! connect again by themselves; the polls open during the restart are answered; and messages
//! accepted afterwards still wake waiting phones at once. Nothing is lost or sent twice.
//!
//! Waiting polls look again only after `LONG_POLL_RECHECK_SECONDS=30`, and each round's polls
//! wait up to 30 s and start before their messages are submitted: a poll that comes back with a
//! job within [`WOKEN_WITHIN`] was woken by the wake fanout, nothing else.

use std::time::Duration;

use anyhow::{ensure, Context};
use mongodb::bson::doc;
use sms_testkit::{Behaviour, Phone};

use super::harness::{drill_phone, eventually, ready, wait_for_polls, Run};
use super::Ctx;
use crate::count::Tally;
use crate::stack::rabbitmqctl;

/// How long a long poll waits.
const WAIT_SECONDS: u64 = 30;
/// How soon after the submit a woken poll must have its job.
const WOKEN_WITHIN: Duration = Duration::from_secs(10);
/// Messages per phone and round.
const PER_PHONE: usize = 20;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Tally> {
    let mut run = Run::start(ctx, &[("LONG_POLL_RECHECK_SECONDS", "30")], None, 2).await?;
    run.stack.start_dispatcher(None)?;
    ensure!(ready(&run.api, 1).await, "the API does not consume wakes");
    woken_round(&mut run, 0)
        .await
        .context("before the restart")?;

    // Phones are long-polling when the broker goes away.
    let during = spawn_polls(&run);
    wait_for_polls(&run.api, during.len()).await?;
    rabbitmqctl(&["stop_app"]).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = async {
        rabbitmqctl(&["start_app"]).await?;
        rabbitmqctl(&["await_startup"]).await
    }
    .await;
    if started.is_err() {
        let _ = rabbitmqctl(&["start_app"]).await;
    }
    started?;
    for poll in during {
        poll.await?
            .context("a long poll open during the restart got no answer")?;
    }
    ensure!(
        ready(&run.api, 1).await,
        "the wake consumer or the dispatcher did not come back after the restart"
    );
    woken_round(&mut run, 10_000)
        .await
        .context("after the restart")?;
    run.settle(120).await
}

/// The phones' long-poll behaviour.
fn long_polling() -> Behaviour {
    Behaviour {
        wait_seconds: WAIT_SECONDS,
        ..drill_phone()
    }
}

/// One long poll per phone, each handling what it gets; each task returns how many jobs it got.
fn spawn_polls(run: &Run) -> Vec<tokio::task::JoinHandle<anyhow::Result<usize>>> {
    run.setup
        .agents
        .iter()
        .map(|(agent, token)| {
            let phone = Phone::new(run.api.clone(), agent, &format!("{agent}-long"), token);
            let ledger = run.ledger.clone();
            tokio::spawn(async move { phone.poll_once(&long_polling(), &ledger).await })
        })
        .collect()
}

/// Starts a long poll per phone, submits [`PER_PHONE`] messages to each once they wait, and
/// expects every poll to come back with jobs within [`WOKEN_WITHIN`].
async fn woken_round(run: &mut Run, offset: usize) -> anyhow::Result<()> {
    let polls = spawn_polls(run);
    wait_for_polls(&run.api, polls.len()).await?;
    let submitted = tokio::time::Instant::now();
    for agent in 0..run.setup.agents.len() {
        run.submit(agent, offset + agent * PER_PHONE, PER_PHONE)
            .await?;
    }
    for poll in polls {
        let got = tokio::time::timeout_at(submitted + WOKEN_WITHIN, poll)
            .await
            .context("a waiting phone was not woken")???;
        ensure!(got > 0, "a long poll came back without its jobs");
    }
    take_the_rest(run).await
}

/// A woken poll takes what was staged when it woke; the phones take the rest of the round (the
/// dispatcher may stage a request's events in several batches), so that the next long polls
/// find nothing and wait.
async fn take_the_rest(run: &Run) -> anyhow::Result<()> {
    let phones: Vec<Phone> = run
        .setup
        .agents
        .iter()
        .map(|(agent, token)| Phone::new(run.api.clone(), agent, &format!("{agent}-rest"), token))
        .collect();
    let all_leased = eventually(30, || async {
        for phone in &phones {
            let _ = phone.poll_once(&drill_phone(), &run.ledger).await;
        }
        run.count(doc! {"status": "PENDING"}).await == 0
    })
    .await;
    ensure!(all_leased, "the round's messages were not all leased");
    Ok(())
}
