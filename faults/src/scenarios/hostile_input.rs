//! Hostile input: other tenants' ids on every read, another agent's message on report, forged,
//! expired and `none` JWTs, unknown and revoked keys, malformed and international numbers,
//! unknown fields, oversized bodies and recipient lists, and a quota burst from 60 concurrent
//! clients. Each gets the contract's error, the database is unchanged, and the burst never gets
//! more than the quota accepted.

use anyhow::{bail, ensure, Context};
use mongodb::bson::{doc, Document};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sms_testkit::client::{has_status, ReportItem};
use sms_testkit::recipients::recipients;

use super::harness::{eventually, keys, operator_token, Run, Setup};
use super::Ctx;
use crate::count::Tally;
use crate::stack::JWT_SECRET;

async fn expect(res: reqwest::Response, status: u16, code: &str, what: &str) -> anyhow::Result<()> {
    let got = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    ensure!(
        got == status && body["code"] == code,
        "{what}: expected {status} {code}, got {got} {body}"
    );
    Ok(())
}

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Tally> {
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
    let (api, s, operator) = (run.api.clone(), run.setup.clone(), run.operator.clone());
    let other = Setup::create(&api, &operator, 0).await?;
    let http = api.http();
    let request_id = run.accepted[0].0.clone();
    let msgs: Value = http
        .get(api.url("/messages/all"))
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
            http.get(api.url(&path))
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
        .get(api.url("/messages/all"))
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
    let foreign = ReportItem {
        message_id: message_id.clone(),
        status: "SENT",
        lease_id: None,
        error: None,
    };
    let results = api.report(&s.agents[1].1, &[foreign]).await?;
    let verdict = results
        .first()
        .context("no verdict on the foreign report")?;
    ensure!(
        !verdict.ok && verdict.error.as_deref() == Some("NOT_FOUND"),
        "foreign report: {results:?}"
    );
    ensure!(
        verdict.status.is_none(),
        "a foreign report revealed the status"
    );

    // Forged, expired and `none` JWTs.
    use base64::Engine;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let exp = chrono::Utc::now().timestamp() + 600;
    let forged = operator_token("not-the-secret")?;
    let expired = keys(JWT_SECRET).issue_for("x", chrono::Duration::minutes(-10))?;
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none"})),
        b64(json!({"sub": "x", "exp": exp}))
    );
    for (what, token) in [("forged", &forged), ("expired", &expired), ("none", &none)] {
        let res = http
            .post(api.url("/admin/api-keys"))
            .bearer_auth(token)
            .json(&json!({"client_name": "x", "scopes": ["sms:send"]}))
            .send()
            .await?;
        expect(res, 401, "UNAUTHORIZED", what).await?;
    }

    // Unknown and revoked API keys.
    let send = |key: String, body: Value| {
        let api = api.clone();
        async move {
            api.http()
                .post(api.url("/requests"))
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
    let listed: Value = http
        .get(api.url("/admin/api-keys"))
        .bearer_auth(&operator)
        .send()
        .await?
        .json()
        .await?;
    let other_id = listed["items"]
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
    http.delete(api.url(&format!("/admin/api-keys/{other_id}")))
        .bearer_auth(&operator)
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
        .post(api.url("/admin/api-keys"))
        .bearer_auth(&operator)
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
        let (api, burst) = (api.clone(), burst.clone());
        async move { burst.submit(&api, 0, &recipients(1000 + i, 1)).await }
    });
    let mut accepted = 0;
    for r in futures::future::join_all(submits).await {
        match r {
            Ok(Some(a)) => {
                accepted += 1;
                run.accepted.push(a);
            }
            Ok(None) => bail!("API unreachable during the burst"),
            Err(e) if has_status(&e, StatusCode::TOO_MANY_REQUESTS) => {}
            Err(e) => return Err(e),
        }
    }
    ensure!(
        accepted == 20,
        "the burst got {accepted} accepted for a quota of 20"
    );
    run.settle(60).await
}
