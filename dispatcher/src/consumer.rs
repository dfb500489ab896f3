//! The consuming loop: manual acks with bounded prefetch, reconnects with backoff, and a
//! graceful stop that finishes and settles every delivery it holds.

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
use sms_shared::amqp::{self, Topology};
use sms_shared::config::AmqpConfig;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{Dispatcher, Outcome};

/// Most events staged together.
const BATCH: usize = 64;

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
    /// Shutdown was requested and every held delivery was settled.
    Stopped,
    /// The connection or channel was lost.
    Lost(anyhow::Error),
}

/// Consumes until `shutdown` is cancelled, reconnecting with backoff whenever the broker goes away.
pub async fn run(
    amqp_config: AmqpConfig,
    prefetch: u16,
    dispatcher: Dispatcher,
    shutdown: CancellationToken,
) {
    let mut backoff = reconnect_backoff();
    let pacer = RetryPacer::new();
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        match consume(
            &amqp_config,
            prefetch,
            &dispatcher,
            &pacer,
            &shutdown,
            &mut backoff,
        )
        .await
        {
            Ended::Stopped => return,
            Ended::Lost(e) => {
                let pause = backoff.next_backoff().unwrap_or(Duration::from_secs(10));
                tracing::warn!(error = %format!("{e:#}"), retry_in_ms = pause.as_millis() as u64, "RabbitMQ consumer lost; reconnecting");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

async fn consume(
    config: &AmqpConfig,
    prefetch: u16,
    dispatcher: &Dispatcher,
    pacer: &RetryPacer,
    shutdown: &CancellationToken,
    backoff: &mut ExponentialBackoff,
) -> Ended {
    let topology = Topology::new(&config.prefix);
    let setup = async {
        let connection = amqp::connect(config, "sms-dispatcher").await?;
        let channel = connection
            .create_channel()
            .await
            .context("opening channel")?;
        topology.declare(&channel).await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .context("setting prefetch")?;
        let consumer = channel
            .basic_consume(
                &topology.queue,
                "",
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("starting consumer")?;
        anyhow::Ok((connection, channel, consumer))
    };
    let (connection, channel, mut consumer) = match setup.await {
        Ok(parts) => parts,
        Err(e) => return Ended::Lost(e),
    };
    backoff.reset();
    tracing::info!(queue = %topology.queue, prefetch, "consuming message events");
    let tag = consumer.tag();
    let mut held: JoinSet<()> = JoinSet::new();
    let ended = loop {
        while held.try_join_next().is_some() {}
        tokio::select! {
            _ = shutdown.cancelled() => {
                // Stop receiving; what is already held is finished and settled below.
                let _ = channel.basic_cancel(tag.as_str(), BasicCancelOptions::default()).await;
                break Ended::Stopped;
            }
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    // Take whatever else has already arrived, to stage it with the same queries.
                    let mut batch = vec![delivery];
                    while batch.len() < BATCH {
                        match consumer.next().now_or_never() {
                            Some(Some(Ok(d))) => batch.push(d),
                            _ => break,
                        }
                    }
                    held.spawn(settle(dispatcher.clone(), batch, pacer.clone(), shutdown.clone()));
                }
                Some(Err(e)) => break Ended::Lost(anyhow::Error::new(e).context("consumer stream failed")),
                None => break Ended::Lost(anyhow::anyhow!("consumer was cancelled by the broker")),
            }
        }
    };
    while held.join_next().await.is_some() {}
    if matches!(ended, Ended::Stopped) {
        let _ = channel.close(200, "dispatcher stopping").await;
        let _ = connection.close(200, "dispatcher stopping").await;
        tracing::info!("consumer stopped; every held event was settled");
    }
    ended
}

/// Handles a batch of deliveries and settles each: ack, reject to the dead-letter queue, or
/// requeue after a pause.
async fn settle(
    dispatcher: Dispatcher,
    batch: Vec<Delivery>,
    pacer: RetryPacer,
    shutdown: CancellationToken,
) {
    let payloads: Vec<&[u8]> = batch.iter().map(|d| d.data.as_slice()).collect();
    let outcomes = dispatcher.handle_batch(&payloads).await;
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
    for (delivery, outcome) in batch.into_iter().zip(outcomes) {
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
