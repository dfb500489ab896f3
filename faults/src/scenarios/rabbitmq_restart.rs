//! RabbitMQ is stopped and started (`rabbitmqctl stop_app` / `start_app`) while two clients
//! submit 5,000 messages each: requests are accepted while the broker is away, publishers and
//! consumers reconnect, and nothing is lost or staged twice.

use std::time::Duration;

use anyhow::Context;
use sms_testkit::recipients::recipients;

use super::harness::Run;
use super::Ctx;
use crate::count::Tally;
use crate::stack::rabbitmqctl;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Tally> {
    let mut run = Run::start(ctx, &[], None, 2).await?;
    run.stack.start_dispatcher(None)?;
    run.stack.start_dispatcher(None)?;
    let outage = tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        rabbitmqctl(&["stop_app"]).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        rabbitmqctl(&["start_app"]).await?;
        rabbitmqctl(&["await_startup"]).await
    });
    let (a, b) = (recipients(0, 5000), recipients(5000, 5000));
    let (ra, rb) = tokio::join!(
        run.setup.submit(&run.api, 0, &a),
        run.setup.submit(&run.api, 1, &b)
    );
    let outage_result = outage.await?;
    if outage_result.is_err() {
        let _ = rabbitmqctl(&["start_app"]).await;
    }
    outage_result?;
    run.accepted.push(ra?.context("submit")?);
    run.accepted.push(rb?.context("submit")?);
    run.settle(480).await
}
