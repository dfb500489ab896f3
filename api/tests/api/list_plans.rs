//! Every list and search the API issues is served by one index, for its filter and its order
//! alike: `explain` (executionStats) of exactly what a list executed, with the index as the
//! hint MongoDB gets, shows an index scan of that index, no collection scan, no in-memory sort,
//! and about `skip + limit` keys examined per window (a number's or a request's messages: no
//! more than that number or request has). The test server, which gets no hint, reads the index
//! the filter's first field leads: each filter leads with the index's first field.

use mongodb::bson::{doc, DateTime, Document};
use sms_shared::db::audit_logs::{indexes as audit_indexes, AuditFilter};
use sms_shared::db::messages::{list_indexes, MessageFilter};
use sms_shared::db::paging::{Keyed, Listing, Op, PageRequest, QuerySpec};
use sms_shared::domain::status::Status;

use crate::helpers::*;

/// A list as the database layer answered it, with what it executed.
struct Listed {
    ids: Vec<String>,
    total: u64,
    lower_bound: bool,
    next: Option<String>,
    queries: Vec<QuerySpec>,
}

impl<T: Keyed> From<Listing<T>> for Listed {
    fn from(l: Listing<T>) -> Self {
        Self {
            ids: l.items.iter().map(|i| i.key().to_hex()).collect(),
            total: l.total,
            lower_bound: l.total_is_lower_bound,
            next: l.next.map(|n| n.to_hex()),
            queries: l.queries,
        }
    }
}

/// One query shape: the API call and the index that must serve it.
struct Shape<'a> {
    /// Path and filter parameters, without paging.
    path: String,
    auth: Auth<'a>,
    collection: &'static str,
    index: &'static str,
    /// The filter field that must lead (the index's first field).
    first: &'static str,
    /// For a number's or a request's messages: that equality, which bounds every scan.
    narrow: Option<Document>,
}

/// The paging variants every shape is called with.
#[derive(Debug, Clone, Copy)]
enum Variant {
    First,
    Skip,
    After,
    Range,
}

const VARIANTS: [Variant; 4] = [
    Variant::First,
    Variant::Skip,
    Variant::After,
    Variant::Range,
];

