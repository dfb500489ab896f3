use mongodb::bson::{oid::ObjectId, DateTime};
use reqwest::{header, StatusCode};
use serde_json::{json, Value};
use sms_shared::db::messages::Message;
use sms_shared::domain::status::Status;

use crate::helpers::*;
use crate::summary_counters::{at, message, CLINIC};

const HEADER: &str = "message_id,request_id,client_name,agent_id,to,status,segments,created_at,sent_at,delivered_at,last_error";

/// Nine messages over two UTC days, two agents, two API keys and operator sends, in every
/// status (listed in creation order).
struct Fixture {
    agent1: ObjectId,
    agent2: ObjectId,
    key1: ObjectId,
    key2: ObjectId,
    messages: Vec<Message>,
}

const FAILURE: &str = "carrier said: \"no route\", retry later\nline 2";

async fn seed(app: &TestApp) -> Fixture {
    let (agent1, agent2, key1, key2) = (
        ObjectId::new(),
        ObjectId::new(),
        ObjectId::new(),
        ObjectId::new(),
    );
    let shop = Some((key1, "SafeShop"));
    let clinic = Some((key2, CLINIC));
    let mut delivered = message(
        at("2026-11-25T08:00:00Z"),
        agent1,
        shop,
        Status::Delivered,
        1,
    );
    delivered.sent_at = Some(at("2026-11-25T08:00:05Z"));
    delivered.delivered_at = Some(at("2026-11-25T08:00:09.250Z"));
    let mut sent = message(at("2026-11-25T09:00:00Z"), agent1, shop, Status::Sent, 2);
    sent.sent_at = Some(at("2026-11-25T09:01:00Z"));
    let mut failed = message(
        at("2026-11-25T10:00:00Z"),
        agent2,
        clinic,
        Status::Failed,
        1,
    );
    failed.last_error = Some(FAILURE.to_owned());
    let pending = message(
        at("2026-11-25T23:59:59.999Z"),
        agent2,
        None,
        Status::Pending,
        3,
    );
    let mut canceled = message(
        at("2026-11-26T00:00:00Z"),
        agent1,
        clinic,
        Status::Canceled,
        1,
    );
    canceled.last_error = Some("DUPLICATE_RECENT".to_owned());
    let mut delivered2 = message(
        at("2026-11-26T07:00:00Z"),
        agent2,
        shop,
        Status::Delivered,
        2,
    );
    delivered2.sent_at = Some(at("2026-11-26T07:00:01Z"));
    delivered2.delivered_at = Some(at("2026-11-26T07:00:02Z"));
    let sending = message(at("2026-11-26T12:00:00Z"), agent1, shop, Status::Sending, 1);
    let mut failed2 = message(at("2026-11-26T13:00:00Z"), agent1, None, Status::Failed, 1);
    failed2.last_error = Some("Mã OTP của bạn không gửi được, thử lại".to_owned());
    let assigned = message(
        at("2026-11-26T14:00:00Z"),
        agent2,
        clinic,
        Status::Assigned,
        1,
    );
    let messages = vec![
        delivered, sent, failed, pending, canceled, delivered2, sending, failed2, assigned,
    ];
    app.db.messages.insert_many(&messages).await.unwrap();
    crate::summary_counters::rebuild_counters(app).await;
    Fixture {
        agent1,
        agent2,
        key1,
        key2,
        messages,
    }
}

/// A `by_status` map: every status, zero unless listed.
fn statuses(counts: &[(&str, i64)]) -> Value {
    let mut map = serde_json::Map::new();
    for s in Status::ALL {
        let n = counts
            .iter()
            .find(|(name, _)| *name == s.as_str())
            .map_or(0, |(_, n)| *n);
        map.insert(s.as_str().to_owned(), json!(n));
    }
    Value::Object(map)
}

async fn summary(app: &TestApp, query: &str) -> Value {
    let res = app
        .get(&format!("/sms/reports/summary{query}"), Auth::Operator)
        .await;
    assert_eq!(res.status(), StatusCode::OK, "summary{query}");
    res.json().await.unwrap()
}

