//! `/admin/api-keys`: operators create, list, change and revoke client API keys.
//!
//! A key may be restricted to some agents (`agent_ids`): its requests may then only pin to, or
//! pool within, those phones (see `routes/requests/target.rs`). Its daily quota may change too;
//! scopes and name stay as created (issue a new key for those).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use mongodb::bson::{doc, oid::ObjectId, DateTime};
use serde::{Deserialize, Serialize};
use sms_shared::db::api_keys::{ApiKey, ApiKeyChanges, SCOPES};
use sms_shared::domain::token;
use sms_shared::time::serde_rfc3339;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Operator;
use crate::error::{ApiError, ApiResult, FieldErrors};
use crate::extract::{nullable, object_id, Json};
use crate::openapi::{AuthError, BodyErrors, Errors, NotFoundError};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_api_keys, create_api_key))
        .routes(routes!(revoke_api_key, update_api_key))
}

/// The most agents a key may be restricted to.
const MAX_KEY_AGENTS: usize = 100;

/// A scope an API key may hold.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
enum Scope {
    /// May send (`POST /requests`).
    #[schema(rename = "sms:send")]
    Send,
    /// May read its own requests and messages.
    #[schema(rename = "sms:read")]
    Read,
}

/// A new API key.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateApiKey {
    /// 1 to 100 characters, not only spaces.
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    client_name: String,
    /// At least one; duplicates count once.
    #[schema(value_type = Vec<Scope>, min_items = 1)]
    scopes: Vec<String>,
    /// Messages per UTC day; `APIKEY_RATE_LIMIT_PER_DAY_DEFAULT` when absent.
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    rate_limit_per_day: Option<i64>,
    /// The only agents (1 to 100 active ones) the key's requests may use; absent or `null`: any.
    #[schema(min_items = 1, max_items = 100)]
    agent_ids: Option<Vec<String>>,
}

/// Changes to an API key; absent fields stay as they are.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateApiKey {
    /// The only agents (1 to 100 active ones) the key's requests may use; `null` lifts the
    /// restriction.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<String>>, min_items = 1, max_items = 100)]
    agent_ids: Option<Option<Vec<String>>>,
    /// Messages per UTC day, from now on (today's use so far counts against it).
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    rate_limit_per_day: Option<i64>,
}

/// An API key as operators see it: never the key material.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ApiKey)]
pub struct ApiKeyView {
    id: String,
    client_name: String,
    #[schema(value_type = Vec<Scope>)]
    scopes: Vec<String>,
    rate_limit_per_day: i64,
    /// The first characters of the key, to recognise it.
    key_prefix: String,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: DateTime,
    created_by: String,
    is_active: bool,
    #[serde(with = "serde_rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    revoked_at: Option<DateTime>,
    /// The only agents its requests may use; `null`: any agent.
    agent_ids: Option<Vec<String>>,
    /// The key itself: only in the answer to its creation, never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    plain_key: Option<String>,
}

impl From<ApiKey> for ApiKeyView {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id.to_hex(),
            client_name: k.client_name,
            scopes: k.scopes,
            rate_limit_per_day: k.rate_limit_per_day,
            key_prefix: k.key_prefix,
            created_at: k.created_at,
            created_by: k.created_by,
            is_active: k.is_active,
            revoked_at: k.revoked_at,
            agent_ids: k
                .agent_ids
                .map(|ids| ids.iter().map(|a| a.to_hex()).collect()),
            plain_key: None,
        }
    }
}

/// Every API key, newest first.
#[derive(Serialize, utoipa::ToSchema)]
struct ApiKeyList {
    items: Vec<ApiKeyView>,
}

