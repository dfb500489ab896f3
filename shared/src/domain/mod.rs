//! Pure rules of the gateway: message statuses, phone numbers, templates, segments, tokens.
//! No I/O here; each rule is unit-tested beside its code.

pub mod phone;
pub mod segments;
pub mod status;
pub mod template;
pub mod token;
