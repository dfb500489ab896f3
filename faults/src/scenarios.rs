//! The ten scenarios of the reliability rules. Each breaks something, heals it, lets the system
//! settle with phones draining every job, then counts lost and duplicated messages.

use std::time::Duration;

use anyhow::{bail, ensure, Context};
use mongodb::bson::{doc, Document};
use serde_json::{json, Value};

use crate::client::{recipients, Client, Setup};
use crate::count::{self, Tally};
use crate::phones::{self, Behaviour, Lease, Ledger};
use crate::stack::{rabbitmqctl, Bins, Mongo, Stack, AMQP_URL};

/// What every scenario gets.
pub struct Ctx {
    pub bins: Bins,
    pub mongo: Mongo,
    pub logs: std::path::PathBuf,
}

pub const NAMES: [&str; 10] = [
    "API killed between insert and publish",
    "RabbitMQ restarted during a 10k-message request",
    "dispatcher killed after staging, before ack",
    "poison event",
    "unroutable publish",
    "MongoDB stopped during dispatch",
    "agent frozen past its lease while another leases the job",
    "agent dies after SENDING",
    "same to+text reaching two dispatcher replicas at once",
    "hostile input",
];

pub async fn run(n: usize, ctx: &mut Ctx) -> anyhow::Result<Tally> {
    match n {
        1 => api_crash_before_publish(ctx).await,
        2 => rabbitmq_restart(ctx).await,
        3 => dispatcher_crash_before_ack(ctx).await,
        4 => poison_event(ctx).await,
        5 => unroutable_publish(ctx).await,
        6 => mongodb_stop(ctx).await,
        7 => frozen_agent(ctx).await,
        8 => agent_dies_after_sending(ctx).await,
        9 => duplicate_pairs(ctx).await,
        10 => hostile_input(ctx).await,
        _ => bail!("no scenario {n}"),
    }
}

struct Run {
    stack: Stack,
    client: Client,
    db: mongodb::Database,
    setup: Setup,
    ledger: Ledger,
    accepted: Vec<(String, usize)>,
}

impl Run {
    async fn start(
        ctx: &Ctx,
        overrides: &[(&str, &str)],
        api_fault: Option<&str>,
        agents: usize,
    ) -> anyhow::Result<Self> {
        let mut stack = Stack::new(
            ctx.bins.clone(),
            ctx.mongo.uri(),
            ctx.logs.clone(),
            overrides,
        );
        stack.start_api(api_fault).await?;
        let client = Client::new(stack.api_url());
        let setup = client.setup(agents).await?;
        let db = mongodb::Client::with_uri_str(&stack.mongo_uri)
            .await?
            .database(&stack.db_name);
        Ok(Self {
            stack,
            client,
            db,
            setup,
            ledger: Ledger::default(),
            accepted: Vec::new(),
        })
    }

    async fn submit(&mut self, agent: usize, offset: usize, n: usize) -> anyhow::Result<()> {
        let r = self
            .client
            .submit(&self.setup, agent, &recipients(offset, n))
            .await?
            .context("API unreachable")?;
        self.accepted.push(r);
        Ok(())
    }

    async fn count(&self, filter: Document) -> u64 {
        self.db
            .collection::<Document>("sms_messages")
            .count_documents(filter)
            .await
            .unwrap_or(0)
    }

    /// Phones drain every job until all accepted messages are final (bounded), then count.
    async fn settle(mut self, limit_secs: u64) -> anyhow::Result<Tally> {
        let db = self.db.clone();
        let accepted = self.accepted.clone();
        phones::drain(
            &self.client,
            &self.ledger,
            &self.setup.agents,
            Duration::from_secs(limit_secs),
            || {
                let (db, accepted) = (db.clone(), accepted.clone());
                async move { count::settled(&db, &accepted).await }
            },
        )
        .await;
        let tally = count::tally(&self.db, &self.accepted, self.ledger.duplicated()).await;
        self.stack.cleanup().await;
        tally
    }
}

async fn eventually<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check().await
}

async fn api_crash_before_publish(ctx: &mut Ctx) -> anyhow::Result<Tally> {
    let mut run = Run::start(ctx, &[], Some("crash-before-publish"), 1).await?;
    run.stack.start_dispatcher(None)?;
    run.submit(0, 0, 200).await?;
    run.stack.wait_api_exit(15).await?;
    let unpublished = run.count(doc! {"published": false}).await;
    ensure!(
        unpublished == 200,
        "the crash point did not fire before publishing ({unpublished} unpublished)"
    );
    run.stack.start_api(None).await?;
    run.settle(90).await
}