fn rfc3339(t: DateTime) -> String {
    chrono::DateTime::from_timestamp_millis(t.timestamp_millis())
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The range of the `Range` variant: from 20 hours ago until 90 minutes ago.
fn range() -> (DateTime, DateTime) {
    let now = DateTime::now().timestamp_millis();
    (
        DateTime::from_millis(now - 20 * 3_600_000 - 123),
        DateTime::from_millis(now - 90 * 60_000 + 456),
    )
}

/// Paging parameters and page of `variant`; `After` continues from the first page.
async fn paging(app: &TestApp, shape: &Shape<'_>, variant: Variant) -> (String, PageRequest) {
    match variant {
        Variant::First | Variant::Range => ("limit=3".into(), page(3, 0, None)),
        Variant::Skip => ("limit=3&skip=4".into(), page(3, 4, None)),
        Variant::After => {
            let (ids, body) = api_page(app, &format!("{}&limit=3", shape.path), shape.auth).await;
            let after = body["next"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| ids[0].clone());
            (
                format!("limit=3&after={after}"),
                page(3, 0, Some(oid(&after))),
            )
        }
    }
}

/// Calls the API, compares its page with `listed` (what the database layer answers for the
/// same filter and page), and explains every operation `listed` executed.
async fn assert_shape(app: &TestApp, shape: &Shape<'_>, path: &str, listed: Listed) {
    let (ids, body) = api_page(app, path, shape.auth).await;
    assert_eq!(ids, listed.ids, "{path}");
    assert_eq!(body["total"], listed.total, "{path}");
    assert_eq!(body["total_is_lower_bound"], listed.lower_bound, "{path}");
    assert_eq!(body["next"].as_str(), listed.next.as_deref(), "{path}");
    assert!(!listed.queries.is_empty(), "{path}");
    for spec in &listed.queries {
        let bound = match &spec.op {
            Op::Find { skip, limit, .. } => Some(skip + limit),
            Op::Count { limit } => *limit,
        };
        let what = format!("{path}: {spec:?}");
        assert_eq!(spec.index, shape.index, "{what}");
        // The test server reads the index its filter's first field leads.
        let lead = spec.filter.keys().next().map_or("_id", String::as_str);
        assert_eq!(lead, shape.first, "{what}");
        let max_keys = match &shape.narrow {
            // The scan stays within the number's (the request's) entries of the window.
            Some(narrow) => {
                let mut within = narrow.clone();
                if let Ok(id) = spec.filter.get_document("_id") {
                    within.insert("_id", id.clone());
                }
                app.count(shape.collection, within).await + 1
            }
            None => bound.expect("a broad list's counts are capped") + 1,
        };
        // As MongoDB runs it: with the index as a hint.
        let hinted = QuerySpec {
            hint: true,
            ..spec.clone()
        };
        explain(app, shape.collection, &hinted)
            .await
            .assert_served_by(shape.index, max_keys, &what);
    }
}

fn message_filter(base: &MessageFilter, variant: Variant) -> MessageFilter {
    let mut f = base.clone();
    if let Variant::Range = variant {
        let (from, until) = range();
        f.from = Some(from);
        f.until = Some(until);
    }
    f
}

#[tokio::test]
async fn every_message_list_and_search_scans_only_its_index() {
    let app = spawn_app().await;
    let h = History::insert(&app).await;
    let (key, agent) = (Some(oid(&h.a.key_id)), Some(oid(&h.b.agent_id)));
    let (number, status) = (h.numbers[1].clone(), Some(Status::Sent));
    let national = format!("0{}", &number[3..]);
    let agent_q = format!("agent_id={}", h.b.agent_id);
    let to_q = format!("to={national}");
    let shapes = [
        ("", false, None, None, None, list_indexes::ALL, "_id"),
        (
            "",
            true,
            None,
            None,
            None,
            list_indexes::TENANT.name,
            "api_key_id",
        ),
        (
            "status=SENT",
            false,
            status,
            None,
            None,
            list_indexes::STATUS.name,
            "status",
        ),
        (
            &agent_q,
            false,
            None,
            agent,
            None,
            list_indexes::AGENT.name,
            "agent_id",
        ),
        (
            "status=sent",
            true,
            status,
            None,
            None,
            list_indexes::TENANT_STATUS.name,
            "api_key_id",
        ),
        (
            &agent_q,
            true,
            None,
            agent,
            None,
            list_indexes::TENANT_AGENT.name,
            "api_key_id",
        ),
        (
            &format!("{agent_q}&status=SENT"),
            false,
            status,
            agent,
            None,
            list_indexes::AGENT_STATUS.name,
            "agent_id",
        ),
        (
            &format!("{agent_q}&status=SENT"),
            true,
            status,
            agent,
            None,
            list_indexes::TENANT_AGENT_STATUS.name,
            "api_key_id",
        ),
        (
            &to_q,
            false,
            None,
            None,
            Some(&number),
            list_indexes::TO.name,
            "to",
        ),
        (
            &to_q,
            true,
            None,
            None,
            Some(&number),
            list_indexes::TO.name,
            "to",
        ),
        (
            &format!("{to_q}&status=SENT&{agent_q}"),
            false,
            status,
            agent,
            Some(&number),
            list_indexes::TO.name,
            "to",
        ),
        (
            &format!("{to_q}&status=SENT&{agent_q}"),
            true,
            status,
            agent,
            Some(&number),
            list_indexes::TO.name,
            "to",
        ),
    ];
    for (query, tenant, status, agent_id, to, index, first) in shapes {
        let shape = Shape {
            path: format!("/messages/all?{query}"),
            auth: if tenant {
                Auth::ApiKey(&h.a.key)
            } else {
                Auth::Operator
            },
            collection: "sms_messages",
            index,
            first,
            narrow: to.map(|n| doc! {"to": n}),
        };
        let base = MessageFilter {
            tenant: if tenant { key } else { None },
            status,
            agent_id,
            to: to.cloned(),
            ..Default::default()
        };
        for variant in VARIANTS {
            let (params, page) = paging(&app, &shape, variant).await;
            let filter = message_filter(&base, variant);
            let mut path = format!("{}&{params}", shape.path);
            if let Variant::Range = variant {
                let (from, until) = range();
                path = format!("{path}&from={}&until={}", rfc3339(from), rfc3339(until));
            }
            let listed = app.db.messages.list(&filter, &page).await.unwrap();
            if let Variant::First = variant {
                assert_eq!(listed.items.len(), 3, "{path}: the history matches");
            }
            assert_shape(&app, &shape, &path, listed.into()).await;
        }
    }
}

#[tokio::test]
async fn a_requests_messages_are_read_from_the_request_index() {
    let app = spawn_app().await;
    let h = History::insert(&app).await;
    let nums = numbers(8);
    let recipients: Vec<(&str, &str)> = nums.iter().map(|n| (n.as_str(), "1")).collect();
    let res = app.submit(&h.a, &recipients).await;
    let request = res.json::<serde_json::Value>().await.unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let shape = Shape {
        path: format!("/messages?request_id={request}"),
        auth: Auth::ApiKey(&h.a.key),
        collection: "sms_messages",
        index: list_indexes::REQUEST,
        first: "request_id",
        narrow: Some(doc! {"request_id": oid(&request)}),
    };
    let filter = MessageFilter {
        tenant: Some(oid(&h.a.key_id)),
        request_id: Some(oid(&request)),
        ..Default::default()
    };
    for variant in [Variant::First, Variant::Skip, Variant::After] {
        let (params, page) = paging(&app, &shape, variant).await;
        let listed = app.db.messages.list(&filter, &page).await.unwrap();
        assert_eq!((listed.total, listed.total_is_lower_bound), (8, false));
        let path = format!("{}&{params}", shape.path);
        assert_shape(&app, &shape, &path, listed.into()).await;
    }
}

#[tokio::test]
async fn every_audit_list_scans_only_its_index() {
    let app = spawn_app().await;
    audit_history(&app).await;
    let shapes = [
        ("", None, None, audit_indexes::ALL, "_id"),
        (
            "actor=alice",
            Some("alice"),
            None,
            audit_indexes::ACTOR.name,
            "actor",
        ),
        (
            "action=key.revoke",
            None,
            Some("key.revoke"),
            audit_indexes::ACTION.name,
            "action",
        ),
        (
            "actor=bob&action=key.create",
            Some("bob"),
            Some("key.create"),
            audit_indexes::ACTOR_ACTION.name,
            "actor",
        ),
    ];
    for (query, actor, action, index, first) in shapes {
        let shape = Shape {
            path: format!("/admin/audit-logs?{query}"),
            auth: Auth::Operator,
            collection: "audit_logs",
            index,
            first,
            narrow: None,
        };
        for variant in VARIANTS {
            let (params, page) = paging(&app, &shape, variant).await;
            let mut filter = AuditFilter {
                actor: actor.map(str::to_owned),
                action: action.map(str::to_owned),
                ..Default::default()
            };
            let mut path = format!("{}&{params}", shape.path);
            if let Variant::Range = variant {
                let (from, until) = range();
                (filter.from, filter.until) = (Some(from), Some(until));
                path = format!("{path}&from={}&to={}", rfc3339(from), rfc3339(until));
            }
            let listed = app.db.audit_logs.list(&filter, &page).await.unwrap();
            if let Variant::First = variant {
                assert_eq!(listed.items.len(), 3, "{path}: the history matches");
            }
            assert_shape(&app, &shape, &path, listed.into()).await;
        }
    }
}

#[tokio::test]
async fn creating_indexes_replaces_the_old_list_indexes() {
    let app = spawn_app().await;
    let names = |collection: &'static str| {
        let db = app.db.database.clone();
        async move {
            db.collection::<Document>(collection)
                .list_index_names()
                .await
                .unwrap()
        }
    };
    let old = |keys: Document, name: &str| {
        mongodb::IndexModel::builder()
            .keys(keys)
            .options(
                mongodb::options::IndexOptions::builder()
                    .name(name.to_owned())
                    .build(),
            )
            .build()
    };
    let messages = app.db.database.collection::<Document>("sms_messages");
    messages
        .create_indexes([
            old(doc! {"api_key_id": 1, "created_at": -1}, "tenant_created"),
            old(doc! {"status": 1, "created_at": -1}, "status_created"),
            old(doc! {"to": 1, "created_at": -1}, "to_created"),
        ])
        .await
        .unwrap();
    let audit = app.db.database.collection::<Document>("audit_logs");
    audit
        .create_indexes([
            old(doc! {"at": -1}, "at"),
            old(doc! {"actor": 1, "at": -1}, "actor_at"),
        ])
        .await
        .unwrap();

    sms_api::commands::create_indexes(&app.db).await.unwrap();
    let have = names("sms_messages").await;
    for gone in ["tenant_created", "status_created", "to_created"] {
        assert!(!have.iter().any(|n| n == gone), "{gone} in {have:?}");
    }
    for index in [
        list_indexes::TENANT,
        list_indexes::TO,
        list_indexes::AGENT_STATUS,
    ] {
        assert!(have.iter().any(|n| n == index.name), "{have:?}");
    }
    let have = names("audit_logs").await;
    assert!(
        !have.iter().any(|n| n == "at" || n == "actor_at"),
        "{have:?}"
    );
    assert!(have.iter().any(|n| n == audit_indexes::ACTOR_ACTION.name));
}
