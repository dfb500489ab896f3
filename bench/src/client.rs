//! A small HTTP client for the endpoints the benchmark and the simulated phones use.

use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The API at one base URL (`http://host:port` or `http://host:port/sms`).
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

/// An error answer of the API: status and body.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub body: String,
}

impl std::error::Error for HttpError {}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.body)
    }
}

impl Api {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(256)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// Sends `req` and decodes a 2xx JSON answer; anything else becomes an [`HttpError`].
    async fn send<T: for<'de> Deserialize<'de>>(req: RequestBuilder) -> anyhow::Result<T> {
        let res = req.send().await?;
        let status = res.status();
        if !status.is_success() {
            let body = res.text().await.unwrap_or_default();
            return Err(HttpError { status, body }.into());
        }
        Ok(res.json().await?)
    }

    /// Plain text of `GET path` (e.g. `/metrics`).
    pub async fn text(&self, path: &str) -> anyhow::Result<String> {
        let res = self.request(Method::GET, path).send().await?;
        let status = res.status();
        let body = res.text().await?;
        if !status.is_success() {
            bail!(HttpError { status, body });
        }
        Ok(body)
    }

    // --- operator ----------------------------------------------------------------------------

    /// Creates an API key with both scopes; returns its plain key.
    pub async fn create_api_key(
        &self,
        jwt: &str,
        client_name: &str,
        rate_limit_per_day: i64,
    ) -> anyhow::Result<String> {
        let body: Value = Self::send(
            self.request(Method::POST, "/admin/api-keys")
                .bearer_auth(jwt)
                .json(&json!({
                    "client_name": client_name,
                    "scopes": ["sms:send", "sms:read"],
                    "rate_limit_per_day": rate_limit_per_day,
                })),
        )
        .await
        .context("creating an API key")?;
        string_field(&body, "plain_key")
    }

    /// Creates and approves a template; returns its id.
    pub async fn approved_template(
        &self,
        jwt: &str,
        name: &str,
        content: &str,
    ) -> anyhow::Result<String> {
        let body: Value = Self::send(
            self.request(Method::POST, "/templates")
                .bearer_auth(jwt)
                .json(&json!({"name": name, "content": content})),
        )
        .await
        .context("creating a template")?;
        let id = string_field(&body, "id")?;
        let _: Value = Self::send(
            self.request(Method::POST, &format!("/templates/{id}/approve"))
                .bearer_auth(jwt)
                .json(&json!({})),
        )
        .await
        .context("approving the template")?;
        Ok(id)
    }

    /// The agent registration secret in force, if any.
    pub async fn registration_secret(&self, jwt: &str) -> anyhow::Result<Option<String>> {
        let body: Value = Self::send(
            self.request(Method::GET, "/admin/agent/registration-secret")
                .bearer_auth(jwt),
        )
        .await
        .context("reading the agent registration secret")?;
        Ok(body["registration_secret"].as_str().map(str::to_owned))
    }

    // --- API client --------------------------------------------------------------------------

    /// `POST /requests`; returns the accepted answer.
    pub async fn submit(&self, api_key: &str, body: &Value) -> anyhow::Result<Accepted> {
        Self::send(
            self.request(Method::POST, "/requests")
                .header("X-API-Key", api_key)
                .json(body),
        )
        .await
    }

    // --- agent -------------------------------------------------------------------------------

    /// Registers (or re-registers) a device; returns `(agent_id, agent_token)`.
    pub async fn register_agent(
        &self,
        device_id: &str,
        secret: Option<&str>,
    ) -> anyhow::Result<(String, String)> {
        let mut payload = json!({"device_id": device_id, "label": device_id});
        if let Some(s) = secret {
            payload["registration_secret"] = json!(s);
        }
        let body: Value = Self::send(self.request(Method::POST, "/agent/register").json(&payload))
            .await
            .with_context(|| format!("registering agent {device_id}"))?;
        Ok((
            string_field(&body, "agent_id")?,
            string_field(&body, "agent_token")?,
        ))
    }

    /// `GET /agent/jobs/next?limit=`.
    pub async fn next_jobs(&self, token: &str, limit: usize) -> anyhow::Result<Jobs> {
        Self::send(
            self.request(Method::GET, &format!("/agent/jobs/next?limit={limit}"))
                .bearer_auth(token),
        )
        .await
    }

    /// `POST /agent/messages/report` with a batch of reports.
    pub async fn report(
        &self,
        token: &str,
        items: &[ReportItem],
    ) -> anyhow::Result<Vec<ReportResult>> {
        #[derive(Serialize)]
        struct Batch<'a> {
            messages: &'a [ReportItem],
        }
        #[derive(Deserialize)]
        struct Results {
            results: Vec<ReportResult>,
        }
        let r: Results = Self::send(
            self.request(Method::POST, "/agent/messages/report")
                .bearer_auth(token)
                .json(&Batch { messages: items }),
        )
        .await?;
        Ok(r.results)
    }

    /// `POST /agent/heartbeat` with the facts of a healthy simulated phone.
    pub async fn heartbeat(&self, token: &str) -> anyhow::Result<()> {
        let _: Value = Self::send(
            self.request(Method::POST, "/agent/heartbeat")
                .bearer_auth(token)
                .json(&json!({
                    "battery": 87.0,
                    "charging": true,
                    "signal": 4,
                    "network": "WIFI",
                    "app_version": concat!("sms-bench-", env!("CARGO_PKG_VERSION")),
                    "model": "simulator",
                })),
        )
        .await?;
        Ok(())
    }
}

fn string_field(body: &Value, field: &str) -> anyhow::Result<String> {
    body[field]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no `{field}` in {body}"))
}

/// Whether `err` is an API answer with `status`.
pub fn has_status(err: &anyhow::Error, status: StatusCode) -> bool {
    err.downcast_ref::<HttpError>()
        .is_some_and(|e| e.status == status)
}

/// 202 answer of `POST /requests`.
#[derive(Debug, Deserialize)]
pub struct Accepted {
    pub request_id: String,
    pub total: usize,
}

/// Answer of `GET /agent/jobs/next`.
#[derive(Debug, Deserialize)]
pub struct Jobs {
    pub jobs: Vec<Job>,
    #[serde(default)]
    pub retry_after_seconds: Option<i64>,
}

/// One leased message.
#[derive(Debug, Clone, Deserialize)]
pub struct Job {
    pub message_id: String,
    pub lease_id: String,
    #[serde(default)]
    pub lease_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub text: String,
}

/// One item of a report batch.
#[derive(Debug, Clone, Serialize)]
pub struct ReportItem {
    pub message_id: String,
    pub status: &'static str,
    pub lease_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The API's verdict on one report.
#[derive(Debug, Clone, Deserialize)]
pub struct ReportResult {
    pub message_id: String,
    pub ok: bool,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}
