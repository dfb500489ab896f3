//! The OpenAPI document at `/openapi.json` and the page at `/docs`: the document lists exactly
//! the routes the app serves, each with the statuses it really answers.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Auth, TestApp};

/// Every route the API serves (unprefixed), as the route modules declare them.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("POST", "/auth/login"),
    ("GET", "/admin/api-keys"),
    ("POST", "/admin/api-keys"),
    ("DELETE", "/admin/api-keys/{id}"),
    ("PATCH", "/admin/api-keys/{id}"),
    ("GET", "/admin/agent/registration-secret"),
    ("PUT", "/admin/agent/registration-secret"),
    ("GET", "/admin/agents"),
    ("PATCH", "/admin/agents/{id}"),
    ("POST", "/admin/agents/{id}/rotate-token"),
    ("POST", "/agent/register"),
    ("POST", "/agent/heartbeat"),
    ("GET", "/agent/jobs/next"),
    ("POST", "/agent/messages/report"),
    ("GET", "/reports/summary"),
    ("GET", "/reports/export.csv"),
    ("GET", "/admin/audit-logs"),
    ("GET", "/templates"),
    ("POST", "/templates"),
    ("GET", "/templates/{id}"),
    ("PUT", "/templates/{id}"),
    ("DELETE", "/templates/{id}"),
    ("POST", "/templates/{id}/approve"),
    ("POST", "/requests"),
    ("GET", "/requests/{id}"),
    ("GET", "/messages"),
    ("GET", "/messages/all"),
    ("GET", "/messages/{id}"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
];

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn document(app: &TestApp, path: &str) -> Value {
    let res = app.get(path, Auth::None).await;
    assert_eq!(res.status(), StatusCode::OK, "{path}");
    let content_type = res.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    res.json().await.expect("the document is JSON")
}

/// Every `(METHOD, path)` of the document with its operation.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                out.push((method.to_uppercase(), path.clone(), op.clone()));
            }
        }
        for key in item.as_object().unwrap().keys() {
            assert!(
                METHODS.contains(&key.as_str()) || key == "parameters",
                "{path} documents an unexpected method {key}"
            );
        }
    }
    out
}

/// Follows a local `$ref`.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("a local $ref");
            resolve(
                doc,
                doc.pointer(pointer)
                    .unwrap_or_else(|| panic!("{reference} resolves")),
            )
        }
        None => value,
    }
}

fn documents_status(op: &Value, status: &str) -> bool {
    op["responses"].get(status).is_some()
}

#[tokio::test]
async fn the_document_is_openapi_3_at_the_root_and_under_the_base_path() {
    let app = spawn_app().await;
    let root = document(&app, "/openapi.json").await;
    let based = document(&app, "/sms/openapi.json").await;
    for doc in [&root, &based] {
        assert!(
            doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
            "openapi version in {}",
            doc["openapi"]
        );
        assert_eq!(doc["info"]["title"], "SafeCare SMS API");
        assert!(doc["info"]["version"]
            .as_str()
            .is_some_and(|v| !v.is_empty()));
        assert!(doc["paths"].as_object().is_some_and(|p| !p.is_empty()));
    }
    // Each copy names its own location first, so relative requests land on the same routes.
    assert_eq!(root["servers"][0]["url"], "/");
    assert_eq!(based["servers"][0]["url"], "/sms");
    assert_eq!(root["paths"], based["paths"]);
}

#[tokio::test]
async fn the_document_lists_exactly_the_routes_the_app_serves() {
    let app = spawn_app().await;
    let doc = document(&app, "/openapi.json").await;
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect();
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(missing.is_empty(), "served but not documented: {missing:?}");
    assert!(extra.is_empty(), "documented but not served: {extra:?}");
}

