//! Everything both SafeCare SMS binaries need: configuration, the domain rules of messages,
//! MongoDB documents and queries, the RabbitMQ topology and event, auth primitives, metrics and
//! telemetry. Nothing here knows about HTTP.

pub mod amqp;
pub mod auth;
pub mod config;
pub mod db;
pub mod domain;
pub mod metrics;
pub mod signal;
pub mod telemetry;
pub mod time;
