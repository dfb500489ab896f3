//! `agent_rate`: the per-agent pacing ledger behind `AGENT_RATE_LIMIT_PER_MIN`.
//!
//! Every poll of `GET /agent/jobs/next` writes one reservation `{agent_id, at, n}` *before* it
//! counts the agent's rolling 60-second window, shrinks it to what fits, and finally sets `n` to
//! the number of messages it really leased. Reservations only ever shrink, and a poll always
//! counts every reservation inserted before its own, so concurrent polls (from one API process or
//! many) may hand out fewer messages than the cap allows, never more. The TTL index only cleans
//! up; the window query decides.

use chrono::{DateTime, Duration, Utc};
use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId};
use mongodb::{Collection, Database};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// The pacing window.
pub const WINDOW_SECONDS: i64 = 60;

/// How often a poll that found the window full of *unfinished* reservations counts again.
const ROUNDS: usize = 3;

/// One poll's claim on its agent's allowance for the rolling minute.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RateReservation {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub agent_id: ObjectId,
    /// When the poll started; the reservation counts until `at + 60 s`.
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

/// What a poll may lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The reservation to settle with [`AgentRate::settle`].
    pub reservation: ObjectId,
    /// How many messages the poll may lease (0 when the window is full).
    pub allowed: i64,
    /// When the window is full: seconds until a poll may get something again.
    pub retry_after_seconds: Option<i64>,
}

/// The `agent_rate` collection: every agent's reservations of the last minute or two.
#[derive(Clone)]
pub struct AgentRate(Collection<RateReservation>);

impl AgentRate {
    pub fn new(db: &Database) -> Self {
        Self(db.collection("agent_rate"))
    }

    pub async fn create_indexes(&self) -> mongodb::error::Result<()> {
        super::ensure_indexes(
            &self.0,
            vec![
                super::index(doc! {"agent_id": 1, "at": 1}, false, "agent_window"),
                super::ttl_index("expires_at", "expires_at_ttl"),
            ],
        )
        .await
    }

    /// Reserves up to `requested` messages of `agent`'s allowance of `cap` per rolling minute.
    ///
    /// When the window is full only because of polls still running (which usually shrink their
    /// reservations a moment later), the poll withdraws and counts again, up to three times.
    /// Each round is a fresh reservation, so the guarantee above holds for every round.
    pub async fn reserve(
        &self,
        agent: ObjectId,
        requested: i64,
        cap: i64,
        now: DateTime<Utc>,
    ) -> mongodb::error::Result<Grant> {
        let requested = requested.max(0);
        let started = std::time::Instant::now();
        let mut round = 0;
        loop {
            round += 1;
            let at = now + Duration::from_std(started.elapsed()).unwrap_or_default();
            let (grant, others_running) = self.reserve_once(agent, requested, cap, at).await?;
            if grant.allowed > 0 || others_running == 0 || round == ROUNDS {
                return Ok(grant);
            }
            self.settle(grant.reservation, 0).await?;
            let pause = rand::thread_rng().gen_range(10..60);
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        }
    }

    /// One round of [`reserve`](Self::reserve); also returns how many other polls counted
    /// in the window were still running.
    async fn reserve_once(
        &self,
        agent: ObjectId,
        requested: i64,
        cap: i64,
        now: DateTime<Utc>,
    ) -> mongodb::error::Result<(Grant, usize)> {
        let id = ObjectId::new();
        self.0
            .insert_one(RateReservation {
                id,
                agent_id: agent,
                at: crate::time::to_bson(now),
                n: requested,
                settled: false,
                expires_at: crate::time::to_bson(now + Duration::seconds(2 * WINDOW_SECONDS)),
            })
            .await?;
        let others: Vec<RateReservation> = self
            .window(agent, now)
            .await?
            .into_iter()
            .filter(|r| r.id != id && r.n > 0)
            .collect();
        let counted: i64 = others.iter().map(|r| r.n).sum();
        let running = others.iter().filter(|r| !r.settled).count();
        let allowed = requested.min(cap - counted).max(0);
        if allowed < requested {
            self.0
                .update_one(
                    doc! {"_id": id, "n": {"$gt": allowed}},
                    doc! {"$set": {"n": allowed}},
                )
                .await?;
        }
        let retry_after_seconds = (allowed == 0 && requested > 0).then(|| {
            if running > 0 {
                // Those polls settle within moments and usually give most of it back.
                return 1;
            }
            let oldest = others.iter().map(|r| r.at).min();
            let leaves = oldest
                .map(crate::time::from_bson)
                .map_or(now, |t| t + Duration::seconds(WINDOW_SECONDS));
            let millis = (leaves - now).num_milliseconds();
            ((millis + 999) / 1000).clamp(1, WINDOW_SECONDS)
        });
        Ok((
            Grant {
                reservation: id,
                allowed,
                retry_after_seconds,
            },
            running,
        ))
    }

    /// Records how many messages the poll really leased (never more than it was granted);
    /// a poll that leased nothing leaves no trace.
    pub async fn settle(&self, reservation: ObjectId, leased: i64) -> mongodb::error::Result<()> {
        if leased <= 0 {
            self.0.delete_one(doc! {"_id": reservation}).await?;
        } else {
            // `$min` keeps the reservation from ever growing.
            self.0
                .update_one(
                    doc! {"_id": reservation},
                    doc! {"$min": {"n": leased}, "$set": {"settled": true}},
                )
                .await?;
        }
        Ok(())
    }

    /// Messages counted against `agent` in the window ending at `now`.
    pub async fn used(&self, agent: ObjectId, now: DateTime<Utc>) -> mongodb::error::Result<i64> {
        Ok(self
            .window(agent, now)
            .await?
            .iter()
            .map(|r| r.n.max(0))
            .sum())
    }

    /// `agent`'s reservations inside the window ending at `now`.
    async fn window(
        &self,
        agent: ObjectId,
        now: DateTime<Utc>,
    ) -> mongodb::error::Result<Vec<RateReservation>> {
        let cutoff = crate::time::to_bson(now - Duration::seconds(WINDOW_SECONDS));
        self.0
            .find(doc! {"agent_id": agent, "at": {"$gt": cutoff}})
            .await?
            .try_collect()
            .await
    }
}
