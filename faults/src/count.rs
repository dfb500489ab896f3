//! The final count of a scenario: lost and duplicated messages.

use mongodb::bson::{doc, oid::ObjectId, Document};

/// What a scenario ended with.
#[derive(Debug, Default)]
pub struct Tally {
    pub accepted: u64,
    pub stored: u64,
    pub delivered: u64,
    pub failed: u64,
    pub canceled: u64,
    /// Accepted but missing, or not in a final state after settling.
    pub lost: u64,
    /// Staged twice, or caught by the phones' ledger: handed to two agents, held under two live
    /// leases, or accepted as `SENT` twice.
    pub duplicated: u64,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "lost={} duplicated={} (accepted={} stored={} delivered={} failed={} canceled={})",
            self.lost,
            self.duplicated,
            self.accepted,
            self.stored,
            self.delivered,
            self.failed,
            self.canceled
        )
    }
}

/// Counts the messages of the accepted requests (`(request_id, total)`).
pub async fn tally(
    db: &mongodb::Database,
    accepted: &[(String, usize)],
    ledger_duplicates: usize,
) -> anyhow::Result<Tally> {
    let ids: Vec<ObjectId> = accepted
        .iter()
        .filter_map(|(r, _)| ObjectId::parse_str(r).ok())
        .collect();
    let coll = db.collection::<Document>("sms_messages");
    let of = |extra: Document| {
        let mut f = doc! {"request_id": {"$in": &ids}};
        f.extend(extra);
        f
    };
    let total: u64 = accepted.iter().map(|(_, n)| *n as u64).sum();
    let stored = coll.count_documents(of(doc! {})).await?;
    let delivered = coll
        .count_documents(of(doc! {"status": "DELIVERED"}))
        .await?;
    let failed = coll.count_documents(of(doc! {"status": "FAILED"})).await?;
    let canceled = coll
        .count_documents(of(doc! {"status": "CANCELED"}))
        .await?;
    let staged_twice = coll
        .count_documents(of(doc! {"stagings": {"$gt": 1}}))
        .await?;
    let settled = delivered + failed + canceled;
    Ok(Tally {
        accepted: total,
        stored,
        delivered,
        failed,
        canceled,
        lost: total.saturating_sub(stored) + stored.saturating_sub(settled),
        duplicated: staged_twice + ledger_duplicates as u64,
    })
}

/// Counts every message of the scenario's database in a final state.
pub async fn settled(db: &mongodb::Database, accepted: &[(String, usize)]) -> bool {
    let ids: Vec<ObjectId> = accepted
        .iter()
        .filter_map(|(r, _)| ObjectId::parse_str(r).ok())
        .collect();
    let total: u64 = accepted.iter().map(|(_, n)| *n as u64).sum();
    let coll = db.collection::<Document>("sms_messages");
    coll.count_documents(
        doc! {"request_id": {"$in": &ids}, "status": {"$in": ["DELIVERED", "FAILED", "CANCELED"]}},
    )
    .await
    .is_ok_and(|n| n == total)
}
