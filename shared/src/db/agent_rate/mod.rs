//! `agent_rate` and `agent_days`: how many messages each agent may still lease. Three limits
//! apply to every poll of `GET /agent/jobs/next`, and it gets the least of what they leave:
//!
//! | window | limit | kept in |
//! | --- | --- | --- |
//! | rolling 60 s | the agent's `rate_limit_per_min`, else `AGENT_RATE_LIMIT_PER_MIN` | the ledger (`agent_rate`) |
//! | rolling 30 min | the agent's `max_per_30min` (Android's own cap is 30 SMS per 30 minutes per app) | the ledger |
//! | UTC day | the agent's `daily_limit` | one counter per agent and day (`daily.rs`) |
//!
//! **The ledger.** Every poll writes one reservation `{agent_id, at, n}` *before* it counts the
//! agent's reservations in the window, shrinks it to what fits, and finally sets `n` to the number
//! of messages it really leased. Reservations only ever shrink, and a poll always counts every
//! reservation inserted before its own, so concurrent polls (from one API process or many) may
//! hand out fewer messages than a cap allows, never more. A poll reads the last 60 s, or the last
//! 30 min when the agent has a 30-minute cap: at most one reservation per poll that leased
//! something, so at most the cap's worth. Reservations are kept an hour, so a cap set later
//! counts what came before it; the TTL index only cleans up, the window query decides.
//!
//! **The day.** After the ledger's grant, the day's counter is raised by what fits under the daily
//! limit with one conditional increment (never past the limit, whatever runs concurrently); the
//! ledger's reservation shrinks to match, and the poll gives back what it did not lease. Without
//! a daily limit the counter still counts, for `sends_today`, but nothing is taken from it in
//! advance: the poll adds what it leased when it settles (no write when it leased nothing).
//!
//! Everything counts messages *leased* (handed to the phone), sent or not: a lease that runs out
//! and is leased again counts twice. `usage.rs` reads the same figures for the operators' list.

use chrono::{DateTime, Duration, Utc};
use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId};
use mongodb::{Collection, Database};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::agents::Agent;

mod daily;
mod usage;

pub use daily::DayCount;
pub use usage::{Remaining, Usage};

/// The pacing window.
pub const WINDOW_SECONDS: i64 = 60;

/// The long window of `max_per_30min`.
pub const LONG_WINDOW_SECONDS: i64 = 30 * 60;

/// How often a poll that found the window full of *unfinished* reservations counts again.
const ROUNDS: usize = 3;

/// The longest `retry_after_seconds` a full allowance answers: a phone asks again at least this
/// often, so a limit an operator raises takes effect within it.
const MAX_RETRY_AFTER_SECONDS: i64 = 60;

/// One poll's claim on its agent's allowance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RateReservation {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub agent_id: ObjectId,
    /// When the poll started; the reservation counts in the windows that hold `at`.
    pub at: mongodb::bson::DateTime,
    /// Messages reserved (while the poll runs) or leased (once it finished).
    pub n: i64,
    /// Whether the poll finished and `n` is what it really leased.
    #[serde(default = "settled_default")]
    pub settled: bool,
    pub expires_at: mongodb::bson::DateTime,
}

fn settled_default() -> bool {
    true
}

/// An agent's limits in force: its own, else the service's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Messages per rolling minute.
    pub per_min: i64,
    /// Messages per rolling 30 minutes, if capped.
    pub per_30min: Option<i64>,
    /// Messages per UTC day, if capped.
    pub per_day: Option<i64>,
}

impl Caps {
    /// `agent`'s limits, with `default_per_min` (`AGENT_RATE_LIMIT_PER_MIN`) unless it has its own.
    pub fn of(agent: &Agent, default_per_min: i64) -> Self {
        Self {
            per_min: agent.rate_limit_per_min.unwrap_or(default_per_min),
            per_30min: agent.max_per_30min,
            per_day: agent.daily_limit,
        }
    }

    /// Only a per-minute limit.
    pub fn per_min(per_min: i64) -> Self {
        Self {
            per_min,
            per_30min: None,
            per_day: None,
        }
    }
}

