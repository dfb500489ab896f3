//! A dispatcher is killed after staging a message and before acking its event (the
//! `crash-before-ack` crash point): the redelivered event finds the message staged and changes
//! nothing.

use anyhow::ensure;
use mongodb::bson::doc;

use super::harness::{eventually, Run};
use super::Ctx;
use crate::count::Tally;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Tally> {
    let mut run = Run::start(ctx, &[], None, 1).await?;
    run.stack.start_dispatcher(Some("crash-before-ack"))?;
    run.submit(0, 0, 50).await?;
    let crashed = eventually(30, || {
        let exited = run.stack.exited_dispatchers();
        async move { exited == 1 }
    })
    .await;
    ensure!(crashed, "the dispatcher's crash point did not fire");
    let staged_unacked = run.count(doc! {"staged": true}).await;
    ensure!(staged_unacked >= 1, "nothing was staged before the crash");
    run.stack.start_dispatcher(None)?;
    run.settle(90).await
}
