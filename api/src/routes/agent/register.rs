//! `POST /agent/register`: a device (an Android phone) becomes an agent, or a known device gets
//! a new token. A registration secret, when one is in force, must match; a *known* device also
//! has to prove it may take the token over (its current token, the secret, or an operator), so
//! that knowing a `device_id` is not enough to lock a phone out and receive its messages.
//!
//! Every token issued is recorded in the audit log with what proved it, before it takes effect.

use axum::extract::State;
use axum::http::StatusCode;
use mongodb::bson::{doc, oid::ObjectId};
use serde::{Deserialize, Serialize};
use sms_shared::db::agents::Agent;
use sms_shared::db::audit_logs::AuditLog;
use sms_shared::domain::token;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{BearerProof, ClientAddr, Operator};
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::openapi::{BodyErrors, ConflictError, Errors, RegistrationAuthError};
use crate::routes::admin::registration_secret::secret_in_force;
use crate::state::AppState;

/// The `code` of a 401 for a known device whose request proves nothing.
pub const PROOF_REQUIRED: &str = "AGENT_PROOF_REQUIRED";
/// The `code` of a 409 for a rotation that lost a race with another one.
pub const ROTATION_CONFLICT: &str = "ROTATION_CONFLICT";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(register_agent))
}

/// A device asking to become an agent.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RegisterAgent {
    /// The device's stable id: 1 to 128 characters, not only spaces.
    #[schema(min_length = 1, max_length = 128, pattern = r"\S")]
    device_id: String,
    /// A name for operators (at most 128 characters); the `device_id` when absent.
    #[schema(max_length = 128)]
    label: Option<String>,
    /// Required when a registration secret is configured.
    registration_secret: Option<String>,
    /// For a known `device_id`: `false` keeps the old token (and answers `agent_token: null`);
    /// default `true`.
    rotate_token: Option<bool>,
}

/// A registered agent and, unless kept, its new token.
#[derive(Serialize, utoipa::ToSchema)]
struct RegisterResponse {
    agent_id: String,
    /// The token to send as `Authorization: Bearer <agent_token>`; `null` when the old one was kept.
    agent_token: Option<String>,
    device_id: String,
    label: String,
    is_active: bool,
}

/// What allowed a token to be issued, as the audit log records it.
pub(crate) enum Proof {
    /// The device's own current token, of an active agent.
    AgentToken,
    /// The registration secret in force.
    RegistrationSecret,
    /// An operator's JWT.
    Operator(Operator),
    /// Nothing: a new device while registration is open.
    Nothing,
}

impl Proof {
    fn name(&self) -> &'static str {
        match self {
            Proof::AgentToken => "agent_token",
            Proof::RegistrationSecret => "registration_secret",
            Proof::Operator(_) => "operator_jwt",
            Proof::Nothing => "none",
        }
    }

    fn actor(&self, agent: ObjectId) -> String {
        match self {
            Proof::Operator(op) => op.name.clone(),
            Proof::RegistrationSecret => "registration-secret".to_owned(),
            Proof::AgentToken | Proof::Nothing => format!("agent:{}", agent.to_hex()),
        }
    }
}

/// Records that `proof` issued a token to `agent`; returns the entry's id.
async fn audit(
    state: &AppState,
    action: &str,
    agent: ObjectId,
    device_id: &str,
    proof: &Proof,
    ip: Option<String>,
) -> ApiResult<ObjectId> {
    let entry = AuditLog::new(
        proof.actor(agent),
        action,
        "agent",
        Some(agent.to_hex()),
        ip,
        doc! {"proof": proof.name(), "device_id": device_id},
    );
    state.db.audit_logs.insert(&entry).await?;
    Ok(entry.id)
}

/// Gives `agent` a new token (and `label`, when given), recorded in the audit log first, as long
/// as its token is still the one read. Returns the agent as it is now and the plain token.
pub(crate) async fn rotate(
    state: &AppState,
    agent: &Agent,
    label: Option<&str>,
    proof: &Proof,
    ip: Option<String>,
) -> ApiResult<(Agent, String)> {
    let minted = token::mint(token::AGENT_TOKEN_PREFIX);
    let entry = audit(
        state,
        "agent.rotate_token",
        agent.id,
        &agent.device_id,
        proof,
        ip,
    )
    .await?;
    let rotated = state
        .db
        .agents
        .rotate_token(agent.id, &agent.token_hash, &minted.hash, label)
        .await?;
    match rotated {
        Some(agent) => Ok((agent, minted.plain)),
        None => {
            state.db.audit_logs.remove(entry).await?;
            Err(rotation_conflict())
        }
    }
}

