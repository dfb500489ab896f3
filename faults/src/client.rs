//! The API as a client, an operator and phones see it.

use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::stack::JWT_SECRET;

#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
    pub operator: String,
}

/// A key, an approved template and agents, ready to send.
#[derive(Clone, Debug)]
pub struct Setup {
    pub key: String,
    pub template_id: String,
    pub agents: Vec<(String, String)>,
}

pub fn operator_token(secret: &str) -> String {
    let claims = json!({"sub": "fault-drill", "exp": chrono::Utc::now().timestamp() + 3600});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token")
}

impl Client {
    pub fn new(base: String) -> Self {
        Self {
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            operator: operator_token(JWT_SECRET),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn json(
        &self,
        res: reqwest::Response,
        want: StatusCode,
        what: &str,
    ) -> anyhow::Result<Value> {
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        if status != want {
            bail!("{what}: {status} {body}");
        }
        Ok(body)
    }

    /// Key, approved template (`Ma OTP {CODE}`) and `agents` registered phones.
    pub async fn setup(&self, agents: usize) -> anyhow::Result<Setup> {
        let res = self
            .http
            .post(self.url("/admin/api-keys"))
            .bearer_auth(&self.operator)
            .json(&json!({"client_name": "drill", "scopes": ["sms:send", "sms:read"], "rate_limit_per_day": 1_000_000}))
            .send()
            .await?;
        let key = self.json(res, StatusCode::CREATED, "create key").await?["plain_key"]
            .as_str()
            .context("plain_key")?
            .to_owned();
        let res = self
            .http
            .post(self.url("/templates"))
            .bearer_auth(&self.operator)
            .json(&json!({"name": format!("drill-{}", uuid::Uuid::new_v4()), "content": "Ma OTP {CODE}"}))
            .send()
            .await?;
        let template_id = self
            .json(res, StatusCode::CREATED, "create template")
            .await?["id"]
            .as_str()
            .context("id")?
            .to_owned();
        let res = self
            .http
            .post(self.url(&format!("/templates/{template_id}/approve")))
            .bearer_auth(&self.operator)
            .send()
            .await?;
        self.json(res, StatusCode::OK, "approve").await?;
        let mut list = Vec::new();
        for i in 0..agents {
            let res = self
                .http
                .post(self.url("/agent/register"))
                .json(&json!({"device_id": format!("drill-phone-{i}-{}", uuid::Uuid::new_v4()), "label": format!("phone {i}")}))
                .send()
                .await?;
            let body = self.json(res, StatusCode::CREATED, "register").await?;
            list.push((
                body["agent_id"].as_str().context("agent_id")?.to_owned(),
                body["agent_token"]
                    .as_str()
                    .context("agent_token")?
                    .to_owned(),
            ));
        }
        Ok(Setup {
            key,
            template_id,
            agents: list,
        })
    }

    /// Submits one request; `Ok(Some(request_id))` on 202, `Ok(None)` when the API went away.
    pub async fn submit(
        &self,
        s: &Setup,
        agent: usize,
        recipients: &[(String, String)],
    ) -> anyhow::Result<Option<(String, usize)>> {
        let messages: Vec<Value> = recipients
            .iter()
            .map(|(to, code)| json!({"to": to, "variables": {"CODE": code}}))
            .collect();
        let sent = self
            .http
            .post(self.url("/requests"))
            .header("X-API-Key", &s.key)
            .json(&json!({"template_id": s.template_id, "agent_id": s.agents[agent].0, "messages": messages}))
            .send()
            .await;
        let res = match sent {
            Ok(r) => r,
            Err(_) => return Ok(None),
        };
        let body = self.json(res, StatusCode::ACCEPTED, "submit").await?;
        Ok(Some((
            body["request_id"]
                .as_str()
                .context("request_id")?
                .to_owned(),
            recipients.len(),
        )))
    }

    /// Leases up to `limit` jobs for a phone.
    pub async fn lease(&self, token: &str, limit: usize) -> anyhow::Result<Vec<Value>> {
        let res = self
            .http
            .get(self.url(&format!("/agent/jobs/next?limit={limit}")))
            .bearer_auth(token)
            .send()
            .await?;
        let body = self.json(res, StatusCode::OK, "lease").await?;
        Ok(body["jobs"].as_array().cloned().unwrap_or_default())
    }

    /// Reports a batch; returns the per-item results.
    pub async fn report(&self, token: &str, items: Vec<Value>) -> anyhow::Result<Vec<Value>> {
        let res = self
            .http
            .post(self.url("/agent/messages/report"))
            .bearer_auth(token)
            .json(&json!({"messages": items}))
            .send()
            .await?;
        let body = self.json(res, StatusCode::OK, "report").await?;
        Ok(body["results"].as_array().cloned().unwrap_or_default())
    }
}

/// `n` distinct Vietnamese mobile numbers (national form) starting at `offset`.
pub fn numbers(offset: usize, n: usize) -> Vec<String> {
    (offset..offset + n)
        .map(|i| format!("09{:08}", 10_000_000 + i))
        .collect()
}

/// `n` recipients with distinct numbers and codes (so anti-dup never cancels them).
pub fn recipients(offset: usize, n: usize) -> Vec<(String, String)> {
    numbers(offset, n)
        .into_iter()
        .map(|to| (to, format!("{}", 100_000 + offset)))
        .collect()
}
