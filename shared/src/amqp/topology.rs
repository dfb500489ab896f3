//! The RabbitMQ objects of one deployment: their names, built from `AMQP_PREFIX` in one place,
//! and the one function that declares them all.
//!
//! Topology (every name under the prefix `{p}`):
//! - `{p}.events`: durable direct exchange the API publishes message events to;
//! - `{p}.messages`: durable quorum queue bound with routing key `message` (the bulk lane);
//! - `{p}.messages.fast`: durable quorum queue bound with routing key `message.fast` (the fast
//!   lane: messages whose `priority_weight` reaches `FAST_LANE_PRIORITY`), which dispatchers
//!   consume on a consumer of its own so that a bulk backlog never delays it;
//! - both message queues dead-letter to `{p}.dlx`, a durable fanout exchange, into
//!   `{p}.messages.dead`, the durable dead-letter queue;
//! - `{p}.wake`: durable fanout exchange on which dispatchers announce freshly staged jobs; every
//!   API process binds an exclusive queue of its own to it (see `sms-api`'s `wake` module).
//!
//! Both binaries declare it at start and on every new channel or connection, so an empty broker
//! needs no preparation and a deleted queue comes back. A new exchange or queue is one field, one
//! name in [`Topology::new`] and one step in [`Topology::declare`].

use anyhow::Context;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

/// Routing key of message events of the bulk lane.
pub const MESSAGE_ROUTING_KEY: &str = "message";
/// Routing key of message events of the fast lane.
pub const FAST_ROUTING_KEY: &str = "message.fast";
/// After this many deliveries a quorum queue dead-letters an event instead of redelivering it.
pub const DELIVERY_LIMIT: i64 = 50;

/// Which message queue an event goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Everything below `FAST_LANE_PRIORITY`: campaigns, reminders.
    Bulk,
    /// `priority_weight` at or above `FAST_LANE_PRIORITY`: one-time passwords.
    Fast,
}

impl Lane {
    /// The lane of a message of `priority_weight` (`None`: an event of an earlier version,
    /// which carries none) when the fast lane starts at `fast_lane_priority`.
    pub fn of(priority_weight: Option<i32>, fast_lane_priority: i32) -> Self {
        match priority_weight {
            Some(w) if w >= fast_lane_priority => Lane::Fast,
            _ => Lane::Bulk,
        }
    }

    /// The routing key that takes an event to this lane's queue.
    pub fn routing_key(self) -> &'static str {
        match self {
            Lane::Bulk => MESSAGE_ROUTING_KEY,
            Lane::Fast => FAST_ROUTING_KEY,
        }
    }

    /// `bulk` or `fast`, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Bulk => "bulk",
            Lane::Fast => "fast",
        }
    }
}

/// Exchange and queue names for one prefix.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Where the API publishes message events.
    pub events_exchange: String,
    /// The bulk lane's queue, which dispatchers consume message events from.
    pub queue: String,
    /// The fast lane's queue, which dispatchers consume ahead of the bulk one.
    pub fast_queue: String,
    /// Where the message queues dead-letter events.
    pub dead_letter_exchange: String,
    /// Where dead-lettered events wait for an operator.
    pub dead_letter_queue: String,
    /// Where dispatchers announce staged jobs to every API process.
    pub wake_exchange: String,
}

impl Topology {
    /// Every name under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            events_exchange: format!("{prefix}.events"),
            queue: format!("{prefix}.messages"),
            fast_queue: format!("{prefix}.messages.fast"),
            dead_letter_exchange: format!("{prefix}.dlx"),
            dead_letter_queue: format!("{prefix}.messages.dead"),
            wake_exchange: format!("{prefix}.wake"),
        }
    }

    /// The queue of `lane`.
    pub fn queue_of(&self, lane: Lane) -> &str {
        match lane {
            Lane::Bulk => &self.queue,
            Lane::Fast => &self.fast_queue,
        }
    }

    /// Every durable queue, e.g. to delete them after a test. (The API processes' wake queues
    /// are exclusive: they go with their connections.)
    pub fn queues(&self) -> [&str; 3] {
        [&self.queue, &self.fast_queue, &self.dead_letter_queue]
    }

    /// Every exchange, e.g. to delete them after a test.
    pub fn exchanges(&self) -> [&str; 3] {
        [
            &self.events_exchange,
            &self.dead_letter_exchange,
            &self.wake_exchange,
        ]
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
        for lane in [Lane::Bulk, Lane::Fast] {
            let queue = self.queue_of(lane);
            declare_quorum_queue(channel, queue, self.message_queue_args())
                .await
                .with_context(|| format!("declaring message queue {queue}"))?;
            bind(channel, queue, &self.events_exchange, lane.routing_key())
                .await
                .with_context(|| format!("binding message queue {queue}"))?;
        }
        self.declare_wake_exchange(channel).await
    }

    /// Declares the wake exchange alone (idempotent), for a channel that only binds to it.
    pub async fn declare_wake_exchange(&self, channel: &Channel) -> anyhow::Result<()> {
        declare_exchange(channel, &self.wake_exchange, ExchangeKind::Fanout)
            .await
            .context("declaring wake exchange")
    }

    /// Binds `queue` (an API process's own) to the wake exchange.
    pub async fn bind_wake_queue(&self, channel: &Channel, queue: &str) -> anyhow::Result<()> {
        bind(channel, queue, &self.wake_exchange, "")
            .await
            .context("binding wake queue")
    }

    /// The arguments of both message queues: dead-lettering after [`DELIVERY_LIMIT`] deliveries.
    fn message_queue_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.dead_letter_exchange.clone().into()),
        );
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
        args
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_lane_starts_at_the_threshold_and_old_events_are_bulk() {
        assert_eq!(Lane::of(Some(80), 80), Lane::Fast);
        assert_eq!(Lane::of(Some(100), 80), Lane::Fast);
        assert_eq!(Lane::of(Some(79), 80), Lane::Bulk);
        assert_eq!(Lane::of(None, 80), Lane::Bulk);
        assert_eq!(Lane::of(None, 0), Lane::Bulk, "an event without priority");
        assert_eq!(Lane::of(Some(0), 0), Lane::Fast);
        assert_ne!(Lane::Fast.routing_key(), Lane::Bulk.routing_key());
    }

    #[test]
    fn every_name_is_under_the_prefix() {
        let t = Topology::new("p");
        for name in t.queues().into_iter().chain(t.exchanges()) {
            assert!(name.starts_with("p."), "{name}");
        }
        assert_eq!(t.queue_of(Lane::Fast), "p.messages.fast");
        assert_eq!(t.queue_of(Lane::Bulk), "p.messages");
    }
}
