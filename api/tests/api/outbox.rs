//! The outbox: messages whose events never reached RabbitMQ, or never got staged, are published
//! again, so a broker outage delays messages but loses none. Its sweeps read partial indexes;
//! the lease and outbox indexes of earlier versions are retired.

use futures::TryStreamExt;
use mongodb::bson::doc;
use mongodb::IndexModel;
use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn a_broker_outage_at_submit_loses_nothing() {
    let relay = BrokerRelay::start(false).await;
    let app = spawn_app_with(&[("AMQP_URL", &relay.url())]).await;
    let s = app.sender().await;
    let res = app
        .submit(&s, &[("0901234567", "1"), ("0901234568", "2")])
        .await;
    assert_eq!(
        res.status(),
        StatusCode::ACCEPTED,
        "accepted while the broker is away"
    );
    assert_eq!(
        app.count("sms_messages", doc! {"published": false}).await,
        2
    );
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(
        app.count("sms_messages", doc! {"published": false}).await,
        2,
        "nothing published yet"
    );

    relay.up();
    let dispatcher = app.spawn_dispatcher();
    assert!(
        eventually(20, || async {
            app.count("sms_messages", doc! {"published": true}).await == 2
        })
        .await
    );
    assert!(eventually(20, || async { staged_count(&app).await == 2 }).await);
    // A dispatcher that stages a message marks it published too, so the sweeper may still be
    // counting its confirms when both are staged.
    assert!(
        eventually(20, || async {
            let metrics = app.get("/metrics", Auth::None).await.text().await.unwrap();
            metrics.contains("sms_outbox_republished_total 2")
        })
        .await,
        "the sweeper republished both events"
    );
    dispatcher.stop().await;
}

#[tokio::test]
async fn confirmed_events_that_never_staged_are_published_again() {
    let app = spawn_app().await;
    let s = app.sender().await;
    assert_eq!(
        app.submit(&s, &[("0901234567", "1"), ("0901234568", "2")])
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    assert!(
        eventually(10, || async {
            app.count("sms_messages", doc! {"published": true}).await == 2
        })
        .await
    );
    // The broker loses the events (purged here) and the confirmations are old.
    let topology = sms_shared::amqp::Topology::new(&app.config.amqp.prefix);
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_purge(&topology.queue, Default::default())
        .await
        .unwrap();
    confirmed_long_ago(&app).await;
    let dispatcher = app.spawn_dispatcher();
    assert!(
        eventually(15, || async { staged_count(&app).await == 2 }).await,
        "lost events were not replaced"
    );
    dispatcher.stop().await;
}

#[tokio::test]
async fn during_a_backlog_bulk_marks_and_the_sweeper_wait_for_the_dispatchers() {
    // Marks are due 6 s after acceptance, the sweeper's grace is 12 s: the broker's counts of a
    // quorum queue can lag behind its events (with 250 ms and 500 ms, marks were written in
    // about one run in five).
    let app = spawn_app_with(&[("OUTBOX_SWEEP_AFTER_MS", "12000")]).await;
    let s = app.sender().await;
    // A dispatcher busy with one event and behind on the others: the queue has a consumer and
    // events waiting.
    let topology = sms_shared::amqp::Topology::new(&app.config.amqp.prefix);
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    topology.declare(&ch).await.unwrap();
    ch.basic_qos(1, Default::default()).await.unwrap();
    let _busy = ch
        .basic_consume(
            &topology.queue,
            "slow-dispatcher",
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    // Three requests, three payloads: the dispatcher holds one, two wait.
    for recipient in THREE {
        assert_eq!(
            app.submit(&s, &[recipient]).await.status(),
            StatusCode::ACCEPTED
        );
    }
    assert!(
        eventually(10, || async {
            let metrics = app.get("/metrics", Auth::None).await.text().await.unwrap();
            metrics.contains("sms_events_confirmed_total 3")
        })
        .await
    );
    // Past the marks' usual deadline.
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    let metrics = app.get("/metrics", Auth::None).await.text().await.unwrap();
    assert_eq!(
        app.count("sms_messages", doc! {"published": true}).await,
        0,
        "the dispatchers mark what they stage: {metrics}"
    );
    assert!(
        metrics.contains("sms_outbox_republished_total 0"),
        "{metrics}"
    );

    // The dispatcher goes: events wait with nobody coming for them, so the marks are written.
    ch.close(200, "gone").await.unwrap();
    assert!(
        eventually(10, || async {
            app.count("sms_messages", doc! {"published": true}).await == 3
        })
        .await
    );
}

#[tokio::test]
async fn marks_write_only_the_messages_still_unmarked() {
    let app = spawn_app().await;
    let s = app.sender().await;
    submit_three(&app, &s).await;
    assert!(
        eventually(10, || async {
            app.count("sms_messages", doc! {"published": true}).await == 3
        })
        .await
    );
    let messages = app.db.messages.collection();
    let mut ids = Vec::new();
    let mut cursor = messages.find(doc! {}).await.unwrap();
    while let Some(m) = cursor.try_next().await.unwrap() {
        ids.push(m.id);
    }
    assert_eq!(ids.len(), 3);
    // Two of them as if their marks had not been written yet.
    messages
        .update_many(
            doc! {"_id": {"$in": &ids[..2]}},
            doc! {"$set": {"published": false}},
        )
        .await
        .unwrap();

    assert_eq!(app.db.messages.mark_published(&ids).await.unwrap(), 2);
    assert_eq!(app.count("sms_messages", doc! {"published": true}).await, 3);
    assert_eq!(app.db.messages.mark_published(&ids).await.unwrap(), 0);
}

#[tokio::test]
async fn create_indexes_retires_the_lease_indexes_of_sms_messages() {
    let app = spawn_app().await;
    let coll = app.db.messages.collection();
    let old = IndexModel::builder()
        .keys(
            doc! {"agent_id": 1, "staged": 1, "status": 1, "priority_weight": -1, "created_at": 1},
        )
        .options(
            mongodb::options::IndexOptions::builder()
                .name("lease_queue".to_owned())
                .build(),
        )
        .build();
    coll.create_index(old).await.unwrap();
    sms_api::commands::create_indexes(&app.db).await.unwrap();
    let indexes = || async {
        let found: Vec<IndexModel> = coll
            .list_indexes()
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        found
    };
    let names: Vec<String> = indexes()
        .await
        .into_iter()
        .filter_map(|i| i.options.and_then(|o| o.name))
        .collect();
    for retired in ["lease_queue", "sending_timeout", "outbox", "unstaged"] {
        assert!(
            !names.iter().any(|n| n == retired),
            "{retired} in {names:?}"
        );
    }
    let partial: Vec<(String, bool)> = indexes()
        .await
        .into_iter()
        .filter_map(|i| i.options)
        .map(|o| {
            (
                o.name.unwrap_or_default(),
                o.partial_filter_expression.is_some(),
            )
        })
        .filter(|(n, _)| n.starts_with("outbox_"))
        .collect();
    assert_eq!(
        partial,
        [
            ("outbox_unpublished".to_owned(), true),
            ("outbox_unstaged".to_owned(), true)
        ]
    );
}

/// Three recipients, each with its own code.
const THREE: [(&str, &str); 3] = [
    ("0901234567", "1"),
    ("0901234568", "2"),
    ("0901234569", "3"),
];

/// One request to [`THREE`].
async fn submit_three(app: &TestApp, s: &Sender) {
    assert_eq!(app.submit(s, &THREE).await.status(), StatusCode::ACCEPTED);
}
