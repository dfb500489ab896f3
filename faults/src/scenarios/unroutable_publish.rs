//! Events published while the queue's binding is gone come back unroutable: they are not counted
//! as published, and the sweeper redeclares the topology and publishes them again.

use anyhow::ensure;
use mongodb::bson::doc;

use super::harness::{amqp_channel, eventually, Run};
use super::Ctx;
use crate::count::Tally;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Tally> {
    let mut run = Run::start(ctx, &[], None, 1).await?;
    run.stack.start_dispatcher(None)?;
    run.submit(0, 0, 10).await?;
    let staged = eventually(30, || async {
        run.count(doc! {"staged": true}).await == 10
    })
    .await;
    ensure!(staged, "the first request was not staged");
    // Take the route away: events published now come back unroutable.
    let topology = sms_shared::amqp::Topology::new(&run.stack.prefix);
    let (conn, ch) = amqp_channel(&run.stack.amqp_url).await?;
    ch.queue_unbind(
        &topology.queue,
        &topology.events_exchange,
        sms_shared::amqp::MESSAGE_ROUTING_KEY,
        Default::default(),
    )
    .await?;
    let _ = conn.close(200, "done").await;
    run.submit(0, 10, 50).await?;
    let http = run.api.http();
    let metrics = http
        .get(run.api.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let returned = metrics
        .lines()
        .find(|l| l.starts_with("sms_events_returned_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    let returned = if returned > 0.0 {
        true
    } else {
        // The first attempt may still be in flight; give it a moment.
        eventually(10, || async {
            let m = http.get(run.api.url("/metrics")).send().await;
            match m {
                Ok(r) => r
                    .text()
                    .await
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l.starts_with("sms_events_returned_total ") && !l.ends_with(" 0")),
                Err(_) => false,
            }
        })
        .await
    };
    ensure!(returned, "no event came back unroutable");
    run.settle(90).await
}