/// Calls every documented operation, at the root and under `/sms`, without credentials and
/// with each kind of credential: the route exists (no 404 for the route, no 405), and the
/// status and content type of the answer are documented for it.
#[tokio::test]
async fn every_documented_operation_is_routed_and_answers_as_documented() {
    let app = spawn_app().await;
    let doc = document(&app, "/openapi.json").await;
    let sender = app.sender().await;
    let credentials = [
        ("no credentials", Auth::None),
        ("operator", Auth::Operator),
        ("API key", Auth::ApiKey(&sender.key)),
        ("agent", Auth::Bearer(&sender.agent_token)),
    ];
    let id = mongodb::bson::oid::ObjectId::new().to_hex();
    for (method, path, op) in operations(&doc) {
        let concrete = path.replace("{id}", &id);
        let has_body = op.get("requestBody").is_some();
        for prefix in ["", "/sms"] {
            for (who, auth) in credentials {
                let url = format!("{prefix}{concrete}");
                let res = app
                    .request(
                        Method::from_bytes(method.as_bytes()).unwrap(),
                        &url,
                        auth,
                        has_body.then(|| json!({})),
                    )
                    .await;
                let status = res.status();
                let label = format!("{method} {url} ({who})");
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{label}");
                let documented = resolve(
                    &doc,
                    op["responses"]
                        .get(status.as_str())
                        .unwrap_or_else(|| panic!("{label} answered undocumented {status}")),
                );
                let content_type = res
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .map(|v| v.to_str().unwrap().to_owned());
                if status == StatusCode::UNAUTHORIZED {
                    assert!(
                        res.headers()
                            .contains_key(reqwest::header::WWW_AUTHENTICATE),
                        "{label}: 401 without WWW-Authenticate"
                    );
                }
                match documented.get("content").and_then(Value::as_object) {
                    Some(content) => {
                        let content_type =
                            content_type.unwrap_or_else(|| panic!("{label}: no Content-Type"));
                        assert!(
                            content.keys().any(|k| content_type.starts_with(k.as_str())),
                            "{label}: {content_type} is not among {:?}",
                            content.keys().collect::<Vec<_>>()
                        );
                    }
                    None => assert!(
                        res.bytes().await.unwrap().is_empty(),
                        "{label}: a body where none is documented"
                    ),
                }
                if status == StatusCode::NOT_FOUND {
                    // Only an object can be missing, never the route, and only to a caller
                    // who got past authentication.
                    assert!(path.contains("{id}") || path == "/messages", "{label}: 404");
                    assert!(
                        !matches!(auth, Auth::None),
                        "{label}: 404 before authentication"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn every_operation_documents_its_errors_and_security() {
    let app = spawn_app().await;
    let doc = document(&app, "/openapi.json").await;

    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["operator_jwt"]["type"], "http");
    assert_eq!(schemes["operator_jwt"]["scheme"], "bearer");
    assert_eq!(schemes["operator_jwt"]["bearerFormat"], "JWT");
    assert_eq!(schemes["api_key"]["type"], "apiKey");
    assert_eq!(schemes["api_key"]["in"], "header");
    assert_eq!(schemes["api_key"]["name"], "X-API-Key");
    assert_eq!(schemes["agent_token"]["type"], "http");
    assert_eq!(schemes["agent_token"]["scheme"], "bearer");

    let error = &doc["components"]["schemas"]["ErrorBody"];
    for field in ["detail", "code", "errors"] {
        assert!(
            error["properties"].get(field).is_some(),
            "ErrorBody.{field}"
        );
    }
    assert_eq!(error["required"], json!(["detail", "code"]));

    for (method, path, op) in operations(&doc) {
        let label = format!("{method} {path}");
        assert!(documents_status(&op, "500"), "{label}: 500");
        if path != "/health" {
            assert!(documents_status(&op, "400"), "{label}: 400");
        }
        assert!(
            op["tags"].as_array().is_some_and(|t| !t.is_empty()),
            "{label}: tag"
        );
        let security: Vec<String> = op["security"]
            .as_array()
            .map(|reqs| {
                reqs.iter()
                    .flat_map(|r| r.as_object().unwrap().keys().cloned())
                    .collect()
            })
            .unwrap_or_default();
        for scheme in &security {
            assert!(
                schemes.get(scheme).is_some(),
                "{label}: unknown scheme {scheme}"
            );
        }
        if !security.is_empty() {
            let unauthorized = resolve(&doc, &op["responses"]["401"]);
            assert!(
                unauthorized["headers"].get("WWW-Authenticate").is_some(),
                "{label}: 401 with WWW-Authenticate"
            );
        }
        if path.starts_with("/admin")
            || path.starts_with("/templates")
            || path.starts_with("/reports")
        {
            assert_eq!(security, ["operator_jwt"], "{label}");
        }
        if path.starts_with("/requests") || path.starts_with("/messages") {
            assert_eq!(security, ["api_key", "operator_jwt"], "{label}");
            assert!(documents_status(&op, "403"), "{label}: 403");
        }
        if path.starts_with("/agent/") && path != "/agent/register" {
            assert_eq!(security, ["agent_token"], "{label}");
        }
        if path.contains("{id}") {
            assert!(documents_status(&op, "404"), "{label}: 404");
        }
        if let Some(body) = op.get("requestBody") {
            assert!(documents_status(&op, "413"), "{label}: 413");
            let schema = resolve(&doc, &body["content"]["application/json"]["schema"]);
            assert_eq!(
                schema["additionalProperties"],
                json!(false),
                "{label}: unknown fields are refused"
            );
        }
        if path.starts_with("/templates")
            && matches!(method.as_str(), "POST" | "PUT" | "DELETE")
            && !path.ends_with("/approve")
        {
            assert!(documents_status(&op, "409"), "{label}: 409");
        }
    }
    let send = &doc["paths"]["/requests"]["post"]["responses"];
    assert!(resolve(&doc, &send["429"])["headers"]
        .get("Retry-After")
        .is_some());
    assert!(send.get("202").is_some());
    let export = &doc["paths"]["/reports/export.csv"]["get"]["responses"]["200"]["content"];
    assert!(export.get("text/csv").is_some(), "{export}");
    let metrics = &doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"];
    assert!(metrics.get("text/plain").is_some(), "{metrics}");
}

#[tokio::test]
async fn the_docs_page_is_self_contained() {
    let app = spawn_app().await;
    for path in ["/docs", "/sms/docs"] {
        let res = app.get(path, Auth::None).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let content_type = res.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(content_type.starts_with("text/html"), "{content_type}");
        let html = res.text().await.unwrap();
        assert!(
            html.contains("./openapi.json"),
            "{path} loads the document beside it"
        );
        for scheme in ["http://", "https://", "//cdn"] {
            assert!(
                !html.contains(scheme),
                "{path} refers to another host ({scheme})"
            );
        }
    }
}
