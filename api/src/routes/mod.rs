//! The HTTP routes, one module per concern, a folder where a concern has several routes
//! (`requests/`, `agent/` for the phones, `admin/` for operators). Each module exports `router()`,
//! whose routes carry their OpenAPI operations.

use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::openapi::ApiDoc;
use crate::state::AppState;

pub mod admin;
pub mod agent;
pub mod docs;
pub mod health;
pub mod login;
pub mod messages;
pub mod reports;
pub mod requests;
pub mod templates;

/// Every route of the API, unprefixed, with the OpenAPI document describing them.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::router())
        .merge(login::router())
        .merge(admin::router())
        .merge(agent::router())
        .merge(reports::router())
        .merge(templates::router())
        .merge(requests::router())
        .merge(messages::router())
        .merge(docs::router())
}
