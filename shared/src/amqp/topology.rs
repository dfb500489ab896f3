//! The RabbitMQ objects of one deployment: their names, built from `AMQP_PREFIX` in one place,
//! and the one function that declares them all.
//!
//! Topology (every name under the prefix `{p}`):
//! - `{p}.events`: durable direct exchange the API publishes message events to;
//! - `{p}.messages`: durable quorum queue bound with routing key `message`, dead-lettering to `{p}.dlx`;
//! - `{p}.dlx`: durable fanout exchange; `{p}.messages.dead`: the durable dead-letter queue.
//!
//! Both binaries declare it at start and on every new channel or connection, so an empty broker
//! needs no preparation and a deleted queue comes back. A new exchange or queue is one field, one
//! name in [`Topology::new`] and one step in [`Topology::declare`].

use anyhow::Context;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

/// Routing key of message events.
pub const MESSAGE_ROUTING_KEY: &str = "message";
/// After this many deliveries a quorum queue dead-letters an event instead of redelivering it.
pub const DELIVERY_LIMIT: i64 = 50;

/// Exchange and queue names for one prefix.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Where the API publishes message events.
    pub events_exchange: String,
    /// The queue dispatchers consume message events from.
    pub queue: String,
    /// Where the message queue dead-letters events.
    pub dead_letter_exchange: String,
    /// Where dead-lettered events wait for an operator.
    pub dead_letter_queue: String,
}

impl Topology {
    /// Every name under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            events_exchange: format!("{prefix}.events"),
            queue: format!("{prefix}.messages"),
            dead_letter_exchange: format!("{prefix}.dlx"),
            dead_letter_queue: format!("{prefix}.messages.dead"),
        }
    }

    /// Every queue, e.g. to delete them after a test.
    pub fn queues(&self) -> [&str; 2] {
        [&self.queue, &self.dead_letter_queue]
    }

    /// Every exchange, e.g. to delete them after a test.
    pub fn exchanges(&self) -> [&str; 2] {
        [&self.events_exchange, &self.dead_letter_exchange]
    }

    /// Declares every exchange, queue and binding (idempotent).
    pub async fn declare(&self, channel: &Channel) -> anyhow::Result<()> {
        declare_exchange(channel, &self.events_exchange, ExchangeKind::Direct)
            .await
            .context("declaring events exchange")?;
        declare_exchange(channel, &self.dead_letter_exchange, ExchangeKind::Fanout)
            .await
            .context("declaring dead-letter exchange")?;
        declare_quorum_queue(channel, &self.dead_letter_queue, FieldTable::default())
            .await
            .context("declaring dead-letter queue")?;
        bind(
            channel,
            &self.dead_letter_queue,
            &self.dead_letter_exchange,
            "",
        )
        .await
        .context("binding dead-letter queue")?;
        let mut args = FieldTable::default();
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.dead_letter_exchange.clone().into()),
        );
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
        declare_quorum_queue(channel, &self.queue, args)
            .await
            .context("declaring message queue")?;
        bind(
            channel,
            &self.queue,
            &self.events_exchange,
            MESSAGE_ROUTING_KEY,
        )
        .await
        .context("binding message queue")?;
        Ok(())
    }
}

async fn declare_exchange(channel: &Channel, name: &str, kind: ExchangeKind) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(name, kind, durable, FieldTable::default())
        .await
}

/// A durable quorum queue with `args` besides its type.
async fn declare_quorum_queue(
    channel: &Channel,
    name: &str,
    mut args: FieldTable,
) -> lapin::Result<()> {
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel.queue_declare(name, durable, args).await.map(drop)
}

async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str) -> lapin::Result<()> {
    channel
        .queue_bind(
            queue,
            exchange,
            key,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}
