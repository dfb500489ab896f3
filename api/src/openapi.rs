//! The OpenAPI document's frame: info, security schemes, tags, and the contract's error
//! responses, kept once under `components.responses` and listed by handlers in sets.
//!
//! The operations themselves come from the handlers' `#[utoipa::path]` annotations through
//! `utoipa_axum::routes!`, which builds the axum routes from the same declaration, so the
//! document cannot drift from the router.

use std::collections::BTreeMap;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::server::ServerBuilder;
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr};
use utoipa::{IntoResponses, Modify};

use crate::error::ErrorBody;

/// The security scheme of operator JWTs (`Authorization: Bearer <jwt>`).
pub const OPERATOR_JWT: &str = "operator_jwt";
/// The security scheme of client API keys (`X-API-Key`).
pub const API_KEY: &str = "api_key";
/// The security scheme of agent tokens (`Authorization: Bearer <agent_token>`).
pub const AGENT_TOKEN: &str = "agent_token";

/// The document's root: everything that is not an operation.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "SafeCare SMS API",
        description = "SMS gateway: clients send templated messages with an API key, operators \
manage keys, templates and agents with a JWT, and Android agents lease and report jobs with \
their agent token.\n\n\
Every route is served both at `/<route>` and at `$BASE_PATH/<route>` (`/sms` by default); \
the paths below are the unprefixed ones.\n\n\
Every error is `{\"detail\", \"code\"}` JSON; validation errors add `errors` keyed by field \
(`messages[3].to`). Times are RFC 3339 UTC.",
    ),
    modifiers(&Frame),
    components(schemas(ErrorBody<'static>)),
    tags(
        (name = "health", description = "Liveness and metrics"),
        (name = "auth", description = "Operator login"),
        (name = "api-keys", description = "Client API keys (operators)"),
        (name = "agents", description = "Agent registration, heartbeats and the operators' view of the fleet"),
        (name = "jobs", description = "The agent protocol: leasing jobs and reporting outcomes"),
        (name = "templates", description = "Message templates (operators)"),
        (name = "requests", description = "Send requests and message reads (API key or operator)"),
        (name = "reports", description = "Traffic summary and CSV export (operators)"),
        (name = "audit-logs", description = "Who changed what (operators)"),
        (name = "docs", description = "This document and its viewer"),
    )
)]
pub struct ApiDoc;

/// Adds the security schemes and the shared error responses.
struct Frame;

impl Modify for Frame {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            OPERATOR_JWT,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An operator's HS256 JWT, from `POST /auth/login` or the external auth service.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            API_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "A client API key made by an operator; scopes `sms:send` and `sms:read`.",
            ))),
        );
        components.add_security_scheme(
            AGENT_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An agent's token, from `POST /agent/register`."))
                    .build(),
            ),
        );
        for error in ERRORS {
            components
                .responses
                .insert(error.name.to_owned(), RefOr::T(error.response()));
        }
    }
}

/// One of the contract's error responses.
struct ErrorResponse {
    /// Its name under `components.responses`.
    name: &'static str,
    status: &'static str,
    description: &'static str,
    /// A response header it always carries: name, description, integer (else string).
    header: Option<(&'static str, &'static str, bool)>,
}

impl ErrorResponse {
    fn response(&self) -> Response {
        let mut response = ResponseBuilder::new()
            .description(self.description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            );
        if let Some((name, description, integer)) = self.header {
            let ty = if integer { Type::Integer } else { Type::String };
            response = response.header(
                name,
                HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(ty))
                    .description(Some(description))
                    .build(),
            );
        }
        response.build()
    }

    fn reference(&self) -> (String, RefOr<Response>) {
        (
            self.status.to_owned(),
            RefOr::Ref(Ref::new(format!("#/components/responses/{}", self.name))),
        )
    }
}

