//! The API's publisher: message events go out on a small pool of confirm-mode channels, so
//! concurrent publishes run side by side instead of queueing on one channel.
//!
//! Each event goes to its lane's queue (routing key by `priority_weight`, see [`Lane`]), in a
//! payload with the other events of its request published with it (`events::payloads`), and
//! each lane publishes on a pool of channels of its own, so that a fast event never waits for a
//! channel busy with a thousand bulk events.
//!
//! Pools: per lane, a `deadpool-lapin` pool of connections (heartbeats on, connect time bounded)
//! and a pool of channels opened on them. Connections of its own keep a fast event's frames out
//! of the socket and the broker's connection process that a burst's bulk events queue on. Each
//! channel is put in confirm mode and declares the topology when it is opened, so a new channel
//! also restores a deleted queue or binding.
//! A pooled channel is handed out again only while it is still open; a channel that saw an error,
//! a return or a nack is taken out of the pool and closed instead of going back, and the idle
//! ones are closed with it. After a broker restart every idle channel fails that check and is
//! replaced by one on a fresh connection; while the broker is unreachable, `publish` fails within
//! the connect timeout and the outbox sweeper publishes again later.

use std::time::Duration;

use anyhow::Context;
use deadpool::managed::{self, Object, PoolError, RecycleError, RecycleResult, TimeoutType};
use deadpool::Runtime;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};

use super::{
    events, properties, url_with_heartbeat, Lane, MessageEvent, Topology, CONNECT_TIMEOUT,
};
use crate::config::AmqpConfig;
use crate::metrics::Metrics;

/// Bulk publishing channels open at most at once.
const MAX_CHANNELS: usize = 8;
/// Fast lane publishing channels open at most at once (few events each).
const MAX_FAST_CHANNELS: usize = 2;
/// Connections the channels are spread over.
const MAX_CONNECTIONS: usize = 2;
/// How long a publish may wait for a free channel before it fails (and the sweeper retries).
const WAIT_FOR_CHANNEL: Duration = Duration::from_secs(30);
/// Opening a channel: a connection if needed, confirm mode and the topology.
const OPEN_CHANNEL_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens confirm-mode channels on pooled connections and hands them out while they are open.
struct ConfirmChannels {
    connections: deadpool_lapin::Pool,
    topology: Topology,
    /// Channels declare the topology one at a time (across both lanes' pools): a quorum queue
    /// answers a second declare at once while the first is still starting it, and nacks what is
    /// published meanwhile.
    declaring: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl ConfirmChannels {
    /// Opens a plain channel on a pooled connection. The channel keeps its connection open
    /// after the pooled handle goes back. A pooled connection that cannot open a channel died
    /// without having noticed yet: it leaves the pool, and the next one (a fresh one at the
    /// latest) is tried.
    async fn open_channel(&self) -> anyhow::Result<Channel> {
        let mut attempts = 0;
        loop {
            let connection = self
                .connections
                .get()
                .await
                .context("connecting to RabbitMQ")?;
            match connection.create_channel().await {
                Ok(channel) => return Ok(channel),
                Err(e) => {
                    drop(Object::take(connection));
                    attempts += 1;
                    if attempts > MAX_CONNECTIONS {
                        return Err(e).context("opening channel");
                    }
                }
            }
        }
    }

    /// Declares the topology on `channel`, one channel at a time.
    async fn declare(&self, channel: &Channel) -> anyhow::Result<()> {
        let _one_at_a_time = self.declaring.lock().await;
        self.topology.declare(channel).await
    }

    /// The counts of `queues`, from passive declares on a channel of its own (which a failed
    /// declare closes; dropped, it closes anyway). `Ok(Err(_))`: the broker answered but refused
    /// a declare, typically because the queue is not there.
    async fn inspect(&self, queues: &[&str]) -> anyhow::Result<lapin::Result<Vec<QueueStats>>> {
        let channel = self.open_channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let mut stats = Vec::with_capacity(queues.len());
        for queue in queues {
            match channel
                .queue_declare(queue, passive, FieldTable::default())
                .await
            {
                Ok(queue) => stats.push(QueueStats {
                    messages: queue.message_count(),
                    consumers: queue.consumer_count(),
                }),
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(stats))
    }
}

impl managed::Manager for ConfirmChannels {
    type Type = Channel;
    type Error = anyhow::Error;

    async fn create(&self) -> anyhow::Result<Channel> {
        let channel = self.open_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("enabling publisher confirms")?;
        self.declare(&channel).await?;
        Ok(channel)
    }

    async fn recycle(
        &self,
        channel: &mut Channel,
        _: &managed::Metrics,
    ) -> RecycleResult<anyhow::Error> {
        if channel.status().connected() {
            Ok(())
        } else {
            Err(RecycleError::message(format!(
                "channel is {:?}",
                channel.status().state()
            )))
        }
    }
}

/// A channel out of the pool; dropped, it goes back.
type PooledChannel = Object<ConfirmChannels>;

/// What the broker reports about one message queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Events ready for delivery (not counting those a dispatcher holds unacknowledged).
    pub messages: u32,
    /// Consumers on the queue: one per running dispatcher.
    pub consumers: u32,
}

/// What the broker reports about both message queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MessageQueues {
    pub bulk: QueueStats,
    pub fast: QueueStats,
}

