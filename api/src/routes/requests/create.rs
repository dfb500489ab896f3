//! `POST /requests`: validates a whole request, reserves quota, stores the request and its
//! messages, and answers 202 before publishing their events.
//!
//! The handler is the list of its steps, each a function below: [`validate`] → [`render`] →
//! [`reserve_quota`] → [`store`] → [`publish`] (then [`audit`] for operators). Until `store`
//! succeeds nothing is written but the quota reservation, which a failed `store` gives back.
//!
//! A client that hangs up makes the server drop its handler wherever it is. Stopping half-way
//! after the quota reservation would leave quota taken for nothing, or a request without its
//! messages, so the steps from [`reserve_quota`] to handing the events to the publisher run as a
//! task of their own ([`accept`]) that the handler only waits for (as does graceful shutdown).

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use mongodb::bson::{doc, oid::ObjectId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sms_shared::config::RulesConfig;
use sms_shared::db::api_keys::SCOPE_SEND;
use sms_shared::db::messages::{count_transitions, Message, NewMessage, INSERT_PIECE};
use sms_shared::db::quota::seconds_until_tomorrow;
use sms_shared::db::requests::SmsRequest;
use sms_shared::db::templates::Template;
use sms_shared::domain::{phone, template};
use sms_shared::time;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::background::outbox;
use crate::error::{ApiError, ApiResult, FieldErrors};
use crate::extract::Json;
use crate::openapi::{AuthError, BodyErrors, Errors, QuotaError, ScopeError};
use crate::state::AppState;

use super::target::{self, Target};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_request))
}

/// Priority of a request that names none and whose template has none.
const DEFAULT_PRIORITY: i32 = 50;

/// A send request: one approved template, the agent or pool of agents that sends it, up to
/// `MAX_RECIPIENTS_PER_REQUEST` recipients.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    /// An approved template's id.
    template_id: String,
    /// The (active) agent that sends every message: they are pinned to it. Without it and
    /// `agent_ids`, any active agent (of a restricted key's agents) may send them.
    agent_id: Option<String>,
    /// A pool instead of one agent: any of these (active) agents may send each message, and
    /// another takes over when one fails or goes silent. 1 to 100 agents.
    #[schema(min_items = 1, max_items = 100)]
    agent_ids: Option<Vec<String>>,
    #[schema(min_items = 1)]
    messages: Vec<Recipient>,
    /// 0-100; the template's, else 50, when absent.
    #[schema(minimum = 0, maximum = 100)]
    priority_weight: Option<i64>,
}

/// One message of a request.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Recipient {
    /// E.164 (`+84901234567`), or a national number that gets `DEFAULT_COUNTRY_PREFIX`.
    to: String,
    /// Values of the template's placeholders (strings, numbers or booleans); every one must be given.
    #[serde(default)]
    variables: HashMap<String, Value>,
}

/// The request was stored; its messages go out in the background.
#[derive(Serialize, utoipa::ToSchema)]
struct Accepted {
    request_id: String,
    /// The number of messages.
    total: usize,
    /// Always `ACCEPTED`.
    #[schema(value_type = String, example = "ACCEPTED")]
    status: &'static str,
}

pub(super) fn push(errors: &mut FieldErrors, field: impl Into<String>, message: impl Into<String>) {
    errors.entry(field.into()).or_default().push(message.into());
}

/// A variable's text: strings as they are, numbers and booleans spelled out.
fn variable_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Sends a templated message to each recipient. Invalid input rejects the whole request, with
/// `errors` per item (`messages[3].to`); nothing is stored then.
#[utoipa::path(
    post,
    path = "/requests",
    tag = "requests",
    security(("api_key" = []), ("operator_jwt" = [])),
    responses(
        (status = 202, description = "Accepted: stored, sending in the background", body = Accepted),
        AuthError,
        ScopeError,
        QuotaError,
        Errors,
        BodyErrors,
    )
)]
#[tracing::instrument(skip_all, fields(recipients = body.messages.len()))]
async fn create_request(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateRequest>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    caller.require(SCOPE_SEND)?;
    let validated = validate(&state, &caller, &body).await?;
    let rendered = render(&state.config.rules, &body.messages, validated)?;
    let accepting = accept(state.clone(), caller, body.priority_weight, rendered);
    let request = (state.tasks.spawn(accepting).await)
        .map_err(|e| anyhow::Error::new(e).context("accepting a request"))??;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            request_id: request.id.to_hex(),
            total: request.total as usize,
            status: "ACCEPTED",
        }),
    ))
}

