//! What keeps `POST /auth/login` from being used to guess passwords or to exhaust the machine:
//! the failed-login limits ([`LoginLimits`], counted in `db::login_throttle`) and the gate in
//! front of the password hasher ([`HashGate`]). Argon2 takes tens of milliseconds of a core and
//! about 19 MiB per check, so checks run at most one per core, and a login that cannot get a
//! turn soon is refused rather than queued without bound.

use std::sync::Arc;
use std::time::Duration;

use sms_shared::config::{ConfigError, Env};
use tokio::sync::Semaphore;

/// `LOGIN_*`: how many failed logins are allowed per username and per client address.
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    /// `LOGIN_MAX_FAILURES_PER_USER`: failed logins of one username per window.
    pub per_user: i64,
    /// `LOGIN_MAX_FAILURES_PER_ADDRESS`: failed logins from one client address per window.
    pub per_address: i64,
    /// `LOGIN_THROTTLE_WINDOW_SECONDS`: the window, starting with its first failure.
    pub window: chrono::Duration,
}

impl LoginLimits {
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            per_user: env.ranged("LOGIN_MAX_FAILURES_PER_USER", 5, 1, 1000)?,
            per_address: env.ranged("LOGIN_MAX_FAILURES_PER_ADDRESS", 20, 1, 100_000)?,
            window: chrono::Duration::seconds(env.ranged(
                "LOGIN_THROTTLE_WINDOW_SECONDS",
                900,
                1,
                86_400,
            )?),
        })
    }
}

/// Password checks waiting for a turn, per core, before more are refused at once.
const WAITING_PER_WORKER: usize = 32;
/// How long a password check waits for a turn before it is refused.
const MAX_WAIT: Duration = Duration::from_secs(3);

/// Runs password checks on the blocking pool, at most `workers` at a time, with a bounded
/// number waiting for a bounded time.
pub struct HashGate {
    running: Arc<Semaphore>,
    admitted: Semaphore,
    max_wait: Duration,
}

/// The gate had no turn for the check in time: nothing ran.
#[derive(Debug, PartialEq, Eq)]
pub struct Busy;

impl HashGate {
    /// `workers` checks at once, `waiting` more waiting at most `max_wait` each.
    pub fn new(workers: usize, waiting: usize, max_wait: Duration) -> Self {
        let workers = workers.max(1);
        Self {
            running: Arc::new(Semaphore::new(workers)),
            admitted: Semaphore::new(workers + waiting),
            max_wait,
        }
    }

    /// One check per core of this machine.
    pub fn per_core() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(cores, cores * WAITING_PER_WORKER, MAX_WAIT)
    }

    /// Runs `check` once a worker is free, or answers [`Busy`] when too many checks are waiting
    /// or none finished in time. A check that started runs to its end, and keeps its worker,
    /// even if the request is dropped.
    pub async fn run<T: Send + 'static>(
        &self,
        check: impl FnOnce() -> T + Send + 'static,
    ) -> Result<Result<T, Busy>, tokio::task::JoinError> {
        let Ok(_admitted) = self.admitted.try_acquire() else {
            return Ok(Err(Busy));
        };
        let turn = tokio::time::timeout(self.max_wait, self.running.clone().acquire_owned()).await;
        let Ok(Ok(worker)) = turn else {
            return Ok(Err(Busy));
        };
        tokio::task::spawn_blocking(move || {
            let _worker = worker;
            check()
        })
        .await
        .map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[tokio::test]
    async fn checks_beyond_the_workers_and_the_queue_are_refused_at_once() {
        let gate = Arc::new(HashGate::new(1, 1, Duration::from_secs(30)));
        let (release, hold) = mpsc::channel::<()>();
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let first = {
            let gate = gate.clone();
            tokio::spawn(async move {
                gate.run(move || {
                    let _ = started_tx.send(());
                    hold.recv().unwrap();
                    1
                })
                .await
            })
        };
        started.await.unwrap();
        // The second waits for the worker; the third finds the queue full.
        let second = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.run(|| 2).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused_at = std::time::Instant::now();
        assert_eq!(gate.run(|| 3).await.unwrap(), Err(Busy));
        assert!(refused_at.elapsed() < Duration::from_secs(1));
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), Ok(1));
        assert_eq!(second.await.unwrap().unwrap(), Ok(2));
        assert_eq!(gate.run(|| 4).await.unwrap(), Ok(4));
    }

    #[tokio::test]
    async fn a_check_that_waits_too_long_is_refused_and_never_runs() {
        let gate = Arc::new(HashGate::new(1, 4, Duration::from_millis(100)));
        let (release, hold) = mpsc::channel::<()>();
        let busy = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.run(move || hold.recv().unwrap()).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        let waited = gate
            .run(move || flag.store(true, std::sync::atomic::Ordering::SeqCst))
            .await
            .unwrap();
        assert_eq!(waited, Err(Busy));
        release.send(()).unwrap();
        busy.await.unwrap().unwrap().unwrap();
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[test]
    fn limits_default_to_5_and_20_per_15_minutes() {
        let limits = LoginLimits::from_env(&Env::from_fn(|_| None)).unwrap();
        assert_eq!(limits.per_user, 5);
        assert_eq!(limits.per_address, 20);
        assert_eq!(limits.window.num_seconds(), 900);
        let zero = Env::from_fn(|k| (k == "LOGIN_MAX_FAILURES_PER_USER").then(|| "0".into()));
        assert!(LoginLimits::from_env(&zero).is_err());
    }
}