fn rotation_conflict() -> ApiError {
    ApiError::Conflict(
        ROTATION_CONFLICT,
        "the agent's token changed while this request was handled; nothing was changed".into(),
    )
}

/// Registers a device as an agent, or rotates a known device's token.
///
/// A known device needs proof: its current agent token (`Authorization: Bearer`), the
/// registration secret when one is configured, or an operator JWT.
#[utoipa::path(
    post,
    path = "/agent/register",
    tag = "agents",
    security((), ("agent_token" = []), ("operator_jwt" = [])),
    responses(
        (status = 201, description = "A new agent", body = RegisterResponse),
        (status = 200, description = "A known device: its token rotated, or kept with `rotate_token: false`", body = RegisterResponse),
        RegistrationAuthError,
        ConflictError,
        Errors,
        BodyErrors,
    )
)]
#[tracing::instrument(skip_all, fields(device_id = %sms_shared::telemetry::untrusted(&body.device_id)))]
async fn register_agent(
    State(state): State<AppState>,
    bearer: BearerProof,
    ClientAddr(ip): ClientAddr,
    Json(body): Json<RegisterAgent>,
) -> ApiResult<(StatusCode, Json<RegisterResponse>)> {
    let secret_proved = match secret_in_force(&state).await? {
        Some(expected) => {
            let given = body.registration_secret.as_deref().unwrap_or("");
            let proved = token::digests_equal(&token::digest(given), &token::digest(&expected));
            // A secret in force keeps everyone out who lacks it, whether the device is known or
            // not (so the answer reveals nothing), as the seed's registration did.
            if !proved {
                return Err(ApiError::Unauthorized);
            }
            proved
        }
        None => false,
    };
    let device_id = body.device_id.trim().to_owned();
    if device_id.is_empty() || device_id.chars().count() > 128 {
        return Err(ApiError::validation(
            "device_id",
            "must be 1 to 128 characters",
        ));
    }
    let label = body
        .label
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| device_id.clone());
    if label.chars().count() > 128 {
        return Err(ApiError::validation(
            "label",
            "must be at most 128 characters",
        ));
    }
    let known = match state.db.agents.find_by_device_id(&device_id).await? {
        Some(agent) => agent,
        None => {
            let proof = match bearer {
                BearerProof::Operator(op) => Proof::Operator(op),
                _ if secret_proved => Proof::RegistrationSecret,
                _ => Proof::Nothing,
            };
            let minted = token::mint(token::AGENT_TOKEN_PREFIX);
            let id = ObjectId::new();
            let entry = audit(&state, "agent.register", id, &device_id, &proof, ip).await?;
            let created = state
                .db
                .agents
                .create(id, &device_id, &label, &minted.hash)
                .await?;
            let Some(agent) = created else {
                // A concurrent first registration of this device won: this is a known device
                // now, and this request did not prove anything about it.
                state.db.audit_logs.remove(entry).await?;
                return Err(rotation_conflict());
            };
            tracing::info!(agent_id = %agent.id, proof = proof.name(), "agent registered");
            return Ok(answer(StatusCode::CREATED, agent, Some(minted.plain)));
        }
    };
    let proof = match bearer {
        BearerProof::Agent(a)
            if a.id == known.id
                && a.is_active
                && token::digests_equal(&a.token_hash, &known.token_hash) =>
        {
            Proof::AgentToken
        }
        BearerProof::Operator(op) => Proof::Operator(op),
        _ if secret_proved => Proof::RegistrationSecret,
        _ => {
            return Err(ApiError::UnauthorizedWith(
                PROOF_REQUIRED,
                "this device is already registered: getting its token again needs its current \
                 agent token (Authorization: Bearer) or an operator"
                    .into(),
            ))
        }
    };
    let (agent, plain) = if body.rotate_token.unwrap_or(true) {
        let (agent, plain) = rotate(&state, &known, Some(&label), &proof, ip).await?;
        (agent, Some(plain))
    } else {
        let agent = state
            .db
            .agents
            .relabel(known.id, &known.token_hash, &label)
            .await?
            .ok_or_else(rotation_conflict)?;
        (agent, None)
    };
    tracing::info!(agent_id = %agent.id, new_token = plain.is_some(), proof = proof.name(), "agent registered again");
    Ok(answer(StatusCode::OK, agent, plain))
}

fn answer(
    status: StatusCode,
    agent: Agent,
    token: Option<String>,
) -> (StatusCode, Json<RegisterResponse>) {
    (
        status,
        Json(RegisterResponse {
            agent_id: agent.id.to_hex(),
            agent_token: token,
            device_id: agent.device_id,
            label: agent.label,
            is_active: agent.is_active,
        }),
    )
}