/// Steps 3 to 5, which run to the end even when the client hangs up: reserves the quota, stores
/// the request and its messages (giving the quota back when that fails), hands their events to
/// the publisher and audits an operator's send. Returns the stored request.
async fn accept(
    state: AppState,
    caller: Caller,
    priority_weight: Option<i64>,
    rendered: Rendered,
) -> ApiResult<SmsRequest> {
    let now = time::now();
    let reservation = reserve_quota(&state, &caller, rendered.texts.len(), now).await?;
    let (request, messages) = documents(&caller, priority_weight, rendered, now);
    // Background writes wait while a request of several insert pieces is stored (`ClientWrites`).
    let writing = (messages.len() > INSERT_PIECE).then(|| state.client_writes.begin());
    if let Err(failed) = store(&state, &request, &messages).await {
        if matches!(failed, StoreFailed::Removed) {
            release_quota(&state, reservation).await;
        }
        return Err(ApiError::Unavailable("the database".into()));
    }
    publish(&state, &messages);
    // Counted once the events are on their way: an OTP's event does not wait for the counters.
    count_transitions(&state.db.stats, &Message::created(&messages)).await;
    drop(writing);
    tracing::info!(request_id = %request.id, total = request.total, "request accepted");
    audit(&state, &caller, &request).await;
    Ok(request)
}

fn rejected(errors: FieldErrors) -> ApiError {
    ApiError::Validation {
        detail: "the request was rejected; nothing was stored".into(),
        errors,
    }
}

/// What [`validate`] found: the request's template, where its messages go and the errors so
/// far, which [`render`] completes.
struct Validated {
    template: Template,
    target: Option<Target>,
    errors: FieldErrors,
}

/// Step 1: the template (known and approved), the agent or pool (see `target.rs`: known, active
/// and allowed to the caller), the priority (0 to 100) and the number of recipients (1 to
/// `MAX_RECIPIENTS_PER_REQUEST`).
///
/// Rejects the request at once when there is no template to render with or the recipient count
/// is wrong; any other error travels on to [`render`], so that one answer lists them all.
async fn validate(state: &AppState, caller: &Caller, body: &CreateRequest) -> ApiResult<Validated> {
    let rules = &state.config.rules;
    let mut errors = FieldErrors::new();

    let template = match ObjectId::parse_str(&body.template_id) {
        Ok(id) => state.db.templates.find(id).await?,
        Err(_) => None,
    };
    match &template {
        None => push(&mut errors, "template_id", "unknown template"),
        Some(t) if !t.is_approved => push(&mut errors, "template_id", "template is not approved"),
        Some(_) => {}
    }
    let (agent_id, agent_ids) = (body.agent_id.as_deref(), body.agent_ids.as_deref());
    let allowed = caller.allowed_agents();
    let target = target::resolve(state, allowed, agent_id, agent_ids, &mut errors).await?;
    if body
        .priority_weight
        .is_some_and(|w| !(0..=100).contains(&w))
    {
        push(&mut errors, "priority_weight", "must be between 0 and 100");
    }
    let n = body.messages.len();
    if n == 0 {
        push(&mut errors, "messages", "at least one message is required");
    } else if n > rules.max_recipients_per_request {
        push(
            &mut errors,
            "messages",
            format!(
                "at most {} messages per request",
                rules.max_recipients_per_request
            ),
        );
    }
    if !errors.is_empty() && (n == 0 || n > rules.max_recipients_per_request) || template.is_none()
    {
        return Err(rejected(errors));
    }
    Ok(Validated {
        template: template.expect("checked above"),
        target,
        errors,
    })
}

