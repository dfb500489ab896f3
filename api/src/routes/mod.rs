//! One module per resource; each exports `router()`, whose routes carry their OpenAPI
//! operations.

use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::openapi::ApiDoc;
use crate::state::AppState;

pub mod admin;
pub mod agents;
pub mod docs;
pub mod health;
pub mod jobs;
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
        .merge(agents::router())
        .merge(jobs::router())
        .merge(reports::router())
        .merge(templates::router())
        .merge(requests::router())
        .merge(messages::router())
        .merge(docs::router())
}
