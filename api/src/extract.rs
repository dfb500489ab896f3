//! JSON and query extractors whose rejections are [`ApiError`]s in the contract's shape,
//! plus path ids and paging parameters.

use axum::extract::FromRequest;
use axum::response::{IntoResponse, Response};
use mongodb::bson::oid::ObjectId;
use serde::{Deserialize, Serialize};

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

/// Parses an id from a path; anything malformed is simply not found.
pub fn object_id(raw: &str) -> Result<ObjectId, ApiError> {
    ObjectId::parse_str(raw).map_err(|_| ApiError::NotFound)
}

/// Default and maximum page sizes of every list.
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// `limit` and `skip` of list endpoints.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Paging {
    pub limit: Option<i64>,
    pub skip: Option<u64>,
}

impl Paging {
    /// `limit` within 1..=500 (default 50); a `skip` beyond 1,000,000 is refused.
    pub fn resolve(self) -> Result<(i64, u64), ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if limit < 1 {
            return Err(ApiError::validation("limit", "must be at least 1"));
        }
        let skip = self.skip.unwrap_or(0);
        if skip > 1_000_000 {
            return Err(ApiError::validation("skip", "must be at most 1000000"));
        }
        Ok((limit.min(MAX_LIMIT), skip))
    }
}

/// A page of results as every list returns it.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
    pub limit: i64,
    pub skip: u64,
}
