//! Liveness of the service and its dependencies, and the Prometheus scrape endpoint.

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(get_health))
        .route("/metrics", get(get_metrics))
}

/// 200 when MongoDB answers a ping and RabbitMQ accepts a connection; 503 naming what is down.
async fn get_health(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    let limit = Duration::from_secs(3);
    let (mongo, amqp) = tokio::join!(
        tokio::time::timeout(limit, state.db.ping()),
        tokio::time::timeout(limit, state.publisher.check()),
    );
    let mongo_ok = matches!(mongo, Ok(Ok(())));
    let amqp_ok = matches!(amqp, Ok(Ok(())));
    let word = |ok: bool| if ok { "ok" } else { "down" };
    if mongo_ok && amqp_ok {
        return axum::Json(json!({"status": "ok", "mongo": "ok", "amqp": "ok"})).into_response();
    }
    let down: Vec<&str> = [("mongo", mongo_ok), ("amqp", amqp_ok)]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| name)
        .collect();
    tracing::warn!(down = ?down, "health check failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({
            "status": "unavailable",
            "mongo": word(mongo_ok),
            "amqp": word(amqp_ok),
            "detail": format!("{} unavailable", down.join(" and ")),
            "code": "SERVICE_UNAVAILABLE",
        })),
    )
        .into_response()
}

async fn get_metrics(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