const BAD_REQUEST: ErrorResponse = ErrorResponse {
    name: "BadRequest",
    status: "400",
    description: "Invalid input; `code` says which: `VALIDATION_ERROR` (with `errors` by field), \
`INVALID_JSON` (malformed body, unknown or mistyped field), `UNSUPPORTED_MEDIA_TYPE` (a body \
without `Content-Type: application/json`), `INVALID_QUERY` (mistyped or, where the query is \
closed, unknown query parameter), `DISALLOWED_HOST` (the `Host` is not in `ALLOWED_HOSTS`).",
    header: None,
};
const UNAUTHORIZED: ErrorResponse = ErrorResponse {
    name: "Unauthorized",
    status: "401",
    description: "No credentials, or unknown, revoked, expired or malformed ones (`UNAUTHORIZED`).",
    header: Some(("WWW-Authenticate", "`Bearer`", false)),
};
const REGISTRATION_UNAUTHORIZED: ErrorResponse = ErrorResponse {
    name: "RegistrationUnauthorized",
    status: "401",
    description: "`UNAUTHORIZED`: a registration secret is configured and neither it nor an \
operator JWT was sent (the same answer whether the device is known or not). \
`AGENT_PROOF_REQUIRED`: the device is already registered and the request proves no right to its \
token (its current agent token, the registration secret when one is configured, or an operator \
JWT); nothing was changed.",
    header: Some(("WWW-Authenticate", "`Bearer`", false)),
};
const FORBIDDEN: ErrorResponse = ErrorResponse {
    name: "Forbidden",
    status: "403",
    description: "The API key lacks the scope this operation needs (`FORBIDDEN`).",
    header: None,
};
const NOT_FOUND: ErrorResponse = ErrorResponse {
    name: "NotFound",
    status: "404",
    description: "No such object, or not the caller's to see (`NOT_FOUND`); a malformed id is not found either.",
    header: None,
};
const CONFLICT: ErrorResponse = ErrorResponse {
    name: "Conflict",
    status: "409",
    description: "The change conflicts with the current state (`TEMPLATE_NAME_TAKEN`, \
`TEMPLATE_IN_USE`, `ROTATION_CONFLICT`: the agent's token changed while the request was handled, \
nothing was changed).",
    header: None,
};
const REQUEST_TIMEOUT: ErrorResponse = ErrorResponse {
    name: "RequestTimeout",
    status: "408",
    description: "The body did not arrive within `HTTP_BODY_TIMEOUT_SECONDS` (`REQUEST_TIMEOUT`); \
nothing was stored. The connection is closed.",
    header: None,
};
const PAYLOAD_TOO_LARGE: ErrorResponse = ErrorResponse {
    name: "PayloadTooLarge",
    status: "413",
    description: "The body is larger than `MAX_BODY_BYTES` (`PAYLOAD_TOO_LARGE`); a declared \
`Content-Length` above it is refused before the body is read. The connection is closed.",
    header: None,
};
const TOO_MANY_REQUESTS: ErrorResponse = ErrorResponse {
    name: "TooManyRequests",
    status: "429",
    description:
        "The API key's daily quota would be exceeded (`QUOTA_EXCEEDED`); nothing was stored.",
    header: Some((
        "Retry-After",
        "Seconds until the quota resets (midnight UTC).",
        true,
    )),
};
const LOGIN_THROTTLED: ErrorResponse = ErrorResponse {
    name: "LoginThrottled",
    status: "429",
    description: "Too many failed logins for this username or from this address in the window, \
or too many logins being checked at once (`LOGIN_THROTTLED`); the password was not checked.",
    header: Some((
        "Retry-After",
        "Seconds until a login may be tried again.",
        true,
    )),
};
const INTERNAL_ERROR: ErrorResponse = ErrorResponse {
    name: "InternalError",
    status: "500",
    description: "An unexpected failure (`INTERNAL_ERROR`); the cause is logged, never shown.",
    header: None,
};
const SERVICE_UNAVAILABLE: ErrorResponse = ErrorResponse {
    name: "ServiceUnavailable",
    status: "503",
    description: "A dependency (the database) is down (`SERVICE_UNAVAILABLE`); try again later.",
    header: None,
};

/// Every error response, as registered under `components.responses`.
const ERRORS: [&ErrorResponse; 12] = [
    &BAD_REQUEST,
    &UNAUTHORIZED,
    &REGISTRATION_UNAUTHORIZED,
    &FORBIDDEN,
    &NOT_FOUND,
    &REQUEST_TIMEOUT,
    &CONFLICT,
    &PAYLOAD_TOO_LARGE,
    &TOO_MANY_REQUESTS,
    &LOGIN_THROTTLED,
    &INTERNAL_ERROR,
    &SERVICE_UNAVAILABLE,
];

/// Declares a set of error responses that handlers list in `#[utoipa::path(responses(...))]`.
macro_rules! response_set {
    ($($(#[$doc:meta])* $set:ident => [$($error:ident),+];)+) => {$(
        $(#[$doc])*
        pub struct $set;

        impl IntoResponses for $set {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                [$($error.reference()),+].into_iter().collect()
            }
        }
    )+};
}

response_set! {
    /// What any route that uses the database may answer: 400, 500, 503.
    Errors => [BAD_REQUEST, INTERNAL_ERROR, SERVICE_UNAVAILABLE];
    /// What a route that uses no dependency may answer: 400 (`DISALLOWED_HOST`), 500.
    StaticErrors => [BAD_REQUEST, INTERNAL_ERROR];
    /// 500 alone, for the health check (which no host check or input can refuse).
    InternalError => [INTERNAL_ERROR];
    /// 401 of an authenticated route.
    AuthError => [UNAUTHORIZED];
    /// 401 of `POST /agent/register`: no secret, or no proof for a known device.
    RegistrationAuthError => [REGISTRATION_UNAUTHORIZED];
    /// 429 of `POST /auth/login`.
    LoginThrottleError => [LOGIN_THROTTLED];
    /// 403 of a route whose API keys need a scope.
    ScopeError => [FORBIDDEN];
    /// 404 of a route with an id in its path.
    NotFoundError => [NOT_FOUND];
    /// 409 of a write that can conflict.
    ConflictError => [CONFLICT];
    /// 408 and 413 of a route that reads a JSON body.
    BodyErrors => [REQUEST_TIMEOUT, PAYLOAD_TOO_LARGE];
    /// 429 of a route that spends quota.
    QuotaError => [TOO_MANY_REQUESTS];
}

/// The document as served at `path_prefix/openapi.json`: the servers list names that prefix
/// first (relative, so it works behind any host), then the other way in.
pub fn with_servers(mut openapi: OpenApi, base_path: &str, under_base: bool) -> OpenApi {
    let root = ServerBuilder::new()
        .url("/")
        .description(Some(
            "Unprefixed, as behind the proxy that strips BASE_PATH",
        ))
        .build();
    let mut servers = vec![root];
    if !base_path.is_empty() {
        let based = ServerBuilder::new()
            .url(base_path)
            .description(Some("Under BASE_PATH, as local clients call it"))
            .build();
        if under_base {
            servers.insert(0, based);
        } else {
            servers.push(based);
        }
    }
    openapi.servers = Some(servers);
    openapi
}
