//! What the project's tools drive SafeCare SMS with, kept in one place so that `sms-bench` and
//! `sms-faults` exercise the service the same way: a typed client of the API endpoints they
//! use ([`client`]), simulated Android phones that lease, "send" and report ([`phone`]) into a
//! shared [`Ledger`] that catches any message handed out twice, generators of valid recipients
//! ([`recipients`]), and removal of what a run leaves behind ([`cleanup`]).

pub mod cleanup;
pub mod client;
pub mod ledger;
pub mod phone;
pub mod recipients;

pub use client::{Api, ApiError};
pub use ledger::{Duplicate, Ledger};
pub use phone::{Behaviour, Phone};
