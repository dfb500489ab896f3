//! Credentials as extractors: [`Operator`] (JWT), [`ApiClient`] (API key), [`Caller`]
//! (either), and [`AgentAuth`] (agent token). Unknown, revoked and malformed credentials all
//! get the same 401. [`BearerProof`] takes whichever bearer credential is offered without
//! requiring one, and [`ClientAddr`] is the client's address.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, Extensions, HeaderMap};
use mongodb::bson::{self, oid::ObjectId};
use sms_shared::db::agents::Agent;
use sms_shared::db::audit_logs::AuditLog;
use sms_shared::domain::token;

use crate::error::ApiError;
use crate::state::AppState;

/// The client address of a request (see [`client_address`]).
pub fn client_ip(parts: &Parts, trust_forwarded: bool) -> Option<String> {
    client_address(&parts.headers, &parts.extensions, trust_forwarded)
}

/// The client address: with `USE_X_FORWARDED_HOST`, the last `X-Forwarded-For` entry, which
/// the proxy appended (entries before it are whatever the client sent); else, or when that
/// entry is not an IP address, the connection's peer.
pub fn client_address(
    headers: &HeaderMap,
    extensions: &Extensions,
    trust_forwarded: bool,
) -> Option<String> {
    let forwarded = trust_forwarded
        .then(|| headers.get_all("x-forwarded-for").iter().next_back())
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|last| last.trim().parse::<IpAddr>().ok());
    forwarded
        .or_else(|| {
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip())
        })
        .map(|ip| ip.to_string())
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
            .insert(&AuditLog::new(
                &self.name,
                action,
                target_type,
                target_id,
                self.ip.clone(),
                details,
            ))
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
    /// The only agents its requests may use; `None`: any agent.
    pub agent_ids: Option<Vec<ObjectId>>,
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
                    agent_ids: key.agent_ids,
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

    /// The agents this caller may send through: `None` for operators and unrestricted keys.
    pub fn allowed_agents(&self) -> Option<&[ObjectId]> {
        match self {
            Caller::Client(c) => c.agent_ids.as_deref(),
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

/// The client's address as [`client_ip`] tells it, for audit entries and login throttling.
#[derive(Debug, Clone)]
pub struct ClientAddr(pub Option<String>);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(ClientAddr(client_ip(
            parts,
            state.config.http.trust_forwarded,
        )))
    }
}

/// Whatever an optional `Authorization: Bearer` header proves, on routes open to anyone where
/// a credential grants more (`POST /agent/register`). Never rejects: a missing, malformed,
/// unknown or expired credential proves nothing.
#[derive(Debug, Clone)]
pub enum BearerProof {
    Nothing,
    /// An agent's current token, whether or not the agent is active (the route decides).
    Agent(Box<Agent>),
    /// A valid operator JWT.
    Operator(Operator),
}

impl FromRequestParts<AppState> for BearerProof {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(plain) = bearer(&parts.headers) else {
            return Ok(BearerProof::Nothing);
        };
        if token::well_formed(plain, token::AGENT_TOKEN_PREFIX) {
            let digest = token::digest(plain);
            return Ok(match state.db.agents.find_by_token_hash(&digest).await? {
                Some(agent) if token::digests_equal(&agent.token_hash, &digest) => {
                    BearerProof::Agent(Box::new(agent))
                }
                _ => BearerProof::Nothing,
            });
        }
        Ok(match state.jwt.verify(plain) {
            Some(claims) => BearerProof::Operator(Operator {
                name: claims.operator_name(),
                ip: client_ip(parts, state.config.http.trust_forwarded),
            }),
            None => BearerProof::Nothing,
        })
    }
}
