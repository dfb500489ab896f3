//! An API process's subscription to the wake fanout: its own queue, exclusive and auto-delete
//! (it lives as long as the subscription's connection), named `{prefix}.wake.<random>`, bound
//! to `{prefix}.wake`, consumed without acknowledgements. A wake older than [`WAKE_TTL_MS`]
//! would only make polls look again for nothing, so the broker drops it.

use anyhow::Context;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, Consumer};

use super::{connect, Topology, WakeEvent};
use crate::config::AmqpConfig;

/// How long a wake may wait in a queue before the broker drops it.
pub const WAKE_TTL_MS: i64 = 30_000;
/// Most wakes a queue holds (the oldest are dropped first).
const MAX_WAKES: i64 = 10_000;

/// A connection whose own queue receives every wake event.
pub struct WakeSubscription {
    connection: Connection,
    consumer: Consumer,
    queue: String,
}

impl WakeSubscription {
    /// Connects, declares the wake exchange and a queue of this subscription's own, binds it
    /// and starts consuming.
    pub async fn open(config: &AmqpConfig, name: &str) -> anyhow::Result<Self> {
        let topology = Topology::new(&config.prefix);
        let connection = connect(config, name).await?;
        let channel = connection
            .create_channel()
            .await
            .context("opening channel")?;
        topology.declare_wake_exchange(&channel).await?;
        let queue = format!("{}.{:016x}", topology.wake_exchange, rand::random::<u64>());
        let mut args = FieldTable::default();
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(WAKE_TTL_MS));
        args.insert("x-max-length".into(), AMQPValue::LongLongInt(MAX_WAKES));
        let own = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        channel
            .queue_declare(&queue, own, args)
            .await
            .context("declaring wake queue")?;
        topology.bind_wake_queue(&channel, &queue).await?;
        let no_ack = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let consumer = channel
            .basic_consume(&queue, "", no_ack, FieldTable::default())
            .await
            .context("starting wake consumer")?;
        Ok(Self {
            connection,
            consumer,
            queue,
        })
    }

    /// The subscription's queue.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The next wake; `Ok(None)` for a delivery that is not a wake event (skipped), an error
    /// when the subscription is lost (connection closed, queue deleted).
    pub async fn next(&mut self) -> anyhow::Result<Option<WakeEvent>> {
        match self.consumer.next().await {
            Some(Ok(delivery)) => Ok(serde_json::from_slice(&delivery.data).ok()),
            Some(Err(e)) => Err(anyhow::Error::new(e).context("wake stream failed")),
            None => anyhow::bail!("the wake consumer was cancelled by the broker"),
        }
    }

    /// Closes the connection (its queue goes with it).
    pub async fn close(self) {
        let closing = self.connection.close(200, "closing wake subscription");
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), closing).await;
    }
}
