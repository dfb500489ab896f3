//! The pooled publisher against the machine's RabbitMQ (`TEST_AMQP_URL`), each test under its own
//! `AMQP_PREFIX`: concurrent publishes are all confirmed, each event reaches its lane's queue (a
//! request's events together, in payloads of at most 32), a channel the broker broke is replaced,
//! an unroutable event is not counted as published, and after the broker goes away and comes back
//! the pool hands out working channels again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use sms_shared::amqp::{MessageEvent, Publisher, Topology};
use sms_shared::config::{AmqpConfig, SecretUrl};
use sms_shared::metrics::Metrics;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn unique_prefix() -> String {
    format!(
        "test-pub-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

fn events(n: usize) -> Vec<MessageEvent> {
    (0..n)
        .map(|i| MessageEvent {
            message_id: mongodb::bson::oid::ObjectId::new().to_hex(),
            request_id: mongodb::bson::oid::ObjectId::new().to_hex(),
            accepted_at_ms: i as i64,
            priority_weight: None,
        })
        .collect()
}

/// A publisher under a fresh prefix, and a plain channel of the test's own to look and meddle.
struct Fixture {
    publisher: Arc<Publisher>,
    metrics: Metrics,
    topology: Topology,
    connection: lapin::Connection,
    channel: lapin::Channel,
}

impl Fixture {
    async fn new(url: String) -> Self {
        let prefix = unique_prefix();
        let metrics = Metrics::new();
        let config = AmqpConfig {
            url: SecretUrl::new(url),
            prefix: prefix.clone(),
            fast_lane_priority: 80,
        };
        let connection =
            lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
                .await
                .expect("RabbitMQ on TEST_AMQP_URL");
        let channel = connection.create_channel().await.unwrap();
        Self {
            publisher: Arc::new(Publisher::new(config, metrics.clone())),
            metrics,
            topology: Topology::new(&prefix),
            connection,
            channel,
        }
    }

    /// Events ready in the message queue, as the broker counts them.
    async fn ready(&self) -> u32 {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        self.channel
            .queue_declare(&self.topology.queue, passive, Default::default())
            .await
            .expect("the message queue exists")
            .message_count()
    }

    /// Takes every payload waiting in `queue`, in order.
    async fn drain(&self, queue: &str) -> Vec<Vec<u8>> {
        let mut payloads = Vec::new();
        while let Some(got) = self
            .channel
            .basic_get(queue, lapin::options::BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            payloads.push(got.delivery.data);
        }
        payloads
    }

    async fn cleanup(self) {
        for q in self.topology.queues() {
            let _ = self.channel.queue_delete(q, Default::default()).await;
        }
        for e in self.topology.exchanges() {
            let _ = self.channel.exchange_delete(e, Default::default()).await;
        }
        let _ = self.connection.close(200, "done").await;
    }
}

#[tokio::test]
async fn concurrent_publishes_are_all_confirmed_on_several_channels() {
    let f = Fixture::new(amqp_url()).await;
    // Nothing declared yet: asking declares the topology.
    let empty = f
        .publisher
        .queue_stats()
        .await
        .expect("queue declared and inspected");
    assert_eq!(empty, Default::default(), "both lanes' queues are empty");
    let tasks: Vec<_> = (0..24)
        .map(|_| {
            let publisher = f.publisher.clone();
            tokio::spawn(async move { publisher.publish(&events(25)).await })
        })
        .collect();
    for task in tasks {
        let results = task.await.unwrap().expect("published");
        assert_eq!(results, vec![true; 25]);
    }
    let open = f.publisher.open_channels();
    assert!(
        (2..=8).contains(&open),
        "publishes ran side by side on a few channels: {open}"
    );
    assert_eq!(f.ready().await, 24 * 25, "every event is in the queue");
    let text = f.metrics.render();
    assert!(text.contains("sms_events_confirmed_total 600"), "{text}");
    f.cleanup().await;
}

#[tokio::test]
async fn a_channel_the_broker_closed_is_replaced_and_the_next_publish_succeeds() {
    let f = Fixture::new(amqp_url()).await;
    assert_eq!(f.publisher.publish(&events(1)).await.unwrap(), vec![true]);
    // Publishing to a missing exchange makes the broker close the channel (404).
    f.channel
        .exchange_delete(&f.topology.events_exchange, Default::default())
        .await
        .unwrap();
    let failed = f.publisher.publish(&events(2)).await;
    assert!(
        failed.as_ref().map_or(true, |r| r.iter().all(|ok| !ok)),
        "nothing counts as published: {failed:?}"
    );
    // A fresh channel declares the topology again.
    assert_eq!(
        f.publisher.publish(&events(3)).await.unwrap(),
        vec![true; 3]
    );
    assert_eq!(f.ready().await, 1 + 3);
    f.cleanup().await;
}

#[tokio::test]
async fn an_unroutable_event_is_not_published_and_the_queue_comes_back() {
    let f = Fixture::new(amqp_url()).await;
    assert_eq!(f.publisher.publish(&events(1)).await.unwrap(), vec![true]);
    f.channel
        .queue_delete(&f.topology.queue, Default::default())
        .await
        .unwrap();
    // The exchange still takes the event but routes it nowhere: the broker returns it.
    assert_eq!(
        f.publisher.publish(&events(2)).await.unwrap(),
        vec![false, false]
    );
    assert!(f.metrics.render().contains("sms_events_returned_total 2"));
    assert_eq!(
        f.publisher.publish(&events(1)).await.unwrap(),
        vec![true],
        "a fresh channel declared the queue again"
    );
    assert_eq!(
        f.ready().await,
        1,
        "the event published before the queue was deleted is gone"
    );
    let stats = f.publisher.queue_stats().await.unwrap();
    assert_eq!((stats.bulk.messages, stats.bulk.consumers), (1, 0));
    f.cleanup().await;
}

#[tokio::test]
async fn each_event_goes_to_its_lanes_queue() {
    let f = Fixture::new(amqp_url()).await;
    let mut mixed = events(6);
    for (event, weight) in
        mixed
            .iter_mut()
            .zip([Some(80), Some(79), None, Some(100), Some(0), Some(50)])
    {
        event.priority_weight = weight;
    }
    assert_eq!(
        f.publisher.publish(&mixed).await.unwrap(),
        vec![true; 6],
        "confirmations come back in the events' order"
    );
    let stats = f.publisher.queue_stats().await.unwrap();
    assert_eq!((stats.fast.messages, stats.bulk.messages), (2, 4));
    assert_eq!(stats.ready(), 6);
    let fast: Vec<MessageEvent> = f
        .drain(&f.topology.fast_queue)
        .await
        .iter()
        .map(|payload| serde_json::from_slice(payload).unwrap())
        .collect();
    assert_eq!(fast, vec![mixed[0].clone(), mixed[3].clone()]);
    f.cleanup().await;
}

#[tokio::test]
async fn a_request_s_events_travel_together_in_payloads_of_at_most_32() {
    let f = Fixture::new(amqp_url()).await;
    let request = mongodb::bson::oid::ObjectId::new().to_hex();
    let mut of_request = events(70);
    for e in &mut of_request {
        e.request_id = request.clone();
        e.accepted_at_ms = 5;
        e.priority_weight = Some(50);
    }
    let mut all = of_request.clone();
    all.extend(events(2));
    assert_eq!(f.publisher.publish(&all).await.unwrap(), vec![true; 72]);
    assert_eq!(
        f.ready().await,
        5,
        "the request's 70 events in 3 payloads, the others' in one each"
    );
    let mut received = Vec::new();
    let mut sizes = Vec::new();
    for payload in f.drain(&f.topology.queue).await {
        let carried = sms_shared::amqp::events::decode(&payload).expect("a payload");
        sizes.push(carried.len());
        received.extend(carried);
    }
    assert_eq!(sizes, vec![32, 32, 6, 1, 1]);
    assert_eq!(received, all, "every event arrives once, in order");
    let text = f.metrics.render();
    assert!(text.contains("sms_events_published_total 72"), "{text}");
    assert!(text.contains("sms_events_confirmed_total 72"), "{text}");
    f.cleanup().await;
}

/// A TCP relay in front of the local RabbitMQ that can cut every connection and refuse new ones,
/// which is what a broker restart looks like to a client, without stopping the shared broker.
struct Relay {
    port: u16,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let broker = {
            let url = amqp_url();
            let host = url.split('@').nth(1).unwrap_or("127.0.0.1:5672");
            host.split('/').next().unwrap().to_owned()
        };
        let up = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (flag, handles) = (up.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue;
                }
                let broker = broker.clone();
                handles.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&broker).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        Self { port, up, links }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Drops every relayed connection and refuses new ones.
    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Publishes from a few tasks at once, so that several channels are open, and expects them all
/// confirmed.
async fn publish_side_by_side(publisher: &Arc<Publisher>) {
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let publisher = publisher.clone();
            tokio::spawn(async move { publisher.publish(&events(10)).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().expect("published"), vec![true; 10]);
    }
}

#[tokio::test]
async fn after_the_broker_goes_away_and_comes_back_publishing_works_again() {
    let relay = Relay::start().await;
    let f = Fixture::new(relay.url()).await;
    publish_side_by_side(&f.publisher).await;

    // Gone and back before anything is published: every pooled channel is stale, and none may
    // be handed out again.
    relay.down();
    let started = Instant::now();
    let mut down = false;
    while !down && started.elapsed() < Duration::from_secs(15) {
        down = f.publisher.check().await.is_err();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(down, "the broker still counts as up");
    relay.up();
    assert_eq!(
        f.publisher.publish(&events(5)).await.expect("published"),
        vec![true; 5],
        "the first publish after the broker is back gets a fresh channel"
    );

    // Gone while publishing: the publish reports failure, in bounded time.
    publish_side_by_side(&f.publisher).await;
    relay.down();
    let started = Instant::now();
    let failed = f.publisher.publish(&events(5)).await;
    assert!(
        failed.as_ref().map_or(true, |r| r.iter().all(|ok| !ok)),
        "nothing counts as published while the broker is away: {failed:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "failing took {:?}",
        started.elapsed()
    );
    relay.up();
    assert_eq!(
        f.publisher.publish(&events(5)).await.expect("published"),
        vec![true; 5]
    );
    assert_eq!(f.ready().await, 40 + 5 + 40 + 5);
    f.cleanup().await;
}
