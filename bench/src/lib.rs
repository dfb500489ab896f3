//! SafeCare SMS benchmark and agent simulator.
//!
//! [`bench::run`] measures one full pass of the send pipeline against a running API, dispatchers
//! and MongoDB — submission, staging, leasing and reporting — next to what the same database does
//! with the plainest possible writes, and checks that no message was lost or handed out twice.
//! The API client and the simulated phones come from `sms-testkit`; `sms-bench agent-sim` runs
//! those phones against any server for manual and load testing.

pub mod agent_sim;
pub mod bench;
pub mod cli;
pub mod crew;
pub mod db_top;
pub mod otp;
pub mod otp_steps;
pub mod pipeline;
pub mod progress;
pub mod raw;
pub mod raw_pipeline;
pub mod report;
pub mod scale;
pub mod verify;
pub mod workload;

pub use cli::{BenchArgs, Cli, Command, SimArgs};
pub use report::BenchReport;