/// What a poll may lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The ledger's reservation, settled by [`AgentRate::settle`].
    pub reservation: ObjectId,
    /// How many messages the poll may lease (0 when an allowance is used up).
    pub allowed: i64,
    /// When `allowed` is 0: seconds until a poll may get something again (at most 60).
    pub retry_after_seconds: Option<i64>,
    /// The day counter the poll counts in, if any.
    day: Option<Day>,
}

/// The day counter of a poll that may lease something.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Day {
    /// Under a daily limit, `allowed` was taken from this counter: settling gives back what was
    /// not leased.
    Taken(String),
    /// Without one, settling adds what was leased to this agent's counter of the day of `at`.
    Counted { agent: ObjectId, at: DateTime<Utc> },
}

/// The ledger and the day counters.
#[derive(Clone)]
pub struct AgentRate {
    ledger: Collection<RateReservation>,
    days: Collection<DayCount>,
}

impl AgentRate {
    pub fn new(db: &Database) -> Self {
        Self {
            ledger: db.collection("agent_rate"),
            days: db.collection("agent_days"),
        }
    }

    pub async fn create_indexes(&self) -> mongodb::error::Result<()> {
        super::ensure_indexes(
            &self.ledger,
            vec![
                super::index(doc! {"agent_id": 1, "at": 1}, false, "agent_window"),
                super::ttl_index("expires_at", "expires_at_ttl"),
            ],
        )
        .await?;
        super::ensure_indexes(
            &self.days,
            vec![super::ttl_index("expires_at", "expires_at_ttl")],
        )
        .await
    }

    /// Reserves up to `requested` messages of `agent`'s allowance under `caps`. A grant of 0
    /// needs no [`settle`](Self::settle).
    ///
    /// When a window is full only because of polls still running (which usually shrink their
    /// reservations a moment later), the poll withdraws and counts again, up to three times.
    /// Each round is a fresh reservation, so the guarantee above holds for every round.
    pub async fn reserve(
        &self,
        agent: ObjectId,
        requested: i64,
        caps: Caps,
        now: DateTime<Utc>,
    ) -> mongodb::error::Result<Grant> {
        let requested = requested.max(0);
        let started = std::time::Instant::now();
        let mut round = 0;
        let mut grant = loop {
            round += 1;
            let at = now + Duration::from_std(started.elapsed()).unwrap_or_default();
            let (grant, others_running) = self.reserve_once(agent, requested, caps, at).await?;
            if grant.allowed > 0 || others_running == 0 || round == ROUNDS {
                break grant;
            }
            self.settle(&grant, 0).await?;
            let pause = rand::thread_rng().gen_range(10..60);
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        };
        match caps.per_day {
            _ if grant.allowed == 0 => {}
            None => grant.day = Some(Day::Counted { agent, at: now }),
            Some(cap) => {
                let (day, taken) = self.take_from_day(agent, grant.allowed, cap, now).await?;
                if taken == 0 {
                    grant.allowed = 0;
                    grant.retry_after_seconds = Some(
                        super::quota::seconds_until_tomorrow(now).clamp(1, MAX_RETRY_AFTER_SECONDS),
                    );
                } else if taken < grant.allowed {
                    self.shrink(grant.reservation, taken).await?;
                    grant.allowed = taken;
                }
                grant.day = (taken > 0).then_some(Day::Taken(day));
            }
        }
        if grant.allowed == 0 {
            // Nothing to lease: the reservation goes at once rather than with the window.
            self.settle(&grant, 0).await?;
        }
        Ok(grant)
    }

