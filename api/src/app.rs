//! Building the application and running it until told to stop.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::Extension;
use axum::{middleware, Router};
use sms_shared::amqp::Publisher;
use sms_shared::auth::JwtKeys;
use sms_shared::db::Db;
use sms_shared::metrics::Metrics;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::state::{App, AppState};
use crate::{error, middleware as mw, routes};

/// Connects to MongoDB and prepares the RabbitMQ publisher (connected on first use).
pub async fn build_state(config: Config) -> anyhow::Result<AppState> {
    let metrics = Metrics::new();
    let db = Db::connect(&config.mongo, "sms-api").await?;
    Ok(AppState::new(App {
        publisher: Publisher::new(config.amqp.clone(), metrics.clone()),
        jwt: JwtKeys::new(&config.jwt),
        db,
        metrics,
        tasks: TaskTracker::new(),
        client_writes: Default::default(),
        config,
    }))
}

/// The OpenAPI document of every route, unprefixed (without the servers list, which depends
/// on where it is served).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes::router().into_openapi()
}

/// The full router: every route at `/<route>` and `$BASE_PATH/<route>`, with its layers, and
/// the OpenAPI document built from the same routes served at `/openapi.json`.
pub fn router(state: AppState) -> Router {
    let base = state.config.http.base_path.clone();
    let (routes, openapi) = routes::router().split_for_parts();
    let documents =
        routes::docs::Documents::new(openapi, &base).expect("the OpenAPI document serialises");
    let routes = routes.layer(Extension(documents));
    let mut app = Router::new().merge(routes.clone());
    if !base.is_empty() {
        app = app.nest(&base, routes);
    }
    let mut app = app
        .fallback(mw::not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            mw::track_metrics,
        ))
        .layer(middleware::from_fn(mw::json_errors))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            error::show_internal_causes,
        ))
        .layer(DefaultBodyLimit::max(state.config.http.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            mw::check_host,
        ))
        .layer(TraceLayer::new_for_http().make_span_with(request_span(&state)));
    let origins: Vec<HeaderValue> = state
        .config
        .http
        .cors_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if !origins.is_empty() {
        app = app.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([
                    Method::GET,
                    Method::POST,
                    Method::PUT,
                    Method::PATCH,
                    Method::DELETE,
                ])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    HeaderName::from_static("x-api-key"),
                ]),
        );
    }
    app.with_state(state)
}

/// One span per request with method, path, scheme and client address. The scheme and client
/// come from the proxy's headers only when `SECURE_PROXY_SSL_HEADER` / `USE_X_FORWARDED_HOST`
/// say to trust them.
fn request_span(
    state: &AppState,
) -> impl Fn(&axum::http::Request<axum::body::Body>) -> tracing::Span + Clone {
    let ssl_header = state.config.http.proxy_ssl_header.clone();
    let trust_forwarded = state.config.http.trust_forwarded;
    move |req| {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let https = ssl_header.as_ref().is_some_and(|(name, value)| {
            header(name).is_some_and(|v| v.eq_ignore_ascii_case(value))
        });
        let client = trust_forwarded
            .then(|| {
                header("x-forwarded-for")
                    .and_then(|v| v.split(',').next())
                    .map(str::trim)
            })
            .flatten()
            .map(str::to_owned)
            .or_else(|| {
                req.extensions()
                    .get::<axum::extract::ConnectInfo<SocketAddr>>()
                    .map(|c| c.0.ip().to_string())
            })
            .unwrap_or_default();
        tracing::info_span!(
            "http",
            method = %req.method(),
            path = %req.uri().path(),
            scheme = if https { "https" } else { "http" },
            client = %client,
        )
    }
}

/// Serves on `listener` until `shutdown` completes, then drains in-flight work.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let background = crate::background::spawn(state.clone(), stop.clone());
    let app = router(state.clone());
    tracing::info!(addr = %listener.local_addr()?, base_path = %state.config.http.base_path, "sms-api listening");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .context("serving HTTP")?;
    stop.cancel();
    state.tasks.close();
    state.tasks.wait().await;
    background.close();
    background.wait().await;
    tracing::info!("sms-api stopped");
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C.
pub use sms_shared::signal::shutdown_signal;
