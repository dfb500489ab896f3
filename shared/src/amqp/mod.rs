//! RabbitMQ: how both binaries connect, the topology they declare (two message lanes and the
//! wake fanout), the events, and the API's pooled confirming publisher.

pub mod events;
mod publisher;
mod topology;
mod wake;

use std::time::Duration;

use anyhow::Context;
use lapin::{Connection, ConnectionProperties};

use crate::config::AmqpConfig;

pub use events::{MessageEvent, WakeEvent};
pub use publisher::{MessageQueues, Publisher, QueueStats};
pub use topology::{Lane, Topology, DELIVERY_LIMIT, FAST_ROUTING_KEY, MESSAGE_ROUTING_KEY};
pub use wake::{WakeSubscription, WAKE_TTL_MS};

/// The longest a connection attempt may take before it counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Heartbeat interval asked for when `AMQP_URL` names none, so a dead peer is noticed.
const HEARTBEAT_SECS: u16 = 15;

/// `AMQP_URL` with a heartbeat unless it sets one itself.
fn url_with_heartbeat(config: &AmqpConfig) -> String {
    let mut url = config.url.expose_secret().to_owned();
    if !url.contains("heartbeat=") {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("heartbeat={HEARTBEAT_SECS}"));
    }
    url
}

/// Connection properties naming the connection `name` in the broker's views.
fn properties(name: &str) -> ConnectionProperties {
    ConnectionProperties::default().with_connection_name(name.into())
}

/// Opens a connection with heartbeats on, within [`CONNECT_TIMEOUT`].
pub async fn connect(config: &AmqpConfig, name: &str) -> anyhow::Result<Connection> {
    let url = url_with_heartbeat(config);
    tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&url, properties(name)))
        .await
        .context("connecting to RabbitMQ timed out")?
        .context("connecting to RabbitMQ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> AmqpConfig {
        AmqpConfig {
            url: crate::config::SecretUrl::new(url),
            prefix: "sms".into(),
            fast_lane_priority: 80,
        }
    }

    #[test]
    fn heartbeats_are_on_unless_the_url_sets_them() {
        assert_eq!(
            url_with_heartbeat(&config("amqp://h:5672/%2f")),
            "amqp://h:5672/%2f?heartbeat=15"
        );
        assert_eq!(
            url_with_heartbeat(&config("amqp://h/%2f?frame_max=8192")),
            "amqp://h/%2f?frame_max=8192&heartbeat=15"
        );
        assert_eq!(
            url_with_heartbeat(&config("amqp://h/%2f?heartbeat=5")),
            "amqp://h/%2f?heartbeat=5"
        );
    }
}
