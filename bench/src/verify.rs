//! What the database says at the end of a run: the final status of every message the run's
//! agents were sent, which of them are lost, and which were handed out twice.

use std::collections::{BTreeMap, HashSet};

use anyhow::ensure;
use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, Bson, Document};
use mongodb::Collection;
use sms_testkit::Ledger;

use crate::report::BenchReport;
use crate::workload::RequestPlan;

/// Fills the status counts, `lost` and `duplicated` of `report` from the messages matching
/// `of_run` (`accepted` of them were accepted in all) and what the phones of `ledgers` saw.
pub async fn check(
    messages: &Collection<Document>,
    of_run: Document,
    accepted: u64,
    ledgers: &[&Ledger],
    report: &mut BenchReport,
) -> anyhow::Result<()> {
    report.accepted_total = accepted;
    report.status_counts = status_counts(messages, of_run.clone()).await?;
    let count = |s: &str| report.status_counts.get(s).copied().unwrap_or(0);
    report.delivered = count("DELIVERED");
    report.failed = count("FAILED");
    report.canceled = count("CANCELED");
    let total: u64 = report.status_counts.values().sum();
    ensure!(
        total >= accepted,
        "only {total} of {accepted} accepted messages are in the database"
    );
    report.lost = accepted.saturating_sub(report.delivered + report.failed + report.canceled);
    let by_agents: HashSet<String> = ledgers.iter().flat_map(|l| l.duplicated()).collect();
    let mut multi = of_run;
    multi.insert("attempts", doc! {"$gt": 1});
    let by_db: HashSet<String> = messages
        .find(multi)
        .projection(doc! {"_id": 1})
        .await?
        .try_collect::<Vec<Document>>()
        .await?
        .iter()
        .filter_map(|d| d.get_object_id("_id").ok().map(|id| id.to_hex()))
        .collect();
    report.duplicated_by_agents = by_agents.len() as u64;
    report.db_leased_more_than_once = by_db.len() as u64;
    report.duplicated = by_agents.union(&by_db).count() as u64;
    Ok(())
}

/// Messages each agent has to make final: its share, less those canceled at staging.
pub async fn agent_targets(
    messages: &Collection<Document>,
    plans: &[RequestPlan],
    agents: &[ObjectId],
) -> anyhow::Result<Vec<u64>> {
    let mut targets = vec![0u64; agents.len()];
    for p in plans {
        targets[p.agent] += p.messages.len() as u64;
    }
    let mut cursor = messages
        .aggregate(vec![
            doc! {"$match": {"agent_id": {"$in": agents}, "status": "CANCELED"}},
            doc! {"$group": {"_id": "$agent_id", "n": {"$sum": 1}}},
        ])
        .await?;
    while let Some(d) = cursor.try_next().await? {
        if let Some(i) = d
            .get_object_id("_id")
            .ok()
            .and_then(|id| agents.iter().position(|a| *a == id))
        {
            targets[i] = targets[i].saturating_sub(number(d.get("n")));
        }
    }
    Ok(targets)
}

/// Messages matching `filter` by status.
async fn status_counts(
    messages: &Collection<Document>,
    filter: Document,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut cursor = messages
        .aggregate(vec![
            doc! {"$match": filter},
            doc! {"$group": {"_id": "$status", "n": {"$sum": 1}}},
        ])
        .await?;
    let mut out = BTreeMap::new();
    while let Some(d) = cursor.try_next().await? {
        let status = d.get_str("_id").unwrap_or("?").to_owned();
        out.insert(status, number(d.get("n")));
    }
    Ok(out)
}

fn number(v: Option<&Bson>) -> u64 {
    match v {
        Some(Bson::Int32(n)) => (*n).max(0) as u64,
        Some(Bson::Int64(n)) => (*n).max(0) as u64,
        Some(Bson::Double(n)) => n.max(0.0) as u64,
        _ => 0,
    }
}
