//! The consuming loop: manual acks with bounded prefetch, reconnects with backoff, and a
//! graceful stop that finishes and settles every delivery it holds.
//!
//! One connection carries both lanes: the bulk queue and the fast lane's queue are consumed on
//! channels and tasks of their own, so a fast event never waits behind bulk batches here. Bulk
//! events are staged one batch at a time, each of what has arrived meanwhile; fast events
//! each alone, at once.
//! When either lane loses its consumer, both stop and the whole connection is made again. A
//! third channel carries the wakes staging sends (see `wake.rs`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use sms_shared::amqp::{self, Lane, Topology};
use sms_shared::config::AmqpConfig;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::staging::Decoded;
use crate::{Dispatcher, Outcome};

/// Bulk batches staged at once, each of whole deliveries until it holds at least an equal share
/// of `DISPATCHER_PREFETCH` message events (a delivery carries up to `EVENTS_PER_PAYLOAD` events
/// of one request; the broker sends up to `DISPATCHER_PREFETCH` deliveries ahead). While one runs,
/// the next events gather in the consumer, so the next batch takes them all: staging events as
/// they trickle in would spend a round of writes on every one or two messages. One at a time
/// per dispatcher: every write of a batch to `sms_messages` queues at the database in front of
/// one-time passwords' writes, so fewer, larger writes let them through sooner.
const BULK_IN_FLIGHT: usize = 1;
/// How long a bulk batch may wait to fill up: the events the broker sends as the last batch's
/// acks arrive come a few at a time, and so do a request's. Fast lane events never wait.
const GATHER: Duration = Duration::from_millis(20);
/// Fast lane deliveries are staged one by one, each as soon as it arrives: in a batch, one would
/// wait for the others' writes.
const FAST_BATCH: usize = 1;
/// Fast lane deliveries held unacknowledged at once (at most `DISPATCHER_PREFETCH`). Each is
/// staged alone, so this many are staged side by side.
const FAST_PREFETCH: u16 = 16;
/// The longest cancelling a consumer or closing a channel or connection may take (the
/// connection may be gone already).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

fn reconnect_backoff() -> ExponentialBackoff {
    ExponentialBackoff {
        initial_interval: Duration::from_millis(200),
        max_interval: Duration::from_secs(10),
        max_elapsed_time: None,
        ..ExponentialBackoff::default()
    }
}

/// Pauses between requeues while the database is failing, reset by the first success.
#[derive(Clone)]
struct RetryPacer(Arc<Mutex<ExponentialBackoff>>);

impl RetryPacer {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(ExponentialBackoff {
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_secs(5),
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        })))
    }

    fn next(&self) -> Duration {
        self.0
            .lock()
            .expect("pacer lock")
            .next_backoff()
            .unwrap_or(Duration::from_secs(5))
    }

    fn reset(&self) {
        self.0.lock().expect("pacer lock").reset();
    }
}

enum Ended {
    /// Shutdown was requested (or the other lane ended) and every held delivery was settled.
    Stopped,
    /// The connection or channel was lost.
    Lost(anyhow::Error),
}

/// What every lane's deliveries are handled with.
#[derive(Clone)]
struct Handling {
    dispatcher: Dispatcher,
    pacer: RetryPacer,
    /// The process's shutdown: cuts short the pause before a requeue.
    shutdown: CancellationToken,
}

/// One lane's consumer on its own channel.
struct LaneConsumer {
    lane: Lane,
    channel: Channel,
    consumer: Consumer,
    /// Message events a batch gathers deliveries until it holds.
    batch: usize,
    /// Most batches staged at once.
    in_flight: usize,
}

