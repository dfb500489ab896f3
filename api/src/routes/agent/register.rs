//! `POST /agent/register`: a device (an Android phone) becomes an agent, or a known device gets
//! a new token; a registration secret, when one is in force, must match.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sms_shared::db::agents::Registered;
use sms_shared::domain::token;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::openapi::{AuthError, BodyErrors, Errors};
use crate::routes::admin::registration_secret::secret_in_force;
use crate::state::AppState;

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

/// Registers a device as an agent, or rotates a known device's token.
#[utoipa::path(
    post,
    path = "/agent/register",
    tag = "agents",
    responses(
        (status = 201, description = "A new agent", body = RegisterResponse),
        (status = 200, description = "A known device: its token rotated, or kept with `rotate_token: false`", body = RegisterResponse),
        AuthError,
        Errors,
        BodyErrors,
    )
)]
#[tracing::instrument(skip_all, fields(device_id = %sms_shared::telemetry::untrusted(&body.device_id)))]
async fn register_agent(
    State(state): State<AppState>,
    Json(body): Json<RegisterAgent>,
) -> ApiResult<(StatusCode, Json<RegisterResponse>)> {
    if let Some(expected) = secret_in_force(&state).await? {
        let given = body.registration_secret.as_deref().unwrap_or("");
        if !token::digests_equal(&token::digest(given), &token::digest(&expected)) {
            return Err(ApiError::Unauthorized);
        }
    }
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
    let minted = token::mint(token::AGENT_TOKEN_PREFIX);
    let rotate = body.rotate_token.unwrap_or(true);
    let (status, agent, plain) = match state
        .db
        .agents
        .register(&device_id, &label, &minted.hash, rotate)
        .await?
    {
        Registered::Created(a) => (StatusCode::CREATED, a, Some(minted.plain)),
        Registered::Rotated(a) => (StatusCode::OK, a, Some(minted.plain)),
        Registered::Kept(a) => (StatusCode::OK, a, None),
    };
    tracing::info!(agent_id = %agent.id, new_token = plain.is_some(), "agent registered");
    Ok((
        status,
        Json(RegisterResponse {
            agent_id: agent.id.to_hex(),
            agent_token: plain,
            device_id: agent.device_id,
            label: agent.label,
            is_active: agent.is_active,
        }),
    ))
}
