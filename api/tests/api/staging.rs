//! The dispatchers' side of a request: recent duplicates are cancelled (once, however many
//! dispatchers run), a poison event is dead-lettered while the others flow, and a payload of a
//! request's events stages every message it names.

use mongodb::bson::doc;
use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn a_duplicate_inside_the_window_is_canceled_and_outside_it_is_not() {
    let app = spawn_app_with(&[("ANTI_DUP_MINUTES", "0.03")]).await;
    let s = app.sender().await;
    let dispatcher = app.spawn_dispatcher();
    assert_eq!(
        app.submit(&s, &[("0901234567", "111")]).await.status(),
        StatusCode::ACCEPTED
    );
    assert!(eventually(10, || async { staged_count(&app).await == 1 }).await);
    assert_eq!(
        app.submit(&s, &[("0901234567", "111")]).await.status(),
        StatusCode::ACCEPTED
    );
    assert!(
        eventually(10, || async {
            app.count("sms_messages", doc! {"status": "CANCELED"}).await == 1
        })
        .await
    );
    let canceled = app
        .count(
            "sms_messages",
            doc! {"status": "CANCELED", "last_error": "DUPLICATE_RECENT"},
        )
        .await;
    assert_eq!(canceled, 1);
    // A different text to the same number is not a duplicate.
    assert_eq!(
        app.submit(&s, &[("0901234567", "222")]).await.status(),
        StatusCode::ACCEPTED
    );
    assert!(eventually(10, || async { staged_count(&app).await == 2 }).await);
    // Once the window (1.8 s) has passed, the same text is staged again.
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    assert_eq!(
        app.submit(&s, &[("0901234567", "111")]).await.status(),
        StatusCode::ACCEPTED
    );
    assert!(eventually(10, || async { staged_count(&app).await == 3 }).await);
    assert_eq!(
        app.count("sms_messages", doc! {"status": "CANCELED"}).await,
        1
    );
    assert!(dispatcher
        .metrics
        .render()
        .contains("sms_messages_canceled_duplicate_total 1"));
}

#[tokio::test]
async fn two_dispatchers_stage_exactly_one_of_each_duplicate_pair() {
    let app = spawn_app().await;
    let s = app.sender().await;
    let nums = numbers(200);
    let mut recipients = Vec::new();
    for n in &nums {
        recipients.push((n.as_str(), "2468"));
        recipients.push((n.as_str(), "2468"));
    }
    let (d1, d2) = (app.spawn_dispatcher(), app.spawn_dispatcher());
    assert_eq!(
        app.submit(&s, &recipients).await.status(),
        StatusCode::ACCEPTED
    );
    let settled = eventually(30, || async {
        app.count(
            "sms_messages",
            doc! {"$or": [{"staged": true}, {"status": "CANCELED"}]},
        )
        .await
            == 400
    })
    .await;
    assert!(settled, "not every message was settled");
    assert_eq!(staged_count(&app).await, 200);
    assert_eq!(
        app.count(
            "sms_messages",
            doc! {"status": "CANCELED", "last_error": "DUPLICATE_RECENT"}
        )
        .await,
        200
    );
    for n in &nums {
        let to = format!("+84{}", &n[1..]);
        assert_eq!(
            app.count("sms_messages", doc! {"to": &to, "staged": true})
                .await,
            1,
            "{to}"
        );
    }
    d1.stop().await;
    d2.stop().await;
}

#[tokio::test]
async fn a_poison_event_is_dead_lettered_while_others_flow() {
    let app = spawn_app().await;
    let s = app.sender().await;
    let dispatcher = app.spawn_dispatcher();
    // Make sure the topology exists, then publish garbage and an unknown id next to real work.
    assert_eq!(
        app.submit(&s, &[("0901234567", "1")]).await.status(),
        StatusCode::ACCEPTED
    );
    assert!(eventually(10, || async { staged_count(&app).await == 1 }).await);
    let topology = sms_shared::amqp::Topology::new(&app.config.amqp.prefix);
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    for payload in [b"not json".to_vec(), br#"{"message_id":"0123456789abcdef01234567","request_id":"0123456789abcdef01234567","accepted_at_ms":0}"#.to_vec()] {
        ch.basic_publish(&topology.events_exchange, "message", Default::default(), &payload, Default::default())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    assert_eq!(
        app.submit(&s, &[("0901234568", "2")]).await.status(),
        StatusCode::ACCEPTED
    );
    assert!(
        eventually(10, || async { staged_count(&app).await == 2 }).await,
        "good events kept flowing"
    );
    let dead = eventually(10, || async {
        let q = ch
            .queue_declare(
                &topology.dead_letter_queue,
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap();
        q.message_count() == 2
    })
    .await;
    assert!(dead, "poison events are in the dead-letter queue");
    assert!(dispatcher
        .metrics
        .render()
        .contains("sms_events_dead_lettered_total 2"));
    dispatcher.stop().await;
}

/// The payload carrying these messages' events, as the API publishes a request's events.
fn payload_of(messages: &[&sms_shared::db::messages::Message]) -> Vec<u8> {
    let events: Vec<sms_shared::amqp::MessageEvent> = messages
        .iter()
        .map(|m| sms_api::background::outbox::event((*m).into()))
        .collect();
    let refs: Vec<&sms_shared::amqp::MessageEvent> = events.iter().collect();
    sms_shared::amqp::events::encode(&refs)
}

#[tokio::test]
async fn a_payload_stages_every_message_it_names_and_one_naming_an_unknown_message_is_poison() {
    use sms_dispatcher::Outcome;
    use sms_shared::db::messages::Message;

    let app = spawn_app().await;
    let s = app.sender().await;
    let numbers: Vec<(String, String)> = (0..5)
        .map(|i| (format!("090123450{i}"), format!("{i}")))
        .collect();
    let pairs: Vec<(&str, &str)> = numbers
        .iter()
        .map(|(to, code)| (to.as_str(), code.as_str()))
        .collect();
    assert_eq!(app.submit(&s, &pairs).await.status(), StatusCode::ACCEPTED);
    let messages: Vec<Message> = all_messages(&app).await;
    assert_eq!(messages.len(), 5);
    let dispatcher = dispatcher(&app);

    let three = payload_of(&[&messages[0], &messages[1], &messages[2]]);
    assert_eq!(
        dispatcher.handle_batch(&[&three]).await,
        vec![Outcome::Staged]
    );
    assert_eq!(staged_count(&app).await, 3);
    assert_eq!(app.count("sms_jobs", doc! {}).await, 3);

    // Two new messages and one that does not exist: the two are staged, the payload is poison
    // (it goes to the dead-letter queue, where it names the unknown message).
    let mut unknown = messages[4].clone();
    unknown.id = mongodb::bson::oid::ObjectId::new();
    let mixed = payload_of(&[&messages[3], &unknown, &messages[4]]);
    let outcomes = dispatcher.handle_batch(&[&mixed, &three]).await;
    assert!(
        matches!(&outcomes[0], Outcome::Poison(why) if why.contains(&unknown.id.to_hex())),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes[1],
        Outcome::AlreadyDone,
        "a repeat changes nothing"
    );
    assert_eq!(staged_count(&app).await, 5);
    assert_eq!(app.count("sms_jobs", doc! {}).await, 5, "each staged once");

    // Handled again (a replay of the dead-letter queue): nothing changes.
    assert!(matches!(
        dispatcher.handle_batch(&[&mixed]).await[..],
        [Outcome::Poison(_)]
    ));
    assert_eq!(app.count("sms_jobs", doc! {}).await, 5);
}