/// Creates an API key for a client; its `plain_key` is shown this once.
#[utoipa::path(
    post,
    path = "/admin/api-keys",
    tag = "api-keys",
    security(("operator_jwt" = [])),
    responses(
        (status = 201, description = "Created; `plain_key` is in this answer only", body = ApiKeyView),
        AuthError,
        Errors,
        BodyErrors,
    )
)]
#[tracing::instrument(skip_all, fields(client_name = %sms_shared::telemetry::untrusted(&body.client_name)))]
async fn create_api_key(
    State(state): State<AppState>,
    operator: Operator,
    Json(body): Json<CreateApiKey>,
) -> ApiResult<(StatusCode, Json<ApiKeyView>)> {
    let mut errors = FieldErrors::new();
    let client_name = body.client_name.trim().to_owned();
    if client_name.is_empty() || client_name.chars().count() > 100 {
        errors
            .entry("client_name".into())
            .or_default()
            .push("must be 1 to 100 characters".into());
    }
    let mut scopes = Vec::new();
    for (i, scope) in body.scopes.iter().enumerate() {
        if !SCOPES.contains(&scope.as_str()) {
            errors
                .entry(format!("scopes[{i}]"))
                .or_default()
                .push(format!("unknown scope; use {}", SCOPES.join(" or ")));
        } else if !scopes.contains(scope) {
            scopes.push(scope.clone());
        }
    }
    if body.scopes.is_empty() {
        errors
            .entry("scopes".into())
            .or_default()
            .push("at least one scope is required".into());
    }
    let rate_limit = body
        .rate_limit_per_day
        .unwrap_or(state.config.rules.apikey_rate_limit_per_day_default);
    check_rate_limit(rate_limit, &mut errors);
    let agent_ids = match &body.agent_ids {
        Some(ids) => Some(agents(&state, ids, &mut errors).await?),
        None => None,
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation {
            detail: "invalid API key".into(),
            errors,
        });
    }
    let minted = token::mint(token::API_KEY_PREFIX);
    let key = ApiKey {
        id: ObjectId::new(),
        client_name,
        scopes,
        rate_limit_per_day: rate_limit,
        key_prefix: minted.plain[..token::API_KEY_PREFIX.len() + 6].to_owned(),
        key_hash: minted.hash,
        is_active: true,
        created_at: sms_shared::time::bson_now(),
        created_by: operator.name.clone(),
        revoked_at: None,
        agent_ids,
    };
    state.db.api_keys.insert(&key).await?;
    let mut details = doc! {
        "client_name": &key.client_name,
        "scopes": &key.scopes,
        "rate_limit_per_day": key.rate_limit_per_day,
    };
    if key.agent_ids.is_some() {
        details.insert("agent_ids", hex(key.agent_ids.as_deref()));
    }
    let target = Some(key.id.to_hex());
    operator
        .audit(&state, "api_key.create", "api_key", target, details)
        .await?;
    let mut view = ApiKeyView::from(key);
    view.plain_key = Some(minted.plain);
    Ok((StatusCode::CREATED, Json(view)))
}

/// Lists the API keys, without key material.
#[utoipa::path(
    get,
    path = "/admin/api-keys",
    tag = "api-keys",
    security(("operator_jwt" = [])),
    responses(
        (status = 200, description = "Every API key", body = ApiKeyList),
        AuthError,
        Errors,
    )
)]
async fn list_api_keys(
    State(state): State<AppState>,
    _operator: Operator,
) -> ApiResult<Json<ApiKeyList>> {
    let items = state
        .db
        .api_keys
        .list()
        .await?
        .into_iter()
        .map(ApiKeyView::from)
        .collect();
    Ok(Json(ApiKeyList { items }))
}

