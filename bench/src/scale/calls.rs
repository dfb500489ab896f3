//! The timed calls, and for each broad list the database's own `find` with the same filter,
//! sort and limit, timed in the same loop (one call of each per repetition), so the ratio
//! compares the two under the same load.
//!
//! Broad lists (every message, all of a key's, all `FAILED`, ...) are judged against that
//! plain `find`, because the test server's `find` cost grows with the matching documents even
//! on an index scan; everything else by the clock.

use std::time::Instant;

use anyhow::{ensure, Context};
use chrono::SecondsFormat;
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use serde::Serialize;
use serde_json::Value;
use sms_shared::db::messages::MessageFilter;
use sms_shared::db::Db;
use sms_shared::domain::status::Status;
use sms_testkit::Api;

use super::load::Loaded;
use super::plans::{self, ListPlans};
use super::{Owner, ScaleArgs};
use crate::report::percentile;

/// Median a call other than a broad list must stay under, in milliseconds.
pub const CLOCK_TARGET_MS: f64 = 300.0;
/// Most a broad list may take relative to the plain `find` of the same filter.
pub const BROAD_TARGET_RATIO: f64 = 1.5;
/// Page size of the timed lists.
const LIMIT: u64 = 50;

/// Who makes a call.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Who {
    Operator,
    Client,
    /// A phone: each repetition is a different agent, so each poll finds jobs to lease.
    Phone,
}

/// One call to time.
struct Call {
    name: String,
    path: String,
    who: Who,
    /// For a broad list: the list's filter and the plain `find` filter it is judged against.
    broad: Option<(MessageFilter, Document)>,
}

