//! `dedup`: one document per `to + text` digest holding the last time it was staged.
//!
//! The document id is the digest, so the unique `_id` index decides races between dispatcher
//! replicas: inserting the claim either succeeds or meets E11000, and a claim older than the
//! window is taken over by one conditional update. A batch's fresh claims go in one unordered
//! `insert_many`. The TTL index only cleans up expired claims;
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

    /// Claims each `(key, message)` at `now` unless another message claimed the key within
    /// `window`, returning one outcome per claim in order.
    ///
    /// Fresh claims are inserted with one unordered `insert_many`; the unique `_id` index
    /// refuses a key that is already held (E11000), and only those claims take the slower
    /// path of two single-document steps: renew this message's own claim (a redelivered
    /// event), else take over a claim older than the window. Each step is atomic, so of two
    /// racers — in one batch or across replicas — only one can win a key.
    pub async fn claim_many(
        &self,
        claims: &[(&str, ObjectId)],
        now: DateTime,
        window: Duration,
    ) -> Vec<mongodb::error::Result<Claim>> {
        if claims.is_empty() {
            return Vec::new();
        }
        let window_ms = window.as_millis() as i64;
        // Expired claims linger until the TTL monitor runs; keep them a day past the window.
        let expires = DateTime::from_millis(now.timestamp_millis() + window_ms + 86_400_000);
        let fresh = claims.iter().map(|(key, message)| DedupClaim {
            key: (*key).to_owned(),
            message_id: *message,
            staged_at: now,
            expires_at: expires,
        });
        // None: inserted (won); Some(Ok): the key is held, look closer; Some(Err): failed.
        let mut held: Vec<Option<mongodb::error::Result<()>>> = vec![None; claims.len()];
        if let Err(e) = self.0.insert_many(fresh).ordered(false).await {
            match e.kind.as_ref() {
                mongodb::error::ErrorKind::InsertMany(failure)
                    if failure.write_concern_error.is_none() =>
                {
                    for w in failure.write_errors.iter().flatten() {
                        held[w.index] = Some(if w.code == 11000 {
                            Ok(())
                        } else {
                            Err(e.clone())
                        });
                    }
                }
                _ => return claims.iter().map(|_| Err(e.clone())).collect(),
            }
        }
        let cutoff = DateTime::from_millis(now.timestamp_millis() - window_ms);
        let slow = claims
            .iter()
            .zip(held)
            .map(|((key, message), held)| async move {
                match held {
                    None => Ok(Claim::Won),
                    Some(Err(e)) => Err(e),
                    Some(Ok(())) => self.claim_held(key, *message, now, cutoff, expires).await,
                }
            });
        futures::future::join_all(slow).await
    }

    /// A key some claim holds: renew it if it is `message`'s own, or take it over if it was
    /// staged at or before `cutoff`; otherwise `message` is a duplicate.
    async fn claim_held(
        &self,
        key: &str,
        message: ObjectId,
        now: DateTime,
        cutoff: DateTime,
        expires: DateTime,
    ) -> mongodb::error::Result<Claim> {
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
