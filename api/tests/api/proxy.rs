//! Proxy headers are trusted only as far as the proxy: with `USE_X_FORWARDED_HOST` the
//! client address is the `X-Forwarded-For` entry the proxy appended (the last one), and the
//! host is read as Django reads it, so a malformed one gets 400 `DISALLOWED_HOST`.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

/// Creates an API key as the operator with `headers`; returns the `ip` its audit entry holds.
async fn audited_ip(app: &TestApp, headers: &[(&str, &str)]) -> Value {
    let mut req = app
        .client
        .post(app.url("/sms/admin/api-keys"))
        .bearer_auth(&app.operator_token)
        .json(&json!({"client_name": "SafeShop", "scopes": ["sms:send"]}));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let id = res.json::<Value>().await.unwrap()["id"].clone();
    let page: Value = app
        .get(
            "/sms/admin/audit-logs?action=api_key.create",
            Auth::Operator,
        )
        .await
        .json()
        .await
        .unwrap();
    let entry = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["target_id"] == id)
        .expect("an audit entry for the key")
        .clone();
    entry["ip"].clone()
}

#[tokio::test]
async fn the_audit_log_records_the_address_the_proxy_appended() {
    let app = spawn_app_with(&[("USE_X_FORWARDED_HOST", "true")]).await;
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("X-Forwarded-For", "203.0.113.7")], "203.0.113.7"),
        // The client wrote the first entries; the proxy appended the last.
        (
            &[("X-Forwarded-For", "6.6.6.6, 10.0.0.1,203.0.113.7")],
            "203.0.113.7",
        ),
        // The proxy may add its own header line after the client's.
        (
            &[
                ("X-Forwarded-For", "6.6.6.6"),
                ("X-Forwarded-For", "198.51.100.9"),
            ],
            "198.51.100.9",
        ),
        (
            &[("X-Forwarded-For", "6.6.6.6, 2001:DB8::7")],
            "2001:db8::7",
        ),
        // Not an address: the connection's peer instead.
        (&[("X-Forwarded-For", "203.0.113.7, admin")], "127.0.0.1"),
        (&[("X-Forwarded-For", "203.0.113.7,")], "127.0.0.1"),
        (&[], "127.0.0.1"),
    ];
    for (headers, ip) in cases {
        assert_eq!(audited_ip(&app, headers).await, *ip, "{headers:?}");
    }
}

#[tokio::test]
async fn without_trust_the_forwarded_address_is_ignored() {
    let app = spawn_app().await;
    let ip = audited_ip(&app, &[("X-Forwarded-For", "203.0.113.7")]).await;
    assert_eq!(ip, "127.0.0.1");
}

/// `GET /sms/templates` as the operator with these headers.
async fn status_with(app: &TestApp, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = app
        .client
        .get(app.url("/sms/templates"))
        .bearer_auth(&app.operator_token);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn a_host_whose_port_is_not_a_number_is_disallowed() {
    let app = spawn_app().await;
    for host in [
        "localhost:abc",
        "localhost:",
        "localhost:80:80",
        "local_host",
    ] {
        let res = status_with(&app, &[("Host", host)]).await;
        assert_error(res, StatusCode::BAD_REQUEST, "DISALLOWED_HOST").await;
    }
    for host in ["localhost", "localhost:8000", "LOCALHOST:1", "localhost."] {
        let res = status_with(&app, &[("Host", host)]).await;
        assert_eq!(res.status(), StatusCode::OK, "{host}");
    }
}

#[tokio::test]
async fn ipv6_hosts_are_matched_in_brackets() {
    let app = spawn_app_with(&[("ALLOWED_HOSTS", "[::1],[2001:db8::1]")]).await;
    for host in ["[::1]", "[::1]:8000", "[2001:DB8::1]:443"] {
        let res = status_with(&app, &[("Host", host)]).await;
        assert_eq!(res.status(), StatusCode::OK, "{host}");
    }
    for host in ["[::2]", "::1", "[::1]:x", "[::1"] {
        let res = status_with(&app, &[("Host", host)]).await;
        assert_error(res, StatusCode::BAD_REQUEST, "DISALLOWED_HOST").await;
    }
}

#[tokio::test]
async fn a_trusted_forwarded_host_is_read_whole_as_django_reads_it() {
    let app = spawn_app_with(&[
        ("USE_X_FORWARDED_HOST", "1"),
        ("ALLOWED_HOSTS", "api.safecare.vn"),
    ])
    .await;
    let ok = status_with(&app, &[("X-Forwarded-Host", "api.safecare.vn:443")]).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let refused: &[&[(&str, &str)]] = &[
        // Not the forwarded host: the proxy's header wins over Host.
        &[
            ("Host", "api.safecare.vn"),
            ("X-Forwarded-Host", "evil.com"),
        ],
        &[("X-Forwarded-Host", "api.safecare.vn:abc")],
        // A list is not a host, whichever end is allowed.
        &[("X-Forwarded-Host", "api.safecare.vn, evil.com")],
        &[("X-Forwarded-Host", "evil.com, api.safecare.vn")],
        &[
            ("X-Forwarded-Host", "api.safecare.vn"),
            ("X-Forwarded-Host", "api.safecare.vn"),
        ],
    ];
    for headers in refused {
        let res = status_with(&app, headers).await;
        assert_error(res, StatusCode::BAD_REQUEST, "DISALLOWED_HOST").await;
    }
}

#[tokio::test]
async fn an_untrusted_forwarded_host_is_ignored() {
    let app = spawn_app().await;
    let res = status_with(
        &app,
        &[("Host", "localhost"), ("X-Forwarded-Host", "evil.com")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
}
