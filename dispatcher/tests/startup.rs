//! The `sms-dispatcher` binary's start-up with several replicas on one host: a taken
//! `DISPATCHER_METRICS_ADDR` stops the newcomer with one line naming the variable, and port 0
//! lets any number run side by side. Runs through `scripts/test.sh` (real MongoDB-compatible
//! server on `TEST_MONGO_URI`, the machine's RabbitMQ on `TEST_AMQP_URL`).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// The database and AMQP prefix of one test, removed again when it ends.
struct Stack {
    mongo_uri: String,
    amqp_url: String,
    name: String,
}

impl Stack {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Self {
            mongo_uri: std::env::var("TEST_MONGO_URI").unwrap_or_else(|_| {
                panic!("TEST_MONGO_URI is not set: run the tests with scripts/test.sh")
            }),
            amqp_url: std::env::var("TEST_AMQP_URL")
                .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
            name: format!("test-dispatcher-{}-{nanos}", std::process::id()),
        }
    }

    /// A dispatcher of this stack serving `/metrics` and `/health` on `addr`.
    fn dispatcher(&self, addr: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sms-dispatcher"));
        command
            .env_clear()
            .env("MONGO_URI", &self.mongo_uri)
            .env("MONGO_DB", self.name.replace('-', "_"))
            .env("AMQP_URL", &self.amqp_url)
            .env("AMQP_PREFIX", &self.name)
            .env("DISPATCHER_METRICS_ADDR", addr)
            .env("LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Deletes what the dispatchers declared on the broker.
    async fn cleanup(self) {
        let props = lapin::ConnectionProperties::default();
        if let Ok(conn) = lapin::Connection::connect(&self.amqp_url, props).await {
            if let Ok(ch) = conn.create_channel().await {
                let t = sms_shared::amqp::Topology::new(&self.name);
                for q in t.queues() {
                    let _ = ch.queue_delete(q, Default::default()).await;
                }
                for e in t.exchanges() {
                    let _ = ch.exchange_delete(e, Default::default()).await;
                }
            }
            let _ = conn.close(200, "done").await;
        }
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The status code of `GET path` on `addr`, or `None` when nothing answers.
async fn status_of(addr: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// Waits until `GET /health` on `addr` answers 200.
async fn wait_healthy(addr: &str) {
    for _ in 0..150 {
        if status_of(addr, "/health").await == Some(200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the dispatcher on {addr} never became healthy");
}

/// Reads a dispatcher's JSON log until it says where it listens.
async fn listening_addr(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let found = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let line: serde_json::Value = serde_json::from_str(&line).expect("JSON log lines");
            if line["message"] == "dispatcher metrics listening" {
                return line["addr"].as_str().map(str::to_owned);
            }
        }
        None
    })
    .await;
    found
        .ok()
        .flatten()
        .expect("the log names the listening address")
}

#[tokio::test]
async fn a_second_dispatcher_on_the_same_address_stops_with_one_line_naming_it() {
    let stack = Stack::new();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut first = stack
        .dispatcher(&addr)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_healthy(&addr).await;

    let second = tokio::time::timeout(Duration::from_secs(15), stack.dispatcher(&addr).output())
        .await
        .expect("the second dispatcher stops at once")
        .unwrap();
    assert_eq!(second.status.code(), Some(78), "exit status");
    let stderr = String::from_utf8(second.stderr).unwrap();
    assert_eq!(
        stderr,
        format!(
            "configuration error: DISPATCHER_METRICS_ADDR: {addr} is already in use (another \
             sms-dispatcher on this host? give each replica its own address, or 127.0.0.1:0 for \
             any free port)\n"
        )
    );
    assert!(
        second.stdout.is_empty(),
        "nothing else is logged: {}",
        String::from_utf8_lossy(&second.stdout)
    );
    assert_eq!(
        status_of(&addr, "/health").await,
        Some(200),
        "the first dispatcher keeps serving"
    );

    first.kill().await.unwrap();
    stack.cleanup().await;
}

#[tokio::test]
async fn dispatchers_on_port_zero_run_side_by_side_and_log_their_port() {
    let stack = Stack::new();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let mut child = stack
            .dispatcher("127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = listening_addr(&mut child).await;
        replicas.push((child, addr));
    }
    assert_ne!(
        replicas[0].1, replicas[1].1,
        "each replica has its own port"
    );
    for (child, addr) in &mut replicas {
        assert!(!addr.ends_with(":0"), "the log names the real port: {addr}");
        wait_healthy(addr).await;
        assert_eq!(status_of(addr, "/metrics").await, Some(200));
        assert!(child.try_wait().unwrap().is_none(), "still running");
    }
    for (mut child, _) in replicas {
        child.kill().await.unwrap();
    }
    stack.cleanup().await;
}
