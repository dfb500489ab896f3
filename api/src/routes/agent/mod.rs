//! The agent protocol, spoken by the Android phones with their agent token: registration
//! (`register.rs`), heartbeats (`heartbeat.rs`), leasing jobs (`jobs.rs`) and reporting what
//! became of them (`status_reports.rs`).

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

mod heartbeat;
mod jobs;
pub(crate) mod register;
mod status_reports;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(register::router())
        .merge(heartbeat::router())
        .merge(jobs::router())
        .merge(status_reports::router())
}
