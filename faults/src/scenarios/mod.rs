//! The reliability scenarios, one file each, and the table that names them. Every scenario
//! breaks something, heals it, lets the system settle with phones draining every job, then
//! counts lost and duplicated messages.
//!
//! Adding a scenario is a new file with `pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Tally>`
//! and one row in [`SCENARIOS`]. Numbers are positions in the table, so new rows go at the end.

mod harness;

mod agent_dies_after_sending;
mod api_crash_before_publish;
mod api_replica_killed;
mod dispatcher_crash_before_ack;
mod duplicate_pairs;
mod frozen_agent;
mod hostile_input;
mod long_poll_rabbitmq_restart;
mod mongodb_stop;
mod poison_event;
mod pool_phone_killed;
mod rabbitmq_restart;
mod unroutable_publish;

use std::future::Future;
use std::pin::Pin;

use crate::count::Tally;
use crate::stack::{Bins, Mongo};

/// What every scenario gets.
pub struct Ctx {
    pub bins: Bins,
    pub mongo: Mongo,
    pub logs: std::path::PathBuf,
    /// The RabbitMQ the scenarios use (and stop and start with `rabbitmqctl`).
    pub amqp_url: String,
}

/// A scenario being played.
pub type Play<'a> = Pin<Box<dyn Future<Output = anyhow::Result<Tally>> + 'a>>;

/// One row of the table.
pub struct Scenario {
    /// Kebab-case name, for `--only`.
    pub slug: &'static str,
    /// What it does, as the report prints it.
    pub title: &'static str,
    pub play: fn(&mut Ctx) -> Play<'_>,
}

/// Every scenario, in the order they run; scenario `n` is row `n - 1`.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        slug: "api-crash-before-publish",
        title: "API killed between insert and publish",
        play: |ctx| Box::pin(api_crash_before_publish::run(ctx)),
    },
    Scenario {
        slug: "rabbitmq-restart",
        title: "RabbitMQ restarted during a 10k-message request",
        play: |ctx| Box::pin(rabbitmq_restart::run(ctx)),
    },
    Scenario {
        slug: "dispatcher-crash-before-ack",
        title: "dispatcher killed after staging, before ack",
        play: |ctx| Box::pin(dispatcher_crash_before_ack::run(ctx)),
    },
    Scenario {
        slug: "poison-event",
        title: "poison event",
        play: |ctx| Box::pin(poison_event::run(ctx)),
    },
    Scenario {
        slug: "unroutable-publish",
        title: "unroutable publish",
        play: |ctx| Box::pin(unroutable_publish::run(ctx)),
    },
    Scenario {
        slug: "mongodb-stop",
        title: "MongoDB stopped during dispatch",
        play: |ctx| Box::pin(mongodb_stop::run(ctx)),
    },
    Scenario {
        slug: "frozen-agent",
        title: "agent frozen past its lease while another leases the job",
        play: |ctx| Box::pin(frozen_agent::run(ctx)),
    },
    Scenario {
        slug: "agent-dies-after-sending",
        title: "agent dies after SENDING",
        play: |ctx| Box::pin(agent_dies_after_sending::run(ctx)),
    },
    Scenario {
        slug: "duplicate-pairs",
        title: "same to+text reaching two dispatcher replicas at once",
        play: |ctx| Box::pin(duplicate_pairs::run(ctx)),
    },
    Scenario {
        slug: "hostile-input",
        title: "hostile input",
        play: |ctx| Box::pin(hostile_input::run(ctx)),
    },
    Scenario {
        slug: "long-poll-rabbitmq-restart",
        title: "RabbitMQ restarted while phones long-poll: staging still wakes them",
        play: |ctx| Box::pin(long_poll_rabbitmq_restart::run(ctx)),
    },
    Scenario {
        slug: "pool-phone-killed",
        title: "a pool of three phones, one killed mid-run holding leases",
        play: |ctx| Box::pin(pool_phone_killed::run(ctx)),
    },
    Scenario {
        slug: "api-replica-killed",
        title: "two API replicas and two dispatchers, phones long-polling on both, one replica killed mid-run",
        play: |ctx| Box::pin(api_replica_killed::run(ctx)),
    },
];

/// The row of the scenario named `slug` or numbered `n` (from 1).
pub fn find(name_or_number: &str) -> Option<usize> {
    match name_or_number.parse::<usize>() {
        Ok(n) => (1..=SCENARIOS.len()).contains(&n).then(|| n - 1),
        Err(_) => SCENARIOS.iter().position(|s| s.slug == name_or_number),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_are_found_by_name_or_number() {
        assert_eq!(find("1"), Some(0));
        assert_eq!(find("rabbitmq-restart"), Some(1));
        assert_eq!(find("hostile-input"), Some(9));
        assert_eq!(find("long-poll-rabbitmq-restart"), Some(10));
        assert_eq!(find("pool-phone-killed"), Some(11));
        assert_eq!(find("api-replica-killed"), Some(SCENARIOS.len() - 1));
        assert_eq!(
            find(&SCENARIOS.len().to_string()),
            Some(SCENARIOS.len() - 1)
        );
        let past_the_end = (SCENARIOS.len() + 1).to_string();
        for unknown in [
            "0",
            &past_the_end,
            "-1",
            "",
            "Hostile-Input",
            "hostile input",
        ] {
            assert_eq!(find(unknown), None, "{unknown:?}");
        }
    }

    #[test]
    fn names_are_distinct_kebab_case_slugs() {
        let mut seen = std::collections::HashSet::new();
        for s in SCENARIOS {
            assert!(seen.insert(s.slug), "{} twice", s.slug);
            assert!(
                !s.slug.is_empty()
                    && !s.slug.starts_with('-')
                    && !s.slug.ends_with('-')
                    && s.slug
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{} is not kebab-case",
                s.slug
            );
        }
    }
}
