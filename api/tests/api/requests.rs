//! `POST /requests` and `GET /requests/{id}`: what a request stores and publishes, its priority,
//! the daily quota, validation, and the API key scopes it needs.

use mongodb::bson::doc;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn a_request_is_accepted_stored_published_and_staged() {
    let app = spawn_app().await;
    let s = app.sender().await;
    let dispatcher = app.spawn_dispatcher();
    let res = app
        .submit(
            &s,
            &[("0901234567", "123456"), ("+84 912 345 678", "654321")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["total"], 2);
    assert_eq!(body["status"], "ACCEPTED");
    let request_id = body["request_id"].as_str().unwrap().to_owned();

    assert!(
        eventually(10, || async { staged_count(&app).await == 2 }).await,
        "messages were not staged"
    );
    let page: Value = app
        .get(
            &format!("/sms/messages?request_id={request_id}&limit=50&skip=0"),
            Auth::ApiKey(&s.key),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 2);
    let first = &page["items"][0];
    assert_eq!(first["to"], "+84901234567");
    assert_eq!(first["text"], "Ma OTP 123456");
    assert_eq!(first["status"], "PENDING");
    assert_eq!(first["encoding"], "GSM-7");
    assert_eq!(first["segments"], 1);
    assert_eq!(first["priority_weight"], 50);
    assert_eq!(first["agent_id"], s.agent_id.as_str());
    assert_eq!(page["items"][1]["to"], "+84912345678");
    assert_eq!(app.count("sms_messages", doc! {"published": true}).await, 2);

    let detail: Value = app
        .get(&format!("/sms/requests/{request_id}"), Auth::ApiKey(&s.key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(detail["total"], 2);
    assert_eq!(detail["status_counts"]["PENDING"], 2);
    assert_eq!(detail["status_counts"]["SENT"], 0);

    // A dispatcher counts a batch once its writes are done, a moment after they are visible.
    let counted = eventually(10, || async {
        let metrics = dispatcher.metrics.render();
        metrics.contains("sms_messages_staged_total 2")
            && metrics.contains("sms_stage_latency_seconds_count 2")
            && metrics.contains("sms_stage_batch_events_sum{lane=\"bulk\"} 2")
    })
    .await;
    assert!(counted, "{}", dispatcher.metrics.render());
    let api_metrics = app.get("/metrics", Auth::None).await.text().await.unwrap();
    assert!(
        api_metrics.contains("sms_events_confirmed_total 2"),
        "{api_metrics}"
    );
    dispatcher.stop().await;
}

#[tokio::test]
async fn priority_comes_from_request_then_template_then_default() {
    let app = spawn_app().await;
    let s = app.sender().await;
    let res = app
        .post(
            "/requests",
            Auth::ApiKey(&s.key),
            json!({"template_id": s.template_id, "agent_id": s.agent_id, "priority_weight": 90,
                   "messages": [{"to": "0901234567", "variables": {"CODE": 1}}]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let t = app
        .post(
            "/templates",
            Auth::Operator,
            json!({"name": "urgent", "content": "Khẩn: {CODE}", "priority_weight": 70}),
        )
        .await;
    let tid = t.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post(
        &format!("/templates/{tid}/approve"),
        Auth::Operator,
        json!({}),
    )
    .await;
    let res = app
        .post(
            "/requests",
            Auth::ApiKey(&s.key),
            json!({"template_id": tid, "agent_id": s.agent_id, "messages": [{"to": "0901234568", "variables": {"CODE": "7"}}]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let all: Value = app
        .get("/messages/all", Auth::ApiKey(&s.key))
        .await
        .json()
        .await
        .unwrap();
    let by_to = |to: &str| {
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["to"] == to)
            .unwrap()
            .clone()
    };
    assert_eq!(by_to("+84901234567")["priority_weight"], 90);
    let urgent = by_to("+84901234568");
    assert_eq!(urgent["priority_weight"], 70);
    assert_eq!(urgent["text"], "Khẩn: 7");
    assert_eq!(urgent["encoding"], "UCS-2");
}

#[tokio::test]
async fn the_daily_quota_is_enforced_in_messages() {
    let app = spawn_app().await;
    let mut s = app.sender().await;
    let (key_id, key) = app.create_api_key(&["sms:send", "sms:read"], Some(3)).await;
    s.key = key;
    assert_eq!(
        app.submit(&s, &[("0901234567", "1"), ("0901234568", "2")])
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    let res = app
        .submit(&s, &[("0901234569", "3"), ("0901234570", "4")])
        .await;
    let retry_after: i64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&retry_after));
    assert_error(res, StatusCode::TOO_MANY_REQUESTS, "QUOTA_EXCEEDED").await;
    assert_eq!(
        app.count("sms_messages", doc! {}).await,
        2,
        "nothing stored for the refused request"
    );
    assert_eq!(app.count("sms_requests", doc! {}).await, 1);
    assert_eq!(
        app.submit(&s, &[("0901234571", "5")]).await.status(),
        StatusCode::ACCEPTED,
        "the last unit fits"
    );
    assert_eq!(
        app.submit(&s, &[("0901234572", "6")]).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let oid = mongodb::bson::oid::ObjectId::parse_str(&key_id).unwrap();
    assert_eq!(
        app.db
            .quota
            .used_today(oid, chrono::Utc::now())
            .await
            .unwrap(),
        3
    );
}

#[tokio::test]
async fn concurrent_bursts_never_exceed_the_quota() {
    let app = spawn_app().await;
    let mut s = app.sender().await;
    let (_, key) = app.create_api_key(&["sms:send"], Some(10)).await;
    s.key = key;
    let nums = numbers(30);
    let futures: Vec<_> = nums
        .iter()
        .map(|n| {
            let (app, s) = (&app, &s);
            async move { app.submit(s, &[(n.as_str(), "1")]).await }
        })
        .collect();
    let results = futures::future::join_all(futures).await;
    let accepted = results
        .iter()
        .filter(|r| r.status() == StatusCode::ACCEPTED)
        .count();
    let refused = results
        .iter()
        .filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((accepted, refused), (10, 20));
    assert_eq!(app.count("sms_messages", doc! {}).await, 10);
}

#[tokio::test]
async fn every_validation_failure_is_400_and_stores_nothing() {
    let app = spawn_app_with(&[
        ("MAX_RECIPIENTS_PER_REQUEST", "3"),
        ("MAX_TEXT_LENGTH", "30"),
    ])
    .await;
    let s = app.sender().await;
    let draft = app
        .post(
            "/templates",
            Auth::Operator,
            json!({"name": "draft", "content": "x {CODE}"}),
        )
        .await;
    let draft_id = draft.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (off_agent, _) = app.register_agent("agent-off").await;
    app.request(
        Method::PATCH,
        &format!("/admin/agents/{off_agent}"),
        Auth::Operator,
        Some(json!({"is_active": false})),
    )
    .await;
    let ok_msg = json!([{"to": "0901234567", "variables": {"CODE": "1"}}]);
    let body = |t: &str, a: &str, m: Value| json!({"template_id": t, "agent_id": a, "messages": m});
    let cases = [
        (
            body("0123456789abcdef01234567", &s.agent_id, ok_msg.clone()),
            "template_id",
        ),
        (body("nope", &s.agent_id, ok_msg.clone()), "template_id"),
        (body(&draft_id, &s.agent_id, ok_msg.clone()), "template_id"),
        (
            body(&s.template_id, "0123456789abcdef01234567", ok_msg.clone()),
            "agent_id",
        ),
        (body(&s.template_id, &off_agent, ok_msg.clone()), "agent_id"),
        (body(&s.template_id, &s.agent_id, json!([])), "messages"),
        (
            body(
                &s.template_id,
                &s.agent_id,
                json!([
            {"to": "0901234567", "variables": {"CODE": "1"}}, {"to": "0901234568", "variables": {"CODE": "1"}},
            {"to": "0901234569", "variables": {"CODE": "1"}}, {"to": "0901234570", "variables": {"CODE": "1"}}]),
            ),
            "messages",
        ),
        (
            body(
                &s.template_id,
                &s.agent_id,
                json!([{"to": "0901234567", "variables": {"CODE": "1"}}, {"to": "12345", "variables": {"CODE": "1"}}]),
            ),
            "messages[1].to",
        ),
        (
            body(
                &s.template_id,
                &s.agent_id,
                json!([{"to": "+14155552671", "variables": {"CODE": "1"}}]),
            ),
            "messages[0].to",
        ),
        (
            body(
                &s.template_id,
                &s.agent_id,
                json!([{"to": "0901234567", "variables": {}}]),
            ),
            "messages[0].variables",
        ),
        (
            body(
                &s.template_id,
                &s.agent_id,
                json!([{"to": "0901234567", "variables": {"CODE": {"a": 1}}}]),
            ),
            "messages[0].variables.CODE",
        ),
        (
            body(
                &s.template_id,
                &s.agent_id,
                json!([{"to": "0901234567", "variables": {"CODE": "x".repeat(40)}}]),
            ),
            "messages[0].text",
        ),
        (
            json!({"template_id": s.template_id, "agent_id": s.agent_id, "messages": ok_msg, "priority_weight": 101}),
            "priority_weight",
        ),
    ];
    for (payload, field) in cases {
        let res = app
            .post("/sms/requests", Auth::ApiKey(&s.key), payload)
            .await;
        let err = assert_error(res, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
        assert!(err["errors"][field].is_array(), "{field}: {err}");
    }
    let unknown = app
        .post("/requests", Auth::ApiKey(&s.key), json!({"template_id": s.template_id, "agent_id": s.agent_id, "messages": ok_msg, "status": "SENT"}))
        .await;
    assert_error(unknown, StatusCode::BAD_REQUEST, "INVALID_JSON").await;
    assert_eq!(app.count("sms_messages", doc! {}).await, 0);
    assert_eq!(app.count("sms_requests", doc! {}).await, 0);
    assert_eq!(app.count("quota_usage", doc! {}).await, 0);
}

#[tokio::test]
async fn api_keys_need_the_right_scope_and_must_be_live() {
    let app = spawn_app().await;
    let s = app.sender().await;
    let accepted = app.submit(&s, &[("0901234567", "1")]).await;
    let request_id = accepted.json::<Value>().await.unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (_, read_only) = app.create_api_key(&["sms:read"], None).await;
    let (_, send_only) = app.create_api_key(&["sms:send"], None).await;
    let payload = json!({"template_id": s.template_id, "agent_id": s.agent_id, "messages": [{"to": "0901234567", "variables": {"CODE": "1"}}]});
    assert_error(
        app.post("/requests", Auth::ApiKey(&read_only), payload.clone())
            .await,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
    )
    .await;
    assert_error(
        app.get("/messages/all", Auth::ApiKey(&send_only)).await,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
    )
    .await;
    assert_error(
        app.get(&format!("/requests/{request_id}"), Auth::ApiKey(&send_only))
            .await,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
    )
    .await;

    let unknown = format!("scsms_live_{}", "A".repeat(43));
    for key in [unknown.as_str(), "garbage", ""] {
        assert_error(
            app.post("/requests", Auth::ApiKey(key), payload.clone())
                .await,
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
        )
        .await;
    }
    assert_error(
        app.post("/requests", Auth::None, payload.clone()).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
    )
    .await;

    app.request(
        Method::DELETE,
        &format!("/admin/api-keys/{}", s.key_id),
        Auth::Operator,
        None,
    )
    .await;
    assert_error(
        app.post("/requests", Auth::ApiKey(&s.key), payload.clone())
            .await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
    )
    .await;
    assert_error(
        app.get("/messages/all", Auth::ApiKey(&s.key)).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
    )
    .await;

    // Operators may send too; their messages have no tenant.
    assert_eq!(
        app.post("/requests", Auth::Operator, payload)
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        app.count("sms_messages", doc! {"api_key_id": null}).await,
        1
    );
    let logs = app
        .db
        .audit_logs
        .list(&Default::default(), &first_page(1))
        .await
        .unwrap()
        .items;
    assert_eq!(logs[0].action, "request.create");
    assert_eq!(logs[0].actor, "test-operator");
}
