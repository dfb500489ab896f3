//! RabbitMQ topology, the message event, and a confirming publisher.
//!
//! Topology (every name under `AMQP_PREFIX`):
//! - `{p}.events`: durable direct exchange the API publishes message events to;
//! - `{p}.messages`: durable quorum queue bound with routing key `message`, dead-lettering to `{p}.dlx`;
//! - `{p}.dlx`: durable fanout exchange; `{p}.messages.dead`: the durable dead-letter queue.
//!
//! Both binaries declare it at start and after every reconnect.

use std::time::Duration;

use anyhow::Context;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use mongodb::bson::oid::ObjectId;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::config::AmqpConfig;
use crate::metrics::Metrics;

/// Routing key of message events.
pub const MESSAGE_ROUTING_KEY: &str = "message";
/// After this many deliveries a quorum queue dead-letters an event instead of redelivering it.
pub const DELIVERY_LIMIT: i64 = 50;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Exchange and queue names for one prefix.
#[derive(Debug, Clone)]
pub struct Topology {
    pub events_exchange: String,
    pub queue: String,
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
}

impl Topology {
    pub fn new(prefix: &str) -> Self {
        Self {
            events_exchange: format!("{prefix}.events"),
            queue: format!("{prefix}.messages"),
            dead_letter_exchange: format!("{prefix}.dlx"),
            dead_letter_queue: format!("{prefix}.messages.dead"),
        }
    }

    /// Declares every exchange, queue and binding (idempotent).
    pub async fn declare(&self, channel: &Channel) -> anyhow::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                &self.events_exchange,
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await
            .context("declaring events exchange")?;
        channel
            .exchange_declare(
                &self.dead_letter_exchange,
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await
            .context("declaring dead-letter exchange")?;
        let queue_opts = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let mut dead_args = FieldTable::default();
        dead_args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        channel
            .queue_declare(&self.dead_letter_queue, queue_opts, dead_args)
            .await
            .context("declaring dead-letter queue")?;
        channel
            .queue_bind(
                &self.dead_letter_queue,
                &self.dead_letter_exchange,
                "",
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("binding dead-letter queue")?;
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.dead_letter_exchange.clone().into()),
        );
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
        channel
            .queue_declare(&self.queue, queue_opts, args)
            .await
            .context("declaring message queue")?;
        channel
            .queue_bind(
                &self.queue,
                &self.events_exchange,
                MESSAGE_ROUTING_KEY,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("binding message queue")?;
        Ok(())
    }
}

/// One message to stage. The message id is the event's stable id: a redelivered or republished
/// event names the same message and changes nothing the second time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MessageEvent {
    pub message_id: String,
    pub request_id: String,
    /// When the API accepted the message, milliseconds since the epoch.
    pub accepted_at_ms: i64,
}

impl MessageEvent {
    pub fn message_oid(&self) -> Option<ObjectId> {
        ObjectId::parse_str(&self.message_id).ok()
    }
}

/// Opens a connection with heartbeats on, within a bounded time.
pub async fn connect(config: &AmqpConfig, name: &str) -> anyhow::Result<Connection> {
    let mut url = config.url.clone();
    if !url.contains("heartbeat=") {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("heartbeat=15");
    }
    let props = ConnectionProperties::default().with_connection_name(name.into());
    tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&url, props))
        .await
        .context("connecting to RabbitMQ timed out")?
        .context("connecting to RabbitMQ")
}

struct Link {
    _connection: Connection,
    channel: Channel,
}

/// Publishes message events with publisher confirms and `mandatory`, reconnecting when needed.
///
/// An event counts as published only when the broker acked it and did not return it.
pub struct Publisher {
    config: AmqpConfig,
    topology: Topology,
    link: Mutex<Option<Link>>,
    metrics: Metrics,
}

impl Publisher {
    pub fn new(config: AmqpConfig, metrics: Metrics) -> Self {
        Self {
            topology: Topology::new(&config.prefix),
            config,
            link: Mutex::new(None),
            metrics,
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    async fn channel(&self) -> anyhow::Result<Channel> {
        let mut link = self.link.lock().await;
        if let Some(l) = link.as_ref() {
            if l.channel.status().connected() {
                return Ok(l.channel.clone());
            }
        }
        *link = None;
        let connection = connect(&self.config, "sms-api publisher").await?;
        let channel = connection
            .create_channel()
            .await
            .context("opening channel")?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("enabling publisher confirms")?;
        self.topology.declare(&channel).await?;
        *link = Some(Link {
            _connection: connection,
            channel: channel.clone(),
        });
        Ok(channel)
    }

    async fn reset(&self) {
        if let Some(l) = self.link.lock().await.take() {
            let _ = l.channel.close(200, "reset").await;
        }
    }

    /// Events waiting in the message queue (ready or held by a consumer).
    pub async fn queue_depth(&self) -> anyhow::Result<u32> {
        let channel = self.channel().await?;
        let declared = channel
            .queue_declare(
                &self.topology.queue,
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        match declared {
            Ok(q) => Ok(q.message_count()),
            Err(e) => {
                // A failed passive declare closes the channel.
                self.reset().await;
                Err(anyhow::Error::new(e).context("inspecting the message queue"))
            }
        }
    }

    /// Whether the broker is reachable (connecting if needed).
    pub async fn check(&self) -> anyhow::Result<()> {
        self.channel().await.map(|_| ())
    }

    /// Publishes every event; returns, for each, whether the broker confirmed and routed it.
    ///
    /// Fails as a whole only when no event could be sent at all.
    pub async fn publish(&self, events: &[MessageEvent]) -> anyhow::Result<Vec<bool>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let channel = self.channel().await?;
        let mut confirms = Vec::with_capacity(events.len());
        for event in events {
            let payload = serde_json::to_vec(event).expect("events serialise");
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(event.message_id.clone().into());
            let sent = channel
                .basic_publish(
                    &self.topology.events_exchange,
                    MESSAGE_ROUTING_KEY,
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &payload,
                    props,
                )
                .await;
            match sent {
                Ok(confirm) => {
                    self.metrics.events_published.inc();
                    confirms.push(Some(confirm));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "publishing message event failed");
                    confirms.push(None);
                }
            }
        }
        let mut results = Vec::with_capacity(events.len());
        let mut returned = false;
        let mut broken = false;
        for confirm in confirms {
            let ok = match confirm {
                None => {
                    broken = true;
                    false
                }
                Some(c) => match c.await {
                    Ok(Confirmation::Ack(None)) => true,
                    Ok(Confirmation::Ack(Some(_))) => {
                        returned = true;
                        self.metrics.events_returned.inc();
                        false
                    }
                    Ok(Confirmation::Nack(_)) | Ok(Confirmation::NotRequested) => false,
                    Err(e) => {
                        tracing::warn!(error = %e, "awaiting publisher confirm failed");
                        broken = true;
                        false
                    }
                },
            };
            if ok {
                self.metrics.events_confirmed.inc();
            }
            results.push(ok);
        }
        if broken || returned {
            // A returned event means the queue or binding is missing: redeclare on the next publish.
            self.reset().await;
        }
        if results.iter().all(|ok| !ok) && broken {
            anyhow::bail!("RabbitMQ did not accept any event");
        }
        Ok(results)
    }
}
