//! Building the application and serving it until told to stop.
//!
//! Connections are served by hyper's HTTP/1.1 server directly rather than `axum::serve`, which
//! cannot bound how long a client takes to send its headers: a client trickling bytes would
//! otherwise hold a connection (and a task) for ever.

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit};
use axum::http::{header, HeaderName, HeaderValue, Method, Request};
use axum::Extension;
use axum::{middleware, Router};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use sms_shared::amqp::Publisher;
use sms_shared::auth::JwtKeys;
use sms_shared::db::Db;
use sms_shared::metrics::Metrics;
use sms_shared::telemetry::untrusted;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::config::{Config, HttpConfig};
use crate::state::{App, AppState};
use crate::{auth, error, middleware as mw, routes};

/// Connects to MongoDB and prepares the RabbitMQ publisher (connected on first use).
pub async fn build_state(config: Config) -> anyhow::Result<AppState> {
    let metrics = Metrics::new();
    let db = Db::connect(&config.mongo, "sms-api")
        .await?
        .gate_bulk_writes(
            config.mongo.bulk_writes,
            config.amqp.fast_lane_priority,
            &metrics.bulk_write_waits,
        );
    Ok(AppState::new(App {
        publisher: Publisher::new(config.amqp.clone(), metrics.clone()),
        jwt: JwtKeys::new(&config.jwt),
        db,
        metrics,
        tasks: TaskTracker::new(),
        client_writes: Default::default(),
        hash_gate: crate::login_guard::HashGate::per_core(),
        wake: Default::default(),
        backlog: Default::default(),
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
        .layer(middleware::from_fn_with_state(state.clone(), mw::read_body))
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
/// say to trust them; the path is the client's, so it is escaped and bounded.
fn request_span(state: &AppState) -> impl Fn(&Request<Body>) -> tracing::Span + Clone {
    let ssl_header = state.config.http.proxy_ssl_header.clone();
    let trust_forwarded = state.config.http.trust_forwarded;
    move |req| {
        let https = ssl_header.as_ref().is_some_and(|(name, value)| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case(value))
        });
        let client = auth::client_address(req.headers(), req.extensions(), trust_forwarded)
            .unwrap_or_default();
        tracing::info_span!(
            "http",
            method = %req.method(),
            path = %untrusted(req.uri().path()),
            scheme = if https { "https" } else { "http" },
            client = %client,
        )
    }
}

/// Serves on `listener` until `shutdown` completes, then drains in-flight work. Long polls are
/// answered at once when it completes, so that they do not hold the stop.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let background = crate::background::spawn(state.clone(), stop.clone());
    let app = router(state.clone());
    let hub = state.wake.clone();
    let shutdown = async move {
        shutdown.await;
        hub.close();
    };
    tracing::info!(addr = %listener.local_addr()?, base_path = %state.config.http.base_path, "sms-api listening");
    serve(listener, app, &state.config.http, shutdown).await;
    stop.cancel();
    state.tasks.close();
    state.tasks.wait().await;
    background.close();
    background.wait().await;
    tracing::info!("sms-api stopped");
    Ok(())
}

/// Accepts HTTP/1.1 connections (kept alive between requests) until `shutdown` completes, then
/// lets every connection finish the request it is serving and waits for them to close.
///
/// A client gets `HTTP_HEADER_TIMEOUT_SECONDS` to send each request's headers (an idle
/// keep-alive connection is closed after as long); bodies are timed by [`mw::read_body`].
/// Neither limits how long a response takes. Handlers see the peer as
/// `ConnectInfo<SocketAddr>`.
async fn serve(
    listener: TcpListener,
    app: Router,
    http: &HttpConfig,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(http.header_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request)
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Waits after a failed `accept`: at once for a connection the client already gave up, a
/// second when the process is out of file descriptors or memory, so as not to spin.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %error, "accepting a connection failed; retrying in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Completes on SIGTERM or Ctrl-C.
pub use sms_shared::signal::shutdown_signal;
