//! A pool of three phones sends one request; one phone is killed mid-run while it holds leases.
//! Its unsent messages go back to the pool once it has been silent for `AGENT_STALE_SECONDS`
//! (well before their leases end), the two others send them, and every message ends final,
//! sent once. The killed phone's late reports change nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use mongodb::bson::{doc, oid::ObjectId};
use sms_testkit::client::ReportItem;
use sms_testkit::recipients::{pool_request, recipients};
use sms_testkit::{Behaviour, Ledger, Phone};

use super::harness::{drill_phone, eventually, Run};
use super::Ctx;
use crate::count::Tally;

/// Messages of the request.
const TOTAL: usize = 600;
/// Jobs the doomed phone leases before it dies.
const HELD: usize = 50;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Tally> {
    let mut run = Run::start(
        ctx,
        &[
            // Leases long enough that only the staleness can free the dead phone's jobs in time.
            ("LEASE_SECONDS", "120"),
            ("AGENT_STALE_SECONDS", "2"),
            ("RECONCILE_INTERVAL_MS", "200"),
        ],
        None,
        3,
    )
    .await?;
    run.stack.start_dispatcher(None)?;
    let body = pool_request(&run.setup.template_id, recipients(0, TOTAL));
    let accepted = run.api.submit(&run.setup.key, &body).await?;
    run.accepted.push((accepted.request_id, TOTAL));
    ensure!(
        eventually(60, || async {
            run.count(doc! {"staged": true}).await == TOTAL as u64
        })
        .await,
        "not staged"
    );

    // Phones B and C work through the pool, a little slowly, into the shared ledger.
    let stop = Arc::new(AtomicBool::new(false));
    let working = Behaviour {
        poll_limit: 40,
        send_delay: Duration::from_millis(5),
        ..drill_phone()
    };
    let survivors: Vec<_> = run.setup.agents[1..]
        .iter()
        .map(|(agent, token)| {
            let phone = Phone::new(run.api.clone(), agent, &format!("{agent}-survivor"), token);
            let (stop, ledger, behaviour) = (stop.clone(), run.ledger.clone(), working.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if phone.poll_once(&behaviour, &ledger).await.unwrap_or(0) == 0 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            })
        })
        .collect();
    ensure!(
        eventually(60, || async {
            run.count(doc! {"status": "DELIVERED"}).await >= 100
        })
        .await,
        "the two phones did not get going"
    );

    // Phone A leases mid-run, then dies holding its leases (its ledger is its own: what it
    // held is expected to go to another agent).
    let (dead_agent, dead_token) = run.setup.agents[0].clone();
    let dead = Phone::new(
        run.api.clone(),
        &dead_agent,
        "phone-A (killed)",
        &dead_token,
    );
    let held = dead.lease(&Ledger::new(), HELD).await?.jobs;
    ensure!(!held.is_empty(), "phone A got nothing to hold");
    let held_ids: Vec<ObjectId> = held
        .iter()
        .filter_map(|j| ObjectId::parse_str(&j.message_id).ok())
        .collect();
    let dead_id = ObjectId::parse_str(&dead_agent)?;
    let taken_over = eventually(90, || async {
        run.count(doc! {
            "_id": {"$in": &held_ids},
            "status": "DELIVERED",
            "agent_id": {"$ne": dead_id},
        })
        .await
            == held_ids.len() as u64
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for s in survivors {
        let _ = s.await;
    }
    ensure!(
        taken_over,
        "the killed phone's {} messages were not all sent by the others",
        held_ids.len()
    );

    // The killed phone comes back and reports what it held: nothing of it is accepted.
    let late: Vec<ReportItem> = held.iter().map(|j| ReportItem::of(j, "SENT")).collect();
    let results = run.api.report(&dead_token, &late).await?;
    let accepted_late = results.iter().filter(|r| r.ok).count();
    ensure!(
        accepted_late == 0,
        "{accepted_late} late reports were accepted"
    );

    // The survivors drain whatever is left; the dead phone takes no part.
    run.setup.agents.remove(0);
    run.settle(60).await
}
