//! The day counters of `agent_days`: messages leased to each agent per UTC day, raised with
//! conditional increments so that concurrent polls never take the counter past a daily limit.

use chrono::{DateTime, Duration, Utc};
use mongodb::bson::{doc, oid::ObjectId};
use serde::{Deserialize, Serialize};

use super::AgentRate;

/// How often a poll tries again when concurrent polls changed the counter under it.
const ROUNDS: usize = 5;

/// One agent's messages leased on one UTC day.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DayCount {
    /// `<agent id>:<YYYY-MM-DD>`.
    #[serde(rename = "_id")]
    pub id: String,
    pub agent_id: ObjectId,
    pub day: String,
    pub n: i64,
    pub expires_at: mongodb::bson::DateTime,
}

/// The counter document's id of `agent` on the UTC day of `at`.
pub(super) fn day_id(agent: ObjectId, at: DateTime<Utc>) -> String {
    format!("{}:{}", agent.to_hex(), at.format("%Y-%m-%d"))
}

impl AgentRate {
    /// Adds up to `n` to `agent`'s counter of today, as much as `cap` leaves room for; returns
    /// the counter's id and how many it added.
    pub(super) async fn take_from_day(
        &self,
        agent: ObjectId,
        n: i64,
        cap: i64,
        now: DateTime<Utc>,
    ) -> mongodb::error::Result<(String, i64)> {
        let id = day_id(agent, now);
        if n <= 0 {
            return Ok((id, 0));
        }
        for _ in 0..ROUNDS {
            let current = match self.days.find_one(doc! {"_id": &id}).await? {
                Some(count) => count.n,
                None => {
                    self.create_day(&id, agent, now).await?;
                    0
                }
            };
            let take = n.min(cap - current).max(0);
            if take == 0 {
                return Ok((id, 0));
            }
            let r = self
                .days
                .update_one(
                    doc! {"_id": &id, "n": {"$lte": cap - take}},
                    doc! {"$inc": {"n": take}},
                )
                .await?;
            if r.matched_count == 1 {
                return Ok((id, take));
            }
        }
        // Others kept taking what was left; they had it.
        Ok((id, 0))
    }

    /// Creates a day's counter at 0; a concurrent poll that created it first (E11000) only means
    /// it exists.
    async fn create_day(
        &self,
        id: &str,
        agent: ObjectId,
        now: DateTime<Utc>,
    ) -> mongodb::error::Result<()> {
        let count = DayCount {
            id: id.to_owned(),
            agent_id: agent,
            day: now.format("%Y-%m-%d").to_string(),
            n: 0,
            expires_at: crate::time::to_bson(now + Duration::days(2)),
        };
        match self.days.insert_one(&count).await {
            Ok(_) => Ok(()),
            Err(e) if crate::db::is_duplicate_key(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Adds `n` messages leased without a daily limit to `agent`'s counter of the day of `at`.
    pub(super) async fn add_to_day(
        &self,
        agent: ObjectId,
        n: i64,
        at: DateTime<Utc>,
    ) -> mongodb::error::Result<()> {
        if n <= 0 {
            return Ok(());
        }
        let id = day_id(agent, at);
        let add = || {
            self.days
                .update_one(doc! {"_id": &id}, doc! {"$inc": {"n": n}})
        };
        if add().await?.matched_count == 0 {
            self.create_day(&id, agent, at).await?;
            add().await?;
        }
        Ok(())
    }

    /// Gives `n` back to the day counter `id`.
    pub(super) async fn give_back_to_day(&self, id: &str, n: i64) -> mongodb::error::Result<()> {
        if n <= 0 {
            return Ok(());
        }
        self.days
            .update_one(doc! {"_id": id}, doc! {"$inc": {"n": -n}})
            .await
            .map(|_| ())
    }
}
