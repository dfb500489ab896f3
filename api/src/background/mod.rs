//! Background loops of the API process: the outbox sweeper ([`outbox`]), the reconciler
//! ([`reconciler`]) and the message queue's watch ([`queue_watch`]). Each stops when the token is
//! cancelled.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::state::AppState;

pub mod outbox;
pub mod queue_watch;
pub mod reconciler;

/// Starts every background loop; the returned tracker waits for them at shutdown.
pub fn spawn(state: AppState, stop: CancellationToken) -> TaskTracker {
    let tracker = TaskTracker::new();
    tracker.spawn(outbox::run_sweeper(state.clone(), stop.clone()));
    tracker.spawn(reconciler::run(state.clone(), stop.clone()));
    tracker.spawn(queue_watch::run(state.clone(), stop.clone()));
    tracker
}