async fn rabbitmq_restart(ctx: &mut Ctx) -> anyhow::Result<Tally> {
    let mut run = Run::start(ctx, &[], None, 2).await?;
    run.stack.start_dispatcher(None)?;
    run.stack.start_dispatcher(None)?;
    let outage = tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        rabbitmqctl(&["stop_app"]).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        rabbitmqctl(&["start_app"]).await?;
        rabbitmqctl(&["await_startup"]).await
    });
    let (a, b) = (recipients(0, 5000), recipients(5000, 5000));
    let (ra, rb) = tokio::join!(
        run.client.submit(&run.setup, 0, &a),
        run.client.submit(&run.setup, 1, &b)
    );
    let outage_result = outage.await?;
    if outage_result.is_err() {
        let _ = rabbitmqctl(&["start_app"]).await;
    }
    outage_result?;
    run.accepted.push(ra?.context("submit")?);
    run.accepted.push(rb?.context("submit")?);
    run.settle(480).await
}

async fn dispatcher_crash_before_ack(ctx: &mut Ctx) -> anyhow::Result<Tally> {
    let mut run = Run::start(ctx, &[], None, 1).await?;
    run.stack.start_dispatcher(Some("crash-before-ack"))?;
    run.submit(0, 0, 50).await?;
    let crashed = eventually(30, || {
        let exited = run.stack.exited_dispatchers();
        async move { exited == 1 }
    })
    .await;
    ensure!(crashed, "the dispatcher's crash point did not fire");
    let staged_unacked = run.count(doc! {"staged": true}).await;
    ensure!(staged_unacked >= 1, "nothing was staged before the crash");
    run.stack.start_dispatcher(None)?;
    run.settle(90).await
}

async fn amqp_channel() -> anyhow::Result<(lapin::Connection, lapin::Channel)> {
    let conn = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    Ok((conn, ch))
}