/// Figures of one call.
#[derive(Debug, Clone, Serialize)]
pub struct Timed {
    pub name: String,
    pub path: String,
    pub who: Who,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub samples_ms: Vec<f64>,
    /// Broad lists: the plain `find`'s filter, median and p90, and the ratio of the medians.
    pub plain_find: Option<Document>,
    pub plain_median_ms: Option<f64>,
    pub plain_p90_ms: Option<f64>,
    pub ratio: Option<f64>,
    pub plans: Option<ListPlans>,
    /// `median < 300 ms`, or for a broad list `ratio <= 1.5`.
    pub target: String,
    pub met: bool,
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The calls of the targets, and a few more of the same kinds.
fn calls(owner: &Owner, loaded: &Loaded, poll_limit: usize) -> Vec<Call> {
    let key = owner.api_key_id;
    let agent = owner.agents[0].0;
    let now = sms_shared::time::now();
    let ago = |d: chrono::Duration| rfc3339(now - d);
    let day = chrono::Duration::days(1);
    let national = format!("0{}", &loaded.sample_number[3..]);
    let clock = |name: &str, path: String, who| Call {
        name: name.into(),
        path,
        who,
        broad: None,
    };
    let broad = |name: &str, path: &str, who, filter: MessageFilter, plain| Call {
        name: name.into(),
        path: path.into(),
        who,
        broad: Some((filter, plain)),
    };
    let failed = Status::Failed;
    vec![
        clock(
            "phone's poll",
            format!("/agent/jobs/next?limit={poll_limit}"),
            Who::Phone,
        ),
        broad(
            "client's list",
            "/messages/all?limit=50",
            Who::Client,
            MessageFilter {
                tenant: Some(key),
                ..Default::default()
            },
            doc! {"api_key_id": key},
        ),
        broad(
            "operator's list",
            "/messages/all?limit=50",
            Who::Operator,
            MessageFilter::default(),
            doc! {},
        ),
        broad(
            "operator's FAILED list",
            "/messages/all?status=FAILED&limit=50",
            Who::Operator,
            MessageFilter {
                status: Some(failed),
                ..Default::default()
            },
            doc! {"status": failed.as_str()},
        ),
        broad(
            "client's FAILED list",
            "/messages/all?status=FAILED&limit=50",
            Who::Client,
            MessageFilter {
                tenant: Some(key),
                status: Some(failed),
                ..Default::default()
            },
            doc! {"api_key_id": key, "status": failed.as_str()},
        ),
        broad(
            "operator's list of one agent",
            &format!("/messages/all?agent_id={agent}&limit=50"),
            Who::Operator,
            MessageFilter {
                agent_id: Some(agent),
                ..Default::default()
            },
            doc! {"agent_id": agent},
        ),
        clock(
            "request's detail",
            format!("/requests/{}", loaded.sample_request_id),
            Who::Client,
        ),
        clock(
            "request's messages",
            format!("/messages?request_id={}&limit=50", loaded.sample_request_id),
            Who::Client,
        ),
        clock(
            "number search",
            format!("/messages/all?to={national}&limit=50"),
            Who::Client,
        ),
        clock("agent list", "/admin/agents".into(), Who::Operator),
        clock(
            "summary, all time",
            "/reports/summary".into(),
            Who::Operator,
        ),
        clock(
            "summary, last hour",
            format!("/reports/summary?from={}", ago(chrono::Duration::hours(1))),
            Who::Operator,
        ),
        clock(
            "summary, last day",
            format!("/reports/summary?from={}", ago(day)),
            Who::Operator,
        ),
        clock(
            "summary, last 7 days",
            format!("/reports/summary?from={}", ago(day * 7)),
            Who::Operator,
        ),
        clock(
            "summary, 30 days to 1 day ago",
            format!("/reports/summary?from={}&to={}", ago(day * 30), ago(day)),
            Who::Operator,
        ),
        clock(
            "summary, one agent, all time",
            format!("/reports/summary?agent_id={agent}"),
            Who::Operator,
        ),
        clock(
            "summary, the key, last 7 days",
            format!("/reports/summary?api_key_id={key}&from={}", ago(day * 7)),
            Who::Operator,
        ),
    ]
}

/// Times every call: `--warmups` untimed, then `--repeats` timed.
pub async fn measure(
    api: &Api,
    db: &Db,
    jwt: &str,
    owner: &Owner,
    loaded: &Loaded,
    args: &ScaleArgs,
) -> anyhow::Result<Vec<Timed>> {
    let polls = args.warmups + args.repeats;
    ensure!(
        polls <= owner.agents.len() && args.poll_limit <= args.live_per_agent,
        "each poll needs an agent of its own with jobs left: --warmups + --repeats must not \
         exceed --agents, --poll-limit not --live-per-agent"
    );
    let coll = db.database.collection::<Document>("sms_messages");
    let mut out = Vec::new();
    for call in calls(owner, loaded, args.poll_limit) {
        let mut api_ms = Vec::with_capacity(args.repeats);
        let mut plain_ms = Vec::with_capacity(args.repeats);
        for round in 0..polls {
            let auth = match call.who {
                Who::Operator => Auth::Bearer(jwt),
                Who::Client => Auth::Key(&owner.api_key),
                Who::Phone => Auth::Bearer(&owner.agents[round].1),
            };
            let (ms, body) = get(api, &call.path, auth).await?;
            if let Who::Phone = call.who {
                let jobs = body["jobs"].as_array().map_or(0, Vec::len);
                ensure!(jobs == args.poll_limit, "a poll leased {jobs} jobs");
            }
            if round >= args.warmups {
                api_ms.push(ms);
            }
            if let Some((_, plain)) = &call.broad {
                let started = Instant::now();
                let found: Vec<Document> = coll
                    .find(plain.clone())
                    .sort(doc! {"_id": -1})
                    .limit(LIMIT as i64)
                    .await?
                    .try_collect()
                    .await?;
                ensure!(found.len() as u64 == LIMIT, "{}: a short page", call.name);
                if round >= args.warmups {
                    plain_ms.push(started.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
        let median_ms = percentile(&api_ms, 0.5);
        let mut timed = Timed {
            name: call.name.clone(),
            path: call.path.clone(),
            who: call.who,
            median_ms,
            p90_ms: percentile(&api_ms, 0.9),
            samples_ms: api_ms,
            plain_find: None,
            plain_median_ms: None,
            plain_p90_ms: None,
            ratio: None,
            plans: None,
            target: format!("median < {CLOCK_TARGET_MS} ms"),
            met: median_ms < CLOCK_TARGET_MS,
        };
        if let Some((filter, plain)) = call.broad {
            let plain_median = percentile(&plain_ms, 0.5);
            let ratio = median_ms / plain_median.max(1e-9);
            timed.plans = Some(plans::list(db, &filter, &plain, LIMIT).await?);
            timed.plain_find = Some(plain);
            timed.plain_median_ms = Some(plain_median);
            timed.plain_p90_ms = Some(percentile(&plain_ms, 0.9));
            timed.ratio = Some(ratio);
            timed.target = format!("≤ {BROAD_TARGET_RATIO} × plain find");
            timed.met = ratio <= BROAD_TARGET_RATIO;
        }
        tracing::info!(call = %timed.name, median_ms = timed.median_ms, ratio = ?timed.ratio, "timed");
        out.push(timed);
    }
    Ok(out)
}

/// The all-time summary's total, which must be every loaded message: the counters the recount
/// rebuilt agree with the documents.
pub async fn summary_total(api: &Api, jwt: &str) -> anyhow::Result<i64> {
    let (_, body) = get(api, "/reports/summary", Auth::Bearer(jwt)).await?;
    body["total"]
        .as_i64()
        .with_context(|| format!("no total in the summary {body}"))
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    Bearer(&'a str),
    Key(&'a str),
}

/// `GET path`: milliseconds until the whole body was read, and the body.
async fn get(api: &Api, path: &str, auth: Auth<'_>) -> anyhow::Result<(f64, Value)> {
    let req = api.http().get(api.url(path));
    let req = match auth {
        Auth::Bearer(token) => req.bearer_auth(token),
        Auth::Key(key) => req.header("X-API-Key", key),
    };
    let started = Instant::now();
    let res = req.send().await.with_context(|| format!("GET {path}"))?;
    let status = res.status();
    let body = res.bytes().await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    ensure!(
        status.is_success(),
        "GET {path}: HTTP {status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok((ms, serde_json::from_slice(&body)?))
}
