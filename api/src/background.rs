//! Background loops of the API process. Each stops when the token is cancelled.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::state::AppState;

/// Starts every background loop; the returned tracker waits for them at shutdown.
pub fn spawn(state: AppState, stop: CancellationToken) -> TaskTracker {
    let tracker = TaskTracker::new();
    tracker.spawn(crate::outbox::run_sweeper(state.clone(), stop.clone()));
    tracker.spawn(crate::reconciler::run(state.clone(), stop.clone()));
    tracker.spawn(crate::queue_watch::run(state.clone(), stop.clone()));
    tracker
}
