//! One clock for the whole service: UTC wall time of this process, in BSON and RFC 3339 forms.
//!
//! Leases, anti-dup windows and quotas all compare times written by this clock, so every replica
//! must run with a synchronised clock (NTP), as any production host does.

use chrono::{DateTime, SecondsFormat, Utc};
use mongodb::bson;

pub fn now() -> DateTime<Utc> {
    Utc::now()
}

pub fn to_bson(t: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(t.timestamp_millis())
}

pub fn bson_now() -> bson::DateTime {
    to_bson(now())
}

pub fn from_bson(t: bson::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or_default()
}

/// RFC 3339 UTC with millisecond precision, as every API field is rendered.
pub fn rfc3339(t: bson::DateTime) -> String {
    from_bson(t).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Serde helpers rendering BSON dates as RFC 3339 strings in API responses.
pub mod serde_rfc3339 {
    use mongodb::bson;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(t: &bson::DateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*t))
    }

    pub mod option {
        use mongodb::bson;
        use serde::Serializer;

        pub fn serialize<S: Serializer>(
            t: &Option<bson::DateTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&super::super::rfc3339(*t)),
                None => s.serialize_none(),
            }
        }
    }
}