#[tokio::test]
async fn summary_counts_by_status_day_agent_and_api_key() {
    let app = spawn_app().await;
    let f = seed(&app).await;
    let body = summary(&app, "").await;
    let expected = json!({
        "filters": {"from": null, "to": null, "agent_id": null, "api_key_id": null, "status": null},
        "total": 9,
        "segments": 13,
        "by_status": statuses(&[
            ("PENDING", 1), ("ASSIGNED", 1), ("SENDING", 1), ("SENT", 1),
            ("DELIVERED", 2), ("FAILED", 2), ("CANCELED", 1),
        ]),
        "by_day": [
            {"day": "2026-11-25", "total": 4, "segments": 7,
             "by_status": statuses(&[("PENDING", 1), ("SENT", 1), ("DELIVERED", 1), ("FAILED", 1)])},
            {"day": "2026-11-26", "total": 5, "segments": 6,
             "by_status": statuses(&[("ASSIGNED", 1), ("SENDING", 1), ("DELIVERED", 1), ("FAILED", 1), ("CANCELED", 1)])},
        ],
        "by_agent": [
            {"agent_id": f.agent1.to_hex(), "total": 5, "segments": 6,
             "by_status": statuses(&[("SENDING", 1), ("SENT", 1), ("DELIVERED", 1), ("FAILED", 1), ("CANCELED", 1)])},
            {"agent_id": f.agent2.to_hex(), "total": 4, "segments": 7,
             "by_status": statuses(&[("PENDING", 1), ("ASSIGNED", 1), ("DELIVERED", 1), ("FAILED", 1)])},
        ],
        "by_api_key": [
            {"api_key_id": f.key1.to_hex(), "client_name": "SafeShop", "total": 4, "segments": 6,
             "by_status": statuses(&[("SENDING", 1), ("SENT", 1), ("DELIVERED", 2)])},
            {"api_key_id": f.key2.to_hex(), "client_name": CLINIC, "total": 3, "segments": 3,
             "by_status": statuses(&[("ASSIGNED", 1), ("FAILED", 1), ("CANCELED", 1)])},
            {"api_key_id": null, "client_name": "operator", "total": 2, "segments": 4,
             "by_status": statuses(&[("PENDING", 1), ("FAILED", 1)])},
        ],
    });
    assert_eq!(body, expected);
}

#[tokio::test]
async fn summary_of_nothing_lists_every_status_as_zero() {
    let app = spawn_app().await;
    let body = summary(&app, "").await;
    assert_eq!(body["total"], 0);
    assert_eq!(body["segments"], 0);
    assert_eq!(body["by_status"], statuses(&[]));
    assert_eq!(body["by_day"], json!([]));
    assert_eq!(body["by_agent"], json!([]));
    assert_eq!(body["by_api_key"], json!([]));
}

#[tokio::test]
async fn summary_filters_by_time_agent_and_api_key() {
    let app = spawn_app().await;
    let f = seed(&app).await;

    let body = summary(&app, "?from=2026-11-26").await;
    assert_eq!(body["total"], 5);
    assert_eq!(body["by_day"].as_array().unwrap().len(), 1);
    assert_eq!(body["by_day"][0]["day"], "2026-11-26");
    assert_eq!(body["filters"]["from"], "2026-11-26T00:00:00.000Z");
    assert_eq!(body["filters"]["to"], Value::Null);

    // `to` is exclusive: the message at 23:59:59.999 is the day's last.
    let body = summary(&app, "?to=2026-11-26").await;
    assert_eq!(body["total"], 4);
    assert_eq!(body["segments"], 7);
    assert_eq!(body["by_status"]["PENDING"], 1);

    let body = summary(&app, "?from=2026-11-25T09:00:00Z&to=2026-11-25T10:00:00Z").await;
    assert_eq!(body["total"], 1);
    assert_eq!(body["by_status"], statuses(&[("SENT", 1)]));

    // 07:00 in Hanoi is midnight UTC; `+` must be encoded in a query string...
    let body = summary(&app, "?from=2026-11-26T07:00:00%2B07:00").await;
    assert_eq!(body["total"], 5);
    assert_eq!(body["filters"]["from"], "2026-11-26T00:00:00.000Z");
    // ...but a bare one (decoded as a space) is understood too.
    let body = summary(&app, "?from=2026-11-26T07:00:00+07:00").await;
    assert_eq!(body["total"], 5);

    let body = summary(&app, &format!("?agent_id={}", f.agent2.to_hex())).await;
    assert_eq!(body["total"], 4);
    assert_eq!(body["segments"], 7);
    assert_eq!(body["by_agent"].as_array().unwrap().len(), 1);
    assert_eq!(body["by_agent"][0]["agent_id"], f.agent2.to_hex());
    assert_eq!(body["filters"]["agent_id"], f.agent2.to_hex());

    let body = summary(&app, &format!("?api_key_id={}", f.key2.to_hex())).await;
    assert_eq!(body["total"], 3);
    assert_eq!(
        body["by_api_key"],
        json!([{"api_key_id": f.key2.to_hex(), "client_name": CLINIC, "total": 3, "segments": 3,
                "by_status": statuses(&[("ASSIGNED", 1), ("FAILED", 1), ("CANCELED", 1)])}])
    );

    let body = summary(
        &app,
        &format!(
            "?api_key_id={}&agent_id={}&from=2026-11-26",
            f.key1.to_hex(),
            f.agent1.to_hex()
        ),
    )
    .await;
    assert_eq!(body["total"], 1);
    assert_eq!(body["by_status"], statuses(&[("SENDING", 1)]));

    // Empty values are no filter at all, as forms send them.
    let body = summary(&app, "?from=&to=&agent_id=&api_key_id=").await;
    assert_eq!(body["total"], 9);
}

