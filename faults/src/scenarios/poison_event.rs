//! Poison events (an unparseable payload, an event for a message that does not exist) go to the
//! dead-letter queue while real work keeps flowing.

use anyhow::ensure;
use mongodb::bson::doc;

use super::harness::{amqp_channel, eventually, Run};
use super::Ctx;
use crate::count::Tally;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Tally> {
    let mut run = Run::start(ctx, &[], None, 1).await?;
    run.stack.start_dispatcher(None)?;
    run.submit(0, 0, 20).await?;
    // Once those are staged the queue exists and is consumed; an event published before any
    // queue is bound would be unroutable rather than poison.
    let flowing = eventually(30, || async {
        run.count(doc! {"staged": true}).await == 20
    })
    .await;
    ensure!(flowing, "the first 20 messages were not staged");
    let topology = sms_shared::amqp::Topology::new(&run.stack.prefix);
    let (conn, ch) = amqp_channel(&run.stack.amqp_url).await?;
    ch.confirm_select(Default::default()).await?;
    for payload in [b"{broken".to_vec(), br#"{"message_id":"0123456789abcdef01234567","request_id":"0123456789abcdef01234567","accepted_at_ms":0}"#.to_vec()] {
        ch.basic_publish(&topology.events_exchange, "message", Default::default(), &payload, Default::default())
            .await?
            .await?;
    }
    run.submit(0, 20, 20).await?;
    let dead = eventually(20, || async {
        let q = ch
            .queue_declare(
                &topology.dead_letter_queue,
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await;
        q.is_ok_and(|q| q.message_count() == 2)
    })
    .await;
    let _ = conn.close(200, "done").await;
    ensure!(
        dead,
        "the poison events did not reach the dead-letter queue"
    );
    run.settle(90).await
}
