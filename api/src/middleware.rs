//! Cross-cutting HTTP layers: the `ALLOWED_HOSTS` check, reading request bodies within
//! `MAX_BODY_BYTES` and `HTTP_BODY_TIMEOUT_SECONDS`, contract-shaped bodies for errors produced
//! outside handlers (404, 405, 408, 413), and per-route metrics.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use sms_shared::telemetry::untrusted;

use crate::error::{error_response, ApiError};
use crate::state::AppState;

/// Rejects requests whose host is not in `ALLOWED_HOSTS` with 400 (health checks excepted, so
/// container and proxy probes by IP keep working).
///
/// The host is read as Django's `get_host` reads it: the whole `X-Forwarded-Host` when
/// `USE_X_FORWARDED_HOST` is on and the proxy sent one, else `Host`. A list of hosts (a
/// value with commas, or the header twice) is not a host, so it is refused too.
pub async fn check_host(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let http = &state.config.http;
    let path = request.uri().path();
    let is_health =
        path == "/health" || path.strip_prefix(http.base_path.as_str()) == Some("/health");
    if !is_health {
        let headers = request.headers();
        let host = if http.trust_forwarded && headers.contains_key("x-forwarded-host") {
            only_value(headers, "x-forwarded-host")
        } else if headers.contains_key(header::HOST) {
            only_value(headers, header::HOST.as_str())
        } else {
            request.uri().authority().map(|a| a.as_str())
        };
        if !host.is_some_and(|h| http.host_allowed(h)) {
            tracing::warn!(
                host = %untrusted(host.unwrap_or("")),
                "request for a host outside ALLOWED_HOSTS"
            );
            return error_response(
                StatusCode::BAD_REQUEST,
                "DISALLOWED_HOST",
                "the Host header is not in ALLOWED_HOSTS",
            );
        }
    }
    next.run(request).await
}

/// The header's value when it is sent exactly once and is text.
fn only_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => value.to_str().ok(),
        _ => None,
    }
}

/// Reads the whole request body before any extractor sees it, within `MAX_BODY_BYTES` and
/// `HTTP_BODY_TIMEOUT_SECONDS` (counted from the end of the headers, however the body is
/// split up). A declared `Content-Length` above the limit gets 413 at once, before a byte of
/// the body is read; a body still arriving at the deadline gets 408. Both answers close the
/// connection, since the rest of the body would otherwise be read as the next request.
///
/// Only reading is timed: the handler then takes as long as it needs (long polls included).
pub async fn read_body(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let http = &state.config.http;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > http.max_body_bytes as u64) {
        return closing(ApiError::PayloadTooLarge.into_response());
    }
    let (parts, body) = request.into_parts();
    let read = collect(body, http.max_body_bytes, declared);
    let bytes = match tokio::time::timeout(http.body_timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(BodyError::TooLarge)) => return closing(ApiError::PayloadTooLarge.into_response()),
        Ok(Err(BodyError::Broken)) => {
            return closing(error_response(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                "the request body could not be read",
            ))
        }
        Err(_) => {
            return closing(error_response(
                StatusCode::REQUEST_TIMEOUT,
                "REQUEST_TIMEOUT",
                BODY_TIMEOUT,
            ))
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

const BODY_TIMEOUT: &str = "the request body did not arrive in time";

enum BodyError {
    TooLarge,
    /// The client broke the framing (bad chunked encoding) or went away.
    Broken,
}

/// The body's bytes, refused as soon as they pass `limit`.
async fn collect(body: Body, limit: usize, declared: Option<u64>) -> Result<Bytes, BodyError> {
    let mut buffer = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| BodyError::Broken)?;
        if buffer.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.into())
}

/// `response` with `Connection: close`.
fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Gives error responses that were not produced by [`ApiError`] the contract's JSON shape.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (code, detail) = match status {
        StatusCode::NOT_FOUND => ("NOT_FOUND", "not found"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("METHOD_NOT_ALLOWED", "method not allowed on this route")
        }
        StatusCode::REQUEST_TIMEOUT => ("REQUEST_TIMEOUT", BODY_TIMEOUT),
        StatusCode::PAYLOAD_TOO_LARGE => ("PAYLOAD_TOO_LARGE", "request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "UNSUPPORTED_MEDIA_TYPE",
            "expected Content-Type: application/json",
        ),
        s if s.is_server_error() => ("INTERNAL_ERROR", "internal error"),
        _ => ("BAD_REQUEST", "bad request"),
    };
    let mut fresh = error_response(status, code, detail);
    if let Some(allow) = response.headers().get(header::ALLOW) {
        fresh.headers_mut().insert(header::ALLOW, allow.clone());
    }
    fresh
}

/// Counts requests and observes latency, labelled by matched route (without `BASE_PATH`).
pub async fn track_metrics(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| {
            let p = p.as_str();
            let base = state.config.http.base_path.as_str();
            match p.strip_prefix(base) {
                Some(rest) if !base.is_empty() && rest.starts_with('/') => rest.to_owned(),
                _ => p.to_owned(),
            }
        })
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    state
        .metrics
        .http_requests
        .with_label_values(&[&method, &route, response.status().as_str()])
        .inc();
    state
        .metrics
        .http_duration
        .with_label_values(&[&method, &route])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The fallback for unknown routes.
pub async fn not_found() -> Response {
    ApiError::NotFound.into_response()
}
