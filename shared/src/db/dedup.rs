//! `dedup`: one document per `to + text` digest holding the last time it was staged.
//!
//! The document id is the digest, so the unique `_id` index decides races between dispatcher
//! replicas: a conditional upsert claims the key, and E11000 means another message holds it
//! inside the window. The TTL index only cleans up expired claims; it never decides.

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
        let result = self
            .0
            .update_one(
                doc! {"_id": key, "$or": [{"message_id": message}, {"staged_at": {"$lte": cutoff}}]},
                doc! {"$set": {"message_id": message, "staged_at": now, "expires_at": expires}},
            )
            .upsert(true)
            .await;
        match result {
            Ok(_) => Ok(Claim::Won),
            Err(e) if super::is_duplicate_key(&e) => Ok(Claim::Duplicate),
            Err(e) => Err(e),
        }
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
