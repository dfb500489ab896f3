//! Credentials as extractors: [`Operator`] (JWT), [`ApiClient`] (API key), [`Caller`]
//! (either), and [`AgentAuth`] (agent token). Unknown, revoked and malformed credentials all
//! get the same 401.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use mongodb::bson::{self, oid::ObjectId};
use sms_shared::db::agents::Agent;
use sms_shared::db::audit_logs::AuditLog;
use sms_shared::domain::token;

use crate::error::ApiError;
use crate::state::AppState;

/// The client address: the proxy's `X-Forwarded-For` when trusted, else the peer.
pub fn client_ip(parts: &Parts, trust_forwarded: bool) -> Option<String> {
    if trust_forwarded {
        if let Some(first) = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
        {
            let ip = first.trim();
            if !ip.is_empty() {
                return Some(ip.to_owned());
            }
        }
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// An operator authenticated by an HS256 JWT.
#[derive(Debug, Clone)]
pub struct Operator {
    pub name: String,
    pub ip: Option<String>,
}

impl Operator {
    /// Records an operator write in `audit_logs`.
    pub async fn audit(
        &self,
        state: &AppState,
        action: &str,
        target_type: &str,
        target_id: Option<String>,
        details: bson::Document,
    ) -> Result<(), ApiError> {
        state
            .db
            .audit_logs
            .insert(&AuditLog {
                target_id,
                ip: self.ip.clone(),
                details,
                ..AuditLog::now(&self.name, action, target_type)
            })
            .await?;
        Ok(())
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or(ApiError::Unauthorized)?;
        let claims = state.jwt.verify(token).ok_or(ApiError::Unauthorized)?;
        Ok(Operator {
            name: claims.operator_name(),
            ip: client_ip(parts, state.config.http.trust_forwarded),
        })
    }
}

/// An API client authenticated by `X-API-Key`.
#[derive(Debug, Clone)]
pub struct ApiClient {
    pub key_id: ObjectId,
    pub client_name: String,
    pub scopes: Vec<String>,
    pub rate_limit_per_day: i64,
}

impl ApiClient {
    pub fn require(&self, scope: &str) -> Result<(), ApiError> {
        if self.scopes.iter().any(|s| s == scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this API key lacks the {scope} scope"
            )))
        }
    }

    async fn from_headers(headers: &HeaderMap, state: &AppState) -> Result<Option<Self>, ApiError> {
        let Some(value) = headers.get("x-api-key") else {
            return Ok(None);
        };
        let plain = value.to_str().map_err(|_| ApiError::Unauthorized)?.trim();
        if !token::well_formed(plain, token::API_KEY_PREFIX) {
            return Err(ApiError::Unauthorized);
        }
        let digest = token::digest(plain);
        let key = state.db.api_keys.find_by_hash(&digest).await?;
        match key {
            Some(key) if key.is_active && token::digests_equal(&key.key_hash, &digest) => {
                Ok(Some(ApiClient {
                    key_id: key.id,
                    client_name: key.client_name,
                    scopes: key.scopes,
                    rate_limit_per_day: key.rate_limit_per_day,
                }))
            }
            _ => Err(ApiError::Unauthorized),
        }
    }
}

impl FromRequestParts<AppState> for ApiClient {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        ApiClient::from_headers(&parts.headers, state)
            .await?
            .ok_or(ApiError::Unauthorized)
    }
}

/// Either credential: an API key (`X-API-Key`) when present, else an operator JWT.
#[derive(Debug, Clone)]
pub enum Caller {
    Client(ApiClient),
    Operator(Operator),
}

impl Caller {
    /// The tenant whose objects this caller may see: `None` for operators (all).
    pub fn tenant(&self) -> Option<ObjectId> {
        match self {
            Caller::Client(c) => Some(c.key_id),
            Caller::Operator(_) => None,
        }
    }

    /// API keys must hold `scope`; operators hold every scope.
    pub fn require(&self, scope: &str) -> Result<(), ApiError> {
        match self {
            Caller::Client(c) => c.require(scope),
            Caller::Operator(_) => Ok(()),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(client) = ApiClient::from_headers(&parts.headers, state).await? {
            return Ok(Caller::Client(client));
        }
        Operator::from_request_parts(parts, state)
            .await
            .map(Caller::Operator)
    }
}

/// An active agent authenticated by its bearer token.
#[derive(Debug, Clone)]
pub struct AgentAuth(pub Agent);

impl FromRequestParts<AppState> for AgentAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let plain = bearer(&parts.headers).ok_or(ApiError::Unauthorized)?;
        if !token::well_formed(plain, token::AGENT_TOKEN_PREFIX) {
            return Err(ApiError::Unauthorized);
        }
        let digest = token::digest(plain);
        match state.db.agents.find_by_token_hash(&digest).await? {
            Some(agent) if agent.is_active && token::digests_equal(&agent.token_hash, &digest) => {
                Ok(AgentAuth(agent))
            }
            _ => Err(ApiError::Unauthorized),
        }
    }
}
