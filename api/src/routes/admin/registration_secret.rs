//! `GET` and `PUT /admin/agent/registration-secret`: the secret devices must send to register as
//! agents, which operators may set (or clear, to open registration) without a restart.

use axum::extract::State;
use mongodb::bson::doc;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Operator;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::openapi::{AuthError, BodyErrors, Errors};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_registration_secret, put_registration_secret))
}

/// The agent registration secret in force.
#[derive(Serialize, utoipa::ToSchema)]
struct RegistrationSecret {
    /// The secret agents must send to register; `null` when registration is open.
    registration_secret: Option<String>,
    /// Whether a secret is required.
    configured: bool,
}

/// The secret in force: the database value wins over `AGENT_REGISTRATION_SECRET`; an empty
/// value disables it; with neither, registration is open.
pub(crate) async fn secret_in_force(state: &AppState) -> ApiResult<Option<String>> {
    let stored = state.db.settings.registration_secret().await?;
    Ok(match stored {
        Some(v) => Some(v).filter(|v| !v.is_empty()),
        None => state
            .config
            .agent_registration_secret
            .as_ref()
            .map(|s| s.expose_secret().to_owned()),
    })
}

/// The registration secret in force: the stored one, else `AGENT_REGISTRATION_SECRET`.
#[utoipa::path(
    get,
    path = "/admin/agent/registration-secret",
    tag = "agents",
    security(("operator_jwt" = [])),
    responses(
        (status = 200, description = "The secret in force", body = RegistrationSecret),
        AuthError,
        Errors,
    )
)]
async fn get_registration_secret(
    State(state): State<AppState>,
    _op: Operator,
) -> ApiResult<Json<RegistrationSecret>> {
    let secret = secret_in_force(&state).await?;
    Ok(Json(RegistrationSecret {
        configured: secret.is_some(),
        registration_secret: secret,
    }))
}

/// A new registration secret.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PutRegistrationSecret {
    /// At most 256 characters (after trimming); empty disables the secret.
    #[schema(max_length = 256)]
    registration_secret: String,
}

/// Sets the registration secret; an empty one opens registration to any device.
#[utoipa::path(
    put,
    path = "/admin/agent/registration-secret",
    tag = "agents",
    security(("operator_jwt" = [])),
    responses(
        (status = 200, description = "The secret now in force", body = RegistrationSecret),
        AuthError,
        Errors,
        BodyErrors,
    )
)]
async fn put_registration_secret(
    State(state): State<AppState>,
    operator: Operator,
    Json(body): Json<PutRegistrationSecret>,
) -> ApiResult<Json<RegistrationSecret>> {
    let value = body.registration_secret.trim().to_owned();
    if value.chars().count() > 256 {
        return Err(ApiError::validation(
            "registration_secret",
            "must be at most 256 characters",
        ));
    }
    state
        .db
        .settings
        .set_registration_secret(&value, &operator.name)
        .await?;
    operator
        .audit(
            &state,
            if value.is_empty() {
                "registration_secret.disable"
            } else {
                "registration_secret.set"
            },
            "setting",
            Some("agent_registration_secret".into()),
            doc! {},
        )
        .await?;
    let secret = Some(value).filter(|v| !v.is_empty());
    Ok(Json(RegistrationSecret {
        configured: secret.is_some(),
        registration_secret: secret,
    }))
}
