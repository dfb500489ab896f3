//! SafeCare SMS benchmark and agent simulator.
//!
//! [`bench::run`] measures one full pass of the send pipeline against a running API, dispatchers
//! and MongoDB — submission, staging, leasing and reporting — next to what the same database does
//! with the plainest possible writes, and checks that no message was lost or handed out twice.
//! [`sim`] holds the simulated phones, used both by the benchmark and by `sms-bench agent-sim`,
//! which runs them against any server for manual and load testing.

pub mod agent_sim;
pub mod bench;
pub mod cleanup;
pub mod cli;
pub mod client;
pub mod progress;
pub mod raw;
pub mod report;
pub mod sim;
pub mod workload;

pub use cli::{BenchArgs, Cli, Command, SimArgs};
pub use report::BenchReport;
