//! The wake hub: long-polling agents wait here for their jobs, and wake events wake them.
//!
//! A long poll that found nothing registers its [`Interest`] in the lanes it leases from (its
//! agent's own lane, and `"*"` for jobs any agent may take), then waits. The wake consumer
//! (`background::wake`) hands each wake event's lanes to [`WakeHub::wake`], which wakes every
//! poll interested in one of them, in this process; every API process has its own hub and its
//! own queue on the wake fanout, so a job staged by any dispatcher wakes its agent's polls on
//! any replica.
//!
//! Interest counts from the moment it is registered, before the poll looks again, so a wake
//! that comes between the poll's look and its wait is not lost. At shutdown the hub closes:
//! every interest, present and future, completes at once, so that no long poll holds the
//! server's graceful stop.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Lanes with polls waiting in this process, each with a [`Notify`] and how many wait.
#[derive(Default)]
pub struct WakeHub {
    lanes: Mutex<HashMap<String, Slot>>,
    closing: CancellationToken,
}

struct Slot {
    notify: Arc<Notify>,
    interested: usize,
}

impl WakeHub {
    /// Registers interest in `lanes`: the returned [`Interest`] completes on the first wake of
    /// one of them after this call (or when the hub closes).
    pub fn interest(self: &Arc<Self>, lanes: &[String]) -> Interest {
        let mut map = self.lanes.lock().expect("wake hub lock");
        let waits = lanes
            .iter()
            .map(|lane| {
                let slot = map.entry(lane.clone()).or_insert_with(|| Slot {
                    notify: Arc::new(Notify::new()),
                    interested: 0,
                });
                slot.interested += 1;
                let mut notified = Box::pin(slot.notify.clone().notified_owned());
                notified.as_mut().enable();
                notified
            })
            .collect();
        Interest {
            hub: self.clone(),
            lanes: lanes.to_vec(),
            waits,
        }
    }

    /// Wakes every poll interested in one of `lanes`; returns how many lanes had polls waiting.
    pub fn wake(&self, lanes: &[String]) -> usize {
        let map = self.lanes.lock().expect("wake hub lock");
        lanes
            .iter()
            .filter_map(|lane| map.get(lane))
            .map(|slot| slot.notify.notify_waiters())
            .count()
    }

    /// Wakes every waiting poll, to look again (wake events may have been lost).
    pub fn wake_everyone(&self) {
        let map = self.lanes.lock().expect("wake hub lock");
        for slot in map.values() {
            slot.notify.notify_waiters();
        }
    }

    /// Closes the hub at shutdown: every interest completes now and from now on.
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// Whether the hub is closed (the server is stopping).
    pub fn is_closed(&self) -> bool {
        self.closing.is_cancelled()
    }

    /// Polls waiting on `lane` in this process.
    pub fn waiting_on(&self, lane: &str) -> usize {
        let map = self.lanes.lock().expect("wake hub lock");
        map.get(lane).map_or(0, |slot| slot.interested)
    }
}

/// One poll's interest in its lanes; dropping it withdraws it.
pub struct Interest {
    hub: Arc<WakeHub>,
    lanes: Vec<String>,
    waits: Vec<Pin<Box<OwnedNotified>>>,
}

impl Interest {
    /// Completes once one of its lanes was woken since it was registered, or the hub closed.
    pub async fn woken(&mut self) {
        if self.waits.is_empty() {
            return self.hub.closing.cancelled().await;
        }
        let any = futures::future::select_all(self.waits.iter_mut().map(|w| w.as_mut()));
        tokio::select! {
            _ = any => {}
            _ = self.hub.closing.cancelled() => {}
        }
    }
}

impl Drop for Interest {
    fn drop(&mut self) {
        let mut map = self.hub.lanes.lock().expect("wake hub lock");
        for lane in &self.lanes {
            if let Some(slot) = map.get_mut(lane) {
                slot.interested -= 1;
                if slot.interested == 0 {
                    map.remove(lane);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn lanes(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    async fn completes(interest: &mut Interest) -> bool {
        tokio::time::timeout(Duration::from_millis(200), interest.woken())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_wake_reaches_the_polls_of_its_lanes_only() {
        let hub = Arc::new(WakeHub::default());
        let mut a = hub.interest(&lanes(&["a", "*"]));
        let mut b = hub.interest(&lanes(&["b", "*"]));
        assert_eq!(hub.wake(&lanes(&["a"])), 1);
        assert!(completes(&mut a).await, "a was woken");
        assert!(!completes(&mut b).await, "b was not");
        let mut a = hub.interest(&lanes(&["a", "*"]));
        hub.wake(&lanes(&["*"]));
        assert!(completes(&mut a).await && completes(&mut b).await);
        assert_eq!(hub.wake(&lanes(&["c"])), 0, "nobody waits on c");
    }

    #[tokio::test]
    async fn a_wake_between_registering_and_waiting_is_not_lost() {
        let hub = Arc::new(WakeHub::default());
        let mut interest = hub.interest(&lanes(&["a"]));
        hub.wake(&lanes(&["a"]));
        assert!(completes(&mut interest).await);
    }

    #[tokio::test]
    async fn withdrawn_interest_leaves_nothing_behind() {
        let hub = Arc::new(WakeHub::default());
        let first = hub.interest(&lanes(&["a", "*"]));
        let second = hub.interest(&lanes(&["a"]));
        assert_eq!((hub.waiting_on("a"), hub.waiting_on("*")), (2, 1));
        drop(first);
        assert_eq!((hub.waiting_on("a"), hub.waiting_on("*")), (1, 0));
        drop(second);
        assert!(hub.lanes.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn closing_completes_every_interest_now_and_later() {
        let hub = Arc::new(WakeHub::default());
        let mut before = hub.interest(&lanes(&["a"]));
        hub.close();
        let mut after = hub.interest(&lanes(&["a"]));
        assert!(completes(&mut before).await && completes(&mut after).await);
        assert!(hub.is_closed());
        hub.wake_everyone();
    }
}
