//! Bulk writes to a hot collection (`sms_messages`, `sms_jobs`) take turns inside the process,
//! at most `DB_BULK_WRITES` at a time per collection. The database applies a collection's writes
//! one after another, so every write waiting there delays the next one-time password's insert,
//! claim or lease record; with the turns, that queue holds a few bulk writes of each process, not
//! every phone's poll and report at once. A write that carries a fast-lane message (its
//! `priority_weight` at least `FAST_LANE_PRIORITY`) never waits here. The same writes are done,
//! in the same order per caller: only where they wait changes.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Instant;

use prometheus::Histogram;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Turns for one collection's bulk writes; the default (and `DB_BULK_WRITES=0`) has none: every
/// write goes straight to the database.
#[derive(Clone, Debug, Default)]
pub struct BulkGate {
    turns: Option<Arc<Semaphore>>,
    fast_lane_priority: i32,
    /// Where each bulk write's wait for its turn is recorded, when anywhere.
    waits: Option<Histogram>,
}

/// A bulk write's turn, given back when dropped; `None` for a write that took none.
type Turn = Option<OwnedSemaphorePermit>;

impl BulkGate {
    /// At most `writes` bulk writes at once (0: no limit); a write carrying a message of
    /// `priority_weight` ≥ `fast_lane_priority` is never held.
    pub fn new(writes: usize, fast_lane_priority: i32) -> Self {
        Self {
            turns: (writes > 0).then(|| Arc::new(Semaphore::new(writes))),
            fast_lane_priority,
            waits: None,
        }
    }

    /// The same gate, recording in `waits` how long each bulk write waited for its turn (in
    /// seconds; 0 when one was free).
    pub fn recording(self, waits: Histogram) -> Self {
        Self {
            waits: Some(waits),
            ..self
        }
    }

    /// Makes `write` (a write of messages of these priorities) in its turn, unless one of them
    /// is in the fast lane; the turn is given back as soon as the write is done.
    pub async fn write<F: IntoFuture>(
        &self,
        priorities: impl IntoIterator<Item = i32>,
        write: F,
    ) -> F::Output {
        let _turn = self.turn(priorities).await;
        write.await
    }

    /// Makes `write`, which is never urgent (phones' reports), in its turn.
    pub async fn bulk_write<F: IntoFuture>(&self, write: F) -> F::Output {
        let _turn = self.bulk_turn().await;
        write.await
    }

    /// Waits for a turn for a write of messages of these priorities, unless one of them is in
    /// the fast lane.
    async fn turn(&self, priorities: impl IntoIterator<Item = i32>) -> Turn {
        let fast = self.fast_lane_priority;
        if priorities.into_iter().any(|p| p >= fast) {
            return None;
        }
        self.bulk_turn().await
    }

    /// Waits for a turn for a write that is never urgent (phones' reports).
    async fn bulk_turn(&self) -> Turn {
        let turns = self.turns.clone()?;
        let asked = Instant::now();
        // The semaphore is never closed.
        let turn = turns.acquire_owned().await.ok();
        if let Some(waits) = &self.waits {
            waits.observe(asked.elapsed().as_secs_f64());
        }
        turn
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn waits(turn: impl std::future::Future<Output = Turn>) -> bool {
        tokio::time::timeout(Duration::from_millis(50), turn)
            .await
            .is_err()
    }

    #[tokio::test]
    async fn bulk_writes_wait_for_a_turn_and_fast_lane_ones_never_do() {
        let gate = BulkGate::new(2, 80);
        let first = gate.turn([10, 50]).await;
        let second = gate.bulk_turn().await;
        assert!(first.is_some() && second.is_some());
        assert!(waits(gate.turn([10])).await, "a third bulk write waits");
        assert!(waits(gate.bulk_turn()).await);
        assert!(!waits(gate.turn([10, 80])).await, "one OTP among them");
        assert!(gate.turn([100]).await.is_none());
        drop(first);
        assert!(!waits(gate.turn([10])).await, "a turn given back is taken");
    }

    #[tokio::test]
    async fn a_write_holds_its_turn_only_while_it_runs() {
        let gate = BulkGate::new(1, 80);
        assert_eq!(gate.bulk_write(async { 7 }).await, 7);
        assert_eq!(gate.write([10], async { 8 }).await, 8);
        let held = gate.bulk_turn().await;
        assert!(
            waits(async {
                gate.write([10], async {}).await;
                None
            })
            .await
        );
        assert!(
            !waits(async {
                gate.write([90], async {}).await;
                None
            })
            .await
        );
        drop(held);
    }

    #[tokio::test]
    async fn each_bulk_write_records_its_wait_and_fast_lane_ones_none() {
        let waits = Histogram::with_opts(prometheus::HistogramOpts::new("w", "w")).unwrap();
        let gate = BulkGate::new(1, 80).recording(waits.clone());
        gate.bulk_write(async {}).await;
        gate.write([90], async {}).await;
        assert_eq!(
            waits.get_sample_count(),
            1,
            "the fast-lane write took no turn"
        );
        let held = gate.bulk_turn().await;
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.write([10], async {}).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(held);
        waiting.await.unwrap();
        assert_eq!(waits.get_sample_count(), 3);
        assert!(
            waits.get_sample_sum() >= 0.1,
            "the write that waited for the held turn: {}",
            waits.get_sample_sum()
        );
    }

    #[tokio::test]
    async fn without_a_limit_nothing_waits() {
        for gate in [BulkGate::default(), BulkGate::new(0, 80)] {
            let all = futures::future::join_all((0..100).map(|_| gate.bulk_turn()));
            let held: Vec<Turn> = tokio::time::timeout(Duration::from_secs(1), all)
                .await
                .expect("no write waits");
            assert!(held.iter().all(Option::is_none));
        }
    }
}
