//! Paging the lists: `after`/`next` walks every match exactly once in order, the same as
//! `skip` paging; `total` is exact for small sets and flagged as a lower bound past the cap;
//! a client never sees another's messages.

use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use reqwest::StatusCode;
use serde_json::Value;
use sms_shared::db::audit_logs::AuditFilter;
use sms_shared::db::paging::TOTAL_LOOKAHEAD;
use sms_shared::domain::status::Status;

use crate::helpers::*;

/// The ids of `filter`'s matches in `collection`, by `_id` (`-1`: newest first).
async fn expected(app: &TestApp, collection: &str, filter: Document, order: i32) -> Vec<String> {
    let docs: Vec<Document> = app
        .db
        .database
        .collection::<Document>(collection)
        .find(filter)
        .sort(doc! {"_id": order})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    docs.iter()
        .map(|d| d.get_object_id("_id").unwrap().to_hex())
        .collect()
}

/// Follows `next` from the first page of `path` (which has a `?`) to the end.
async fn walk_after(app: &TestApp, path: &str, auth: Auth<'_>, limit: u64) -> Vec<String> {
    let mut all = Vec::new();
    let mut after = String::new();
    for _ in 0..1000 {
        let (ids, body) = api_page(app, &format!("{path}&limit={limit}&after={after}"), auth).await;
        assert!(ids.len() as u64 <= limit);
        all.extend(ids);
        match body["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => return all,
        }
    }
    panic!("{path}: no end after 1000 pages");
}

/// Pages through `path` with `skip` until an empty page.
async fn walk_skip(app: &TestApp, path: &str, auth: Auth<'_>, limit: u64) -> Vec<String> {
    let mut all = Vec::new();
    loop {
        let skip = all.len();
        let (ids, _) = api_page(app, &format!("{path}&limit={limit}&skip={skip}"), auth).await;
        if ids.is_empty() {
            return all;
        }
        all.extend(ids);
    }
}

#[tokio::test]
async fn walking_with_after_yields_every_match_once_newest_first() {
    let app = spawn_app().await;
    let h = History::insert(&app).await;
    let (a, b) = (oid(&h.a.key_id), oid(&h.b.key_id));
    let agent = oid(&h.b.agent_id);
    let number = h.numbers[2].clone();
    let national = format!("0{}", &number[3..]);
    let day_ago = chrono::Utc::now() - chrono::Duration::hours(24);
    let since = day_ago.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let since_ms = mongodb::bson::DateTime::from_millis(day_ago.timestamp_millis());
    let cases = [
        ("", Auth::Operator, doc! {}),
        ("", Auth::ApiKey(&h.a.key), doc! {"api_key_id": a}),
        (
            "status=failed",
            Auth::ApiKey(&h.a.key),
            doc! {"api_key_id": a, "status": "FAILED"},
        ),
        (
            &format!("to={national}"),
            Auth::Operator,
            doc! {"to": &number},
        ),
        (
            &format!("agent_id={agent}&from={since}"),
            Auth::ApiKey(&h.b.key),
            doc! {"api_key_id": b, "agent_id": agent, "created_at": {"$gte": since_ms}},
        ),
    ];
    for (query, auth, filter) in cases {
        let path = format!("/messages/all?{query}");
        let want = expected(&app, "sms_messages", filter, -1).await;
        assert!(want.len() > 7, "{path}: several pages");
        // Pages of one only where the list is short: each page is a request.
        let limits: &[u64] = if want.len() < 20 {
            &[1, 7, 50]
        } else {
            &[7, 50]
        };
        for &limit in limits {
            assert_eq!(walk_after(&app, &path, auth, limit).await, want, "{path}");
        }
        assert_eq!(walk_skip(&app, &path, auth, 7).await, want, "{path}");
        let (_, first) = api_page(&app, &format!("{path}&limit=7"), auth).await;
        assert_eq!(first["total"], want.len(), "{path}");
        assert_eq!(first["total_is_lower_bound"], false, "{path}");
        assert_eq!(first["next"], want[6].as_str(), "{path}");
        // `skip` counts from the cursor.
        let (ids, _) = api_page(
            &app,
            &format!("{path}&limit=3&skip=2&after={}", want[4]),
            auth,
        )
        .await;
        assert_eq!(ids, want[7..10], "{path}");
    }

    // A client's walk never reaches another client's or an operator's messages.
    let walked = walk_after(&app, "/messages/all?", Auth::ApiKey(&h.a.key), 50).await;
    let others = expected(&app, "sms_messages", doc! {"api_key_id": {"$ne": a}}, -1).await;
    assert!(!others.is_empty());
    assert!(walked.iter().all(|id| !others.contains(id)));
}

#[tokio::test]
async fn a_requests_messages_page_oldest_first_with_an_exact_total() {
    let app = spawn_app().await;
    let s = app.sender().await;
    let other = app.sender().await;
    let nums = numbers(12);
    let recipients: Vec<(&str, &str)> = nums.iter().map(|n| (n.as_str(), "7")).collect();
    let res = app.submit(&s, &recipients).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let request = res.json::<Value>().await.unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/messages?request_id={request}");
    let want = expected(&app, "sms_messages", doc! {"request_id": oid(&request)}, 1).await;
    assert_eq!(want.len(), 12);
    let auth = Auth::ApiKey(&s.key);
    assert_eq!(walk_after(&app, &path, auth, 5).await, want);
    assert_eq!(walk_skip(&app, &path, auth, 5).await, want);
    let (ids, last) = api_page(&app, &format!("{path}&limit=5&after={}", want[9]), auth).await;
    assert_eq!(ids, want[10..]);
    assert_eq!(
        (&last["total"], &last["total_is_lower_bound"], &last["next"]),
        (&Value::from(12), &Value::Bool(false), &Value::Null)
    );
    // The numbers come back in the order they were sent.
    let (_, first) = api_page(&app, &format!("{path}&limit=2"), auth).await;
    let to: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["to"].as_str().unwrap())
        .collect();
    assert_eq!(to, ["+84910000000", "+84910000001"]);
    assert_eq!(first["next"], want[1].as_str());
    assert_error(
        app.get(
            &format!("{path}&after={}", want[0]),
            Auth::ApiKey(&other.key),
        )
        .await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    )
    .await;
}

