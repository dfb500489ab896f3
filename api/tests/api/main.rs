//! Integration tests: the real API on 127.0.0.1:0 against a real MongoDB-compatible server
//! (`TEST_MONGO_URI`) and the machine's RabbitMQ (`TEST_AMQP_URL`). Run through `scripts/test.sh`.

mod agent_jobs;
mod agent_status_reports;
mod agents;
mod api_keys;
mod auth;
mod deploy;
mod health;
mod helpers;
mod list_paging;
mod list_plans;
mod messages;
mod openapi;
mod outbox;
mod reconciler;
mod reports;
mod requests;
mod staging;
mod templates;
