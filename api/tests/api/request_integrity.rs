//! A client hanging up in the middle of `POST /requests` changes nothing half-way: whatever the
//! moment, either its whole request is stored (and sent) or nothing is, and the key's quota
//! counts exactly the messages stored. Also: a store that fails half-way leaves nothing behind.

use std::collections::HashMap;
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, Document};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;
use crate::quota::used_today;

/// When a raw client stops.
#[derive(Clone, Copy, Debug)]
enum HangUp {
    /// After this share (in percent) of the header bytes.
    MidHeaders(usize),
    /// After the headers and this share (in percent) of the body.
    MidBody(usize),
    /// This many milliseconds after the last body byte; `reset` closes with a TCP RST.
    AfterBody { ms: u64, reset: bool },
    /// Reads the whole response.
    Never,
}

/// One client's raw `POST /sms/requests` with `n` recipients, its texts tagged `tag`.
fn raw_request(app: &TestApp, s: &Sender, tag: &str, n: usize) -> (Vec<u8>, Vec<u8>) {
    let messages: Vec<Value> = numbers(n)
        .iter()
        .enumerate()
        .map(|(i, to)| json!({"to": to, "variables": {"CODE": format!("{tag}-{i}")}}))
        .collect();
    let body = serde_json::to_vec(
        &json!({"template_id": s.template_id, "agent_id": s.agent_id, "messages": messages}),
    )
    .unwrap();
    let host = app.address.trim_start_matches("http://");
    let head = format!(
        "POST /sms/requests HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        s.key,
        body.len()
    );
    (head.into_bytes(), body)
}

/// Sends the request and hangs up as `how` says; returns the response, and how long it took
/// after the last byte sent, when it read one.
async fn send_raw(
    app: &TestApp,
    head: &[u8],
    body: &[u8],
    how: HangUp,
) -> Option<(String, Duration)> {
    let host = app.address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).await.unwrap();
    stream.set_nodelay(true).unwrap();
    match how {
        HangUp::MidHeaders(pct) => {
            let _ = stream.write_all(&head[..head.len() * pct / 100]).await;
            None
        }
        HangUp::MidBody(pct) => {
            let _ = stream.write_all(head).await;
            let _ = stream.write_all(&body[..body.len() * pct / 100]).await;
            None
        }
        HangUp::AfterBody { ms, reset } => {
            let _ = stream.write_all(head).await;
            let _ = stream.write_all(body).await;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if reset {
                stream.set_zero_linger().unwrap();
            }
            None
        }
        HangUp::Never => {
            stream.write_all(head).await.unwrap();
            stream.write_all(body).await.unwrap();
            let sent = std::time::Instant::now();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            Some((response, sent.elapsed()))
        }
    }
}

/// Every `sms_requests` document with its `total`.
async fn requests(app: &TestApp) -> HashMap<ObjectId, i64> {
    let docs: Vec<Document> = app
        .db
        .database
        .collection::<Document>("sms_requests")
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    docs.iter()
        .map(|d| (d.get_object_id("_id").unwrap(), d.get_i64("total").unwrap()))
        .collect()
}

/// Per request id, its stored messages: how many, and the tag of their texts
/// (`Ma OTP <tag>-<i>`).
async fn messages_per_request(app: &TestApp) -> HashMap<ObjectId, (i64, String)> {
    let rows: Vec<Document> = app
        .db
        .database
        .collection::<Document>("sms_messages")
        .aggregate([doc! {"$group": {
            "_id": "$request_id", "n": {"$sum": 1}, "text": {"$first": "$text"},
        }}])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    rows.iter()
        .map(|d| {
            let n = d.get_i32("n").map(i64::from).or_else(|_| d.get_i64("n"));
            let text = d.get_str("text").unwrap();
            let text = text.trim_start_matches("Ma OTP ");
            let tag = text.rsplit_once('-').map_or(text, |(tag, _)| tag);
            (
                d.get_object_id("_id").unwrap(),
                (n.unwrap(), tag.to_owned()),
            )
        })
        .collect()
}

