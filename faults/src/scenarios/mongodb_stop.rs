//! MongoDB is killed during dispatch and restarted on the same data: the dispatcher requeues
//! with backoff and finishes once the database is back.

use std::time::Duration;

use super::harness::Run;
use super::Ctx;
use crate::count::Tally;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Tally> {
    let mut run = Run::start(ctx, &[], None, 1).await?;
    run.stack.start_dispatcher(None)?;
    run.submit(0, 0, 3000).await?;
    ctx.mongo.stop().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    ctx.mongo.restart().await?;
    run.settle(180).await
}
