//! `/reports`: the operators' summary of message traffic (read from the counters) and the CSV
//! export of messages (streamed from `sms_messages`).

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::{Stream, TryStreamExt};
use mongodb::bson::oid::ObjectId;
use mongodb::Cursor;
use serde::{Deserialize, Serialize};
use sms_shared::db::messages::MessageFilter;
use sms_shared::db::reports::{ApiKeyCounts, Counts, ExportRow, StatusCounts, EXPORT_BATCH};
use sms_shared::domain::status::Status;
use sms_shared::time::{self, serde_rfc3339};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Operator;
use crate::error::{ApiError, ApiResult};
use crate::extract::{id_param, time_range, Json, Query, StatusFilter, TimeFilter};
use crate::openapi::{AuthError, Errors};
use crate::state::AppState;

/// The CSV export's columns, in order.
pub const EXPORT_HEADER: [&str; 11] = [
    "message_id",
    "request_id",
    "client_name",
    "agent_id",
    "to",
    "status",
    "segments",
    "created_at",
    "sent_at",
    "delivered_at",
    "last_error",
];

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_summary))
        .routes(routes!(export_csv))
}

/// Filters of both reports; messages are selected by `created_at` in `[from, to)`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ReportQuery {
    /// Messages created from this time on (inclusive): RFC 3339, or `YYYY-MM-DD` for midnight UTC.
    #[param(value_type = Option<TimeFilter>, inline)]
    from: Option<String>,
    /// Messages created before this time (exclusive), later than `from`: RFC 3339, or `YYYY-MM-DD`.
    #[param(value_type = Option<TimeFilter>, inline)]
    to: Option<String>,
    /// Only this agent's messages.
    #[param(pattern = "^([0-9a-fA-F]{24})?$")]
    agent_id: Option<String>,
    /// Only this API key's messages.
    #[param(pattern = "^([0-9a-fA-F]{24})?$")]
    api_key_id: Option<String>,
    /// Only messages in this status (case-insensitive).
    #[param(value_type = Option<StatusFilter>, inline)]
    status: Option<String>,
}

/// The filters in force, echoed back with the summary.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ReportFilters)]
struct Filters {
    #[serde(with = "serde_rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    from: Option<mongodb::bson::DateTime>,
    #[serde(with = "serde_rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    to: Option<mongodb::bson::DateTime>,
    agent_id: Option<String>,
    api_key_id: Option<String>,
    status: Option<Status>,
}

impl ReportQuery {
    /// Validates every filter, naming the first bad field.
    fn resolve(&self) -> ApiResult<(MessageFilter, Filters)> {
        let (from, until) = time_range(self.from.as_deref(), self.to.as_deref())?;
        let agent_id = id_param("agent_id", self.agent_id.as_deref())?;
        let api_key_id = id_param("api_key_id", self.api_key_id.as_deref())?;
        let status = match self.status.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => Some(Status::parse(&s.to_ascii_uppercase()).ok_or_else(|| {
                let known: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
                ApiError::validation("status", format!("must be one of {}", known.join(", ")))
            })?),
        };
        let filter = MessageFilter {
            tenant: api_key_id,
            agent_id,
            status,
            from,
            until,
            ..MessageFilter::default()
        };
        let echo = Filters {
            from,
            to: until,
            agent_id: agent_id.map(|id| id.to_hex()),
            api_key_id: api_key_id.map(|id| id.to_hex()),
            status,
        };
        Ok((filter, echo))
    }
}

/// Message traffic by status, by UTC day, by agent and by API key.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ReportSummary)]
struct SummaryView {
    filters: Filters,
    total: i64,
    by_status: StatusCounts,
    by_day: Vec<DayView>,
    by_agent: Vec<AgentView>,
    by_api_key: Vec<ApiKeyView>,
    segments: i64,
}

/// Messages created on one UTC day.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ReportDay)]
struct DayView {
    /// `YYYY-MM-DD`.
    #[schema(format = Date)]
    day: String,
    total: i64,
    by_status: StatusCounts,
    segments: i64,
}

/// Messages of one agent.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ReportAgent)]
struct AgentView {
    agent_id: String,
    total: i64,
    by_status: StatusCounts,
    segments: i64,
}

/// Messages of one API key.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ReportApiKey)]
struct ApiKeyView {
    /// `null` for messages sent by operators.
    api_key_id: Option<String>,
    client_name: String,
    total: i64,
    by_status: StatusCounts,
    segments: i64,
}

impl From<(String, Counts)> for DayView {
    fn from((day, c): (String, Counts)) -> Self {
        Self {
            day,
            total: c.total,
            by_status: c.by_status,
            segments: c.segments,
        }
    }
}

impl From<(ObjectId, Counts)> for AgentView {
    fn from((agent_id, c): (ObjectId, Counts)) -> Self {
        Self {
            agent_id: agent_id.to_hex(),
            total: c.total,
            by_status: c.by_status,
            segments: c.segments,
        }
    }
}

impl From<ApiKeyCounts> for ApiKeyView {
    fn from(k: ApiKeyCounts) -> Self {
        Self {
            api_key_id: k.api_key_id.map(|id| id.to_hex()),
            client_name: k.client_name,
            total: k.counts.total,
            by_status: k.counts.by_status,
            segments: k.counts.segments,
        }
    }
}

