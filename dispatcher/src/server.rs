//! The dispatcher's small HTTP side: `/metrics` for Prometheus and `/health` for orchestrators.

use std::future::Future;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use sms_shared::db::Db;
use sms_shared::metrics::Metrics;
use tokio::net::TcpListener;

#[derive(Clone)]
struct Side {
    db: Db,
    metrics: Metrics,
}

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