impl MessageQueues {
    /// The stats of `lane`'s queue.
    pub fn of(&self, lane: Lane) -> QueueStats {
        match lane {
            Lane::Bulk => self.bulk,
            Lane::Fast => self.fast,
        }
    }

    /// Events ready in either queue.
    pub fn ready(&self) -> u32 {
        self.bulk.messages.saturating_add(self.fast.messages)
    }

    /// Whether dispatchers are working through a backlog: events wait in a queue that has
    /// consumers.
    pub fn backlogged(&self) -> bool {
        [self.bulk, self.fast]
            .iter()
            .any(|q| q.messages > 0 && q.consumers > 0)
    }

    /// Dispatchers consuming both queues: every dispatcher consumes both, so the smaller count
    /// is the number of dispatchers that stage both lanes.
    pub fn dispatchers(&self) -> u32 {
        self.bulk.consumers.min(self.fast.consumers)
    }
}

/// Publishes message events with publisher confirms and `mandatory`, from a pool of channels
/// per lane.
///
/// An event counts as published only when the broker acked its payload and did not return it.
pub struct Publisher {
    topology: Topology,
    /// `FAST_LANE_PRIORITY`: events of messages at least this urgent take the fast lane.
    fast_lane_priority: i32,
    bulk: managed::Pool<ConfirmChannels>,
    fast: managed::Pool<ConfirmChannels>,
    metrics: Metrics,
}

impl Publisher {
    /// Prepares the pools; nothing connects before the first use.
    pub fn new(config: AmqpConfig, metrics: Metrics) -> Self {
        let topology = Topology::new(&config.prefix);
        let connections = |name: &str| {
            deadpool_lapin::Pool::builder(deadpool_lapin::Manager::new(
                url_with_heartbeat(&config),
                properties(name),
            ))
            .max_size(MAX_CONNECTIONS)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .wait_timeout(Some(OPEN_CHANNEL_TIMEOUT))
            .build()
            .expect("a pool with a runtime builds")
        };
        let declaring = std::sync::Arc::new(tokio::sync::Mutex::new(()));
        let channels = |connections, max_size| {
            managed::Pool::builder(ConfirmChannels {
                connections,
                topology: topology.clone(),
                declaring: declaring.clone(),
            })
            .max_size(max_size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(OPEN_CHANNEL_TIMEOUT))
            .wait_timeout(Some(WAIT_FOR_CHANNEL))
            .build()
            .expect("a pool with a runtime builds")
        };
        Self {
            bulk: channels(connections("sms-api publisher"), MAX_CHANNELS),
            fast: channels(
                connections("sms-api publisher (fast lane)"),
                MAX_FAST_CHANNELS,
            ),
            topology,
            fast_lane_priority: config.fast_lane_priority,
            metrics,
        }
    }

    /// The lane `event` is published to.
    pub fn lane(&self, event: &MessageEvent) -> Lane {
        event.lane(self.fast_lane_priority)
    }

