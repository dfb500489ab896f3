//! JSON and query extractors whose rejections are [`ApiError`]s in the contract's shape,
//! plus path ids and paging parameters.

use axum::extract::FromRequest;
use axum::response::{IntoResponse, Response};
use mongodb::bson::oid::ObjectId;
use serde::{Deserialize, Serialize};
use sms_shared::db::paging::{Listing, PageRequest, TOTAL_LOOKAHEAD};

use crate::error::ApiError;

/// `axum::Json` with contract-shaped rejections (malformed JSON, unknown fields, wrong types).
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Query` with contract-shaped rejections.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// A field of a partial update that may be absent (`None`: unchanged), `null` (`Some(None)`:
/// cleared) or a value (`Some(Some(v))`); use with `#[serde(default, deserialize_with = "nullable")]`.
pub fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Parses an id from a path; anything malformed is simply not found.
pub fn object_id(raw: &str) -> Result<ObjectId, ApiError> {
    ObjectId::parse_str(raw).map_err(|_| ApiError::NotFound)
}

/// Default and maximum page sizes of every list.
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// `limit`, `skip` and `after` of list endpoints.
#[derive(Debug, Clone, Deserialize)]
pub struct Paging {
    pub limit: Option<i64>,
    pub skip: Option<u64>,
    pub after: Option<String>,
}

impl Paging {
    /// `limit` within 1..=500 (default 50); a `skip` beyond 1,000,000 is refused; `after` is
    /// an id (empty counts as absent).
    pub fn resolve(self) -> Result<PageRequest, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if limit < 1 {
            return Err(ApiError::validation("limit", "must be at least 1"));
        }
        let skip = self.skip.unwrap_or(0);
        if skip > 1_000_000 {
            return Err(ApiError::validation("skip", "must be at most 1000000"));
        }
        Ok(PageRequest {
            limit: limit.min(MAX_LIMIT) as u64,
            skip,
            after: id_param("after", self.after.as_deref())?,
            total_lookahead: TOTAL_LOOKAHEAD,
        })
    }
}

/// A page of results as every list returns it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// How many match, over all pages; at least that many when `total_is_lower_bound`.
    pub total: u64,
    /// Counting stopped 1,000 matches past this page (`skip + limit + 1000`): `total` is a
    /// lower bound. `false` when `total` is exact.
    pub total_is_lower_bound: bool,
    /// The page size in force (the default or the capped request).
    pub limit: i64,
    pub skip: u64,
    /// Pass as `after` for the next page; `null` when this page is not full (the last one).
    #[schema(pattern = "^[0-9a-f]{24}$", required = true)]
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// The answer of a list, its items shown as `T`.
    pub fn of<U>(listing: Listing<U>, page: &PageRequest) -> Self
    where
        T: From<U>,
    {
        Self {
            items: listing.items.into_iter().map(T::from).collect(),
            total: listing.total,
            total_is_lower_bound: listing.total_is_lower_bound,
            limit: page.limit as i64,
            skip: page.skip,
            next: listing.next.map(|id| id.to_hex()),
        }
    }
}

/// A time in a query (`from`, `to`): RFC 3339, or `YYYY-MM-DD` for midnight UTC that day.
/// An empty value counts as absent; anything else is a 400 naming `field`.
pub fn time_param(
    field: &str,
    raw: Option<&str>,
) -> Result<Option<mongodb::bson::DateTime>, ApiError> {
    let Some(raw) = raw.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let parsed = chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.timestamp_millis())
        .or_else(|e| {
            // An unencoded `+` of an offset arrives as a space.
            match raw.rsplit_once(' ') {
                Some((head, offset)) if head.contains('T') => {
                    chrono::DateTime::parse_from_rfc3339(&format!("{head}+{offset}"))
                        .map(|t| t.timestamp_millis())
                }
                _ => Err(e),
            }
        })
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d").map(|d| {
                d.and_time(chrono::NaiveTime::MIN)
                    .and_utc()
                    .timestamp_millis()
            })
        });
    match parsed {
        Ok(millis) => Ok(Some(mongodb::bson::DateTime::from_millis(millis))),
        Err(_) => Err(ApiError::validation(
            field,
            "must be an RFC 3339 time (2026-11-25T08:00:00Z) or a date (2026-11-25)",
        )),
    }
}