/// What [`render`] made of a valid request: one `(to, text)` per recipient, in order.
struct Rendered {
    template: Template,
    target: Target,
    texts: Vec<(String, String)>,
}

/// Step 2: each recipient's number (normalised to E.164), variables (strings, numbers or
/// booleans) and text (the template rendered, at most `MAX_TEXT_LENGTH` characters).
///
/// Any invalid item rejects the whole request, with errors per item (`messages[3].to`) added to
/// those [`validate`] found.
fn render(
    rules: &RulesConfig,
    recipients: &[Recipient],
    validated: Validated,
) -> ApiResult<Rendered> {
    let Validated {
        template,
        target,
        mut errors,
    } = validated;
    let mut texts = Vec::with_capacity(recipients.len());
    for (i, item) in recipients.iter().enumerate() {
        let to = match phone::normalize(
            &item.to,
            &rules.default_country_prefix,
            rules.block_international,
        ) {
            Ok(to) => Some(to),
            Err(e) => {
                push(&mut errors, format!("messages[{i}].to"), e.to_string());
                None
            }
        };
        let mut values = HashMap::with_capacity(item.variables.len());
        for (k, v) in &item.variables {
            match variable_text(v) {
                Some(text) => {
                    values.insert(k.clone(), text);
                }
                None => push(
                    &mut errors,
                    format!("messages[{i}].variables.{k}"),
                    "must be a string, number or boolean",
                ),
            }
        }
        let text = match template::render(&template.content, &values, rules.max_text_length) {
            Ok(text) => Some(text),
            Err(e @ template::RenderError::TooLong(_)) => {
                push(&mut errors, format!("messages[{i}].text"), e.to_string());
                None
            }
            Err(e @ template::RenderError::Missing(_)) => {
                push(
                    &mut errors,
                    format!("messages[{i}].variables"),
                    e.to_string(),
                );
                None
            }
        };
        if let (Some(to), Some(text)) = (to, text) {
            texts.push((to, text));
        }
    }
    if !errors.is_empty() {
        return Err(rejected(errors));
    }
    Ok(Rendered {
        template,
        target: target.expect("checked above"),
        texts,
    })
}

/// Quota taken by [`reserve_quota`], which [`release_quota`] gives back.
struct Reservation {
    key: ObjectId,
    n: i64,
    at: DateTime<Utc>,
}

/// Step 3: takes the request's `n` messages from the API key's quota of the day, atomically and
/// before anything is stored; `QUOTA_EXCEEDED` when they do not fit. Operators spend no quota.
async fn reserve_quota(
    state: &AppState,
    caller: &Caller,
    n: usize,
    now: DateTime<Utc>,
) -> ApiResult<Option<Reservation>> {
    let Caller::Client(client) = caller else {
        return Ok(None);
    };
    let ok = state
        .db
        .quota
        .reserve(client.key_id, n as i64, client.rate_limit_per_day, now)
        .await?;
    if !ok {
        let used = state
            .db
            .quota
            .used_today(client.key_id, now)
            .await
            .unwrap_or(0);
        return Err(ApiError::QuotaExceeded {
            retry_after: seconds_until_tomorrow(now),
            detail: format!(
                "daily quota of {} messages exceeded ({used} used today, {n} requested)",
                client.rate_limit_per_day
            ),
        });
    }
    Ok(Some(Reservation {
        key: client.key_id,
        n: n as i64,
        at: now,
    }))
}

/// Gives back the quota of a request that could not be stored; a failure is only logged.
async fn release_quota(state: &AppState, reservation: Option<Reservation>) {
    let Some(r) = reservation else {
        return;
    };
    if let Err(release) = state.db.quota.release(r.key, r.n, r.at).await {
        tracing::error!(error = %release, "could not give back quota of a failed request");
    }
}

