//! The phones' bulk writes to `sms_messages` (recording a poll's lease, applying a batch of
//! reports) take turns here, a few at a time per API process. The database applies the writes
//! to one collection one after another, so without a turn a one-time password's lease record
//! would queue behind every phone's batch at once; with it, it queues behind a few. Writes for
//! fast-lane messages (`priority_weight` at or above `FAST_LANE_PRIORITY`) skip the turn.

use std::future::Future;

use tokio::sync::Semaphore;

/// Bulk writes one API process has in the database at a time: one being applied, one waiting.
pub const BULK_WRITES: usize = 2;

pub struct BulkGate(Semaphore);

impl Default for BulkGate {
    fn default() -> Self {
        Self(Semaphore::new(BULK_WRITES))
    }
}

impl BulkGate {
    /// Runs `write`, after waiting for a turn unless it is `urgent`.
    pub async fn run<T>(&self, urgent: bool, write: impl Future<Output = T>) -> T {
        let _turn = match urgent {
            true => None,
            false => self.0.acquire().await.ok(),
        };
        write.await
    }

    /// Turns free now (for tests and metrics).
    pub fn available(&self) -> usize {
        self.0.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::Notify;

    use super::*;

    #[tokio::test]
    async fn bulk_writes_take_turns_and_urgent_ones_do_not_wait() {
        let gate = Arc::new(BulkGate::default());
        let release = Arc::new(Notify::new());
        // Writes that hold their turn until released.
        let held: Vec<_> = (0..BULK_WRITES + 1)
            .map(|_| {
                let (gate, release) = (gate.clone(), release.clone());
                tokio::spawn(async move { gate.run(false, release.notified()).await })
            })
            .collect();
        while gate.available() > 0 {
            tokio::task::yield_now().await;
        }
        let wait = Duration::from_secs(5);
        // With every turn taken, a bulk write waits and an urgent one runs.
        let bulk = tokio::time::timeout(Duration::from_millis(100), gate.run(false, async { 1 }));
        assert!(bulk.await.is_err(), "a bulk write waits for a turn");
        let urgent = tokio::time::timeout(wait, gate.run(true, async { 7 }));
        assert_eq!(urgent.await, Ok(7));
        // Released, every write finishes and every turn is free again.
        for _ in 0..BULK_WRITES + 1 {
            release.notify_one();
            tokio::task::yield_now().await;
        }
        for h in held {
            tokio::time::timeout(wait, h).await.unwrap().unwrap();
        }
        assert_eq!(gate.available(), BULK_WRITES);
    }
}
