//! Background loops of the API process: the outbox sweeper ([`outbox`], which waits out the
//! dispatchers' [`backlog`]), the reconciler
//! ([`reconciler`]), the message queues' watch ([`queue_watch`]) and the wake consumer
//! ([`wake`]). Each stops when the token is cancelled.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::state::AppState;

pub mod backlog;
pub mod outbox;
pub mod queue_watch;
pub mod reconciler;
pub mod wake;

/// Starts every background loop; the returned tracker waits for them at shutdown.
pub fn spawn(state: AppState, stop: CancellationToken) -> TaskTracker {
    let tracker = TaskTracker::new();
    tracker.spawn(outbox::run_sweeper(state.clone(), stop.clone()));
    tracker.spawn(reconciler::run(state.clone(), stop.clone()));
    tracker.spawn(queue_watch::run(state.clone(), stop.clone()));
    tracker.spawn(wake::run(state.clone(), stop.clone()));
    tracker
}