/// Totals of the matching messages by status, by day, by agent and by API key.
///
/// Messages created in `[from, to)` are counted in their current status. The figures come from
/// counters that every status change moves (per UTC day, hour, agent and API key), and from the
/// messages themselves only for the minutes of a `from` or `to` that is not on a whole hour, so
/// the answer costs the same however many messages are stored. `by_agent` lists the messages an
/// agent holds; messages no agent holds yet count in the totals, days and API keys only.
#[utoipa::path(
    get,
    path = "/reports/summary",
    tag = "reports",
    params(ReportQuery),
    security(("operator_jwt" = [])),
    responses(
        (status = 200, description = "The summary", body = SummaryView),
        AuthError,
        Errors,
    )
)]
#[tracing::instrument(skip_all)]
async fn get_summary(
    State(state): State<AppState>,
    _operator: Operator,
    Query(query): Query<ReportQuery>,
) -> ApiResult<Json<SummaryView>> {
    let (filter, filters) = query.resolve()?;
    let summary = state.db.stats.summary(&filter).await?;
    Ok(Json(SummaryView {
        filters,
        total: summary.counts.total,
        by_status: summary.counts.by_status,
        by_day: summary.by_day.into_iter().map(DayView::from).collect(),
        by_agent: summary.by_agent.into_iter().map(AgentView::from).collect(),
        by_api_key: summary
            .by_api_key
            .into_iter()
            .map(ApiKeyView::from)
            .collect(),
        segments: summary.counts.segments,
    }))
}

/// Streams the matching messages as CSV, oldest first. The query runs before the response
/// starts, so a database failure is still a JSON error; rows then flow straight from the
/// cursor, one chunk per batch, so memory stays flat however large the export.
#[utoipa::path(
    get,
    path = "/reports/export.csv",
    tag = "reports",
    params(ReportQuery),
    security(("operator_jwt" = [])),
    responses(
        (status = 200, description = "RFC 4180 CSV, oldest message first, with a header row: \
message_id, request_id, client_name, agent_id, to, status, segments, created_at, sent_at, \
delivered_at, last_error", content_type = "text/csv", body = String,
            headers(("Content-Disposition" = String, description = "`attachment; filename=\"sms-export.csv\"`"))),
        AuthError,
        Errors,
    )
)]
#[tracing::instrument(skip_all)]
async fn export_csv(
    State(state): State<AppState>,
    _operator: Operator,
    Query(query): Query<ReportQuery>,
) -> ApiResult<Response> {
    let (filter, _) = query.resolve()?;
    let cursor = state.db.reports.export(&filter).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"sms-export.csv\"",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(csv_chunks(cursor)),
    )
        .into_response())
}

/// The header row, then the cursor's rows in chunks of [`EXPORT_BATCH`]. A failure halfway
/// aborts the body, so a client never mistakes a cut-off export for a complete one.
fn csv_chunks(
    cursor: Cursor<ExportRow>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures::stream::try_unfold((Some(cursor), true), |(cursor, first)| async move {
        let Some(mut cursor) = cursor else {
            return Ok(None);
        };
        let mut writer = csv_writer();
        if first {
            writer.write_record(EXPORT_HEADER)?;
        }
        let mut rows = 0;
        let mut exhausted = false;
        while rows < EXPORT_BATCH {
            match cursor.try_next().await {
                Ok(Some(row)) => {
                    writer.write_record(csv_record(&row))?;
                    rows += 1;
                }
                Ok(None) => {
                    exhausted = true;
                    break;
                }
                Err(e) => {
                    tracing::error!(error = ?e, "CSV export failed while reading messages");
                    return Err(std::io::Error::other("export interrupted"));
                }
            }
        }
        let chunk = writer.into_inner().map_err(|e| e.into_error())?;
        if chunk.is_empty() {
            return Ok(None);
        }
        let next = (!exhausted).then_some(cursor);
        Ok(Some((Bytes::from(chunk), (next, false))))
    })
}

/// RFC 4180 CSV: CRLF line ends, fields quoted only when they hold a comma, quote or line break.
fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::with_capacity(64 * 1024))
}

/// One export row. Free text written by clients and phones (`client_name`, `last_error`) is
/// passed through [`inert`]; ids, statuses, numbers and times are written as they are, and so
/// is `to` when it is an E.164 number (`+84901234567`, as the service stores every number).
fn csv_record(row: &ExportRow) -> [String; 11] {
    let time = |t: Option<mongodb::bson::DateTime>| t.map(time::rfc3339).unwrap_or_default();
    [
        row.id.to_hex(),
        row.request_id.to_hex(),
        inert(&row.client_name),
        row.agent_id.map(|a| a.to_hex()).unwrap_or_default(),
        if is_e164(&row.to) {
            row.to.clone()
        } else {
            inert(&row.to)
        },
        row.status.clone(),
        row.segments.to_string(),
        time::rfc3339(row.created_at),
        time(row.sent_at),
        time(row.delivered_at),
        inert(row.last_error.as_deref().unwrap_or_default()),
    ]
}

/// A free-text cell that a spreadsheet will not run as a formula: as OWASP recommends for CSV
/// injection, a cell starting with `=`, `+`, `-`, `@`, tab or carriage return (or NUL, as
/// ASVS adds) gets a leading `'`, which spreadsheets take as "this is text".
fn inert(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r', '\0']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

fn is_e164(to: &str) -> bool {
    to.strip_prefix('+')
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}
