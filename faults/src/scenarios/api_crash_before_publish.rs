//! The API is killed between storing a request's messages and publishing their events (the
//! `crash-before-publish` crash point answers 202 and aborts): the restarted API's sweeper must
//! publish every stored message.

use anyhow::ensure;
use mongodb::bson::doc;

use super::harness::Run;
use super::Ctx;
use crate::count::Tally;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Tally> {
    let mut run = Run::start(ctx, &[], Some("crash-before-publish"), 1).await?;
    run.stack.start_dispatcher(None)?;
    run.submit(0, 0, 200).await?;
    run.stack.wait_api_exit(15).await?;
    let unpublished = run.count(doc! {"published": false}).await;
    ensure!(
        unpublished == 200,
        "the crash point did not fire before publishing ({unpublished} unpublished)"
    );
    run.stack.start_api(None).await?;
    run.settle(90).await
}
