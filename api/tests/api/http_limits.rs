//! Slow and oversized clients, spoken to over raw TCP: headers or a body sent too slowly are
//! cut off, a declared body over `MAX_BODY_BYTES` is refused before it is sent, and a huge
//! template variable is refused without building the huge text.

use std::time::{Duration, Instant};

use mongodb::bson::doc;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

async fn connect(app: &TestApp) -> TcpStream {
    let addr = app.address.trim_start_matches("http://");
    TcpStream::connect(addr).await.expect("connect")
}

/// What the server sent on a connection until it closed it (or `within` passed).
struct Answer {
    bytes: Vec<u8>,
    closed: bool,
    after: Duration,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The status code of the first response, if one came.
    fn status(&self) -> Option<u16> {
        let text = self.text();
        let code = text.strip_prefix("HTTP/1.1 ")?.get(..3)?;
        code.parse().ok()
    }

    fn header(&self, name: &str) -> Option<String> {
        let text = self.text();
        let (head, _) = text.split_once("\r\n\r\n")?;
        head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    fn json(&self) -> Value {
        let text = self.text();
        let (_, body) = text.split_once("\r\n\r\n").expect("a response with a body");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("JSON body ({e}): {body}"))
    }
}

/// Reads until the server closes the connection or `within` passes.
async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin), within: Duration) -> Answer {
    let started = Instant::now();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        let left = within.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
    };
    Answer {
        bytes,
        closed,
        after: started.elapsed(),
    }
}

/// Writes `data` a few bytes at a time, `pause` apart, until done or the server hangs up.
fn trickle(mut writer: tokio::net::tcp::OwnedWriteHalf, data: Vec<u8>, pause: Duration) {
    tokio::spawn(async move {
        for piece in data.chunks(4) {
            if writer.write_all(piece).await.is_err() {
                return;
            }
            tokio::time::sleep(pause).await;
        }
    });
}

async fn requests_stored(app: &TestApp) -> (u64, u64) {
    (
        app.count("sms_requests", doc! {}).await,
        app.count("sms_messages", doc! {}).await,
    )
}