#[tokio::test]
async fn totals_past_the_lookahead_are_flagged_as_lower_bounds() {
    let app = spawn_app().await;
    let s = app.sender().await;
    let agent = oid(&s.agent_id);
    let key = Some(oid(&s.key_id));
    let many: Vec<_> = (0..1200)
        .map(|i| {
            let to = if i % 100 == 0 {
                "+84910000009"
            } else {
                "+84910000001"
            };
            message_at(key, agent, Status::Sent, to, i * 60_000)
        })
        .collect();
    app.db.messages.insert_many(&many).await.unwrap();
    let auth = Auth::ApiKey(&s.key);
    let flagged = |body: &Value| (body["total"].as_u64(), body["total_is_lower_bound"].clone());

    let (ids, first) = api_page(&app, "/messages/all?limit=5", auth).await;
    assert_eq!(ids.len(), 5);
    assert_eq!(
        flagged(&first),
        (Some(5 + TOTAL_LOOKAHEAD), Value::Bool(true))
    );
    assert_eq!(first["next"], ids[4].as_str());
    let (_, sent) = api_page(&app, "/messages/all?status=SENT&limit=50", auth).await;
    assert_eq!(flagged(&sent), (Some(1050), Value::Bool(true)));
    // Near the end the count reaches it, and is exact.
    let (ids, deep) = api_page(&app, "/messages/all?limit=100&skip=1150", auth).await;
    assert_eq!(ids.len(), 50);
    assert_eq!(flagged(&deep), (Some(1200), Value::Bool(false)));
    assert_eq!(deep["next"], Value::Null);
    // Seed-style paging (`skip += limit` until `skip >= total`) still reaches the end.
    let mut seen = Vec::new();
    loop {
        let path = format!("/messages/all?limit=500&skip={}", seen.len());
        let (ids, body) = api_page(&app, &path, auth).await;
        seen.extend(ids);
        if seen.len() as u64 >= body["total"].as_u64().unwrap() {
            break;
        }
    }
    let want = expected(&app, "sms_messages", doc! {"api_key_id": key}, -1).await;
    assert_eq!(seen, want);
    // A number's messages are counted exactly.
    let (ids, number) = api_page(&app, "/messages/all?to=0910000009&limit=5", auth).await;
    assert_eq!(ids.len(), 5);
    assert_eq!(flagged(&number), (Some(12), Value::Bool(false)));

    // The lookahead is the caller's: the audit list counted 5 past a page of 5.
    audit_history(&app).await;
    let all = AuditFilter::default();
    let mut small = page(5, 0, None);
    small.total_lookahead = 5;
    let listed = app.db.audit_logs.list(&all, &small).await.unwrap();
    assert_eq!((listed.total, listed.total_is_lower_bound), (10, true));
    small.total_lookahead = 1000;
    let listed = app.db.audit_logs.list(&all, &small).await.unwrap();
    let n = app.count("audit_logs", doc! {}).await;
    assert!(n > 48);
    assert_eq!((listed.total, listed.total_is_lower_bound), (n, false));
}

#[tokio::test]
async fn audit_logs_walk_with_after_like_with_skip() {
    let app = spawn_app().await;
    audit_history(&app).await;
    for (query, filter) in [
        ("", doc! {}),
        ("actor=bob", doc! {"actor": "bob"}),
        (
            "action=key.create&actor=alice",
            doc! {"actor": "alice", "action": "key.create"},
        ),
    ] {
        let path = format!("/admin/audit-logs?{query}");
        let want = expected(&app, "audit_logs", filter, -1).await;
        assert!(want.len() > 7, "{path}");
        assert_eq!(
            walk_after(&app, &path, Auth::Operator, 5).await,
            want,
            "{path}"
        );
        assert_eq!(
            walk_skip(&app, &path, Auth::Operator, 5).await,
            want,
            "{path}"
        );
        let (_, first) = api_page(&app, &format!("{path}&limit=5"), Auth::Operator).await;
        assert_eq!(
            (&first["total"], &first["total_is_lower_bound"]),
            (&Value::from(want.len()), &Value::Bool(false))
        );
    }
}

#[tokio::test]
async fn a_malformed_cursor_is_a_validation_error() {
    let app = spawn_app().await;
    let s = app.sender().await;
    let res = app.submit(&s, &[("0901234567", "1")]).await;
    let request = res.json::<Value>().await.unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for path in [
        "/messages/all?after=xyz".to_owned(),
        format!("/messages?request_id={request}&after=0123"),
        "/admin/audit-logs?after=not-an-id".to_owned(),
    ] {
        let auth = if path.starts_with("/admin") {
            Auth::Operator
        } else {
            Auth::ApiKey(&s.key)
        };
        let err = assert_error(
            app.get(&path, auth).await,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
        )
        .await;
        assert!(err["errors"]["after"].is_array(), "{path}: {err}");
        // Empty counts as absent.
        let empty = path.split("after=").next().unwrap().to_owned() + "after=";
        let (ids, _) = api_page(&app, &empty, auth).await;
        assert!(!ids.is_empty(), "{empty}");
    }
}
