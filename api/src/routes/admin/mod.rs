//! Operators' administration: client API keys (`api_keys.rs`), the agent fleet (`agents.rs`), the
//! agents' registration secret (`registration_secret.rs`) and the audit log (`audit_logs.rs`).
//! Every route here needs an operator JWT.

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

mod agents;
mod api_keys;
mod audit_logs;
pub(crate) mod registration_secret;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(api_keys::router())
        .merge(agents::router())
        .merge(registration_secret::router())
        .merge(audit_logs::router())
}