/// Revokes an API key: it stops working at once.
#[utoipa::path(
    delete,
    path = "/admin/api-keys/{id}",
    tag = "api-keys",
    params(("id" = String, Path, description = "The API key's id")),
    security(("operator_jwt" = [])),
    responses(
        (status = 200, description = "Revoked; the key as it is now", body = ApiKeyView),
        AuthError,
        NotFoundError,
        Errors,
    )
)]
async fn revoke_api_key(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<ApiKeyView>> {
    let id = object_id(&id)?;
    let key = state
        .db
        .api_keys
        .revoke(id)
        .await?
        .ok_or(ApiError::NotFound)?;
    operator
        .audit(
            &state,
            "api_key.revoke",
            "api_key",
            Some(id.to_hex()),
            doc! {"client_name": &key.client_name},
        )
        .await?;
    Ok(Json(ApiKeyView::from(key)))
}

/// Changes an API key's agents or daily quota; takes effect on its next call.
#[utoipa::path(
    patch,
    path = "/admin/api-keys/{id}",
    tag = "api-keys",
    params(("id" = String, Path, description = "The API key's id")),
    security(("operator_jwt" = [])),
    responses(
        (status = 200, description = "The key as it is now", body = ApiKeyView),
        AuthError,
        NotFoundError,
        Errors,
        BodyErrors,
    )
)]
async fn update_api_key(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
    Json(body): Json<UpdateApiKey>,
) -> ApiResult<Json<ApiKeyView>> {
    let id = object_id(&id)?;
    let mut errors = FieldErrors::new();
    if let Some(limit) = body.rate_limit_per_day {
        check_rate_limit(limit, &mut errors);
    }
    let agent_ids = match &body.agent_ids {
        Some(Some(ids)) => Some(Some(agents(&state, ids, &mut errors).await?)),
        Some(None) => Some(None),
        None => None,
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation {
            detail: "invalid API key change; nothing was changed".into(),
            errors,
        });
    }
    let changes = ApiKeyChanges {
        agent_ids,
        rate_limit_per_day: body.rate_limit_per_day,
    };
    let key = state
        .db
        .api_keys
        .update(id, &changes)
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut details = doc! {"client_name": &key.client_name};
    if let Some(agents) = &changes.agent_ids {
        details.insert("agent_ids", hex(agents.as_deref()));
    }
    if let Some(limit) = changes.rate_limit_per_day {
        details.insert("rate_limit_per_day", limit);
    }
    operator
        .audit(
            &state,
            "api_key.update",
            "api_key",
            Some(id.to_hex()),
            details,
        )
        .await?;
    Ok(Json(ApiKeyView::from(key)))
}

fn check_rate_limit(limit: i64, errors: &mut FieldErrors) {
    if !(1..=1_000_000_000).contains(&limit) {
        errors
            .entry("rate_limit_per_day".into())
            .or_default()
            .push("must be between 1 and 1000000000".into());
    }
}

/// A key's agents: 1 to 100 ids, each of a known, active agent (else an error at
/// `agent_ids[i]`); duplicates count once.
async fn agents(
    state: &AppState,
    ids: &[String],
    errors: &mut FieldErrors,
) -> ApiResult<Vec<ObjectId>> {
    let mut problem = |field: String, message: &str| {
        errors.entry(field).or_default().push(message.to_owned());
    };
    if ids.is_empty() {
        problem("agent_ids".into(), "at least one agent; null for any agent");
        return Ok(Vec::new());
    }
    if ids.len() > MAX_KEY_AGENTS {
        problem(
            "agent_ids".into(),
            &format!("at most {MAX_KEY_AGENTS} agents"),
        );
        return Ok(Vec::new());
    }
    let parsed: Vec<Option<ObjectId>> = ids.iter().map(|s| ObjectId::parse_str(s).ok()).collect();
    let wanted: Vec<ObjectId> = parsed.iter().flatten().copied().collect();
    let known = state.db.agents.find_many(&wanted).await?;
    let mut out = Vec::new();
    for (i, id) in parsed.into_iter().enumerate() {
        match id.and_then(|id| known.get(&id)) {
            None => problem(format!("agent_ids[{i}]"), "unknown agent"),
            Some(a) if !a.is_active => problem(format!("agent_ids[{i}]"), "agent is disabled"),
            Some(a) if !out.contains(&a.id) => out.push(a.id),
            Some(_) => {}
        }
    }
    Ok(out)
}

/// Agent ids in hex for the audit log; `None` stays `null`.
fn hex(ids: Option<&[ObjectId]>) -> Option<Vec<String>> {
    ids.map(|ids| ids.iter().map(|a| a.to_hex()).collect())
}
