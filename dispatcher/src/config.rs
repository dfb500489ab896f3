//! The dispatcher's configuration: MongoDB, RabbitMQ, the anti-dup window and its own knobs.

use std::net::SocketAddr;

use sms_shared::config::{
    socket_addr, AmqpConfig, ConfigError, Env, LogFormat, MongoConfig, RulesConfig,
};

#[derive(Debug, Clone)]
pub struct Config {
    pub mongo: MongoConfig,
    pub amqp: AmqpConfig,
    pub rules: RulesConfig,
    /// Where `/metrics` and `/health` are served (`DISPATCHER_METRICS_ADDR`).
    pub metrics_addr: SocketAddr,
    /// Bulk payloads held unacknowledged at once, and bulk events staged per batch
    /// (`DISPATCHER_PREFETCH`).
    pub prefetch: u16,
    pub log_format: LogFormat,
}

impl Config {
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            mongo: MongoConfig::from_env(env)?,
            amqp: AmqpConfig::from_env(env)?,
            rules: RulesConfig::from_env(env)?,
            metrics_addr: socket_addr(env, "DISPATCHER_METRICS_ADDR", "0.0.0.0:9100")?,
            prefetch: env.ranged("DISPATCHER_PREFETCH", 64, 1, 5000)?,
            log_format: LogFormat::from_env(env)?,
        })
    }
}
