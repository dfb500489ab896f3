//! A typed HTTP client of the endpoints the tools use, as an operator, an API client and a
//! phone see them. Any answer other than 2xx is an [`ApiError::Status`]; a request that got no
//! answer at all (the API is down or restarting) is an [`ApiError::Unreachable`].

use std::time::Duration;

use anyhow::Context;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// How long a request may take unless the caller says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The API at one base URL (`http://host:port` or `http://host:port/sms`).
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

/// Why a request to the API did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API answered with a status other than 2xx.
    #[error("HTTP {status}: {body}")]
    Status { status: StatusCode, body: String },
    /// The request got no answer (refused connection, reset, timeout).
    #[error(transparent)]
    Unreachable(reqwest::Error),
}

impl Api {
    /// A client whose requests give up after two minutes.
    pub fn new(base: &str) -> anyhow::Result<Self> {
        Self::with_timeout(base, DEFAULT_TIMEOUT)
    }

    /// A client whose requests give up after `timeout`.
    pub fn with_timeout(base: &str, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(256)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The underlying HTTP client, for requests the typed helpers do not cover (hostile input).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// Sends `req` and decodes a 2xx JSON answer.
    async fn send<T: for<'de> Deserialize<'de>>(req: RequestBuilder) -> anyhow::Result<T> {
        let res = req.send().await.map_err(ApiError::Unreachable)?;
        let status = res.status();
        if !status.is_success() {
            let body = res.text().await.unwrap_or_default();
            return Err(ApiError::Status { status, body }.into());
        }
        Ok(res.json().await?)
    }

    /// Plain text of `GET path` (e.g. `/metrics`).
    pub async fn text(&self, path: &str) -> anyhow::Result<String> {
        let res = self
            .request(Method::GET, path)
            .send()
            .await
            .map_err(ApiError::Unreachable)?;
        let status = res.status();
        let body = res.text().await?;
        if !status.is_success() {
            return Err(ApiError::Status { status, body }.into());
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

    /// Registers (or re-registers) a device under `label`.
    pub async fn register_agent(
        &self,
        device_id: &str,
        label: &str,
        secret: Option<&str>,
    ) -> anyhow::Result<Registered> {
        let mut payload = json!({"device_id": device_id, "label": label});
        if let Some(s) = secret {
            payload["registration_secret"] = json!(s);
        }
        Self::send(self.request(Method::POST, "/agent/register").json(&payload))
            .await
            .with_context(|| format!("registering agent {device_id}"))
    }

    /// `GET /agent/jobs/next?limit=`.
    pub async fn next_jobs(&self, token: &str, limit: usize) -> anyhow::Result<Jobs> {
        self.wait_for_jobs(token, limit, 0).await
    }

    /// `GET /agent/jobs/next?limit=&wait=`: a long poll of up to `wait` seconds (0: a plain poll).
    pub async fn wait_for_jobs(
        &self,
        token: &str,
        limit: usize,
        wait: u64,
    ) -> anyhow::Result<Jobs> {
        let path = match wait {
            0 => format!("/agent/jobs/next?limit={limit}"),
            _ => format!("/agent/jobs/next?limit={limit}&wait={wait}"),
        };
        Self::send(self.request(Method::GET, &path).bearer_auth(token)).await
    }

    /// `POST /agent/messages/report` with a batch of reports; returns the per-item verdicts.
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
    matches!(err.downcast_ref::<ApiError>(), Some(ApiError::Status { status: s, .. }) if *s == status)
}

/// Whether `err` is a request that got no answer (the API is down or restarting).
pub fn is_unreachable(err: &anyhow::Error) -> bool {
    matches!(
        err.downcast_ref::<ApiError>(),
        Some(ApiError::Unreachable(_))
    )
}

/// 202 answer of `POST /requests`.
#[derive(Debug, Deserialize)]
pub struct Accepted {
    pub request_id: String,
    pub total: usize,
}

/// 201 answer of `POST /agent/register`.
#[derive(Debug, Clone, Deserialize)]
pub struct Registered {
    pub agent_id: String,
    pub agent_token: String,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ReportItem {
    /// A report of `status` for `job` under its lease.
    pub fn of(job: &Job, status: &'static str) -> Self {
        Self {
            message_id: job.message_id.clone(),
            status,
            lease_id: Some(job.lease_id.clone()),
            error: None,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_tell_answers_from_silence() {
        let answered: anyhow::Error = ApiError::Status {
            status: StatusCode::TOO_MANY_REQUESTS,
            body: "{}".into(),
        }
        .into();
        assert!(has_status(&answered, StatusCode::TOO_MANY_REQUESTS));
        assert!(!has_status(&answered, StatusCode::UNAUTHORIZED));
        assert!(!is_unreachable(&answered));
        assert_eq!(answered.to_string(), "HTTP 429 Too Many Requests: {}");
        let other = anyhow::anyhow!("HTTP 429");
        assert!(!has_status(&other, StatusCode::TOO_MANY_REQUESTS));
        assert!(!is_unreachable(&other));
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let api = Api::with_timeout(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(5))
            .unwrap();
        assert_eq!(
            api.url("/health"),
            format!("http://127.0.0.1:{port}/health")
        );
        let err = api.next_jobs("t", 1).await.unwrap_err();
        assert!(is_unreachable(&err), "{err:#}");
    }

    #[test]
    fn reports_without_a_lease_leave_it_out() {
        let item = ReportItem {
            message_id: "m".into(),
            status: "SENT",
            lease_id: None,
            error: None,
        };
        assert_eq!(
            serde_json::to_value(&item).unwrap(),
            json!({"message_id": "m", "status": "SENT"})
        );
    }
}
