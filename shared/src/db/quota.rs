//! The daily quota of API keys (each key's `rate_limit_per_day`): messages accepted per API key
//! per UTC day, reserved atomically, in the collection `quota_usage`.

use chrono::{DateTime, Duration, Utc};
use mongodb::bson::{doc, oid::ObjectId};
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

/// One API key's counter for one UTC day.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DayUsage {
    #[serde(rename = "_id")]
    pub id: String,
    pub api_key_id: ObjectId,
    pub day: String,
    pub count: i64,
    pub expires_at: mongodb::bson::DateTime,
}

/// The `quota_usage` collection.
#[derive(Clone)]
pub struct Quota(Collection<DayUsage>);

/// The counter document's id for a key and UTC day.
fn day_id(key: ObjectId, at: DateTime<Utc>) -> (String, String) {
    let day = at.format("%Y-%m-%d").to_string();
    (format!("{}:{day}", key.to_hex()), day)
}

/// Seconds until the next UTC midnight (the `Retry-After` of a spent quota).
pub fn seconds_until_tomorrow(now: DateTime<Utc>) -> i64 {
    let tomorrow = (now + Duration::days(1))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists");
    (tomorrow.and_utc() - now).num_seconds().max(1)
}

impl Quota {
    pub fn new(db: &Database) -> Self {
        Self(db.collection("quota_usage"))
    }

    pub async fn create_indexes(&self) -> mongodb::error::Result<()> {
        super::ensure_indexes(
            &self.0,
            vec![super::ttl_index("expires_at", "expires_at_ttl")],
        )
        .await
    }

    /// Reserves `n` messages of today's quota; `false` (nothing changed) when it would exceed `limit`.
    ///
    /// The conditional increment is atomic: concurrent reservations never accept more than
    /// `limit`. The day's first reservation creates the counter first; when concurrent first
    /// reservations race to create it, the losers' duplicate-key error only means it exists now,
    /// and they increment it like everyone else.
    pub async fn reserve(
        &self,
        key: ObjectId,
        n: i64,
        limit: i64,
        now: DateTime<Utc>,
    ) -> mongodb::error::Result<bool> {
        if n > limit {
            return Ok(false);
        }
        let (id, day) = day_id(key, now);
        if self.increment(&id, n, limit).await? {
            return Ok(true);
        }
        let counter = DayUsage {
            id: id.clone(),
            api_key_id: key,
            day,
            count: 0,
            expires_at: crate::time::to_bson(now + Duration::days(2)),
        };
        match self.0.insert_one(&counter).await {
            Ok(_) => {}
            Err(e) if super::is_duplicate_key(&e) => {}
            Err(e) => return Err(e),
        }
        self.increment(&id, n, limit).await
    }

    /// Adds `n` to the counter `id` if it exists and has room for them; whether it did.
    async fn increment(&self, id: &str, n: i64, limit: i64) -> mongodb::error::Result<bool> {
        let result = self
            .0
            .update_one(
                doc! {"_id": id, "count": {"$lte": limit - n}},
                doc! {"$inc": {"count": n}},
            )
            .await?;
        Ok(result.matched_count == 1)
    }

    /// Gives back a reservation whose request could not be stored.
    pub async fn release(
        &self,
        key: ObjectId,
        n: i64,
        reserved_at: DateTime<Utc>,
    ) -> mongodb::error::Result<()> {
        let (id, _) = day_id(key, reserved_at);
        self.0
            .update_one(doc! {"_id": id}, doc! {"$inc": {"count": -n}})
            .await
            .map(|_| ())
    }

    /// Messages counted against the key today.
    pub async fn used_today(
        &self,
        key: ObjectId,
        now: DateTime<Utc>,
    ) -> mongodb::error::Result<i64> {
        let (id, _) = day_id(key, now);
        Ok(self
            .0
            .find_one(doc! {"_id": id})
            .await?
            .map_or(0, |u| u.count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn retry_after_counts_to_utc_midnight() {
        let t = Utc.with_ymd_and_hms(2026, 11, 25, 23, 59, 0).unwrap();
        assert_eq!(seconds_until_tomorrow(t), 60);
    }
}
