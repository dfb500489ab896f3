//! `POST /auth/login`: operator tokens for users made by `seed-admin`.
//!
//! Guessing is throttled: each attempt is counted against its username and its client address
//! *before* the password is checked (`db::login_throttle`), and once either has used up its
//! failures for the window the answer is 429 `LOGIN_THROTTLED` without a check. A successful
//! login clears its username's count and gives its address's attempt back. Password checks go
//! through the state's [`HashGate`](crate::login_guard::HashGate).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use sms_shared::db::login_throttle::{address_key, user_key, Attempt};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::ClientAddr;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::openapi::{AuthError, BodyErrors, Errors, LoginThrottleError};
use crate::state::AppState;

/// The `code` of every throttled login.
pub const LOGIN_THROTTLED: &str = "LOGIN_THROTTLED";

/// The `Retry-After` of a login refused because too many are being checked at once.
const BUSY_RETRY_AFTER_SECONDS: i64 = 2;

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

fn throttled(retry_after: i64, detail: String) -> ApiError {
    ApiError::Throttled {
        code: LOGIN_THROTTLED,
        retry_after,
        detail,
    }
}

/// Exchanges an operator's username and password for a JWT.
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "auth",
    responses(
        (status = 200, description = "The credentials are right", body = LoginResponse),
        AuthError,
        LoginThrottleError,
        Errors,
        BodyErrors,
    )
)]
async fn login(
    State(state): State<AppState>,
    ClientAddr(ip): ClientAddr,
    Json(body): Json<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let limits = state.config.login;
    let throttle = &state.db.login_throttle;
    let username = body.username.trim().to_owned();
    let address = address_key(ip.as_deref().unwrap_or("unknown"));
    let user = user_key(&username);
    let now = sms_shared::time::now();
    let too_many = |retry_after_seconds| {
        throttled(
            retry_after_seconds,
            format!("too many failed logins; try again in {retry_after_seconds} seconds"),
        )
    };
    if let Attempt::Throttled {
        retry_after_seconds,
    } = throttle
        .reserve(&address, limits.per_address, limits.window, now)
        .await?
    {
        return Err(too_many(retry_after_seconds));
    }
    if let Attempt::Throttled {
        retry_after_seconds,
    } = throttle
        .reserve(&user, limits.per_user, limits.window, now)
        .await?
    {
        throttle.release(&address, now).await?;
        return Err(too_many(retry_after_seconds));
    }

    let account = state.db.users.find_by_username(&username).await?;
    let hash = account
        .as_ref()
        .filter(|u| u.is_active)
        .map(|u| u.password_hash.clone());
    let password = body.password;
    // Verify against a dummy hash for unknown users too, so timing does not reveal who exists.
    let checked = state
        .hash_gate
        .run(move || match hash {
            Some(h) => sms_shared::auth::verify_password(&password, &h),
            None => {
                let _ = sms_shared::auth::verify_password(&password, DUMMY_HASH);
                false
            }
        })
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    let Ok(ok) = checked else {
        // Not a failure of these credentials: give both attempts back.
        throttle.release(&user, now).await?;
        throttle.release(&address, now).await?;
        return Err(throttled(
            BUSY_RETRY_AFTER_SECONDS,
            format!(
                "too many logins are being checked; try again in {BUSY_RETRY_AFTER_SECONDS} seconds"
            ),
        ));
    };
    let account = match (ok, account) {
        (true, Some(u)) => u,
        _ => return Err(ApiError::Unauthorized),
    };
    throttle.reset(&user).await?;
    throttle.release(&address, now).await?;
    let (access_token, expires_in) = state.jwt.issue(&account.username)?;
    Ok(Json(LoginResponse {
        access_token,
        token_type: "Bearer",
        expires_in,
    }))
}

/// argon2id hash of a random string, used to spend the same time on unknown usernames.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2u9v0S5l0Zt1Yv9xwVqJ2e0yQJ7xkR3R8mYpF7vYJ3k";
