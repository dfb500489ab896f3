//! `/templates`: operators write message templates with `{NAME}` placeholders and approve them
//! before clients may send with them.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use mongodb::bson::{doc, oid::ObjectId, DateTime};
use serde::{Deserialize, Serialize};
use sms_shared::db::templates::{Template, TemplateChanges, TemplateWriteError};
use sms_shared::domain::template;
use sms_shared::time::serde_rfc3339;

use crate::auth::Operator;
use crate::error::{ApiError, ApiResult, FieldErrors};
use crate::extract::{object_id, Json};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/templates", get(list_templates).post(create_template))
        .route(
            "/templates/{id}",
            get(get_template).put(update_template).delete(delete_template),
        )
        .route("/templates/{id}/approve", post(approve_template))
}

#[derive(Serialize)]
pub struct TemplateView {
    id: String,
    name: String,
    content: String,
    variables: Vec<String>,
    is_approved: bool,
    approved_by: Option<String>,
    #[serde(with = "serde_rfc3339::option")]
    approved_at: Option<DateTime>,
    priority_weight: Option<i32>,
    #[serde(with = "serde_rfc3339")]
    created_at: DateTime,
    #[serde(with = "serde_rfc3339")]
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

#[derive(Serialize)]
struct Items<T> {
    items: Vec<T>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTemplate {
    name: String,
    content: String,
    priority_weight: Option<i32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateTemplate {
    name: Option<String>,
    content: Option<String>,
    priority_weight: Option<i32>,
}

fn check_name(name: &str, errors: &mut FieldErrors) {
    if name.is_empty() || name.chars().count() > 100 {
        errors.entry("name".into()).or_default().push("must be 1 to 100 characters".into());
    }
}

fn check_content(content: &str, max: usize, errors: &mut FieldErrors) {
    if content.trim().is_empty() {
        errors.entry("content".into()).or_default().push("must not be empty".into());
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
        TemplateWriteError::NameTaken => ApiError::Conflict("TEMPLATE_NAME_TAKEN", "a template with this name already exists".into()),
        TemplateWriteError::Db(e) => e.into(),
    }
}

#[tracing::instrument(skip_all)]
async fn create_template(
    State(state): State<AppState>,
    operator: Operator,
    Json(body): Json<CreateTemplate>,
) -> ApiResult<(StatusCode, Json<TemplateView>)> {
    let name = body.name.trim().to_owned();
    let mut errors = FieldErrors::new();
    check_name(&name, &mut errors);
    check_content(&body.content, state.config.rules.max_text_length, &mut errors);
    check_weight(body.priority_weight, &mut errors);
    invalid(errors)?;
    let now = DateTime::now();
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
        .audit(&state, "template.create", "template", Some(t.id.to_hex()), doc! {"name": &t.name})
        .await?;
    Ok((StatusCode::CREATED, Json(t.into())))
}

async fn list_templates(State(state): State<AppState>, _op: Operator) -> ApiResult<Json<Items<TemplateView>>> {
    let items = state.db.templates.list().await?.into_iter().map(TemplateView::from).collect();
    Ok(Json(Items { items }))
}

async fn get_template(State(state): State<AppState>, _op: Operator, Path(id): Path<String>) -> ApiResult<Json<TemplateView>> {
    let t = state.db.templates.find(object_id(&id)?).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(t.into()))
}

#[tracing::instrument(skip_all, fields(template_id = %id))]
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
        .audit(&state, "template.update", "template", Some(id.to_hex()), doc! {"name": &t.name})
        .await?;
    Ok(Json(t.into()))
}

async fn delete_template(State(state): State<AppState>, operator: Operator, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let id = object_id(&id)?;
    let t = state.db.templates.find(id).await?.ok_or(ApiError::NotFound)?;
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
        .audit(&state, "template.delete", "template", Some(id.to_hex()), doc! {"name": &t.name})
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn approve_template(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<TemplateView>> {
    let id = object_id(&id)?;
    let t = state.db.templates.approve(id, &operator.name).await?.ok_or(ApiError::NotFound)?;
    operator
        .audit(&state, "template.approve", "template", Some(id.to_hex()), doc! {"name": &t.name})
        .await?;
    Ok(Json(t.into()))
}
