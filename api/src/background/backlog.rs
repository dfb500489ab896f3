//! Whether the dispatchers are working through a backlog: events wait in a message queue that
//! has consumers.
//!
//! During a backlog, a confirmed event whose message is not staged yet is most likely still in
//! the queue, and the dispatcher that stages the message marks it published. So the API's own
//! publish marks of bulk events wait for the backlog to be gone (a message then staged needs no
//! mark: a mark only writes what is still unmarked), and the outbox sweeper takes an unmarked
//! message for one whose event was lost only after [`BACKLOG_GRACE`] instead of
//! `OUTBOX_SWEEP_AFTER_MS`. Without either, a burst's 20,000 marks are each one more write to
//! `sms_messages` than the message needs, and the sweeper would republish whatever a long
//! backlog has not reached yet.
//!
//! Events waiting in a queue *without* consumers are no backlog: no dispatcher is coming for them,
//! so marks and the sweeper keep their usual times. When the broker cannot be asked, neither
//! waits either.

use std::time::Duration;

use sms_shared::amqp::MessageQueues;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::state::AppState;

/// How long, during a backlog, an unmarked message waits before the sweeper publishes it again.
/// A bulk mark waits for the backlog at most half as long after its request was accepted.
pub const BACKLOG_GRACE: Duration = Duration::from_secs(60);

/// How long the broker's answer counts as current; marks waiting for the backlog look this often.
const FRESH: Duration = Duration::from_millis(250);

/// The broker's last answer about the message queues: when, and what (`None`: it could not be
/// asked).
#[derive(Default)]
pub struct Backlog(Mutex<Option<(Instant, Option<MessageQueues>)>>);

impl Backlog {
    /// The message queues' counts as the broker answered at most [`FRESH`] ago (one process asks
    /// at most that often); `None` when it cannot be asked.
    pub async fn queues(&self, state: &AppState) -> Option<MessageQueues> {
        let mut last = self.0.lock().await;
        if let Some((at, queues)) = *last {
            if at.elapsed() < FRESH {
                return queues;
            }
        }
        let queues = tokio::time::timeout(FRESH * 4, state.publisher.queue_stats())
            .await
            .ok()
            .and_then(Result::ok);
        *last = Some((Instant::now(), queues));
        queues
    }

    /// Whether events wait in a message queue that has consumers; `false` when the broker
    /// cannot be asked.
    pub async fn busy(&self, state: &AppState) -> bool {
        self.queues(state).await.is_some_and(|q| q.backlogged())
    }

    /// Waits while there is a backlog, until `deadline` or until the server stops.
    pub async fn wait_out(&self, state: &AppState, deadline: Instant) {
        while Instant::now() < deadline && !state.wake.is_closed() && self.busy(state).await {
            tokio::time::sleep(FRESH.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }
}
