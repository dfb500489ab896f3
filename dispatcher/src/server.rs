//! The dispatcher's small HTTP side: `/metrics` for Prometheus and `/health` for orchestrators.

use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use sms_shared::config::ConfigError;
use sms_shared::db::Db;
use sms_shared::metrics::Metrics;
use tokio::net::TcpListener;

/// The variable naming where the HTTP side listens.
const ADDR_VAR: &str = "DISPATCHER_METRICS_ADDR";

/// Binds `DISPATCHER_METRICS_ADDR`. An address that cannot be had is a configuration error
/// naming the variable: typically a second dispatcher on the same host with the same address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ConfigError> {
    TcpListener::bind(addr).await.map_err(|e| ConfigError {
        var: ADDR_VAR.to_owned(),
        problem: match e.kind() {
            ErrorKind::AddrInUse => format!(
                "{addr} is already in use (another sms-dispatcher on this host? give each \
                 replica its own address, or 127.0.0.1:0 for any free port)"
            ),
            _ => format!("cannot listen on {addr}: {e}"),
        },
    })
}

#[derive(Clone)]
struct Side {
    db: Db,
    metrics: Metrics,
}

/// Serves `/metrics` and `/health` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    db: Db,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(get_metrics))
        .route("/health", get(get_health))
        .with_state(Side { db, metrics });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

async fn get_metrics(State(side): State<Side>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        side.metrics.render(),
    )
}

async fn get_health(State(side): State<Side>) -> impl IntoResponse {
    match tokio::time::timeout(std::time::Duration::from_secs(3), side.db.ping()).await {
        Ok(Ok(())) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ok", "mongo": "ok"})),
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(
                serde_json::json!({"status": "unavailable", "mongo": "down", "detail": "mongo unavailable", "code": "SERVICE_UNAVAILABLE"}),
            ),
        ),
    }
}
