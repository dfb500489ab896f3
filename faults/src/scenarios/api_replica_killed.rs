//! Two API replicas, A and B, on one database and AMQP prefix, and two dispatchers. Six phones
//! long-poll, three through A and three through B; requests, pinned and pool, go in through both
//! replicas; A is killed (SIGKILL) mid-run. A sits behind a [`Proxy`] that routes new connections
//! to B once A refuses them, as a load balancer would, so A's phones and clients carry on through
//! B. Every accepted message ends final, sent once, and phones waiting on B keep being woken.
//!
//! Waiting polls look again only after `LONG_POLL_RECHECK_SECONDS=30`, longer than their `wait`,
//! and a round's polls wait in the API before its messages are submitted: a poll that comes back
//! with jobs before its `wait` ran out was woken through the wake fanout, nothing else.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context};
use mongodb::bson::doc;
use sms_testkit::client::is_unreachable;
use sms_testkit::recipients::{otp_request, pool_request, recipients};
use sms_testkit::{Api, Behaviour, Phone};
use tokio::time::Instant;

use super::harness::{client, drill_phone, eventually, ready, wait_for_polls, Run, Setup};
use super::Ctx;
use crate::count::{self, Tally};
use crate::proxy::Proxy;

/// How long a long poll waits (below `LONG_POLL_RECHECK_SECONDS`).
const WAIT_SECONDS: u64 = 25;
/// Phones; the first half reach the API through A, the others through B.
const PHONES: usize = 6;
/// Messages per phone in a woken round.
const PER_PHONE: usize = 20;
/// Messages per request of the run.
const BATCH: usize = 100;
/// Rounds of the run; each submits a pinned and a pool request through each replica.
const ROUNDS: usize = 10;
/// Requests accepted through A before it is killed.
const KILL_AFTER: usize = 8;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Tally> {
    let overrides = [
        ("LONG_POLL_RECHECK_SECONDS", "30"),
        // Jobs leased by a poll whose answer died with A come back soon.
        ("LEASE_SECONDS", "30"),
    ];
    let mut run = Run::start(ctx, &overrides, None, PHONES).await?;
    let port_b = run.stack.start_api_replica().await?;
    let front = Proxy::start(vec![run.stack.api_port, port_b]).await?;
    let a = run.api.clone();
    let b = client(&format!("http://127.0.0.1:{port_b}"))?;
    // From here on the run reaches A through the proxy, like the phones of A.
    run.api = client(&front.url())?;
    run.stack.start_dispatcher(None)?;
    run.stack.start_dispatcher(None)?;
    ensure!(
        ready(&a, 2).await && ready(&b, 2).await,
        "the replicas do not both consume wakes beside two dispatchers"
    );
    let half = PHONES / 2;
    let routes: Vec<Api> = (0..PHONES)
        .map(|i| if i < half { &run.api } else { &b }.clone())
        .collect();

    // Phones waiting on each replica are woken by messages submitted through the other one.
    let crossed: Vec<Api> = routes.iter().rev().cloned().collect();
    let slowest = woken_round(&mut run, &routes, &crossed, &[(&a, half), (&b, half)], 0)
        .await
        .context("before the kill")?;
    println!("  before the kill: {PHONES} waiting phones woken, the last {slowest:.1?} after the submits");

    // The run: phones long-poll and send while requests go in through both; A dies mid-run.
    let stop = Arc::new(AtomicBool::new(false));
    let phones = spawn_phones(&run, &routes, &stop);
    let through_a = Arc::new(AtomicUsize::new(0));
    let submitter = tokio::spawn(submit_all(
        run.setup.clone(),
        [run.api.clone(), b.clone()],
        through_a.clone(),
    ));
    ensure!(
        eventually(120, || async {
            through_a.load(Ordering::Relaxed) >= KILL_AFTER
        })
        .await,
        "A did not accept {KILL_AFTER} requests"
    );
    let final_at_kill = run.count(doc! {"status": "DELIVERED"}).await;
    run.stack.kill_api().await;
    // A is reaped: no connection reaches it any more.
    let before = front.routed();
    let killed = Instant::now();
    let (accepted, unanswered) = submitter.await??;
    println!(
        "  A killed after {KILL_AFTER} of its requests, {final_at_kill} messages delivered; \
         {} requests accepted in all, {unanswered} unanswered, the last {:.1?} after the kill",
        accepted.len(),
        killed.elapsed()
    );
    run.accepted.extend(accepted);
    let (db, all) = (run.db.clone(), run.accepted.clone());
    let finished = eventually(180, || count::settled(&db, &all)).await;
    let took = killed.elapsed();
    stop.store(true, Ordering::Relaxed);
    for p in phones {
        p.await?;
    }
    ensure!(finished, "the phones did not finish the run's messages");
    let after = front.routed();
    ensure!(
        after[1] > before[1],
        "the front did not turn to B once A was gone: {before:?} then {after:?}"
    );
    println!(
        "  the run's messages final {:.1?} after the kill; {} phone polls cut off; \
         connections from A's side: {} to A until the kill, {} to B after it",
        took,
        run.ledger.poll_errors.load(Ordering::Relaxed),
        before[0],
        after[1] - before[1],
    );

    // Every phone now waits on B, and messages submitted through B wake them all.
    quiet(&run, &routes).await;
    let through_b = vec![b.clone(); PHONES];
    let slowest = woken_round(&mut run, &routes, &through_b, &[(&b, PHONES)], 5_000)
        .await
        .context("after the kill")?;
    println!("  after the kill: {PHONES} phones waiting on B woken, the last {slowest:.1?} after the submits");
    run.settle(120).await
}

