//! `dedup`: one document per `to + text` digest holding the last time it was staged.
//!
//! The document id is the digest, so the unique `_id` index decides races between dispatcher
//! replicas: inserting the claim either succeeds or meets E11000, and a claim older than the
//! window is taken over by one conditional update. The TTL index only cleans up expired claims;
//! it never decides.

use std::time::Duration;

use mongodb::bson::{doc, oid::ObjectId, DateTime};
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DedupClaim {
    #[serde(rename = "_id")]
    pub key: String,
    pub message_id: ObjectId,
    pub staged_at: DateTime,
    pub expires_at: DateTime,
}

/// The anti-dup key of a recipient and rendered text.
pub fn key(to: &str, text: &str) -> String {
    let mut h = Sha256::new();
    h.update(to.as_bytes());
    h.update([0u8]);
    h.update(text.as_bytes());
    hex::encode(h.finalize())
}

/// The outcome of claiming a key for a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This message holds the key (newly, or again on redelivery).
    Won,
    /// Another message was staged with the same `to + text` inside the window.
    Duplicate,
}

#[derive(Clone)]
pub struct Dedup(Collection<DedupClaim>);

impl Dedup {
    pub fn new(db: &Database) -> Self {
        Self(db.collection("dedup"))
    }

    pub async fn create_indexes(&self) -> mongodb::error::Result<()> {
        super::ensure_indexes(
            &self.0,
            vec![super::ttl_index("expires_at", "expires_at_ttl")],
        )
        .await
    }

    /// Claims `key` for `message` at `now` unless another message claimed it within `window`.
    ///
    /// Three single-document steps, each a point look-up on `_id`: insert a fresh claim; else
    /// renew this message's own claim (a redelivered event); else take over a claim older than
    /// the window. Each step is atomic, so of two racers only one can win any of them.
    pub async fn claim(
        &self,
        key: &str,
        message: ObjectId,
        now: DateTime,
        window: Duration,
    ) -> mongodb::error::Result<Claim> {
        let window_ms = window.as_millis() as i64;
        let cutoff = DateTime::from_millis(now.timestamp_millis() - window_ms);
        // Expired claims linger until the TTL monitor runs; keep them a day past the window.
        let expires = DateTime::from_millis(now.timestamp_millis() + window_ms + 86_400_000);
        let fresh = DedupClaim {
            key: key.to_owned(),
            message_id: message,
            staged_at: now,
            expires_at: expires,
        };
        match self.0.insert_one(&fresh).await {
            Ok(_) => return Ok(Claim::Won),
            Err(e) if super::is_duplicate_key(&e) => {}
            Err(e) => return Err(e),
        }
        let renew = doc! {"$set": {"message_id": message, "staged_at": now, "expires_at": expires}};
        let own = self
            .0
            .update_one(doc! {"_id": key, "message_id": message}, renew.clone())
            .await?;
        if own.matched_count == 1 {
            return Ok(Claim::Won);
        }
        let expired = self
            .0
            .update_one(doc! {"_id": key, "staged_at": {"$lte": cutoff}}, renew)
            .await?;
        Ok(if expired.matched_count == 1 {
            Claim::Won
        } else {
            Claim::Duplicate
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_separates_recipient_and_text() {
        assert_ne!(super::key("+841", "23"), super::key("+8412", "3"));
        assert_eq!(super::key("+84901", "hi"), super::key("+84901", "hi"));
    }
}