#[tokio::test]
async fn headers_sent_too_slowly_get_the_connection_closed() {
    let app = spawn_app_with(&[("HTTP_HEADER_TIMEOUT_SECONDS", "1")]).await;

    // A prompt client on the same server is answered.
    let mut prompt = connect(&app).await;
    prompt
        .write_all(b"GET /sms/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut prompt, Duration::from_secs(10)).await;
    assert_eq!(answer.status(), Some(200), "{}", answer.text());

    // Headers trickled for 8 s: the server hangs up after about one.
    let (mut reader, writer) = connect(&app).await.into_split();
    let mut headers = b"GET /sms/health HTTP/1.1\r\nHost: localhost\r\n".to_vec();
    headers.extend(b"X-Slow: a\r\n".repeat(20));
    headers.extend(b"\r\n");
    trickle(writer, headers, Duration::from_millis(100));
    let answer = read_until_closed(&mut reader, Duration::from_secs(6)).await;
    assert!(answer.closed, "the connection is still open after 6 s");
    assert!(
        answer.bytes.is_empty() || answer.status() == Some(408),
        "closed or 408, got {:?}",
        answer.text()
    );
    assert!(
        answer.after >= Duration::from_millis(900) && answer.after < Duration::from_secs(4),
        "closed after {:?}",
        answer.after
    );
}

#[tokio::test]
async fn a_body_sent_too_slowly_gets_408_and_nothing_is_stored() {
    let app = spawn_app_with(&[("HTTP_BODY_TIMEOUT_SECONDS", "1")]).await;
    let s = app.sender().await;
    let body = json!({
        "template_id": s.template_id,
        "agent_id": s.agent_id,
        "messages": [{"to": "0901234567", "variables": {"CODE": "123456"}}],
    })
    .to_string()
    .into_bytes();
    let head = format!(
        "POST /sms/requests HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        s.key,
        body.len()
    );
    let (mut reader, mut writer) = connect(&app).await.into_split();
    writer.write_all(head.as_bytes()).await.unwrap();
    // 4 bytes every 200 ms: the whole body would take over 7 s, though bytes keep arriving
    // all along.
    assert!(body.len() > 4 * 35, "{} bytes", body.len());
    trickle(writer, body, Duration::from_millis(200));

    let answer = read_until_closed(&mut reader, Duration::from_secs(6)).await;
    assert!(answer.closed, "the connection is still open after 6 s");
    assert_eq!(answer.status(), Some(408), "{}", answer.text());
    assert_eq!(answer.json()["code"], "REQUEST_TIMEOUT");
    assert_eq!(answer.header("connection").as_deref(), Some("close"));
    assert!(
        answer.after >= Duration::from_millis(900) && answer.after < Duration::from_secs(4),
        "answered after {:?}",
        answer.after
    );
    assert_eq!(requests_stored(&app).await, (0, 0));

    // A prompt client is unaffected by the timeout.
    let res = app.submit(&s, &[("0901234567", "123456")]).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(requests_stored(&app).await, (1, 1));
}

#[tokio::test]
async fn a_request_in_flight_when_the_server_stops_is_still_answered() {
    let mut app = spawn_app().await;
    let s = app.sender().await;
    let body = json!({
        "template_id": s.template_id,
        "agent_id": s.agent_id,
        "messages": [{"to": "0901234567", "variables": {"CODE": "123456"}}],
    })
    .to_string();
    let head = format!(
        "POST /sms/requests HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        s.key,
        body.len()
    );
    let (first, rest) = body.split_at(body.len() / 2);
    let mut stream = connect(&app).await;
    stream
        .write_all(format!("{head}{first}").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let address = app.address.clone();
    let (_, answer) = tokio::join!(app.stop(), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stream.write_all(rest.as_bytes()).await.unwrap();
        read_until_closed(&mut stream, Duration::from_secs(10)).await
    });
    assert_eq!(answer.status(), Some(202), "{}", answer.text());
    assert!(answer.closed, "the connection is closed after the answer");
    assert_eq!(requests_stored(&app).await, (1, 1));
    let refused = TcpStream::connect(address.trim_start_matches("http://")).await;
    assert!(refused.is_err(), "a stopped server accepts no connection");
}

#[tokio::test]
async fn a_declared_body_over_the_limit_gets_413_before_it_is_sent() {
    let app = spawn_app().await;
    let s = app.sender().await;
    let too_big = app.config.http.max_body_bytes + 1;
    for expect in ["", "Expect: 100-continue\r\n"] {
        let mut stream = connect(&app).await;
        let head = format!(
            "POST /sms/requests HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {}\r\n\
             Content-Type: application/json\r\n{expect}Content-Length: {too_big}\r\n\r\n",
            s.key
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // No body follows: the answer must not wait for one (the body timeout is 30 s).
        let answer = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        assert_eq!(answer.status(), Some(413), "{expect:?}: {}", answer.text());
        assert_eq!(answer.json()["code"], "PAYLOAD_TOO_LARGE");
        assert_eq!(answer.header("connection").as_deref(), Some("close"));
        assert!(answer.closed, "the connection is closed");
        assert!(answer.after < Duration::from_secs(3), "{:?}", answer.after);
    }
    assert_eq!(requests_stored(&app).await, (0, 0));
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_gets_413() {
    let app = spawn_app_with(&[("MAX_BODY_BYTES", "4096")]).await;
    let mut stream = connect(&app).await;
    let mut request = b"POST /sms/auth/login HTTP/1.1\r\nHost: localhost\r\n\
Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    let chunk = "x".repeat(1024);
    for _ in 0..5 {
        request.extend(format!("400\r\n{chunk}\r\n").as_bytes());
    }
    request.extend(b"0\r\n\r\n");
    stream.write_all(&request).await.unwrap();
    let answer = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(answer.status(), Some(413), "{}", answer.text());
    assert_eq!(answer.json()["code"], "PAYLOAD_TOO_LARGE");
    assert!(answer.closed);

    // Within the limit, the same framing is read whole.
    let res = app
        .post(
            "/sms/auth/login",
            Auth::None,
            json!({"username": ADMIN_USER, "password": ADMIN_PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_huge_variable_in_every_placeholder_is_refused_by_length() {
    let app = spawn_app().await;
    let s = app.sender().await;
    let limit = app.config.rules.max_text_length;
    let content = "{V}".repeat(limit / 3);
    let template_id = app.approved_template("many-placeholders", &content).await;
    let res = app
        .post(
            "/sms/requests",
            Auth::ApiKey(&s.key),
            json!({
                "template_id": template_id,
                "agent_id": s.agent_id,
                "messages": [{"to": "0901234567", "variables": {"V": "x".repeat(1_000_000)}}],
            }),
        )
        .await;
    let body = assert_error(res, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
    assert_eq!(
        body["errors"]["messages[0].text"],
        json!([format!("rendered text is longer than {limit} characters")])
    );
    assert_eq!(requests_stored(&app).await, (0, 0));
}
