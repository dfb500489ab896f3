//! Prometheus metrics of the gateway, each process owning its own registry.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the service exports. Both binaries build one; each fills the part it runs.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub events_published: IntCounter,
    pub events_confirmed: IntCounter,
    pub events_returned: IntCounter,
    pub outbox_republished: IntCounter,
    pub messages_staged: IntCounter,
    pub messages_canceled_duplicate: IntCounter,
    pub events_dead_lettered: IntCounter,
    pub events_requeued: IntCounter,
    pub stage_latency: Histogram,
    /// Events a dispatcher staged together, per batch and lane.
    pub stage_batch_events: HistogramVec,
    pub leases: IntCounter,
    pub lease_expiries: IntCounter,
    pub reports: IntCounterVec,
    pub reports_rejected: IntCounterVec,
    pub agent_in_flight: IntGaugeVec,
    pub sending_timeouts: IntCounter,
    /// Pool messages given back to their pool by a retryable failure.
    pub pool_requeues: IntCounter,
    /// Pool messages given back to their pool because their holder went silent.
    pub stale_releases: IntCounter,
    /// Events ready in a queue, as the broker last reported.
    pub queue_messages: IntGaugeVec,
    /// Consumers of a queue (for the message queues: running dispatchers), as last reported.
    pub queue_consumers: IntGaugeVec,
    /// Wake events a dispatcher sent after staging.
    pub wakes_sent: IntCounter,
    /// Wake events an API process received.
    pub wakes_received: IntCounter,
    /// 1 while an API process consumes wakes (its queue is bound), else 0.
    pub wake_subscribed: IntGauge,
    /// Agents' long polls waiting for a job now.
    pub long_polls: IntGauge,
    /// How long bulk writes waited for their turn (`DB_BULK_WRITES`), by collection.
    pub bulk_write_waits: HistogramVec,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("sms".into()), None).expect("valid registry");
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by matched route",
            ),
            &["method", "route"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(http_duration.clone()))
            .expect("unique metric");
        let stage_latency = Histogram::with_opts(
            HistogramOpts::new(
                "stage_latency_seconds",
                "Time from a message being accepted by the API to being staged by a dispatcher",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(stage_latency.clone()))
            .expect("unique metric");
        let stage_batch_events = HistogramVec::new(
            HistogramOpts::new(
                "stage_batch_events",
                "Message events a dispatcher staged together, per batch, by lane",
            )
            .buckets(vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0]),
            &["lane"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(stage_batch_events.clone()))
            .expect("unique metric");
        let bulk_write_waits = HistogramVec::new(
            HistogramOpts::new(
                "db_bulk_write_wait_seconds",
                "Time a bulk write waited in this process for its turn (DB_BULK_WRITES), by collection",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["collection"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(bulk_write_waits.clone()))
            .expect("unique metric");
        let agent_in_flight = gauge_vec(
            &registry,
            "agent_in_flight_messages",
            "Messages an agent holds in ASSIGNED or SENDING",
            &["agent_id"],
        );
        Self {
            http_requests: counter_vec(
                &registry,
                "http_requests_total",
                "HTTP requests by method, matched route and status",
                &["method", "route", "status"],
            ),
            http_duration,
            events_published: counter(
                &registry,
                "events_published_total",
                "Message events sent to RabbitMQ",
            ),
            events_confirmed: counter(
                &registry,
                "events_confirmed_total",
                "Message events acknowledged by RabbitMQ",
            ),
            events_returned: counter(
                &registry,
                "events_returned_total",
                "Message events returned unroutable by RabbitMQ",
            ),
            outbox_republished: counter(
                &registry,
                "outbox_republished_total",
                "Messages republished by the outbox sweeper",
            ),
            messages_staged: counter(
                &registry,
                "messages_staged_total",
                "Messages staged for agents",
            ),
            messages_canceled_duplicate: counter(
                &registry,
                "messages_canceled_duplicate_total",
                "Messages canceled as DUPLICATE_RECENT",
            ),
            events_dead_lettered: counter(
                &registry,
                "events_dead_lettered_total",
                "Poison events rejected to the dead-letter queue",
            ),
            events_requeued: counter(
                &registry,
                "events_requeued_total",
                "Events requeued after a database error",
            ),
            stage_latency,
            stage_batch_events,
            leases: counter(&registry, "leases_total", "Messages leased to agents"),
            lease_expiries: counter(
                &registry,
                "lease_expiries_total",
                "Messages leased again after their lease expired",
            ),
            reports: counter_vec(
                &registry,
                "reports_total",
                "Accepted agent reports by status",
                &["status"],
            ),
            reports_rejected: counter_vec(
                &registry,
                "reports_rejected_total",
                "Rejected agent report items by reason",
                &["reason"],
            ),
            agent_in_flight,
            sending_timeouts: counter(
                &registry,
                "sending_timeouts_total",
                "Messages failed with SENDING_TIMEOUT",
            ),
            pool_requeues: counter(
                &registry,
                "pool_requeues_total",
                "Pool messages sent back to their pool by a retryable failure",
            ),
            stale_releases: counter(
                &registry,
                "stale_releases_total",
                "Pool messages released from agents that stopped polling",
            ),
            queue_messages: gauge_vec(
                &registry,
                "queue_messages",
                "Events ready in a RabbitMQ queue, as last reported by the broker",
                &["queue"],
            ),
            queue_consumers: gauge_vec(
                &registry,
                "queue_consumers",
                "Consumers of a RabbitMQ queue (dispatchers, for the message queue), as last reported by the broker",
                &["queue"],
            ),
            wakes_sent: counter(
                &registry,
                "wakes_sent_total",
                "Wake events sent to the API processes after staging",
            ),
            wakes_received: counter(
                &registry,
                "wakes_received_total",
                "Wake events received from dispatchers",
            ),
            wake_subscribed: gauge(
                &registry,
                "wake_subscribed",
                "1 while this API process consumes wake events, else 0",
            ),
            long_polls: gauge(
                &registry,
                "agent_long_polls",
                "Agents' long polls waiting for a job now",
            ),
            bulk_write_waits,
            registry,
        }
    }

    /// The Prometheus text exposition of this registry.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding never fails");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
