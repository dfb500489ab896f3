//! `/templates`: operators write message templates with `{NAME}` placeholders and approve them
//! before clients may send with them.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use mongodb::bson::{doc, oid::ObjectId, DateTime};
use serde::{Deserialize, Serialize};
use sms_shared::db::templates::{Template, TemplateChanges, TemplateWriteError};
use sms_shared::domain::template;
use sms_shared::time::serde_rfc3339;
use utoipa::openapi::{RefOr, Schema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Operator;
use crate::error::{ApiError, ApiResult, FieldErrors};
use crate::extract::{object_id, Json};
use crate::openapi::{AuthError, BodyErrors, ConflictError, Errors, NotFoundError};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    let mut router = OpenApiRouter::new()
        .routes(routes!(list_templates, create_template))
        .routes(routes!(get_template, update_template, delete_template))
        .routes(routes!(approve_template));
    // An update must change something. Set by hand: utoipa 5 renders `min_properties` as
    // `maxProperties`.
    let update = router
        .get_openapi_mut()
        .components
        .as_mut()
        .and_then(|c| c.schemas.get_mut("UpdateTemplate"));
    if let Some(RefOr::T(Schema::Object(schema))) = update {
        schema.min_properties = Some(1);
    }
    router
}

/// A message template.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Template)]
pub struct TemplateView {
    id: String,
    /// Unique.
    name: String,
    /// The text with `{NAME}` placeholders.
    content: String,
    /// The placeholders' names, in order of first use.
    variables: Vec<String>,
    /// Only approved templates can be sent with; editing withdraws the approval.
    is_approved: bool,
    approved_by: Option<String>,
    #[serde(with = "serde_rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    approved_at: Option<DateTime>,
    /// The priority of requests that name none (0-100).
    priority_weight: Option<i32>,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: DateTime,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    updated_at: DateTime,
    created_by: String,
}

impl From<Template> for TemplateView {
    fn from(t: Template) -> Self {
        Self {
            id: t.id.to_hex(),
            name: t.name,
            content: t.content,
            variables: t.variables,
            is_approved: t.is_approved,
            approved_by: t.approved_by,
            approved_at: t.approved_at,
            priority_weight: t.priority_weight,
            created_at: t.created_at,
            updated_at: t.updated_at,
            created_by: t.created_by,
        }
    }
}

/// Every template, newest first.
#[derive(Serialize, utoipa::ToSchema)]
struct TemplateList {
    items: Vec<TemplateView>,
}

/// A new template.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateTemplate {
    /// 1 to 100 characters (after trimming), unique.
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    name: String,
    /// The text with `{NAME}` placeholders; not blank, at most `MAX_TEXT_LENGTH` characters.
    #[schema(min_length = 1, pattern = r"\S")]
    content: String,
    #[schema(minimum = 0, maximum = 100)]
    priority_weight: Option<i32>,
}

/// Changes to a template: at least one field.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateTemplate {
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    name: Option<String>,
    #[schema(min_length = 1, pattern = r"\S")]
    content: Option<String>,
    #[schema(minimum = 0, maximum = 100)]
    priority_weight: Option<i32>,
}

fn check_name(name: &str, errors: &mut FieldErrors) {
    if name.is_empty() || name.chars().count() > 100 {
        errors
            .entry("name".into())
            .or_default()
            .push("must be 1 to 100 characters".into());
    }
}

fn check_content(content: &str, max: usize, errors: &mut FieldErrors) {
    if content.trim().is_empty() {
        errors
            .entry("content".into())
            .or_default()
            .push("must not be empty".into());
    } else if content.chars().count() > max {
        errors
            .entry("content".into())
            .or_default()
            .push(format!("must be at most {max} characters"));
    }
}

fn check_weight(weight: Option<i32>, errors: &mut FieldErrors) {
    if weight.is_some_and(|w| !(0..=100).contains(&w)) {
        errors
            .entry("priority_weight".into())
            .or_default()
            .push("must be between 0 and 100".into());
    }
}

fn invalid(errors: FieldErrors) -> ApiResult<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation {
            detail: "invalid template".into(),
            errors,
        })
    }
}

fn write_error(e: TemplateWriteError) -> ApiError {
    match e {
        TemplateWriteError::NameTaken => ApiError::Conflict(
            "TEMPLATE_NAME_TAKEN",
            "a template with this name already exists".into(),
        ),
        TemplateWriteError::Db(e) => e.into(),
    }
}

/// Creates a template, not yet approved.
#[utoipa::path(
    post,
    path = "/templates",
    tag = "templates",
    security(("operator_jwt" = [])),
    responses(
        (status = 201, description = "Created", body = TemplateView),
        AuthError,
        ConflictError,
        Errors,
        BodyErrors,
    )
)]
#[tracing::instrument(skip_all)]
async fn create_template(
    State(state): State<AppState>,
    operator: Operator,
    Json(body): Json<CreateTemplate>,
) -> ApiResult<(StatusCode, Json<TemplateView>)> {
    let name = body.name.trim().to_owned();
    let mut errors = FieldErrors::new();
    check_name(&name, &mut errors);
    check_content(
        &body.content,
        state.config.rules.max_text_length,
        &mut errors,
    );
    check_weight(body.priority_weight, &mut errors);
    invalid(errors)?;
    let now = sms_shared::time::bson_now();
    let t = Template {
        id: ObjectId::new(),
        name,
        variables: template::variables(&body.content),
        content: body.content,
        is_approved: false,
        approved_by: None,
        approved_at: None,
        priority_weight: body.priority_weight,
        created_at: now,
        updated_at: now,
        created_by: operator.name.clone(),
    };
    state.db.templates.insert(&t).await.map_err(write_error)?;
    operator
        .audit(
            &state,
            "template.create",
            "template",
            Some(t.id.to_hex()),
            doc! {"name": &t.name},
        )
        .await?;
    Ok((StatusCode::CREATED, Json(t.into())))
}

