//! `login_throttle`: failed operator logins counted per username and per client address, shared
//! by every API replica.
//!
//! One counter document per key (`user:<sha256 of the username>`, `ip:<address>`) holds the
//! attempts of a fixed window that starts with the first one. An attempt is *reserved* before the
//! password is checked, by one conditional `$inc`, so concurrent attempts can never pass more
//! than the limit to the password hasher; a login that succeeds (or never reaches the hasher)
//! gives its attempt back. The TTL index only cleans up: the queries compare `expires_at`
//! themselves, so an expired window counts as empty even before the document is removed.

use chrono::{DateTime, Duration, Utc};
use mongodb::bson::doc;
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

/// How often a reservation re-reads a counter that other attempts changed under it.
const ROUNDS: usize = 8;

/// One key's attempts in its current window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginCounter {
    /// `user:<sha256 hex of the username>` or `ip:<address>`.
    #[serde(rename = "_id")]
    pub key: String,
    /// Attempts counted in the window (reserved and not given back).
    pub count: i64,
    /// The end of the window; the document is removed after it.
    pub expires_at: mongodb::bson::DateTime,
}

/// What a reservation decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The attempt was counted and may go on to the password check.
    Allowed,
    /// The window is full: nothing was counted; retry after this many seconds.
    Throttled { retry_after_seconds: i64 },
}

/// The counter key of a username. A digest, so that names typed by mistake (often passwords)
/// are not stored.
pub fn user_key(username: &str) -> String {
    format!("user:{}", crate::domain::token::digest(username))
}

/// The counter key of a client address.
pub fn address_key(address: &str) -> String {
    format!("ip:{address}")
}

/// The `login_throttle` collection.
#[derive(Clone)]
pub struct LoginThrottle(Collection<LoginCounter>);

impl LoginThrottle {
    pub fn new(db: &Database) -> Self {
        Self(db.collection("login_throttle"))
    }

    pub async fn create_indexes(&self) -> mongodb::error::Result<()> {
        super::ensure_indexes(
            &self.0,
            vec![super::ttl_index("expires_at", "expires_at_ttl")],
        )
        .await
    }

    /// Counts one attempt for `key` unless `limit` attempts are already counted in its window
    /// of `window` (which starts with the first attempt).
    pub async fn reserve(
        &self,
        key: &str,
        limit: i64,
        window: Duration,
        now: DateTime<Utc>,
    ) -> mongodb::error::Result<Attempt> {
        let now_bson = crate::time::to_bson(now);
        let ends = crate::time::to_bson(now + window);
        for _ in 0..ROUNDS {
            let counted = self
                .0
                .update_one(
                    doc! {"_id": key, "expires_at": {"$gt": now_bson}, "count": {"$lt": limit}},
                    doc! {"$inc": {"count": 1}},
                )
                .await?;
            if counted.matched_count == 1 {
                return Ok(Attempt::Allowed);
            }
            match self.0.find_one(doc! {"_id": key}).await? {
                None => {
                    let first = LoginCounter {
                        key: key.to_owned(),
                        count: 1,
                        expires_at: ends,
                    };
                    match self.0.insert_one(&first).await {
                        Ok(_) => return Ok(Attempt::Allowed),
                        // A concurrent first attempt created it: count against that one.
                        Err(e) if super::is_duplicate_key(&e) => continue,
                        Err(e) => return Err(e),
                    }
                }
                Some(c) if c.expires_at <= now_bson => {
                    // The window is over: start a new one, unless another attempt just did.
                    let restarted = self
                        .0
                        .update_one(
                            doc! {"_id": key, "expires_at": c.expires_at},
                            doc! {"$set": {"count": 1, "expires_at": ends}},
                        )
                        .await?;
                    if restarted.matched_count == 1 {
                        return Ok(Attempt::Allowed);
                    }
                }
                Some(c) if c.count >= limit => {
                    let millis = c.expires_at.timestamp_millis() - now.timestamp_millis();
                    return Ok(Attempt::Throttled {
                        retry_after_seconds: ((millis + 999) / 1000)
                            .clamp(1, window.num_seconds().max(1)),
                    });
                }
                // Room appeared (an attempt was given back) between the two reads: count again.
                Some(_) => {}
            }
        }
        // Every round lost to another attempt on the same key: that key is being hammered.
        Ok(Attempt::Throttled {
            retry_after_seconds: 1,
        })
    }

    /// Gives back one attempt of `key` (a login that succeeded or never reached the hasher).
    pub async fn release(&self, key: &str, now: DateTime<Utc>) -> mongodb::error::Result<()> {
        self.0
            .update_one(
                doc! {
                    "_id": key,
                    "expires_at": {"$gt": crate::time::to_bson(now)},
                    "count": {"$gt": 0},
                },
                doc! {"$inc": {"count": -1}},
            )
            .await
            .map(|_| ())
    }

    /// Forgets every attempt of `key` (its owner logged in).
    pub async fn reset(&self, key: &str) -> mongodb::error::Result<()> {
        self.0.delete_one(doc! {"_id": key}).await.map(|_| ())
    }

    /// Attempts counted for `key` in its live window.
    pub async fn count(&self, key: &str, now: DateTime<Utc>) -> mongodb::error::Result<i64> {
        Ok(self
            .0
            .find_one(doc! {"_id": key, "expires_at": {"$gt": crate::time::to_bson(now)}})
            .await?
            .map_or(0, |c| c.count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_stored_as_digests() {
        let key = user_key("hunter2-typed-as-a-name");
        assert!(key.starts_with("user:"));
        assert_eq!(key.len(), 5 + 64);
        assert!(!key.contains("hunter2"));
        assert_eq!(key, user_key("hunter2-typed-as-a-name"));
        assert_ne!(key, user_key("admin"));
        assert_eq!(address_key("203.0.113.9"), "ip:203.0.113.9");
    }
}