async fn poison_event(ctx: &mut Ctx) -> anyhow::Result<Tally> {
    let mut run = Run::start(ctx, &[], None, 1).await?;
    run.stack.start_dispatcher(None)?;
    run.submit(0, 0, 20).await?;
    // Once those are staged the queue exists and is consumed; an event published before any
    // queue is bound would be unroutable rather than poison.
    let flowing = eventually(30, || async {
        run.count(doc! {"staged": true}).await == 20
    })
    .await;
    ensure!(flowing, "the first 20 messages were not staged");
    let topology = sms_shared::amqp::Topology::new(&run.stack.prefix);
    let (conn, ch) = amqp_channel().await?;
    ch.confirm_select(Default::default()).await?;
    for payload in [b"{broken".to_vec(), br#"{"message_id":"0123456789abcdef01234567","request_id":"0123456789abcdef01234567","accepted_at_ms":0}"#.to_vec()] {
        ch.basic_publish(&topology.events_exchange, "message", Default::default(), &payload, Default::default())
            .await?
            .await?;
    }
    run.submit(0, 20, 20).await?;
    let dead = eventually(20, || async {
        let q = ch
            .queue_declare(
                &topology.dead_letter_queue,
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await;
        q.is_ok_and(|q| q.message_count() == 2)
    })
    .await;
    let _ = conn.close(200, "done").await;
    ensure!(
        dead,
        "the poison events did not reach the dead-letter queue"
    );
    run.settle(90).await
}

async fn unroutable_publish(ctx: &mut Ctx) -> anyhow::Result<Tally> {
    let mut run = Run::start(ctx, &[], None, 1).await?;
    run.stack.start_dispatcher(None)?;
    run.submit(0, 0, 10).await?;
    let staged = eventually(30, || async {
        run.count(doc! {"staged": true}).await == 10
    })
    .await;
    ensure!(staged, "the first request was not staged");
    // Take the route away: events published now come back unroutable.
    let topology = sms_shared::amqp::Topology::new(&run.stack.prefix);
    let (conn, ch) = amqp_channel().await?;
    ch.queue_unbind(
        &topology.queue,
        &topology.events_exchange,
        sms_shared::amqp::MESSAGE_ROUTING_KEY,
        Default::default(),
    )
    .await?;
    let _ = conn.close(200, "done").await;
    run.submit(0, 10, 50).await?;
    let metrics = run
        .client
        .http
        .get(run.client.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let returned = metrics
        .lines()
        .find(|l| l.starts_with("sms_events_returned_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    let returned = if returned > 0.0 {
        true
    } else {
        // The first attempt may still be in flight; give it a moment.
        eventually(10, || async {
            let m = run.client.http.get(run.client.url("/metrics")).send().await;
            match m {
                Ok(r) => r
                    .text()
                    .await
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l.starts_with("sms_events_returned_total ") && !l.ends_with(" 0")),
                Err(_) => false,
            }
        })
        .await
    };
    ensure!(returned, "no event came back unroutable");
    run.settle(90).await
}

async fn mongodb_stop(ctx: &mut Ctx) -> anyhow::Result<Tally> {
    let mut run = Run::start(ctx, &[], None, 1).await?;
    run.stack.start_dispatcher(None)?;
    run.submit(0, 0, 3000).await?;
    ctx.mongo.stop().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    ctx.mongo.restart().await?;
    run.settle(180).await
}

async fn frozen_agent(ctx: &mut Ctx) -> anyhow::Result<Tally> {
    let mut run = Run::start(ctx, &[("LEASE_SECONDS", "2")], None, 1).await?;
    run.stack.start_dispatcher(None)?;
    run.submit(0, 0, 10).await?;
    ensure!(
        eventually(30, || async {
            run.count(doc! {"staged": true}).await == 10
        })
        .await,
        "not staged"
    );
    let (agent, token) = run.setup.agents[0].clone();
    // Phone A leases everything, then freezes past the lease.
    let frozen = run.client.lease(&token, 50).await?;
    ensure!(frozen.len() == 10, "phone A got {} jobs", frozen.len());
    let now = chrono::Utc::now();
    for j in &frozen {
        run.ledger.record_lease(
            j["message_id"].as_str().unwrap_or_default(),
            Lease {
                phone: "phone-A".into(),
                lease_id: j["lease_id"].as_str().unwrap_or_default().into(),
                received_at: now,
                expires_at: chrono::DateTime::parse_from_rfc3339(
                    j["lease_expires_at"].as_str().unwrap_or_default(),
                )
                .map(|t| t.with_timezone(&chrono::Utc))
                .unwrap_or(now),
            },
        );
    }
    tokio::time::sleep(Duration::from_millis(2600)).await;
    // Phone B (the same agent's app after a restart) leases the expired jobs and sends them.
    let got = phones::poll_once(
        &run.client,
        &run.ledger,
        &format!("{agent}-B"),
        &token,
        Behaviour::Deliver,
    )
    .await?;
    ensure!(got == 10, "phone B re-leased {got} jobs");
    // Phone A wakes up and reports with its stale leases: every item must be refused.
    let late: Vec<Value> = frozen
        .iter()
        .map(
            |j| json!({"message_id": j["message_id"], "status": "SENT", "lease_id": j["lease_id"]}),
        )
        .collect();
    let results = run.client.report(&token, late).await?;
    let accepted = results.iter().filter(|r| r["ok"] == true).count();
    ensure!(accepted == 0, "{accepted} stale reports were accepted");
    ensure!(
        results.iter().all(|r| r["error"] == "STALE_LEASE"),
        "stale reports not refused as STALE_LEASE: {results:?}"
    );
    run.settle(60).await
}

async fn agent_dies_after_sending(ctx: &mut Ctx) -> anyhow::Result<Tally> {
    let mut run = Run::start(
        ctx,
        &[
            ("SENDING_TIMEOUT_SECONDS", "2"),
            ("RECONCILE_INTERVAL_MS", "200"),
        ],
        None,
        1,
    )
    .await?;
    run.stack.start_dispatcher(None)?;
    run.submit(0, 0, 10).await?;
    ensure!(
        eventually(30, || async {
            run.count(doc! {"staged": true}).await == 10
        })
        .await,
        "not staged"
    );
    let (agent, token) = run.setup.agents[0].clone();
    let got = phones::poll_once(
        &run.client,
        &run.ledger,
        &agent,
        &token,
        Behaviour::DieAfterSending,
    )
    .await?;
    ensure!(got == 10, "leased {got}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        run.client.lease(&token, 50).await?.is_empty(),
        "a SENDING message was handed out again"
    );
    let failed = eventually(20, || async {
        run.count(doc! {"status": "FAILED", "last_error": "SENDING_TIMEOUT"})
            .await
            == 10
    })
    .await;
    ensure!(failed, "SENDING messages were not failed after the timeout");
    ensure!(
        run.client.lease(&token, 50).await?.is_empty(),
        "a timed-out message was handed out again"
    );
    run.settle(30).await
}

async fn duplicate_pairs(ctx: &mut Ctx) -> anyhow::Result<Tally> {
    let mut run = Run::start(ctx, &[], None, 1).await?;
    run.stack.start_dispatcher(None)?;
    run.stack.start_dispatcher(None)?;
    let mut pairs = Vec::new();
    for r in recipients(0, 200) {
        pairs.push(r.clone());
        pairs.push(r);
    }
    let accepted = run
        .client
        .submit(&run.setup, 0, &pairs)
        .await?
        .context("submit")?;
    run.accepted.push(accepted);
    let tally = run.settle(90).await?;
    ensure!(
        tally.canceled == 200 && tally.delivered == 200,
        "expected 200 canceled and 200 delivered: {tally}"
    );
    Ok(tally)
}

async fn expect(res: reqwest::Response, status: u16, code: &str, what: &str) -> anyhow::Result<()> {
    let got = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    ensure!(
        got == status && body["code"] == code,
        "{what}: expected {status} {code}, got {got} {body}"
    );
    Ok(())
}

async fn hostile_input(ctx: &mut Ctx) -> anyhow::Result<Tally> {
    let mut run = Run::start(
        ctx,
        &[
            ("MAX_BODY_BYTES", "65536"),
            ("MAX_RECIPIENTS_PER_REQUEST", "100"),
        ],
        None,
        2,
    )
    .await?;
    run.stack.start_dispatcher(None)?;
    run.submit(0, 0, 5).await?;
    let (c, s) = (run.client.clone(), run.setup.clone());
    let other = c.setup(0).await?;
    let http = &c.http;
    let request_id = run.accepted[0].0.clone();
    let msgs: Value = http
        .get(c.url("/messages/all"))
        .header("X-API-Key", &s.key)
        .send()
        .await?
        .json()
        .await?;
    let message_id = msgs["items"][0]["id"]
        .as_str()
        .context("a message")?
        .to_owned();
    let before = (
        run.count(doc! {}).await,
        run.db
            .collection::<Document>("api_keys")
            .count_documents(doc! {})
            .await?,
    );

    // Another tenant's ids on every read route.
    for path in [
        format!("/requests/{request_id}"),
        format!("/messages?request_id={request_id}"),
        format!("/messages/{message_id}"),
    ] {
        expect(
            http.get(c.url(&path))
                .header("X-API-Key", &other.key)
                .send()
                .await?,
            404,
            "NOT_FOUND",
            &path,
        )
        .await?;
    }
    let foreign_all: Value = http
        .get(c.url("/messages/all"))
        .header("X-API-Key", &other.key)
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        foreign_all["total"] == 0,
        "another tenant listed foreign messages"
    );

    // Another agent's message on report.
    ensure!(
        eventually(30, || async { run.count(doc! {"staged": true}).await == 5 }).await,
        "not staged"
    );
    let results = c
        .report(
            &s.agents[1].1,
            vec![json!({"message_id": message_id, "status": "SENT"})],
        )
        .await?;
    ensure!(
        results[0]["ok"] == false && results[0]["error"] == "NOT_FOUND",
        "foreign report: {results:?}"
    );
    ensure!(
        results[0].get("status").is_none_or(|v| v.is_null()),
        "a foreign report revealed the status"
    );

    // Forged, expired and `none` JWTs.
    use base64::Engine;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let exp = chrono::Utc::now().timestamp() + 600;
    let forged = crate::client::operator_token("not-the-secret");
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "x", "exp": chrono::Utc::now().timestamp() - 600}),
        &jsonwebtoken::EncodingKey::from_secret(crate::stack::JWT_SECRET.as_bytes()),
    )?;
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none"})),
        b64(json!({"sub": "x", "exp": exp}))
    );
    for (what, token) in [("forged", &forged), ("expired", &expired), ("none", &none)] {
        let res = http
            .post(c.url("/admin/api-keys"))
            .bearer_auth(token)
            .json(&json!({"client_name": "x", "scopes": ["sms:send"]}))
            .send()
            .await?;
        expect(res, 401, "UNAUTHORIZED", what).await?;
    }

    // Unknown and revoked API keys.
    let send = |key: String, body: Value| {
        let c = c.clone();
        async move {
            c.http
                .post(c.url("/requests"))
                .header("X-API-Key", key)
                .json(&body)
                .send()
                .await
        }
    };
    let good = json!({"template_id": s.template_id, "agent_id": s.agents[0].0, "messages": [{"to": "0901234567", "variables": {"CODE": "1"}}]});
    expect(
        send(format!("scsms_live_{}", "x".repeat(43)), good.clone()).await?,
        401,
        "UNAUTHORIZED",
        "unknown key",
    )
    .await?;
    let keys: Value = http
        .get(c.url("/admin/api-keys"))
        .bearer_auth(&c.operator)
        .send()
        .await?
        .json()
        .await?;
    let other_id = keys["items"]
        .as_array()
        .context("keys")?
        .iter()
        .find(|k| {
            other
                .key
                .starts_with(k["key_prefix"].as_str().unwrap_or("-"))
        })
        .context("other key")?["id"]
        .as_str()
        .context("id")?
        .to_owned();
    http.delete(c.url(&format!("/admin/api-keys/{other_id}")))
        .bearer_auth(&c.operator)
        .send()
        .await?;
    expect(
        send(other.key.clone(), good.clone()).await?,
        401,
        "UNAUTHORIZED",
        "revoked key",
    )
    .await?;

    // Malformed and international numbers, unknown fields, oversized bodies and recipient lists.
    for to in ["12", "+14155552671", "09O1234567"] {
        let body = json!({"template_id": s.template_id, "agent_id": s.agents[0].0, "messages": [{"to": to, "variables": {"CODE": "1"}}]});
        expect(
            send(s.key.clone(), body).await?,
            400,
            "VALIDATION_ERROR",
            to,
        )
        .await?;
    }
    let mut unknown = good.clone();
    unknown["agent_ownership"] = json!("mine");
    expect(
        send(s.key.clone(), unknown).await?,
        400,
        "INVALID_JSON",
        "unknown field",
    )
    .await?;
    let huge = json!({"template_id": s.template_id, "agent_id": s.agents[0].0, "messages": [{"to": "0901234567", "variables": {"CODE": "x".repeat(70_000)}}]});
    expect(
        send(s.key.clone(), huge).await?,
        413,
        "PAYLOAD_TOO_LARGE",
        "oversized body",
    )
    .await?;
    let many: Vec<Value> = recipients(100, 101)
        .into_iter()
        .map(|(to, code)| json!({"to": to, "variables": {"CODE": code}}))
        .collect();
    let too_many =
        json!({"template_id": s.template_id, "agent_id": s.agents[0].0, "messages": many});
    expect(
        send(s.key.clone(), too_many).await?,
        400,
        "VALIDATION_ERROR",
        "too many recipients",
    )
    .await?;

    let after = (
        run.count(doc! {}).await,
        run.db
            .collection::<Document>("api_keys")
            .count_documents(doc! {})
            .await?,
    );
    ensure!(
        before == after,
        "hostile input changed state: {before:?} -> {after:?}"
    );

    // A quota burst from concurrent clients never accepts more than the quota.
    let res = http
        .post(c.url("/admin/api-keys"))
        .bearer_auth(&c.operator)
        .json(&json!({"client_name": "burst", "scopes": ["sms:send"], "rate_limit_per_day": 20}))
        .send()
        .await?;
    let burst_key = res.json::<Value>().await?["plain_key"]
        .as_str()
        .context("plain_key")?
        .to_owned();
    let burst = Setup {
        key: burst_key,
        ..s.clone()
    };
    let submits = (0..60).map(|i| {
        let (c, burst) = (c.clone(), burst.clone());
        async move { c.submit(&burst, 0, &recipients(1000 + i, 1)).await }
    });
    let mut accepted = 0;
    for r in futures::future::join_all(submits).await {
        match r {
            Ok(Some(a)) => {
                accepted += 1;
                run.accepted.push(a);
            }
            Ok(None) => bail!("API unreachable during the burst"),
            Err(e) if e.to_string().contains("429") => {}
            Err(e) => return Err(e),
        }
    }
    ensure!(
        accepted == 20,
        "the burst got {accepted} accepted for a quota of 20"
    );
    run.settle(60).await
}