/// Consumes until `shutdown` is cancelled, reconnecting with backoff whenever the broker goes away.
pub async fn run(
    amqp_config: AmqpConfig,
    prefetch: u16,
    dispatcher: Dispatcher,
    shutdown: CancellationToken,
) {
    let mut backoff = reconnect_backoff();
    let handling = Handling {
        dispatcher,
        pacer: RetryPacer::new(),
        shutdown,
    };
    loop {
        if handling.shutdown.is_cancelled() {
            return;
        }
        match consume(&amqp_config, prefetch, &handling, &mut backoff).await {
            Ended::Stopped => return,
            Ended::Lost(e) => {
                let pause = backoff.next_backoff().unwrap_or(Duration::from_secs(10));
                tracing::warn!(error = %format!("{e:#}"), retry_in_ms = pause.as_millis() as u64, "RabbitMQ consumer lost; reconnecting");
                tokio::select! {
                    _ = handling.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

/// Opens a channel with `prefetch` and starts consuming `queue` on it.
async fn subscribe(
    connection: &Connection,
    lane: Lane,
    queue: &str,
    prefetch: u16,
    batch: usize,
    in_flight: usize,
) -> anyhow::Result<LaneConsumer> {
    let channel = connection
        .create_channel()
        .await
        .context("opening channel")?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .context("setting prefetch")?;
    let consumer = channel
        .basic_consume(
            queue,
            "",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("starting consumer of {queue}"))?;
    Ok(LaneConsumer {
        lane,
        channel,
        consumer,
        batch,
        in_flight,
    })
}

/// One connection's life: both lanes consumed until shutdown or until either is lost.
async fn consume(
    config: &AmqpConfig,
    prefetch: u16,
    handling: &Handling,
    backoff: &mut ExponentialBackoff,
) -> Ended {
    let topology = Topology::new(&config.prefix);
    let fast_prefetch = FAST_PREFETCH.min(prefetch);
    let setup = async {
        let connection = amqp::connect(config, "sms-dispatcher").await?;
        let wake = connection
            .create_channel()
            .await
            .context("opening channel")?;
        topology.declare(&wake).await?;
        let bulk = subscribe(
            &connection,
            Lane::Bulk,
            &topology.queue,
            prefetch,
            (usize::from(prefetch) / BULK_IN_FLIGHT).max(1),
            BULK_IN_FLIGHT,
        )
        .await?;
        let fast = subscribe(
            &connection,
            Lane::Fast,
            &topology.fast_queue,
            fast_prefetch,
            FAST_BATCH,
            usize::from(fast_prefetch),
        )
        .await?;
        anyhow::Ok((connection, wake, bulk, fast))
    };
    let (connection, wake, bulk, fast) = match setup.await {
        Ok(parts) => parts,
        Err(e) => return Ended::Lost(e),
    };
    backoff.reset();
    let dispatcher = &handling.dispatcher;
    dispatcher.wake().attach(wake, &topology.wake_exchange);
    tracing::info!(
        queue = %topology.queue,
        prefetch,
        fast_queue = %topology.fast_queue,
        fast_prefetch,
        "consuming message events"
    );
    let stop_lanes = handling.shutdown.child_token();
    let mut lanes = JoinSet::new();
    for lane in [bulk, fast] {
        lanes.spawn(drain(lane, handling.clone(), stop_lanes.clone()));
    }
    // The first lane to end decides: it ends first only when lost, or at shutdown.
    let ended = match lanes.join_next().await {
        Some(Ok(ended)) => ended,
        Some(Err(e)) => Ended::Lost(anyhow::Error::new(e).context("a consumer task failed")),
        None => Ended::Stopped,
    };
    stop_lanes.cancel();
    while lanes.join_next().await.is_some() {}
    dispatcher.wake().detach();
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, "dispatcher stopping")).await;
    if matches!(ended, Ended::Stopped) {
        tracing::info!("consumer stopped; every held event was settled");
    }
    ended
}

/// Receives one lane's deliveries and stages them (in tasks of their own) until `stop` or until
/// the consumer is lost; then waits until every delivery it holds is settled.
async fn drain(lane: LaneConsumer, handling: Handling, stop: CancellationToken) -> Ended {
    let LaneConsumer {
        lane,
        channel,
        mut consumer,
        batch: most,
        in_flight,
    } = lane;
    let tag = consumer.tag();
    let mut held: JoinSet<()> = JoinSet::new();
    let ended = loop {
        while held.try_join_next().is_some() {}
        let busy = held.len() >= in_flight;
        tokio::select! {
            _ = stop.cancelled() => {
                // Stop receiving; what is already held is finished and settled below.
                let cancel = channel.basic_cancel(tag.as_str(), BasicCancelOptions::default());
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, cancel).await;
                break Ended::Stopped;
            }
            // At the limit, wait for a batch to settle; the next events gather meanwhile.
            Some(_) = held.join_next(), if busy => {}
            next = consumer.next(), if !busy => match next {
                Some(Ok(delivery)) => {
                    // Take whatever else arrives within a moment, to stage it with the same
                    // queries.
                    let mut batch = Gathered::default();
                    batch.push(delivery);
                    let gather = tokio::time::Instant::now() + GATHER;
                    let mut lost = None;
                    while batch.events < most {
                        let next = match consumer.next().now_or_never() {
                            Some(next) => next,
                            None => match tokio::time::timeout_at(gather, consumer.next()).await {
                                Ok(next) => next,
                                Err(_) => break,
                            },
                        };
                        match next {
                            Some(Ok(d)) => batch.push(d),
                            other => {
                                lost = Some(consumer_lost(lane, other));
                                break;
                            }
                        }
                    }
                    held.spawn(settle(handling.clone(), lane, batch));
                    if let Some(ended) = lost {
                        break ended;
                    }
                }
                other => break consumer_lost(lane, other),
            }
        }
    };
    while held.join_next().await.is_some() {}
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, channel.close(200, "dispatcher stopping")).await;
    ended
}

/// Deliveries gathered for one staging batch, each decoded once.
#[derive(Default)]
struct Gathered {
    deliveries: Vec<Delivery>,
    payloads: Vec<Decoded>,
    /// The message events they carry (a poison payload counts as one).
    events: usize,
}

impl Gathered {
    fn push(&mut self, delivery: Delivery) {
        let payload = amqp::events::decode(&delivery.data);
        self.events += payload.as_ref().map_or(1, Vec::len);
        self.payloads.push(payload);
        self.deliveries.push(delivery);
    }
}

/// How a lane's consumer stream ended that yielded `next` instead of a delivery.
fn consumer_lost(lane: Lane, next: Option<lapin::Result<Delivery>>) -> Ended {
    Ended::Lost(match next {
        Some(Err(e)) => anyhow::Error::new(e)
            .context(format!("{} lane's consumer stream failed", lane.as_str())),
        _ => anyhow::anyhow!(
            "the {} lane's consumer was cancelled by the broker",
            lane.as_str()
        ),
    })
}

/// Handles a batch of deliveries and settles each: ack, reject to the dead-letter queue, or
/// requeue after a pause.
async fn settle(handling: Handling, lane: Lane, batch: Gathered) {
    let Handling {
        dispatcher,
        pacer,
        shutdown,
    } = handling;
    let Gathered {
        deliveries,
        payloads,
        events,
    } = batch;
    dispatcher
        .metrics()
        .stage_batch_events
        .with_label_values(&[lane.as_str()])
        .observe(events as f64);
    let outcomes = dispatcher.handle_decoded(payloads).await;
    let failure = outcomes.iter().find_map(|o| match o {
        Outcome::Retry(error) => Some(error.clone()),
        _ => None,
    });
    if let Some(error) = failure {
        let pause = pacer.next();
        dispatcher.metrics().events_requeued.inc();
        tracing::warn!(error = %error, retry_in_ms = pause.as_millis() as u64, "staging failed; requeueing");
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    } else {
        pacer.reset();
    }
    for (delivery, outcome) in deliveries.into_iter().zip(outcomes) {
        let settled = match &outcome {
            Outcome::Staged | Outcome::CanceledDuplicate | Outcome::AlreadyDone => {
                crate::fault::maybe_crash_before_ack();
                delivery.ack(BasicAckOptions::default()).await
            }
            Outcome::Poison(reason) => {
                tracing::warn!(reason = %reason, "poison event sent to the dead-letter queue");
                dispatcher.metrics().events_dead_lettered.inc();
                delivery.reject(BasicRejectOptions { requeue: false }).await
            }
            Outcome::Retry(_) => {
                delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
            }
        };
        if let Err(e) = settled {
            // The channel is gone: the broker redelivers the event to a live consumer.
            tracing::warn!(error = %e, ?outcome, "could not settle delivery");
        }
    }
}
