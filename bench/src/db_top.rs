//! Where the database spent its time during a phase: the server's `top` command (per collection,
//! per kind of operation: time and count since the server started), read before and after the
//! phase, and the difference kept for the run's collections. A server without `top` gives an
//! empty list, not an error: the figures are for reading, not for the targets.

use std::collections::BTreeMap;

use mongodb::bson::{doc, Bson, Document};
use mongodb::Client;
use serde::Serialize;

/// The kinds of operation `top` reports per collection, in the order shown.
const KINDS: [&str; 8] = [
    "total",
    "writeLock",
    "readLock",
    "insert",
    "update",
    "remove",
    "queries",
    "commands",
];

/// One collection's share of a phase.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TopRow {
    pub collection: String,
    /// Per kind of operation: milliseconds spent and operations counted during the phase.
    pub ms: BTreeMap<String, f64>,
    pub count: BTreeMap<String, i64>,
}

/// A reading of `top`: per namespace, per kind, (microseconds, count).
pub type Reading = BTreeMap<String, BTreeMap<String, (i64, i64)>>;

/// Reads `top` now; `None` when the server does not answer it.
pub async fn read(client: &Client) -> Option<Reading> {
    let answer = client
        .database("admin")
        .run_command(doc! {"top": 1})
        .await
        .ok()?;
    let totals = answer.get_document("totals").ok()?;
    let mut reading = Reading::new();
    for (ns, kinds) in totals {
        let Bson::Document(kinds) = kinds else {
            continue;
        };
        let mut per_kind = BTreeMap::new();
        for kind in KINDS {
            if let Ok(k) = kinds.get_document(kind) {
                per_kind.insert(kind.to_owned(), (number(k, "time"), number(k, "count")));
            }
        }
        reading.insert(ns.clone(), per_kind);
    }
    Some(reading)
}

/// What `after` added to `before` in database `db`'s collections, busiest first.
pub fn difference(before: &Reading, after: &Reading, db: &str) -> Vec<TopRow> {
    let prefix = format!("{db}.");
    let mut rows: Vec<TopRow> = after
        .iter()
        .filter_map(|(ns, kinds)| {
            let collection = ns.strip_prefix(&prefix)?;
            let mut row = TopRow {
                collection: collection.to_owned(),
                ..TopRow::default()
            };
            for (kind, (us, n)) in kinds {
                let (us0, n0) = before
                    .get(ns)
                    .and_then(|k| k.get(kind))
                    .copied()
                    .unwrap_or_default();
                if n - n0 > 0 {
                    row.ms.insert(kind.clone(), (us - us0) as f64 / 1000.0);
                    row.count.insert(kind.clone(), n - n0);
                }
            }
            (!row.count.is_empty()).then_some(row)
        })
        .collect();
    rows.sort_by(|a, b| total_ms(b).total_cmp(&total_ms(a)));
    rows
}

/// The rows as a table: collection, then milliseconds / count per kind.
pub fn table(rows: &[TopRow]) -> String {
    let mut out = String::from("collection");
    for kind in KINDS {
        out.push_str(&format!(" | {kind} ms/n"));
    }
    out.push('\n');
    for row in rows {
        out.push_str(&row.collection);
        for kind in KINDS {
            match (row.ms.get(kind), row.count.get(kind)) {
                (Some(ms), Some(n)) => out.push_str(&format!(" | {ms:.0}/{n}")),
                _ => out.push_str(" | -"),
            }
        }
        out.push('\n');
    }
    out
}

fn total_ms(row: &TopRow) -> f64 {
    row.ms.get("total").copied().unwrap_or_default()
}

fn number(d: &Document, key: &str) -> i64 {
    match d.get(key) {
        Some(Bson::Int32(v)) => i64::from(*v),
        Some(Bson::Int64(v)) => *v,
        Some(Bson::Double(v)) => *v as i64,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(entries: &[(&str, &str, i64, i64)]) -> Reading {
        let mut r = Reading::new();
        for (ns, kind, us, n) in entries {
            r.entry(ns.to_string())
                .or_default()
                .insert(kind.to_string(), (*us, *n));
        }
        r
    }

    #[test]
    fn differences_keep_the_runs_collections_busiest_first() {
        let before = reading(&[("b.jobs", "total", 1_000, 1), ("b.messages", "total", 0, 0)]);
        let after = reading(&[
            ("b.jobs", "total", 3_000, 3),
            ("b.messages", "total", 9_000, 5),
            ("b.idle", "total", 0, 0),
            ("other.messages", "total", 50_000, 9),
        ]);
        let rows = difference(&before, &after, "b");
        let names: Vec<&str> = rows.iter().map(|r| r.collection.as_str()).collect();
        assert_eq!(names, ["messages", "jobs"]);
        assert_eq!(rows[1].ms["total"], 2.0);
        assert_eq!(rows[1].count["total"], 2);
        assert!(table(&rows).contains("messages | 9/5 | -"));
    }
}
