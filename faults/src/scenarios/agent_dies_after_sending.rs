//! A phone reports `SENDING` and dies: the message is never handed out again and becomes
//! `FAILED` with `SENDING_TIMEOUT`.

use std::time::Duration;

use anyhow::ensure;
use mongodb::bson::doc;
use sms_testkit::{Behaviour, Phone};

use super::harness::{drill_phone, eventually, Run};
use super::Ctx;
use crate::count::Tally;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Tally> {
    let mut run = Run::start(
        ctx,
        &[
            ("SENDING_TIMEOUT_SECONDS", "2"),
            ("RECONCILE_INTERVAL_MS", "200"),
        ],
        None,
        1,
    )
    .await?;
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
    let dies_after_sending = Behaviour {
        vanish_after_sending: true,
        ..drill_phone()
    };
    let got = Phone::new(run.api.clone(), &agent, &agent, &token)
        .poll_once(&dies_after_sending, &run.ledger)
        .await?;
    ensure!(got == 10, "leased {got}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        run.api.next_jobs(&token, 50).await?.jobs.is_empty(),
        "a SENDING message was handed out again"
    );
    let failed = eventually(20, || async {
        run.count(doc! {"status": "FAILED", "last_error": "SENDING_TIMEOUT"})
            .await
            == 10
    })
    .await;
    ensure!(failed, "SENDING messages were not failed after the timeout");
    ensure!(
        run.api.next_jobs(&token, 50).await?.jobs.is_empty(),
        "a timed-out message was handed out again"
    );
    run.settle(30).await
}
