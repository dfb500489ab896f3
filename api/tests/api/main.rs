//! Integration tests: the real API on 127.0.0.1:0 against a real MongoDB-compatible server
//! (`TEST_MONGO_URI`) and the machine's RabbitMQ (`TEST_AMQP_URL`). Run through `scripts/test.sh`.

mod agent_jobs;
mod agent_register;
mod agent_status_reports;
mod agents;
mod api_keys;
mod auth;
mod counters;
mod csv_export;
mod deploy;
mod errors;
mod health;
mod helpers;
mod http_limits;
mod jobs;
mod jobs_recovery;
mod list_paging;
mod list_plans;
mod login;
mod messages;
mod openapi;
mod outbox;
mod pool_leasing;
mod pool_routing;
mod proxy;
mod quota;
mod reconciler;
mod recount_stats;
mod reports;
mod request_integrity;
mod requests;
mod retention;
mod staging;
mod summary_counters;
mod templates;