/// Every request has exactly its `total` messages, no message lacks its request, and the key's
/// quota counts exactly the messages stored. Returns the number of messages stored per tag.
async fn assert_whole(app: &TestApp, key_id: &str) -> HashMap<String, i64> {
    let requests = requests(app).await;
    let messages = messages_per_request(app).await;
    for (id, total) in &requests {
        assert_eq!(
            messages.get(id).map_or(0, |(n, _)| *n),
            *total,
            "request {id} holds all its messages"
        );
    }
    let orphans: Vec<_> = messages
        .keys()
        .filter(|id| !requests.contains_key(id))
        .collect();
    assert!(orphans.is_empty(), "messages without request: {orphans:?}");
    let stored: i64 = messages.values().map(|(n, _)| n).sum();
    let used = used_today(app, key_id).await;
    assert_eq!(used, stored, "the quota counts exactly what is stored");
    let mut per_tag = HashMap::new();
    for (n, tag) in messages.into_values() {
        *per_tag.entry(tag).or_default() += n;
    }
    per_tag
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_at_any_moment_leaves_all_or_nothing() {
    let mut app = spawn_app().await;
    let mut s = app.sender().await;
    let (key_id, key) = app
        .create_api_key(&["sms:send", "sms:read"], Some(1_000_000))
        .await;
    s.key = key;
    let dispatcher = app.spawn_dispatcher();

    // Waves of concurrent clients. In each, one client reads its answer, which times the
    // request; the others hang up mid-headers, mid-body, or at moments spread over the time the
    // previous wave's request of that size took, so that some land in every step of it.
    let sizes = [5, 60, 300];
    let mut took = [Duration::from_millis(200); 3];
    let mut plan: Vec<(String, usize, HangUp)> = Vec::new();
    for wave in 0..9 {
        let size = wave % sizes.len();
        let n = sizes[size];
        let span = took[size].as_millis() as u64 * 5 / 4;
        let mut clients = vec![
            HangUp::Never,
            HangUp::MidHeaders(10 + wave * 9),
            HangUp::MidBody(5 + wave * 11),
        ];
        for k in 0..6u64 {
            clients.push(HangUp::AfterBody {
                ms: span * (2 * k + 1 + wave as u64 % 2) / 12,
                reset: (k + wave as u64).is_multiple_of(2),
            });
        }
        let first = plan.len();
        plan.extend(
            clients
                .into_iter()
                .enumerate()
                .map(|(i, how)| (format!("w{wave}c{i}"), n, how)),
        );
        let requests = plan[first..].iter().map(|(tag, n, how)| {
            let (head, body) = raw_request(&app, &s, tag, *n);
            let app = &app;
            async move { send_raw(app, &head, &body, *how).await }
        });
        let answers = futures::future::join_all(requests).await;
        let (answer, elapsed) = answers[0].clone().expect("the reading client's answer");
        assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
        took[size] = elapsed;
    }

    // Settled: every message stored is published and staged.
    let settled = eventually(90, || async {
        let stored = app.count("sms_messages", doc! {}).await;
        app.count("sms_messages", doc! {"published": true}).await == stored
            && staged_count(&app).await == stored
    })
    .await;
    assert!(settled, "stored messages are published and staged");

    // Stopping drains whatever the API still had running: nothing it writes changes the picture.
    app.stop().await;
    let per_tag = assert_whole(&app, &key_id).await;
    let stored: i64 = per_tag.values().sum();
    for (tag, n, how) in &plan {
        let count = per_tag.get(tag).copied().unwrap_or(0);
        match how {
            HangUp::Never => assert_eq!(count, *n as i64, "{tag} stored whole"),
            HangUp::MidHeaders(_) | HangUp::MidBody(_) => {
                assert_eq!(count, 0, "{tag} ({how:?}) stored nothing")
            }
            HangUp::AfterBody { .. } => assert!(
                count == 0 || count == *n as i64,
                "{tag} ({how:?}): {count} of {n} messages"
            ),
        }
    }
    assert!(
        eventually(30, || async {
            staged_count(&app).await == stored as u64
                && app.count("sms_messages", doc! {"published": true}).await == stored as u64
        })
        .await,
        "every stored message published and staged"
    );
    dispatcher.stop().await;
}

#[tokio::test]
async fn a_store_failing_half_way_leaves_nothing_and_gives_the_quota_back() {
    let app = spawn_app().await;
    let mut s = app.sender().await;
    let (key_id, key) = app.create_api_key(&["sms:send"], Some(10_000)).await;
    s.key = key;
    // Two messages with the same text make the bulk insert fail on the last one only, after the
    // request and every other message were written.
    app.db
        .database
        .collection::<Document>("sms_messages")
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! {"text": 1})
                .options(
                    mongodb::options::IndexOptions::builder()
                        .unique(true)
                        .build(),
                )
                .build(),
        )
        .await
        .unwrap();
    let nums = numbers(3000);
    let mut recipients: Vec<(&str, String)> = nums
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i.to_string()))
        .collect();
    recipients.last_mut().unwrap().1 = "0".into();
    let pairs: Vec<(&str, &str)> = recipients.iter().map(|(t, c)| (*t, c.as_str())).collect();

    let res = app.submit(&s, &pairs).await;
    assert_error(res, StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE").await;
    assert_eq!(app.count("sms_requests", doc! {}).await, 0);
    assert_eq!(app.count("sms_messages", doc! {}).await, 0);
    let used = used_today(&app, &key_id).await;
    assert_eq!(used, 0, "the reservation was given back");

    // The key's whole quota is still there for a request that stores.
    let res = app.submit(&s, &pairs[..2999]).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(app.count("sms_requests", doc! {}).await, 1);
    let stored: i64 = assert_whole(&app, &key_id).await.values().sum();
    assert_eq!(stored, 2999);
}