    /// The names this publisher publishes to and declares.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    fn pool(&self, lane: Lane) -> &managed::Pool<ConfirmChannels> {
        match lane {
            Lane::Bulk => &self.bulk,
            Lane::Fast => &self.fast,
        }
    }

    async fn channel(&self, lane: Lane) -> anyhow::Result<PooledChannel> {
        self.pool(lane).get().await.map_err(|e| match e {
            PoolError::Backend(e) => e,
            PoolError::Timeout(TimeoutType::Wait) => {
                anyhow::anyhow!("every RabbitMQ publishing channel stayed busy")
            }
            PoolError::Timeout(TimeoutType::Create) => {
                anyhow::anyhow!("opening a RabbitMQ channel timed out")
            }
            other => anyhow::anyhow!("no RabbitMQ channel: {other}"),
        })
    }

    /// Takes `channel` out of its lane's pool for good, and the idle channels of both lanes
    /// with it: whatever broke it (a lost connection, a deleted exchange or queue) most likely
    /// breaks them too, and the fresh channels that replace them declare the topology again.
    /// Dropping the last handle of a channel closes it (unless the broker already did).
    fn discard_with_idle(&self, channel: PooledChannel) {
        drop(Object::take(channel));
        self.bulk.retain(|_, _| false);
        self.fast.retain(|_, _| false);
    }

    /// Publishing channels open now, idle or in use, in both lanes.
    pub fn open_channels(&self) -> usize {
        self.bulk.status().size + self.fast.status().size
    }

    /// What the broker reports about both message queues (passive declares). Asked on a channel
    /// of its own, so that it never waits for a publishing channel to be free. A queue not there
    /// (a new broker, or deleted) is declared with the rest of the topology, then asked again.
    pub async fn queue_stats(&self) -> anyhow::Result<MessageQueues> {
        let manager = self.bulk.manager();
        let queues = [self.topology.queue.as_str(), &self.topology.fast_queue];
        let stats = match manager.inspect(&queues).await? {
            Ok(stats) => stats,
            Err(_) => {
                let channel = manager.open_channel().await?;
                manager.declare(&channel).await?;
                manager
                    .inspect(&queues)
                    .await?
                    .context("inspecting the message queues")?
            }
        };
        Ok(MessageQueues {
            bulk: stats[0],
            fast: stats[1],
        })
    }

    /// Whether the broker is reachable: a channel can be opened. Never waits for a publishing
    /// channel to be free.
    pub async fn check(&self) -> anyhow::Result<()> {
        self.bulk.manager().open_channel().await.map(drop)
    }

    /// Publishes every event to its lane, the fast ones first; returns, for each, whether the
    /// broker confirmed and routed it.
    ///
    /// Fails as a whole when no channel could be had, or no event could be sent at all.
    pub async fn publish(&self, events: &[MessageEvent]) -> anyhow::Result<Vec<bool>> {
        let mut results = vec![false; events.len()];
        let mut failure = None;
        let mut answered = false;
        for lane in [Lane::Fast, Lane::Bulk] {
            let (positions, batch): (Vec<usize>, Vec<&MessageEvent>) = events
                .iter()
                .enumerate()
                .filter(|(_, e)| self.lane(e) == lane)
                .unzip();
            if batch.is_empty() {
                continue;
            }
            match self.publish_lane(lane, &batch).await {
                Ok(confirmed) => {
                    answered = true;
                    for (i, ok) in positions.into_iter().zip(confirmed) {
                        results[i] = ok;
                    }
                }
                Err(e) => {
                    tracing::warn!(lane = lane.as_str(), error = %format!("{e:#}"), "publishing a lane's events failed");
                    failure = Some(e);
                }
            }
        }
        match failure {
            Some(e) if !answered => Err(e),
            _ => Ok(results),
        }
    }

    /// Publishes `events` to `lane`'s queue on one of the lane's channels, in payloads of a
    /// request's events (`events::payloads`).
    async fn publish_lane(
        &self,
        lane: Lane,
        events: &[&MessageEvent],
    ) -> anyhow::Result<Vec<bool>> {
        let channel = self.channel(lane).await?;
        let payloads = events::payloads(events);
        let mut confirms = Vec::with_capacity(payloads.len());
        for group in &payloads {
            let carried = &events[group.clone()];
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(carried[0].message_id.clone().into());
            let sent = channel
                .basic_publish(
                    &self.topology.events_exchange,
                    lane.routing_key(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &events::encode(carried),
                    props,
                )
                .await;
            match sent {
                Ok(confirm) => {
                    self.metrics.events_published.inc_by(group.len() as u64);
                    confirms.push(Some(confirm));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "publishing message events failed");
                    confirms.push(None);
                }
            }
        }
        let mut results = Vec::with_capacity(events.len());
        let mut broken = false;
        let mut suspect = false;
        let mut nacked = 0;
        for (confirm, group) in confirms.into_iter().zip(payloads) {
            let carried = group.len() as u64;
            let ok = match confirm {
                None => {
                    broken = true;
                    false
                }
                Some(c) => match c.await {
                    Ok(Confirmation::Ack(None)) => true,
                    Ok(Confirmation::Ack(Some(_))) => {
                        // Unroutable: the queue or its binding is missing. A new channel
                        // declares them again.
                        self.metrics.events_returned.inc_by(carried);
                        suspect = true;
                        false
                    }
                    Ok(Confirmation::Nack(_)) | Ok(Confirmation::NotRequested) => {
                        nacked += carried;
                        suspect = true;
                        false
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "awaiting publisher confirm failed");
                        broken = true;
                        false
                    }
                },
            };
            if ok {
                self.metrics.events_confirmed.inc_by(carried);
            }
            results.extend(group.map(|_| ok));
        }
        if nacked > 0 {
            tracing::warn!(count = nacked, "RabbitMQ refused message events");
        }
        if broken || suspect {
            self.discard_with_idle(channel);
        }
        if broken && results.iter().all(|ok| !ok) {
            anyhow::bail!("RabbitMQ did not accept any event");
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues(bulk: (u32, u32), fast: (u32, u32)) -> MessageQueues {
        let stats = |(messages, consumers)| QueueStats {
            messages,
            consumers,
        };
        MessageQueues {
            bulk: stats(bulk),
            fast: stats(fast),
        }
    }

    #[test]
    fn a_backlog_is_events_waiting_where_dispatchers_consume() {
        assert!(queues((5, 2), (0, 2)).backlogged());
        assert!(queues((0, 2), (1, 2)).backlogged());
        // Nobody is coming for these.
        assert!(!queues((5, 0), (3, 0)).backlogged());
        assert!(!queues((0, 2), (0, 2)).backlogged());
    }
}
