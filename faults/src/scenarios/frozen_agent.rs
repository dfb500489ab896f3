//! A phone freezes past its lease while the same agent's restarted app leases the job again and
//! sends it: the frozen phone's late report with the stale `lease_id` is refused (`STALE_LEASE`)
//! and the message is sent once.

use std::time::Duration;

use anyhow::ensure;
use mongodb::bson::doc;
use sms_testkit::client::ReportItem;
use sms_testkit::Phone;

use super::harness::{drill_phone, eventually, Run};
use super::Ctx;
use crate::count::Tally;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Tally> {
    let mut run = Run::start(ctx, &[("LEASE_SECONDS", "2")], None, 1).await?;
    run.stack.start_dispatcher(None)?;
    run.submit(0, 0, 10).await?;
    ensure!(
        eventually(30, || async {
            run.count(doc! {"staged": true}).await == 10
        })
        .await,
        "not staged"
    );
    let (agent, token) = run.setup.agents[0].clone();
    // Phone A leases everything, then freezes past the lease.
    let phone_a = Phone::new(run.api.clone(), &agent, "phone-A", &token);
    let frozen = phone_a.lease(&run.ledger, 50).await?.jobs;
    ensure!(frozen.len() == 10, "phone A got {} jobs", frozen.len());
    tokio::time::sleep(Duration::from_millis(2600)).await;
    // Phone B (the same agent's app after a restart) leases the expired jobs and sends them.
    let phone_b = Phone::new(run.api.clone(), &agent, &format!("{agent}-B"), &token);
    let got = phone_b.poll_once(&drill_phone(), &run.ledger).await?;
    ensure!(got == 10, "phone B re-leased {got} jobs");
    // Phone A wakes up and reports with its stale leases: every item must be refused.
    let late: Vec<ReportItem> = frozen.iter().map(|j| ReportItem::of(j, "SENT")).collect();
    let results = run.api.report(&token, &late).await?;
    let accepted = results.iter().filter(|r| r.ok).count();
    ensure!(accepted == 0, "{accepted} stale reports were accepted");
    ensure!(
        results
            .iter()
            .all(|r| r.error.as_deref() == Some("STALE_LEASE")),
        "stale reports not refused as STALE_LEASE: {results:?}"
    );
    run.settle(60).await
}
