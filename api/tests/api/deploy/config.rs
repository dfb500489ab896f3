//! Every configuration variable the service reads has a line in `.env.example` and a row in
//! README.md's configuration tables.

use std::collections::BTreeSet;

use super::{env_example, repo_file};

/// Every variable the configuration code reads (`api/src/config.rs`, `shared/src/config.rs`,
/// `dispatcher/src/config.rs`), plus `RUST_LOG`, read by the log filter. Each must have a line
/// in `.env.example` and a row in README.md's configuration tables.
const CONFIG_VARS: &[&str] = &[
    // api/src/config.rs
    "APP_NAME",
    "APP_ENV",
    "BASE_PATH",
    "DJANGO_SECRET_KEY",
    "DJANGO_DEBUG",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "SECURE_PROXY_SSL_HEADER",
    "USE_X_FORWARDED_HOST",
    "HTTP_ADDR",
    "MAX_BODY_BYTES",
    "HTTP_HEADER_TIMEOUT_SECONDS",
    "HTTP_BODY_TIMEOUT_SECONDS",
    "SEED_ADMIN",
    "SEED_ADMIN_USERNAME",
    "SEED_ADMIN_PASSWORD",
    "AGENT_REGISTRATION_SECRET",
    "OUTBOX_SWEEP_AFTER_MS",
    "RECONCILE_INTERVAL_MS",
    "LONG_POLL_RECHECK_SECONDS",
    // api/src/login_guard.rs
    "LOGIN_MAX_FAILURES_PER_USER",
    "LOGIN_MAX_FAILURES_PER_ADDRESS",
    "LOGIN_THROTTLE_WINDOW_SECONDS",
    // shared/src/config.rs
    "MONGO_URI",
    "MONGO_DB",
    "MESSAGE_RETENTION_DAYS",
    "AMQP_URL",
    "AMQP_PREFIX",
    "FAST_LANE_PRIORITY",
    "JWT_SECRET",
    "JWT_ACCESS_MINUTES",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "LEASE_SECONDS",
    "AGENT_RATE_LIMIT_PER_MIN",
    "APIKEY_RATE_LIMIT_PER_DAY_DEFAULT",
    "DEFAULT_COUNTRY_PREFIX",
    "BLOCK_INTERNATIONAL",
    "ANTI_DUP_MINUTES",
    "MAX_RECIPIENTS_PER_REQUEST",
    "MAX_TEXT_LENGTH",
    "SENDING_TIMEOUT_SECONDS",
    "MAX_SEND_ATTEMPTS",
    "AGENT_STALE_SECONDS",
    "LOG_FORMAT",
    // dispatcher/src/config.rs
    "DISPATCHER_METRICS_ADDR",
    "DISPATCHER_PREFETCH",
    // shared/src/telemetry.rs (EnvFilter)
    "RUST_LOG",
];

/// Variable names in the first column of README.md's tables (`| `NAME` | ... |`; a cell may
/// name several, as in `` `JWT_ISSUER`, `JWT_AUDIENCE` ``).
fn readme_table_vars() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in repo_file("README.md").lines() {
        let Some(first_cell) = line
            .trim()
            .strip_prefix('|')
            .and_then(|l| l.split('|').next())
        else {
            continue;
        };
        for (i, part) in first_cell.split('`').enumerate() {
            if i % 2 == 1 && !part.is_empty() {
                out.insert(part.to_owned());
            }
        }
    }
    out
}

#[test]
fn every_configuration_variable_is_in_env_example_and_readme() {
    let defined = env_example();
    let documented = readme_table_vars();
    let missing_env: Vec<&str> = CONFIG_VARS
        .iter()
        .copied()
        .filter(|v| !defined.contains_key(*v))
        .collect();
    let missing_readme: Vec<&str> = CONFIG_VARS
        .iter()
        .copied()
        .filter(|v| !documented.contains(*v))
        .collect();
    assert!(missing_env.is_empty(), ".env.example lacks {missing_env:?}");
    assert!(
        missing_readme.is_empty(),
        "README.md's configuration tables lack {missing_readme:?}"
    );
}
