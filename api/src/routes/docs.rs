//! `GET /openapi.json` and `GET /docs`: the OpenAPI document built from the handlers, and a
//! self-contained page that renders it. The page ships inside the binary and loads nothing but
//! `./openapi.json`, so it works offline and behind any proxy prefix.

use std::sync::Arc;

use axum::extract::{Extension, MatchedPath};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::openapi::{with_servers, StaticErrors};
use crate::state::AppState;

/// The page; it fetches `./openapi.json` next to it.
const DOCS_PAGE: &str = include_str!("docs.html");

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_openapi))
        .routes(routes!(get_docs))
}

/// The serialised document, once as served at the root and once under `BASE_PATH`; each
/// names its own location as the first server.
#[derive(Clone)]
pub struct Documents {
    base_path: String,
    root: Arc<str>,
    under_base: Arc<str>,
}

impl Documents {
    pub fn new(openapi: OpenApi, base_path: &str) -> anyhow::Result<Self> {
        let render = |under_base| {
            serde_json::to_string(&with_servers(openapi.clone(), base_path, under_base))
        };
        Ok(Self {
            base_path: base_path.to_owned(),
            root: render(false)?.into(),
            under_base: render(true)?.into(),
        })
    }
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "docs",
    responses(
        (status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object),
        StaticErrors,
    )
)]
async fn get_openapi(Extension(docs): Extension<Documents>, matched: MatchedPath) -> Response {
    let under_base = !docs.base_path.is_empty()
        && matched
            .as_str()
            .strip_prefix(docs.base_path.as_str())
            .is_some_and(|rest| rest.starts_with('/'));
    let body = if under_base {
        docs.under_base.clone()
    } else {
        docs.root.clone()
    };
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A page that renders the document: operations, parameters, bodies, responses and security.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "docs",
    responses(
        (status = 200, description = "The API reference page", content_type = "text/html", body = String),
        StaticErrors,
    )
)]
async fn get_docs() -> Html<&'static str> {
    Html(DOCS_PAGE)
}