/// Lists the templates.
#[utoipa::path(
    get,
    path = "/templates",
    tag = "templates",
    security(("operator_jwt" = [])),
    responses(
        (status = 200, description = "Every template", body = TemplateList),
        AuthError,
        Errors,
    )
)]
async fn list_templates(
    State(state): State<AppState>,
    _op: Operator,
) -> ApiResult<Json<TemplateList>> {
    let items = state
        .db
        .templates
        .list()
        .await?
        .into_iter()
        .map(TemplateView::from)
        .collect();
    Ok(Json(TemplateList { items }))
}

/// One template.
#[utoipa::path(
    get,
    path = "/templates/{id}",
    tag = "templates",
    params(("id" = String, Path, description = "The template's id")),
    security(("operator_jwt" = [])),
    responses(
        (status = 200, description = "The template", body = TemplateView),
        AuthError,
        NotFoundError,
        Errors,
    )
)]
async fn get_template(
    State(state): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<TemplateView>> {
    let t = state
        .db
        .templates
        .find(object_id(&id)?)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(t.into()))
}

/// Changes a template; changing an approved one withdraws its approval.
#[utoipa::path(
    put,
    path = "/templates/{id}",
    tag = "templates",
    params(("id" = String, Path, description = "The template's id")),
    security(("operator_jwt" = [])),
    responses(
        (status = 200, description = "The template as it is now", body = TemplateView),
        AuthError,
        NotFoundError,
        ConflictError,
        Errors,
        BodyErrors,
    )
)]
#[tracing::instrument(skip_all, fields(template_id = %sms_shared::telemetry::untrusted(&id)))]
async fn update_template(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
    Json(body): Json<UpdateTemplate>,
) -> ApiResult<Json<TemplateView>> {
    let id = object_id(&id)?;
    let mut errors = FieldErrors::new();
    let name = body.name.map(|n| n.trim().to_owned());
    if let Some(n) = &name {
        check_name(n, &mut errors);
    }
    if let Some(c) = &body.content {
        check_content(c, state.config.rules.max_text_length, &mut errors);
    }
    check_weight(body.priority_weight, &mut errors);
    if name.is_none() && body.content.is_none() && body.priority_weight.is_none() {
        errors
            .entry("body".into())
            .or_default()
            .push("give at least one of name, content, priority_weight".into());
    }
    invalid(errors)?;
    let changes = TemplateChanges {
        name,
        content: body.content.map(|c| {
            let vars = template::variables(&c);
            (c, vars)
        }),
        priority_weight: body.priority_weight.map(Some),
    };
    let t = state
        .db
        .templates
        .update(id, changes)
        .await
        .map_err(write_error)?
        .ok_or(ApiError::NotFound)?;
    operator
        .audit(
            &state,
            "template.update",
            "template",
            Some(id.to_hex()),
            doc! {"name": &t.name},
        )
        .await?;
    Ok(Json(t.into()))
}

/// Deletes a template no request was sent with.
#[utoipa::path(
    delete,
    path = "/templates/{id}",
    tag = "templates",
    params(("id" = String, Path, description = "The template's id")),
    security(("operator_jwt" = [])),
    responses(
        (status = 204, description = "Deleted"),
        AuthError,
        NotFoundError,
        ConflictError,
        Errors,
    )
)]
async fn delete_template(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = object_id(&id)?;
    let t = state
        .db
        .templates
        .find(id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if state.db.requests.references_template(id).await? {
        return Err(ApiError::Conflict(
            "TEMPLATE_IN_USE",
            "requests were sent with this template; it cannot be deleted".into(),
        ));
    }
    if !state.db.templates.delete(id).await? {
        return Err(ApiError::NotFound);
    }
    operator
        .audit(
            &state,
            "template.delete",
            "template",
            Some(id.to_hex()),
            doc! {"name": &t.name},
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Approves a template for sending.
#[utoipa::path(
    post,
    path = "/templates/{id}/approve",
    tag = "templates",
    params(("id" = String, Path, description = "The template's id")),
    security(("operator_jwt" = [])),
    responses(
        (status = 200, description = "The approved template", body = TemplateView),
        AuthError,
        NotFoundError,
        Errors,
    )
)]
async fn approve_template(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<TemplateView>> {
    let id = object_id(&id)?;
    let t = state
        .db
        .templates
        .approve(id, &operator.name)
        .await?
        .ok_or(ApiError::NotFound)?;
    operator
        .audit(
            &state,
            "template.approve",
            "template",
            Some(id.to_hex()),
            doc! {"name": &t.name},
        )
        .await?;
    Ok(Json(t.into()))
}