/// The documents [`store`] writes: the request, and one `PENDING` message per rendered
/// recipient, all with the request's priority (the request's, else the template's, else 50).
fn documents(
    caller: &Caller,
    priority_weight: Option<i64>,
    rendered: Rendered,
    now: DateTime<Utc>,
) -> (SmsRequest, Vec<Message>) {
    let Rendered {
        template,
        target,
        texts,
    } = rendered;
    let tenant = caller.tenant();
    let (client_name, created_by) = match caller {
        Caller::Client(c) => (c.client_name.clone(), c.client_name.clone()),
        Caller::Operator(o) => ("operator".to_owned(), o.name.clone()),
    };
    let priority = priority_weight
        .map(|w| w as i32)
        .or(template.priority_weight)
        .unwrap_or(DEFAULT_PRIORITY);
    let created_at = time::to_bson(now);
    let request = SmsRequest {
        id: ObjectId::new(),
        api_key_id: tenant,
        client_name: client_name.clone(),
        created_by,
        template_id: template.id,
        agent_id: target.agent_id,
        agent_ids: target.agent_ids,
        priority_weight: priority,
        total: texts.len() as i64,
        created_at,
    };
    let messages = texts
        .into_iter()
        .map(|(to, text)| {
            Message::pending(NewMessage {
                request_id: request.id,
                api_key_id: tenant,
                client_name: client_name.clone(),
                route: target.route.clone(),
                template_id: template.id,
                to,
                text,
                priority_weight: priority,
                created_at,
            })
        })
        .collect();
    (request, messages)
}

/// How a failed [`store`] left the database.
enum StoreFailed {
    /// Everything it wrote was removed again.
    Removed,
    /// Removing failed too: part of the request may still be stored, so its quota stays taken.
    PartlyLeft,
}

/// Step 4: stores the request and its messages; on failure removes what was written. The caller
/// counts them `PENDING` once their events are handed to the publisher.
async fn store(
    state: &AppState,
    request: &SmsRequest,
    messages: &[Message],
) -> Result<(), StoreFailed> {
    let result = async {
        state.db.requests.insert(request).await?;
        state.db.messages.insert_many(messages).await
    }
    .await;
    if let Err(e) = result {
        tracing::error!(error = %e, request_id = %request.id, "storing a request failed");
        return Err(remove(state, request.id).await);
    }
    Ok(())
}

/// Removes a half-stored request, its messages first so that none is left without its request;
/// tries three times before leaving it to an operator.
async fn remove(state: &AppState, request_id: ObjectId) -> StoreFailed {
    for attempt in 1..=3 {
        let removed = async {
            state.db.messages.delete_request(request_id).await?;
            state.db.requests.delete(request_id).await
        }
        .await;
        let Err(e) = removed else {
            return StoreFailed::Removed;
        };
        tracing::error!(error = %e, %request_id, attempt, "removing a half-stored request failed");
        tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
    }
    StoreFailed::PartlyLeft
}

/// Records an operator's send in the audit log (API keys' sends are not audited). The request
/// is stored by then and will be sent, so a failure is logged rather than answered: an error
/// would invite the client to send it again.
async fn audit(state: &AppState, caller: &Caller, request: &SmsRequest) {
    let Caller::Operator(operator) = caller else {
        return;
    };
    let agent_ids: Option<Vec<String>> =
        (request.agent_ids.as_ref()).map(|ids| ids.iter().map(|a| a.to_hex()).collect());
    let agent_id = request.agent_id.map(|a| a.to_hex());
    let details = doc! {"total": request.total, "agent_id": agent_id, "agent_ids": agent_ids};
    let id = Some(request.id.to_hex());
    let recorded = operator.audit(state, "request.create", "sms_request", id, details);
    if let Err(e) = recorded.await {
        tracing::error!(error = %e, request_id = %request.id, "could not audit an accepted request");
    }
}

/// Step 5: publishes the messages' events in the background, so the client does not wait for
/// RabbitMQ; whatever does not get confirmed, the outbox sweeper publishes later.
fn publish(state: &AppState, messages: &[Message]) {
    let events: Vec<_> = messages.iter().map(|m| outbox::event(m.into())).collect();
    let publish_state = state.clone();
    let accepted = std::time::Instant::now();
    state.tasks.spawn(async move {
        crate::fault::maybe_crash_before_publish().await;
        outbox::publish(&publish_state, &events, accepted).await;
    });
}