/// The phones' long-poll behaviour; a report that got no answer is tried again (through B, once
/// A is gone).
fn long_polling() -> Behaviour {
    Behaviour {
        wait_seconds: WAIT_SECONDS,
        report_attempts: 5,
        ..drill_phone()
    }
}

/// Phone `i` of the run, reaching the API through `routes[i]`.
fn phone(run: &Run, routes: &[Api], i: usize) -> Phone {
    let (agent, token) = &run.setup.agents[i];
    Phone::new(routes[i].clone(), agent, &format!("{agent}-long"), token)
}

/// Every phone long-polls and sends what it gets until `stop`.
fn spawn_phones(
    run: &Run,
    routes: &[Api],
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..PHONES)
        .map(|i| {
            let (phone, ledger, stop) = (phone(run, routes, i), run.ledger.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if phone.poll_once(&long_polling(), &ledger).await.is_err() {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            })
        })
        .collect()
}

/// Submits the run's requests, a pinned and a pool one through each of `routes` per round,
/// counting those accepted through the first in `through_first`. Returns the accepted requests
/// and how many got no answer (the replica died under them).
async fn submit_all(
    setup: Setup,
    routes: [Api; 2],
    through_first: Arc<AtomicUsize>,
) -> anyhow::Result<(Vec<(String, usize)>, usize)> {
    let (mut accepted, mut unanswered) = (Vec::new(), 0);
    for round in 0..ROUNDS {
        for (r, api) in routes.iter().enumerate() {
            let n = round * routes.len() + r;
            let offset = 10_000 + n * 2 * BATCH;
            let agent = &setup.agents[n % PHONES].0;
            let bodies = [
                otp_request(&setup.template_id, agent, recipients(offset, BATCH)),
                pool_request(&setup.template_id, recipients(offset + BATCH, BATCH)),
            ];
            for body in bodies {
                match api.submit(&setup.key, &body).await {
                    Ok(a) => {
                        accepted.push((a.request_id, BATCH));
                        if r == 0 {
                            through_first.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) if is_unreachable(&e) => unanswered += 1,
                    Err(e) => return Err(e.context("submit")),
                }
            }
        }
    }
    Ok((accepted, unanswered))
}

/// Plain polls until no phone gets anything, so that a round's long polls start empty-handed.
async fn quiet(run: &Run, routes: &[Api]) {
    let plain = Behaviour {
        report_attempts: 5,
        ..drill_phone()
    };
    for i in 0..PHONES {
        let phone = phone(run, routes, i);
        while phone.poll_once(&plain, &run.ledger).await.unwrap_or(0) > 0 {}
    }
}

/// Phone `i` long-polls through `polls_via[i]`; once the polls wait (`waiting`: an API and how
/// many polls wait in it), [`PER_PHONE`] messages for each phone `i` are submitted through
/// `submit_via[i]`, and every poll must come back with jobs before its `wait` ran out. Returns
/// how long after the submits the last poll came back.
async fn woken_round(
    run: &mut Run,
    polls_via: &[Api],
    submit_via: &[Api],
    waiting: &[(&Api, usize)],
    offset: usize,
) -> anyhow::Result<Duration> {
    let polls: Vec<_> = (0..PHONES)
        .map(|i| {
            let (phone, ledger) = (phone(run, polls_via, i), run.ledger.clone());
            tokio::spawn(async move {
                let asked = Instant::now();
                let got = phone.poll_once(&long_polling(), &ledger).await?;
                anyhow::Ok((got, asked.elapsed(), Instant::now()))
            })
        })
        .collect();
    for (api, n) in waiting {
        wait_for_polls(api, *n).await?;
    }
    let submitted = Instant::now();
    for (i, api) in submit_via.iter().enumerate() {
        let to = recipients(offset + i * PER_PHONE, PER_PHONE);
        let r = run
            .setup
            .submit(api, i, &to)
            .await?
            .context("API unreachable")?;
        run.accepted.push(r);
    }
    let mut last = Duration::ZERO;
    for (i, poll) in polls.into_iter().enumerate() {
        let (got, took, answered) = poll.await??;
        ensure!(
            got > 0 && took < Duration::from_secs(WAIT_SECONDS),
            "phone {i} was not woken: {got} jobs after {took:.1?} of a {WAIT_SECONDS} s wait"
        );
        last = last.max(answered.saturating_duration_since(submitted));
    }
    Ok(last)
}
