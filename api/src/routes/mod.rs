//! One module per resource; each exports `router()`.

use axum::Router;

use crate::state::AppState;

pub mod agents;
pub mod api_keys;
pub mod audit_logs;
pub mod auth;
pub mod health;
pub mod jobs;
pub mod reports;
pub mod requests;
pub mod templates;

/// Every route of the API, unprefixed.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(health::router())
        .merge(auth::router())
        .merge(api_keys::router())
        .merge(agents::router())
        .merge(jobs::router())
        .merge(reports::router())
        .merge(audit_logs::router())
        .merge(templates::router())
        .merge(requests::router())
}
