//! `explain` of the list queries: what the service's own list executes (every operation of its
//! walk and of its capped count, taken from `Listing::queries`) and what the plain `find` with
//! the same filter, sort and limit does, summarised as index, stages and entries examined.

use mongodb::bson::{doc, Bson, Document};
use serde::Serialize;
use serde_json::Value;
use sms_shared::db::messages::MessageFilter;
use sms_shared::db::paging::{Op, PageRequest, TOTAL_LOOKAHEAD};
use sms_shared::db::Db;

/// One explained operation.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// `find` or `count`.
    pub op: &'static str,
    /// The index of each `IXSCAN`.
    pub indexes: Vec<String>,
    /// Every stage of the winning plan, outermost first.
    pub stages: Vec<String>,
    pub keys_examined: u64,
    pub docs_examined: u64,
}

impl Step {
    /// Whether the plan reads the collection or sorts in memory.
    pub fn collscan_or_sort(&self) -> bool {
        self.stages.iter().any(|s| s == "COLLSCAN" || s == "SORT")
    }

    /// `find list_tenant 50k/50d` style.
    pub fn brief(&self) -> String {
        let mut index = self.indexes.join("+");
        if index.is_empty() {
            index = "no index".into();
        }
        let flags: Vec<&str> = ["COLLSCAN", "SORT"]
            .into_iter()
            .filter(|s| self.stages.iter().any(|t| t == s))
            .collect();
        let flags = if flags.is_empty() {
            String::new()
        } else {
            format!(" {}", flags.join("+"))
        };
        format!(
            "{} {index}{flags} {}k/{}d",
            self.op, self.keys_examined, self.docs_examined
        )
    }
}

/// The plans of one list call: the service's operations and the plain `find`.
#[derive(Debug, Clone, Serialize)]
pub struct ListPlans {
    /// Operations the service's list executes, in order (page queries first, then counts).
    pub service: Vec<Step>,
    /// The plain `find(filter).sort({_id: -1}).limit(limit)`.
    pub plain_find: Step,
}

impl ListPlans {
    /// Keys examined by the service's page queries and by its counts.
    pub fn keys(&self) -> (u64, u64) {
        let sum = |op: &str| {
            self.service
                .iter()
                .filter(|s| s.op == op)
                .map(|s| s.keys_examined)
                .sum()
        };
        (sum("find"), sum("count"))
    }

    /// One line for the table: the page queries' plans, then the counts'.
    pub fn brief(&self) -> String {
        let (finds, counts): (Vec<&Step>, Vec<&Step>) =
            self.service.iter().partition(|s| s.op == "find");
        let summarise = |steps: &[&Step], what: &str| {
            let mut indexes: Vec<String> = steps.iter().flat_map(|s| s.indexes.clone()).collect();
            indexes.dedup();
            let keys: u64 = steps.iter().map(|s| s.keys_examined).sum();
            let docs: u64 = steps.iter().map(|s| s.docs_examined).sum();
            let bad = steps.iter().any(|s| s.collscan_or_sort());
            format!(
                "{} {what} on {} ({keys} keys, {docs} docs{})",
                steps.len(),
                if indexes.is_empty() {
                    "no index".into()
                } else {
                    indexes.join("+")
                },
                if bad { ", COLLSCAN/SORT" } else { "" }
            )
        };
        format!(
            "{}; {}",
            summarise(&finds, "finds"),
            summarise(&counts, "counts")
        )
    }
}

/// Explains what the service's list of `filter` (first page of `limit`) executes, and the
/// plain find of `plain` with the same sort and limit.
pub async fn list(
    db: &Db,
    filter: &MessageFilter,
    plain: &Document,
    limit: u64,
) -> anyhow::Result<ListPlans> {
    let page = PageRequest {
        limit,
        skip: 0,
        after: None,
        total_lookahead: TOTAL_LOOKAHEAD,
    };
    let listing = db.messages.list(filter, &page).await?;
    let mut service = Vec::with_capacity(listing.queries.len());
    for spec in &listing.queries {
        let op = match spec.op {
            Op::Find { .. } => "find",
            Op::Count { .. } => "count",
        };
        let reply = db
            .database
            .run_command(spec.explain("sms_messages", "executionStats"))
            .await?;
        service.push(step(op, reply)?);
    }
    let command = doc! {
        "explain": {
            "find": "sms_messages", "filter": plain.clone(), "sort": {"_id": -1},
            "limit": limit as i64,
        },
        "verbosity": "executionStats",
    };
    let plain_find = step("find", db.database.run_command(command).await?)?;
    Ok(ListPlans {
        service,
        plain_find,
    })
}

/// Reads an `explain` reply (a find's, or an aggregation's with the query under `$cursor`).
fn step(op: &'static str, reply: Document) -> anyhow::Result<Step> {
    let reply = Bson::Document(reply).into_relaxed_extjson();
    let query = match reply["stages"][0].get("$cursor") {
        Some(cursor) => cursor.clone(),
        None => reply.clone(),
    };
    let stats = &query["executionStats"];
    let keys_examined = stats["totalKeysExamined"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no executionStats in {reply}"))?;
    let mut out = Step {
        op,
        indexes: Vec::new(),
        stages: Vec::new(),
        keys_examined,
        docs_examined: stats["totalDocsExamined"].as_u64().unwrap_or(0),
    };
    collect(&query["queryPlanner"]["winningPlan"], &mut out);
    Ok(out)
}

fn collect(node: &Value, out: &mut Step) {
    if let Some(stage) = node["stage"].as_str() {
        out.stages.push(stage.to_owned());
        if stage == "IXSCAN" {
            out.indexes
                .push(node["indexName"].as_str().unwrap_or_default().to_owned());
        }
    }
    if let Some(input) = node.get("inputStage") {
        collect(input, out);
    }
    for input in node["inputStages"].as_array().into_iter().flatten() {
        collect(input, out);
    }
}
