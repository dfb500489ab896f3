//! SafeCare SMS HTTP API: validates and persists send requests, publishes message events,
//! and serves operators, API clients and Android agents.

pub mod app;
pub mod auth;
pub mod background;
pub mod commands;
pub mod config;
pub mod error;
pub mod extract;
mod fault;
pub mod login_guard;
pub mod middleware;
pub mod openapi;
pub mod routes;
pub mod state;
pub mod wake;