    /// One round of [`reserve`](Self::reserve) in the ledger; also returns how many other polls
    /// counted in the window were still running.
    async fn reserve_once(
        &self,
        agent: ObjectId,
        requested: i64,
        caps: Caps,
        now: DateTime<Utc>,
    ) -> mongodb::error::Result<(Grant, usize)> {
        let id = ObjectId::new();
        self.ledger
            .insert_one(RateReservation {
                id,
                agent_id: agent,
                at: crate::time::to_bson(now),
                n: requested,
                settled: false,
                expires_at: crate::time::to_bson(now + Duration::seconds(2 * LONG_WINDOW_SECONDS)),
            })
            .await?;
        let longest = if caps.per_30min.is_some() {
            LONG_WINDOW_SECONDS
        } else {
            WINDOW_SECONDS
        };
        let others: Vec<RateReservation> = self
            .window(&[agent], now, longest)
            .await?
            .into_iter()
            .filter(|r| r.id != id && r.n > 0)
            .collect();
        let windows = [
            (Some(caps.per_min), WINDOW_SECONDS),
            (caps.per_30min, LONG_WINDOW_SECONDS),
        ];
        let mut allowed = requested;
        let mut frees_at = None;
        for (cap, seconds) in windows {
            let Some(cap) = cap else { continue };
            let inside: Vec<&RateReservation> =
                others.iter().filter(|r| within(r, now, seconds)).collect();
            let left = cap - inside.iter().map(|r| r.n).sum::<i64>();
            allowed = allowed.min(left).max(0);
            if left <= 0 {
                let oldest = inside.iter().map(|r| r.at).min();
                let leaves = oldest
                    .map(crate::time::from_bson)
                    .map_or(now, |t| t + Duration::seconds(seconds));
                frees_at = frees_at.max(Some(leaves));
            }
        }
        let running = others.iter().filter(|r| !r.settled).count();
        if allowed < requested {
            self.shrink(id, allowed).await?;
        }
        let retry_after_seconds = (allowed == 0 && requested > 0).then(|| {
            if running > 0 {
                // Those polls settle within moments and usually give most of it back.
                return 1;
            }
            let millis = (frees_at.unwrap_or(now) - now).num_milliseconds();
            ((millis + 999) / 1000).clamp(1, MAX_RETRY_AFTER_SECONDS)
        });
        Ok((
            Grant {
                reservation: id,
                allowed,
                retry_after_seconds,
                day: None,
            },
            running,
        ))
    }

    /// Lowers a reservation to `n` (never raises it).
    async fn shrink(&self, reservation: ObjectId, n: i64) -> mongodb::error::Result<()> {
        self.ledger
            .update_one(
                doc! {"_id": reservation, "n": {"$gt": n}},
                doc! {"$set": {"n": n}},
            )
            .await
            .map(|_| ())
    }

    /// Records how many messages the poll really leased (never more than it was granted) and
    /// gives the rest back to the day; a poll that leased nothing leaves no trace in the ledger.
    pub async fn settle(&self, grant: &Grant, leased: i64) -> mongodb::error::Result<()> {
        let leased = leased.clamp(0, grant.allowed.max(0));
        match &grant.day {
            Some(Day::Taken(day)) => self.give_back_to_day(day, grant.allowed - leased).await?,
            Some(Day::Counted { agent, at }) => self.add_to_day(*agent, leased, *at).await?,
            None => {}
        }
        if leased == 0 {
            self.ledger
                .delete_one(doc! {"_id": grant.reservation})
                .await?;
        } else {
            // `$min` keeps the reservation from ever growing.
            self.ledger
                .update_one(
                    doc! {"_id": grant.reservation},
                    doc! {"$min": {"n": leased}, "$set": {"settled": true}},
                )
                .await?;
        }
        Ok(())
    }

    /// Messages counted against `agent` in the minute ending at `now`.
    pub async fn used(&self, agent: ObjectId, now: DateTime<Utc>) -> mongodb::error::Result<i64> {
        Ok(self
            .window(&[agent], now, WINDOW_SECONDS)
            .await?
            .iter()
            .map(|r| r.n.max(0))
            .sum())
    }

    /// The reservations of `agents` inside the `seconds` ending at `now`.
    async fn window(
        &self,
        agents: &[ObjectId],
        now: DateTime<Utc>,
        seconds: i64,
    ) -> mongodb::error::Result<Vec<RateReservation>> {
        let cutoff = crate::time::to_bson(now - Duration::seconds(seconds));
        let agent = match agents {
            [one] => mongodb::bson::Bson::ObjectId(*one),
            many => doc! {"$in": many}.into(),
        };
        self.ledger
            .find(doc! {"agent_id": agent, "at": {"$gt": cutoff}})
            .await?
            .try_collect()
            .await
    }
}

/// Whether `r` counts in the `seconds` ending at `now`.
fn within(r: &RateReservation, now: DateTime<Utc>, seconds: i64) -> bool {
    r.at > crate::time::to_bson(now - Duration::seconds(seconds))
}