#[tokio::test]
async fn bad_filters_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        ("from=yesterday", "from"),
        ("to=2026-13-01", "to"),
        ("from=2026-11-25T08:00:00", "from"),
        ("from=2026-11-26&to=2026-11-25", "to"),
        ("from=2026-11-26&to=2026-11-26", "to"),
        ("agent_id=agent-1", "agent_id"),
        ("api_key_id=0123", "api_key_id"),
        ("status=LOST", "status"),
    ];
    for path in ["/sms/reports/summary", "/sms/reports/export.csv"] {
        for (query, field) in cases {
            let res = app.get(&format!("{path}?{query}"), Auth::Operator).await;
            let err = assert_error(res, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
            assert!(err["errors"][field].is_array(), "{path}?{query}: {err}");
        }
    }
}

#[tokio::test]
async fn reports_and_audit_logs_need_an_operator() {
    let app = spawn_app().await;
    let (_, key) = app.create_api_key(&["sms:send", "sms:read"], None).await;
    for path in [
        "/sms/reports/summary",
        "/sms/reports/export.csv",
        "/sms/admin/audit-logs",
    ] {
        for auth in [Auth::None, Auth::ApiKey(&key), Auth::Bearer("not-a-jwt")] {
            let res = app.get(path, auth).await;
            assert_error(res, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
        }
    }
}

async fn export(app: &TestApp, query: &str) -> String {
    let res = app
        .get(&format!("/sms/reports/export.csv{query}"), Auth::Operator)
        .await;
    assert_eq!(res.status(), StatusCode::OK, "export{query}");
    assert_eq!(
        res.headers()[header::CONTENT_TYPE],
        "text/csv; charset=utf-8"
    );
    assert_eq!(
        res.headers()[header::CONTENT_DISPOSITION],
        "attachment; filename=\"sms-export.csv\""
    );
    assert!(
        res.headers().get(header::CONTENT_LENGTH).is_none(),
        "the export is streamed, not buffered"
    );
    String::from_utf8(res.bytes().await.unwrap().to_vec()).expect("UTF-8 CSV")
}

/// The CSV parsed back: the header, then the rows.
fn parse(body: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let header = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let rows = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    (header, rows)
}

/// The row the export must hold for `m`.
fn expected_row(m: &Message) -> Vec<String> {
    let time = |t: Option<DateTime>| t.map(sms_shared::time::rfc3339).unwrap_or_default();
    vec![
        m.id.to_hex(),
        m.request_id.to_hex(),
        m.client_name.clone(),
        m.agent_id.map(|a| a.to_hex()).unwrap_or_default(),
        m.to.clone(),
        m.status.as_str().to_owned(),
        m.segments.to_string(),
        sms_shared::time::rfc3339(m.created_at),
        time(m.sent_at),
        time(m.delivered_at),
        m.last_error.clone().unwrap_or_default(),
    ]
}

#[tokio::test]
async fn export_streams_every_message_oldest_first_and_escapes_fields() {
    let app = spawn_app().await;
    let f = seed(&app).await;
    let body = export(&app, "").await;

    assert!(body.starts_with(&format!("{HEADER}\r\n")), "{body}");
    let (header, rows) = parse(&body);
    assert_eq!(header.join(","), HEADER);
    let expected: Vec<Vec<String>> = f.messages.iter().map(expected_row).collect();
    assert_eq!(rows, expected);

    // Spot checks on what a spreadsheet user sees.
    assert_eq!(rows[0][7], "2026-11-25T08:00:00.000Z");
    assert_eq!(rows[0][8], "2026-11-25T08:00:05.000Z");
    assert_eq!(rows[0][9], "2026-11-25T08:00:09.250Z");
    assert_eq!(rows[1][9], "", "no delivery time yet");
    assert_eq!(rows[2][10], FAILURE);
    assert_eq!(rows[7][10], "Mã OTP của bạn không gửi được, thử lại");
    // Quotes are doubled, the field with a comma, quote and newline is quoted, and
    // Vietnamese text is written as plain UTF-8.
    assert!(body.contains("\"carrier said: \"\"no route\"\", retry later\nline 2\"\r\n"));
    assert!(body.contains(",Phòng khám Hà Nội,"));
    assert!(body.contains(",\"Mã OTP của bạn không gửi được, thử lại\"\r\n"));
    // CRLF ends the header and each row; the newline inside a field stays as it was.
    assert_eq!(body.matches("\r\n").count(), 1 + 9, "{body}");
}

#[tokio::test]
async fn export_filters_by_status_agent_api_key_and_time() {
    let app = spawn_app().await;
    let f = seed(&app).await;
    let ids =
        |body: &str| -> Vec<String> { parse(body).1.into_iter().map(|r| r[0].clone()).collect() };
    let hex = |indexes: &[usize]| -> Vec<String> {
        indexes.iter().map(|i| f.messages[*i].id.to_hex()).collect()
    };

    assert_eq!(ids(&export(&app, "?status=FAILED").await), hex(&[2, 7]));
    assert_eq!(ids(&export(&app, "?status=failed").await), hex(&[2, 7]));
    assert_eq!(
        ids(&export(&app, &format!("?agent_id={}", f.agent2.to_hex())).await),
        hex(&[2, 3, 5, 8])
    );
    assert_eq!(
        ids(&export(&app, &format!("?api_key_id={}", f.key1.to_hex())).await),
        hex(&[0, 1, 5, 6])
    );
    assert_eq!(
        ids(&export(
            &app,
            "?from=2026-11-25T10:00:00Z&to=2026-11-26T00:00:00.001Z"
        )
        .await),
        hex(&[2, 3, 4])
    );
    assert_eq!(
        ids(&export(
            &app,
            &format!(
                "?status=DELIVERED&api_key_id={}&from=2026-11-26",
                f.key1.to_hex()
            )
        )
        .await),
        hex(&[5])
    );
}

#[tokio::test]
async fn exporting_no_rows_gives_just_the_header() {
    let app = spawn_app().await;
    assert_eq!(export(&app, "").await, format!("{HEADER}\r\n"));
    seed(&app).await;
    assert_eq!(
        export(&app, "?from=2030-01-01").await,
        format!("{HEADER}\r\n")
    );
}

#[tokio::test]
async fn large_exports_arrive_complete_and_in_order() {
    let app = spawn_app().await;
    let agent = ObjectId::new();
    let key = Some((ObjectId::new(), "Bulk, \"Inc\""));
    // Over two cursor batches, with many messages sharing one creation time.
    let messages: Vec<Message> = (0..1203)
        .map(|i| {
            let mut m = message(
                at(&format!("2026-11-25T08:{:02}:00Z", i % 60)),
                agent,
                key,
                Status::Sent,
                1,
            );
            m.to = format!("+8490{:07}", i);
            m
        })
        .collect();
    app.db.messages.insert_many(&messages).await.unwrap();

    let (_, rows) = parse(&export(&app, "").await);
    let mut expected = messages.clone();
    expected.sort_by_key(|m| (m.created_at, m.id));
    let expected: Vec<Vec<String>> = expected.iter().map(expected_row).collect();
    assert_eq!(rows.len(), 1203);
    assert_eq!(rows, expected);
}
