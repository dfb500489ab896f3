//! The fast lane: events of messages whose `priority_weight` reaches `FAST_LANE_PRIORITY` go to
//! `{prefix}.messages.fast` (at publish, from the sweeper and from the restage alike), and a
//! dispatcher stages them while a bulk backlog still waits. Events of earlier versions, which
//! carry no priority, are staged as bulk. Bulk inserts take turns (`DB_BULK_WRITES`) and record
//! their wait; urgent ones take none.

use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use mongodb::bson::doc;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sms_shared::amqp::{Lane, Topology};

use crate::helpers::*;

/// Submits one request to `recipients` with `priority_weight`; returns its id.
async fn submit_with(app: &TestApp, s: &Sender, recipients: &[String], priority: i64) -> String {
    let messages: Vec<Value> = recipients
        .iter()
        .map(|to| json!({"to": to, "variables": {"CODE": "2468"}}))
        .collect();
    let res = app
        .post(
            "/sms/requests",
            Auth::ApiKey(&s.key),
            json!({"template_id": s.template_id, "agent_id": s.agent_id, "messages": messages, "priority_weight": priority}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    res.json::<Value>().await.unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A channel of the test's own on the machine's broker, and the app's topology.
struct Broker {
    connection: lapin::Connection,
    channel: lapin::Channel,
    topology: Topology,
}

impl Broker {
    async fn of(app: &TestApp) -> Self {
        let connection =
            lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
                .await
                .unwrap();
        let channel = connection.create_channel().await.unwrap();
        Self {
            connection,
            channel,
            topology: Topology::new(&app.config.amqp.prefix),
        }
    }

    /// Events ready in `lane`'s queue (0 while it is not declared yet).
    async fn depth(&self, lane: Lane) -> u32 {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let channel = self.connection.create_channel().await.unwrap();
        channel
            .queue_declare(self.topology.queue_of(lane), passive, Default::default())
            .await
            .map_or(0, |q| q.message_count())
    }

    /// Waits until the queues hold `fast` and `bulk` events.
    async fn holds(&self, fast: u32, bulk: u32, secs: u64) -> bool {
        eventually(secs, || async {
            (self.depth(Lane::Fast).await, self.depth(Lane::Bulk).await) == (fast, bulk)
        })
        .await
    }

    /// Takes the next payload waiting in `lane`'s queue.
    async fn take(&self, lane: Lane) -> Option<Vec<u8>> {
        self.channel
            .basic_get(
                self.topology.queue_of(lane),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
            .map(|got| got.delivery.data)
    }

    async fn purge(&self, lane: Lane) {
        self.channel
            .queue_purge(self.topology.queue_of(lane), Default::default())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn urgent_messages_take_the_fast_queue_and_the_rest_the_bulk_one() {
    let app = spawn_app().await;
    let s = app.sender().await;
    let nums = numbers(3);
    submit_with(&app, &s, &nums[..1], 80).await;
    submit_with(&app, &s, &nums[1..], 79).await;
    let broker = Broker::of(&app).await;
    // The bulk request's two events travel in one payload.
    assert!(
        broker.holds(1, 1, 10).await,
        "fast {} and bulk {}",
        broker.depth(Lane::Fast).await,
        broker.depth(Lane::Bulk).await
    );
    let fast_queue = format!(
        "sms_queue_messages{{queue=\"{}\"}}",
        broker.topology.fast_queue
    );
    let bulk_queue = format!("sms_queue_messages{{queue=\"{}\"}}", broker.topology.queue);
    assert!(
        eventually(15, || async {
            metric(&app, &fast_queue).await == 1.0 && metric(&app, &bulk_queue).await == 1.0
        })
        .await,
        "the gauges show both queues"
    );
    let health: Value = app.get("/health", Auth::None).await.json().await.unwrap();
    assert_eq!(health["dispatchers"], 0);
    let fast = broker.take(Lane::Fast).await.expect("one fast event");
    let event: Value = serde_json::from_slice(&fast).unwrap();
    assert_eq!(event["priority_weight"], 80, "{event}");
    let bulk = broker.take(Lane::Bulk).await.expect("one bulk payload");
    let bulk = sms_shared::amqp::events::decode(&bulk).unwrap();
    assert_eq!(bulk.len(), 2);
    assert!(bulk.iter().all(|e| e.priority_weight == Some(79)));
}

#[tokio::test]
async fn a_fast_message_is_staged_while_a_bulk_backlog_waits() {
    // No sweep republishes the backlog while it is being published: the queue holds it once.
    let app = spawn_app_with(&[("OUTBOX_SWEEP_AFTER_MS", "60000")]).await;
    let s = app.sender().await;
    let nums = numbers(6001);
    for part in nums[..6000].chunks(3000) {
        submit_with(&app, &s, part, 50).await;
    }
    let broker = Broker::of(&app).await;
    // Each request's 3,000 events in payloads of 32: 94 each.
    assert!(
        broker.holds(0, 188, 60).await,
        "the bulk backlog is not in its queue: fast {} bulk {}, published {}",
        broker.depth(Lane::Fast).await,
        broker.depth(Lane::Bulk).await,
        app.count("sms_messages", doc! {"published": true}).await
    );
    let fast_request = submit_with(&app, &s, &nums[6000..], 100).await;
    assert!(broker.holds(1, 188, 10).await);
    let dispatcher = app.spawn_dispatcher();
    let started = Instant::now();
    let fast = doc! {"request_id": oid(&fast_request), "staged": true};
    assert!(
        eventually(20, || async {
            app.count("sms_messages", fast.clone()).await == 1
        })
        .await,
        "the fast message was not staged"
    );
    let took = started.elapsed();
    let bulk_staged = staged_count(&app).await - 1;
    assert!(
        bulk_staged < 3000,
        "staged after {took:?}, when {bulk_staged} of 6000 bulk messages were staged too"
    );
    dispatcher.stop().await;
}

#[tokio::test]
async fn events_without_a_priority_are_staged_as_bulk() {
    let app = spawn_app().await;
    let s = app.sender().await;
    let request = submit_with(&app, &s, &numbers(1), 90).await;
    let broker = Broker::of(&app).await;
    assert!(broker.holds(1, 0, 10).await);
    // An event as versions without lanes published it, left in the bulk queue by an upgrade.
    broker.purge(Lane::Fast).await;
    let message = app
        .db
        .messages
        .collection()
        .find_one(doc! {"request_id": oid(&request)})
        .await
        .unwrap()
        .unwrap();
    let old = json!({
        "message_id": message.id.to_hex(),
        "request_id": request,
        "accepted_at_ms": message.created_at.timestamp_millis(),
    });
    broker
        .channel
        .basic_publish(
            &broker.topology.events_exchange,
            sms_shared::amqp::MESSAGE_ROUTING_KEY,
            BasicPublishOptions::default(),
            &serde_json::to_vec(&old).unwrap(),
            Default::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(broker.holds(0, 1, 10).await);
    let dispatcher = app.spawn_dispatcher();
    assert!(
        eventually(10, || async { staged_count(&app).await == 1 }).await,
        "the old event was staged"
    );
    assert_eq!(
        app.count("sms_messages", doc! {"stagings": 1}).await,
        1,
        "once"
    );
    dispatcher.stop().await;
}

#[tokio::test]
async fn the_sweeper_and_the_restage_keep_urgent_messages_in_the_fast_lane() {
    let relay = BrokerRelay::start(false).await;
    let app = spawn_app_with(&[("AMQP_URL", &relay.url())]).await;
    let s = app.sender().await;
    submit_with(&app, &s, &numbers(1), 95).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    relay.up();
    let broker = Broker::of(&app).await;
    assert!(
        broker.holds(1, 0, 20).await,
        "the sweeper republished to the fast queue"
    );
    assert!(
        eventually(10, || async {
            app.count("sms_messages", doc! {"published": true}).await == 1
        })
        .await
    );
    // The broker loses the event; its confirmation is old: the restage publishes it again.
    broker.purge(Lane::Fast).await;
    confirmed_long_ago(&app).await;
    assert!(
        broker.holds(1, 0, 20).await,
        "the restage republished to the fast queue"
    );
}

#[tokio::test]
async fn bulk_inserts_record_their_wait_for_a_turn_and_urgent_ones_take_none() {
    let app = spawn_app().await;
    let s = app.sender().await;
    let waits = r#"sms_db_bulk_write_wait_seconds_count{collection="sms_messages"}"#;
    let to = numbers(3);
    submit_with(&app, &s, &to[..1], 100).await;
    assert_eq!(
        metric(&app, waits).await,
        0.0,
        "an urgent insert takes no turn"
    );
    submit_with(&app, &s, &to[1..], 50).await;
    assert_eq!(
        metric(&app, waits).await,
        1.0,
        "a bulk request's one insert piece"
    );
}
