//! 200 pairs of identical `to + text` in one request reach two dispatcher replicas at once:
//! exactly one of each pair is staged, the other is `CANCELED` / `DUPLICATE_RECENT`.

use anyhow::{ensure, Context};
use sms_testkit::recipients::recipients;

use super::harness::Run;
use super::Ctx;
use crate::count::Tally;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Tally> {
    let mut run = Run::start(ctx, &[], None, 1).await?;
    run.stack.start_dispatcher(None)?;
    run.stack.start_dispatcher(None)?;
    let mut pairs = Vec::new();
    for r in recipients(0, 200) {
        pairs.push(r.clone());
        pairs.push(r);
    }
    let accepted = run
        .setup
        .submit(&run.api, 0, &pairs)
        .await?
        .context("submit")?;
    run.accepted.push(accepted);
    let tally = run.settle(90).await?;
    ensure!(
        tally.canceled == 200 && tally.delivered == 200,
        "expected 200 canceled and 200 delivered: {tally}"
    );
    Ok(tally)
}
