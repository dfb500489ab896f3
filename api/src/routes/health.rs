//! Liveness of the service and its dependencies, and the Prometheus scrape endpoint.

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::openapi::{InternalError, StaticErrors};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_health))
        .routes(routes!(get_metrics))
}

/// Whether the service as a whole can work.
#[derive(Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum ServiceState {
    Ok,
    Unavailable,
}

/// Whether one dependency answers.
#[derive(Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum DependencyState {
    Ok,
    Down,
}

impl DependencyState {
    fn of(ok: bool) -> Self {
        if ok {
            DependencyState::Ok
        } else {
            DependencyState::Down
        }
    }
}

/// The state of the service's dependencies.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"status": "ok", "mongo": "ok", "amqp": "ok", "dispatchers": 2}))]
struct Health {
    status: ServiceState,
    mongo: DependencyState,
    amqp: DependencyState,
    /// Dispatchers consuming the message queues, as RabbitMQ counts them: the smaller of the
    /// consumer counts of the bulk and the fast lane's queue (every dispatcher consumes both).
    /// 0 means accepted messages (of one lane at least) wait and none reaches a phone. Absent
    /// when RabbitMQ cannot be asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    dispatchers: Option<u32>,
    /// Only when unavailable: what is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    /// Only when unavailable: `SERVICE_UNAVAILABLE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    code: Option<&'static str>,
}

/// 200 when MongoDB answers a ping and RabbitMQ accepts a connection; 503 naming what is down.
/// Either way, `dispatchers` counts the dispatchers RabbitMQ reports on both message queues.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    responses(
        (status = 200, description = "Every dependency is up", body = Health),
        (status = 503, description = "A dependency is down; the body names it", body = Health,
            example = json!({"status": "unavailable", "mongo": "ok", "amqp": "down", "detail": "amqp unavailable", "code": "SERVICE_UNAVAILABLE"})),
        InternalError,
    )
)]
async fn get_health(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    let limit = Duration::from_secs(3);
    let (mongo, amqp) = tokio::join!(
        tokio::time::timeout(limit, state.db.ping()),
        tokio::time::timeout(limit, broker(&state)),
    );
    let mongo_ok = matches!(mongo, Ok(Ok(())));
    let (amqp_ok, dispatchers) = amqp.unwrap_or((false, None));
    if mongo_ok && amqp_ok {
        return axum::Json(Health {
            status: ServiceState::Ok,
            mongo: DependencyState::Ok,
            amqp: DependencyState::Ok,
            dispatchers,
            detail: None,
            code: None,
        })
        .into_response();
    }
    let down: Vec<&str> = [("mongo", mongo_ok), ("amqp", amqp_ok)]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| name)
        .collect();
    tracing::warn!(down = ?down, "health check failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(Health {
            status: ServiceState::Unavailable,
            mongo: DependencyState::of(mongo_ok),
            amqp: DependencyState::of(amqp_ok),
            dispatchers,
            detail: Some(format!("{} unavailable", down.join(" and "))),
            code: Some("SERVICE_UNAVAILABLE"),
        }),
    )
        .into_response()
}

/// Whether RabbitMQ answers, and how many dispatchers consume both message queues. A missing
/// queue (deleted by hand) leaves the count unknown without making the broker down.
async fn broker(state: &AppState) -> (bool, Option<u32>) {
    match state.publisher.queue_stats().await {
        Ok(stats) => (true, Some(stats.dispatchers())),
        Err(_) => (state.publisher.check().await.is_ok(), None),
    }
}

/// The Prometheus text exposition of the API's metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        StaticErrors,
    )
)]
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
