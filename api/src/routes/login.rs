//! `POST /auth/login`: operator tokens for users made by `seed-admin`.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::openapi::{AuthError, BodyErrors, Errors};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(login))
}

/// An operator's credentials.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    username: String,
    password: String,
}

/// An operator token.
#[derive(Serialize, utoipa::ToSchema)]
struct LoginResponse {
    /// An HS256 JWT to send as `Authorization: Bearer <access_token>`.
    access_token: String,
    /// Always `Bearer`.
    #[schema(value_type = String, example = "Bearer")]
    token_type: &'static str,
    /// Seconds until the token expires.
    expires_in: i64,
}

/// Exchanges an operator's username and password for a JWT.
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "auth",
    responses(
        (status = 200, description = "The credentials are right", body = LoginResponse),
        AuthError,
        Errors,
        BodyErrors,
    )
)]
async fn login(
    State(state): State<AppState>,
    Json(body): Json<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let user = state
        .db
        .users
        .find_by_username(body.username.trim())
        .await?;
    let hash = user
        .as_ref()
        .filter(|u| u.is_active)
        .map(|u| u.password_hash.clone());
    let password = body.password;
    // Verify against a dummy hash for unknown users too, so timing does not reveal who exists.
    let ok = tokio::task::spawn_blocking(move || match hash {
        Some(h) => sms_shared::auth::verify_password(&password, &h),
        None => {
            let _ = sms_shared::auth::verify_password(&password, DUMMY_HASH);
            false
        }
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))?;
    let user = match (ok, user) {
        (true, Some(u)) => u,
        _ => return Err(ApiError::Unauthorized),
    };
    let (access_token, expires_in) = state.jwt.issue(&user.username)?;
    Ok(Json(LoginResponse {
        access_token,
        token_type: "Bearer",
        expires_in,
    }))
}

/// argon2id hash of a random string, used to spend the same time on unknown usernames.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2u9v0S5l0Zt1Yv9xwVqJ2e0yQJ7xkR3R8mYpF7vYJ3k";