/// `from` (inclusive) and `to` (exclusive) of a query; `to` must come after `from`.
pub fn time_range(
    from: Option<&str>,
    to: Option<&str>,
) -> Result<
    (
        Option<mongodb::bson::DateTime>,
        Option<mongodb::bson::DateTime>,
    ),
    ApiError,
> {
    let from = time_param("from", from)?;
    let to = time_param("to", to)?;
    if let (Some(f), Some(t)) = (from, to) {
        if t <= f {
            return Err(ApiError::validation(
                "to",
                "must be later than from (to is exclusive)",
            ));
        }
    }
    Ok((from, to))
}

/// The schema of a time filter in a query (see [`time_param`]): an RFC 3339 time or a
/// `YYYY-MM-DD` date; an empty value counts as absent.
pub struct TimeFilter;

impl utoipa::PartialSchema for TimeFilter {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            AnyOfBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type,
        };
        let string = |format| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(format)))
        };
        AnyOfBuilder::new()
            .item(string(KnownFormat::DateTime))
            .item(string(KnownFormat::Date))
            .item(ObjectBuilder::new().schema_type(Type::String).max_length(Some(0)))
            .description(Some(
                "An RFC 3339 time (`2026-11-25T08:00:00Z`) or a date (`2026-11-25`, midnight UTC); empty counts as absent.",
            ))
            .into()
    }
}

/// The schema of a status filter in a query: a status name, in any case; an empty value counts
/// as absent.
pub struct StatusFilter;

impl utoipa::PartialSchema for StatusFilter {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use sms_shared::domain::status::Status;
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let mut names: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
        names.push("");
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(names))
            .description(Some(
                "A status name (case-insensitive); empty counts as absent.",
            ))
            .into()
    }
}

/// An id in a query; empty counts as absent, anything malformed is a 400 naming `field`.
pub fn id_param(field: &str, raw: Option<&str>) -> Result<Option<ObjectId>, ApiError> {
    match raw.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => ObjectId::parse_str(v)
            .map(Some)
            .map_err(|_| ApiError::validation(field, "must be a 24-character hexadecimal id")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(raw: &str) -> i64 {
        time_param("from", Some(raw))
            .unwrap()
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn times_are_rfc3339_or_utc_dates() {
        let midnight = 1_795_564_800_000; // 2026-11-25T00:00:00Z
        assert_eq!(millis("2026-11-25"), midnight);
        assert_eq!(millis("2026-11-25T00:00:00Z"), midnight);
        assert_eq!(millis("2026-11-25T07:00:00+07:00"), midnight);
        assert_eq!(millis("2026-11-25T07:00:00 07:00"), midnight);
        assert_eq!(time_param("from", Some("")).unwrap(), None);
        assert_eq!(time_param("from", None).unwrap(), None);
        for bad in [
            "yesterday",
            "2026-13-01",
            "2026-11-25T07:00:00",
            "1732500000",
        ] {
            let err = time_param("to", Some(bad)).unwrap_err();
            assert!(
                matches!(&err, ApiError::Validation { errors, .. } if errors.contains_key("to")),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn to_must_follow_from() {
        assert!(time_range(Some("2026-11-25"), Some("2026-11-26")).is_ok());
        let err = time_range(Some("2026-11-25"), Some("2026-11-25")).unwrap_err();
        assert!(matches!(&err, ApiError::Validation { errors, .. } if errors.contains_key("to")));
    }

    #[test]
    fn query_ids_are_validated() {
        assert_eq!(id_param("agent_id", Some(" ")).unwrap(), None);
        assert!(id_param("agent_id", Some("0123456789abcdef01234567"))
            .unwrap()
            .is_some());
        let err = id_param("agent_id", Some("nope")).unwrap_err();
        assert!(
            matches!(&err, ApiError::Validation { errors, .. } if errors.contains_key("agent_id"))
        );
    }
}
