use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn health_reports_both_dependencies() {
    let app = spawn_app().await;
    for path in ["/health", "/sms/health"] {
        let res = app.get(path, Auth::None).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({"status": "ok", "mongo": "ok", "amqp": "ok", "dispatchers": 0})
        );
    }
}

#[tokio::test]
async fn health_names_rabbitmq_when_it_is_unreachable() {
    let app = spawn_app_with(&[("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")]).await;
    let res = app.get("/health", Auth::None).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["mongo"], "ok");
    assert_eq!(body["amqp"], "down");
    assert_eq!(body["code"], "SERVICE_UNAVAILABLE");
    assert!(body.get("dispatchers").is_none(), "{body}");
}

async fn health_dispatchers(app: &TestApp) -> Value {
    let res = app.get("/health", Auth::None).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json::<Value>().await.unwrap()["dispatchers"].clone()
}

/// Whether `/metrics` shows the message queue's gauges at these values.
async fn queue_gauges(app: &TestApp, messages: u32, consumers: u32) -> bool {
    let queue = format!("{}.messages", app.config.amqp.prefix);
    let text = app.get("/metrics", Auth::None).await.text().await.unwrap();
    text.contains(&format!(
        r#"sms_queue_messages{{queue="{queue}"}} {messages}"#
    )) && text.contains(&format!(
        r#"sms_queue_consumers{{queue="{queue}"}} {consumers}"#
    ))
}

#[tokio::test]
async fn health_and_metrics_count_the_dispatchers_and_waiting_events() {
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
            app.count("sms_messages", mongodb::bson::doc! {"published": true})
                .await
                == 2
        })
        .await
    );
    // Nobody consumes: the events wait, the request's two in one payload.
    assert_eq!(health_dispatchers(&app).await, 0);
    assert!(
        eventually(15, || queue_gauges(&app, 1, 0)).await,
        "the gauges show the waiting payload and no dispatcher"
    );

    let first = app.spawn_dispatcher();
    let second = app.spawn_dispatcher();
    assert!(
        eventually(10, || async { health_dispatchers(&app).await == 2 }).await,
        "both dispatchers counted"
    );
    assert!(
        eventually(15, || queue_gauges(&app, 0, 2)).await,
        "the gauges show the queue drained by two dispatchers"
    );
    assert!(
        eventually(10, || async {
            app.count("sms_messages", mongodb::bson::doc! {"staged": true})
                .await
                == 2
        })
        .await
    );
    second.stop().await;
    assert!(
        eventually(10, || async { health_dispatchers(&app).await == 1 }).await,
        "a stopped dispatcher is no longer counted"
    );
    first.stop().await;
}

#[tokio::test]
async fn health_names_mongodb_when_it_is_unreachable() {
    let app = spawn_app().await;
    // A second app on the same broker but a MongoDB address nothing listens on.
    let mut vars = app.vars.clone();
    vars.insert(
        "MONGO_URI".into(),
        "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500".into(),
    );
    let config = config_from(&vars);
    let state = sms_api::app::build_state(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(sms_api::app::run(listener, state, std::future::pending()));
    let res = reqwest::get(format!("http://{addr}/health")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["mongo"], "down");
    assert_eq!(body["amqp"], "ok");
    server.abort();
}

#[tokio::test]
async fn metrics_count_requests_by_route() {
    let app = spawn_app().await;
    app.get("/sms/health", Auth::None).await;
    app.get("/admin/api-keys", Auth::None).await;
    let res = app.get("/metrics", Auth::None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = res.text().await.unwrap();
    assert!(
        text.contains(r#"sms_http_requests_total{method="GET",route="/health",status="200"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"route="/admin/api-keys",status="401""#),
        "{text}"
    );
    assert!(
        text.contains("sms_http_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_get_contract_errors() {
    let app = spawn_app().await;
    assert_error(
        app.get("/sms/nope", Auth::None).await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    )
    .await;
    let res = app
        .request(reqwest::Method::DELETE, "/sms/health", Auth::None, None)
        .await;
    assert_error(res, StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED").await;
}

#[tokio::test]
async fn hosts_outside_allowed_hosts_get_400() {
    let app = spawn_app_with(&[("ALLOWED_HOSTS", "api.safecare.vn")]).await;
    // reqwest sends Host: 127.0.0.1:port, which is not allowed.
    let res = app.get("/sms/admin/api-keys", Auth::Operator).await;
    assert_error(res, StatusCode::BAD_REQUEST, "DISALLOWED_HOST").await;
    let res = app
        .client
        .get(app.url("/sms/admin/api-keys"))
        .header("Host", "api.safecare.vn")
        .bearer_auth(&app.operator_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // Health probes by IP keep working.
    assert_eq!(
        app.get("/health", Auth::None).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let app = spawn_app_with(&[("MAX_BODY_BYTES", "2048")]).await;
    let big = "x".repeat(4096);
    let res = app
        .post(
            "/sms/auth/login",
            Auth::None,
            serde_json::json!({"username": big, "password": "p"}),
        )
        .await;
    assert_error(res, StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE").await;
}

#[tokio::test]
async fn a_configuration_error_names_its_variable() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sms-api"))
        .env_clear()
        .env("JWT_SECRET", "x")
        .env("LEASE_SECONDS", "five minutes")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("configuration error: LEASE_SECONDS:"),
        "{stderr}"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sms-api"))
        .env_clear()
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("configuration error: JWT_SECRET: is required"),
        "{stderr}"
    );
}

#[tokio::test]
async fn graceful_stop_finishes_publishing_what_was_accepted() {
    let mut app = spawn_app().await;
    let s = app.sender().await;
    assert_eq!(
        app.submit(&s, &[("0901234567", "1"), ("0901234568", "2")])
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    app.stop().await;
    // The server drained its background publishes before returning.
    assert_eq!(
        app.count("sms_messages", mongodb::bson::doc! {"published": true})
            .await,
        2
    );
    assert!(
        app.client.get(app.url("/health")).send().await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn the_binary_stops_cleanly_on_sigterm() {
    let app = spawn_app().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sms-api"))
        .env_clear()
        .envs(app.vars.iter())
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("LOG_FORMAT", "json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let up = eventually(15, || async {
        reqwest::get(format!("http://127.0.0.1:{port}/health"))
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    assert!(up, "binary did not come up");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut err).unwrap();
        (status, err)
    })
    .await
    .unwrap();
    assert!(status.0.success(), "exit status {:?}", status.0);
    let last = status.1.lines().last().unwrap_or_default();
    let line: serde_json::Value = serde_json::from_str(last).expect("JSON log lines");
    assert_eq!(line["message"], "sms-api stopped");
}
