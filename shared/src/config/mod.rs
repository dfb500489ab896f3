//! Typed configuration read once from the environment at start-up.
//!
//! Every variable of the service we replace keeps its name and meaning; the additions are listed in
//! `.env.example`. A missing or malformed value is a [`ConfigError`] whose one-line message names the
//! variable, so an operator sees exactly what to fix.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

mod secret_url;

pub use secret_url::SecretUrl;

/// A configuration problem, naming the variable at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration error: {var}: {problem}")]
pub struct ConfigError {
    pub var: String,
    pub problem: String,
}

impl ConfigError {
    fn new(var: &str, problem: impl fmt::Display) -> Self {
        Self {
            var: var.to_owned(),
            problem: problem.to_string(),
        }
    }
}

/// Looks a variable up by name.
type Lookup<'a> = Box<dyn Fn(&str) -> Option<String> + Send + Sync + 'a>;

/// Where variables come from: the process environment in production, a map in tests.
pub struct Env<'a> {
    lookup: Lookup<'a>,
}

impl Env<'static> {
    /// The process environment.
    pub fn process() -> Self {
        Self::from_fn(|name| std::env::var(name).ok())
    }
}

impl<'a> Env<'a> {
    pub fn from_fn(lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'a) -> Self {
        Self {
            lookup: Box::new(lookup),
        }
    }

    /// The raw value; an empty string counts as unset.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
    }

    pub fn string(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or_else(|| default.to_owned())
    }

    pub fn required(&self, name: &str) -> Result<String, ConfigError> {
        self.get(name)
            .ok_or_else(|| ConfigError::new(name, "is required but not set"))
    }

    pub fn parse<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|e| ConfigError::new(name, format!("cannot parse {raw:?}: {e}"))),
        }
    }

    /// A number that must lie in `min..=max`.
    pub fn ranged<T>(&self, name: &str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
        T::Err: fmt::Display,
    {
        let value = self.parse(name, default)?;
        if value < min || value > max {
            return Err(ConfigError::new(
                name,
                format!("{value} is outside {min}..={max}"),
            ));
        }
        Ok(value)
    }

    /// Booleans as Django settings spell them: 1/0, true/false, yes/no, on/off.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => match raw.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(ConfigError::new(
                    name,
                    format!("{raw:?} is not a boolean (use 1/0 or true/false)"),
                )),
            },
        }
    }

    pub fn list(&self, name: &str, default: &str) -> Vec<String> {
        self.string(name, default)
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// MongoDB connection, and how long it keeps message history.
#[derive(Debug, Clone)]
pub struct MongoConfig {
    pub uri: SecretUrl,
    pub db: String,
    /// `MESSAGE_RETENTION_DAYS`: settled messages older than this are removed by the database's
    /// TTL index (`sms-api create-indexes` manages it); `None` keeps them forever.
    pub message_retention: Option<Duration>,
    /// `DB_BULK_WRITES`: bulk writes one process makes at once to `sms_messages` and to
    /// `sms_jobs` (each); 0 for no limit. Fast-lane writes never wait for one.
    pub bulk_writes: usize,
}

impl MongoConfig {
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let uri = env.string("MONGO_URI", "mongodb://127.0.0.1:27017");
        if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
            return Err(ConfigError::new(
                "MONGO_URI",
                "must start with mongodb:// or mongodb+srv://",
            ));
        }
        let db = env.string("MONGO_DB", "db_sms");
        if db.contains(['/', '\\', '.', ' ', '"', '$']) {
            return Err(ConfigError::new("MONGO_DB", "is not a valid database name"));
        }
        let message_retention = match env.get("MESSAGE_RETENTION_DAYS") {
            None => None,
            Some(_) => {
                let days: u64 = env.ranged("MESSAGE_RETENTION_DAYS", 1, 1, 36_500)?;
                Some(Duration::from_secs(days * 86_400))
            }
        };
        Ok(Self {
            uri: SecretUrl::new(uri),
            db,
            message_retention,
            bulk_writes: env.ranged("DB_BULK_WRITES", 3, 0, 1_000)?,
        })
    }
}

/// RabbitMQ connection, naming and lanes.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    pub url: SecretUrl,
    /// Prefix of every exchange and queue name.
    pub prefix: String,
    /// `FAST_LANE_PRIORITY`: messages whose `priority_weight` is at least this (0 to 100) are
    /// published to the fast lane's queue, which dispatchers consume ahead of the bulk one.
    pub fast_lane_priority: i32,
}

impl AmqpConfig {
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let url = env.string("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            return Err(ConfigError::new(
                "AMQP_URL",
                "must start with amqp:// or amqps://",
            ));
        }
        let prefix = env.string("AMQP_PREFIX", "sms");
        if !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(ConfigError::new(
                "AMQP_PREFIX",
                "may hold only letters, digits, '-', '_' and '.'",
            ));
        }
        Ok(Self {
            url: SecretUrl::new(url),
            prefix,
            fast_lane_priority: env.ranged("FAST_LANE_PRIORITY", 80, 0, 100)?,
        })
    }
}

/// Operator JWT settings.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub secret: SecretString,
    pub access_minutes: i64,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl JwtConfig {
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let secret = env.required("JWT_SECRET")?;
        Ok(Self {
            secret: SecretString::from(secret),
            access_minutes: env.ranged("JWT_ACCESS_MINUTES", 240, 1, 60 * 24 * 30)?,
            issuer: env.get("JWT_ISSUER"),
            audience: env.get("JWT_AUDIENCE"),
        })
    }
}

/// Business rules shared by the API and the dispatcher.
#[derive(Debug, Clone)]
pub struct RulesConfig {
    pub lease_seconds: i64,
    pub agent_rate_limit_per_min: u32,
    pub apikey_rate_limit_per_day_default: i64,
    /// Country calling code including `+`, e.g. `+84`.
    pub default_country_prefix: String,
    pub block_international: bool,
    /// Anti-duplicate window; fractional minutes are accepted (`0.05` is three seconds).
    pub anti_dup_window: Duration,
    pub max_recipients_per_request: usize,
    pub max_text_length: usize,
    /// How long a message may stay in `SENDING` before it is failed with `SENDING_TIMEOUT`.
    pub sending_timeout: Duration,
    /// `MAX_SEND_ATTEMPTS`: leases a pool message may have before a retryable failure is final.
    pub max_send_attempts: i32,
    /// `AGENT_STALE_SECONDS`: an agent that has not polled (or reported) for this long has its
    /// `ASSIGNED` pool messages given back to the pool before their leases end.
    pub agent_stale: Duration,
}

impl RulesConfig {
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let prefix = env.string("DEFAULT_COUNTRY_PREFIX", "+84");
        let digits = prefix.strip_prefix('+').unwrap_or(&prefix);
        if digits.is_empty() || digits.len() > 3 || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(ConfigError::new(
                "DEFAULT_COUNTRY_PREFIX",
                format!("{prefix:?} is not a country calling code such as +84"),
            ));
        }
        let anti_dup_minutes: f64 = env.parse("ANTI_DUP_MINUTES", 3.0)?;
        if !(0.0..=24.0 * 60.0).contains(&anti_dup_minutes) {
            return Err(ConfigError::new(
                "ANTI_DUP_MINUTES",
                "must be between 0 and 1440",
            ));
        }
        Ok(Self {
            lease_seconds: env.ranged("LEASE_SECONDS", 300, 1, 86_400)?,
            agent_rate_limit_per_min: env.ranged("AGENT_RATE_LIMIT_PER_MIN", 10, 1, 1_000_000)?,
            apikey_rate_limit_per_day_default: env.ranged(
                "APIKEY_RATE_LIMIT_PER_DAY_DEFAULT",
                20_000,
                1,
                1_000_000_000,
            )?,
            default_country_prefix: format!("+{digits}"),
            block_international: env.flag("BLOCK_INTERNATIONAL", true)?,
            anti_dup_window: Duration::from_secs_f64(anti_dup_minutes * 60.0),
            max_recipients_per_request: env.ranged(
                "MAX_RECIPIENTS_PER_REQUEST",
                5000,
                1,
                100_000,
            )?,
            max_text_length: env.ranged("MAX_TEXT_LENGTH", 1600, 1, 100_000)?,
            sending_timeout: Duration::from_secs(env.ranged(
                "SENDING_TIMEOUT_SECONDS",
                3600,
                1,
                30 * 86_400,
            )?),
            max_send_attempts: env.ranged("MAX_SEND_ATTEMPTS", 3, 1, 100)?,
            agent_stale: Duration::from_secs(env.ranged("AGENT_STALE_SECONDS", 60, 2, 86_400)?),
        })
    }

    /// The country calling code as a number, e.g. 84.
    pub fn default_country_code(&self) -> u16 {
        self.default_country_prefix[1..].parse().unwrap_or(84)
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        match env
            .string("LOG_FORMAT", "text")
            .to_ascii_lowercase()
            .as_str()
        {
            "text" | "pretty" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(ConfigError::new(
                "LOG_FORMAT",
                format!("{other:?} is neither text nor json"),
            )),
        }
    }
}

/// Parses `host:port` listen addresses.
pub fn socket_addr(env: &Env<'_>, name: &str, default: &str) -> Result<SocketAddr, ConfigError> {
    env.parse(name, default.parse().expect("valid default address"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Env<'static> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_fn(move |k| map.get(k).cloned())
    }

    #[test]
    fn defaults_follow_the_seed() {
        let rules = RulesConfig::from_env(&env(&[])).unwrap();
        assert_eq!(rules.lease_seconds, 300);
        assert_eq!(rules.agent_rate_limit_per_min, 10);
        assert_eq!(rules.default_country_prefix, "+84");
        assert!(rules.block_international);
        assert_eq!(rules.anti_dup_window, Duration::from_secs(180));
        assert_eq!(rules.max_recipients_per_request, 5000);
        assert_eq!(rules.max_send_attempts, 3);
        assert_eq!(rules.agent_stale, Duration::from_secs(60));
    }

    #[test]
    fn malformed_numbers_name_the_variable() {
        let err = RulesConfig::from_env(&env(&[("LEASE_SECONDS", "soon")])).unwrap_err();
        assert_eq!(err.var, "LEASE_SECONDS");
        assert!(err
            .to_string()
            .starts_with("configuration error: LEASE_SECONDS:"));
    }

    #[test]
    fn out_of_range_values_are_rejected() {
        let err = RulesConfig::from_env(&env(&[("MAX_RECIPIENTS_PER_REQUEST", "0")])).unwrap_err();
        assert_eq!(err.var, "MAX_RECIPIENTS_PER_REQUEST");
    }

    #[test]
    fn flags_accept_django_spellings() {
        let e = env(&[("A", "true"), ("B", "0"), ("C", "maybe")]);
        assert!(e.flag("A", false).unwrap());
        assert!(!e.flag("B", true).unwrap());
        assert_eq!(e.flag("C", true).unwrap_err().var, "C");
    }

    #[test]
    fn jwt_secret_is_required() {
        let err = JwtConfig::from_env(&env(&[])).unwrap_err();
        assert_eq!(err.var, "JWT_SECRET");
    }

    #[test]
    fn fractional_anti_dup_minutes() {
        let rules = RulesConfig::from_env(&env(&[("ANTI_DUP_MINUTES", "0.05")])).unwrap();
        assert_eq!(rules.anti_dup_window, Duration::from_secs(3));
    }

    #[test]
    fn message_retention_is_off_unless_set() {
        let mongo = MongoConfig::from_env(&env(&[])).unwrap();
        assert_eq!(mongo.message_retention, None);
        let mongo = MongoConfig::from_env(&env(&[("MESSAGE_RETENTION_DAYS", "90")])).unwrap();
        assert_eq!(
            mongo.message_retention,
            Some(Duration::from_secs(90 * 86_400))
        );
        for bad in ["0", "forever", "-1"] {
            let err = MongoConfig::from_env(&env(&[("MESSAGE_RETENTION_DAYS", bad)])).unwrap_err();
            assert_eq!(err.var, "MESSAGE_RETENTION_DAYS");
        }
    }

    #[test]
    fn bulk_writes_take_three_turns_unless_set() {
        assert_eq!(MongoConfig::from_env(&env(&[])).unwrap().bulk_writes, 3);
        let off = MongoConfig::from_env(&env(&[("DB_BULK_WRITES", "0")])).unwrap();
        assert_eq!(off.bulk_writes, 0);
        let err = MongoConfig::from_env(&env(&[("DB_BULK_WRITES", "many")])).unwrap_err();
        assert_eq!(err.var, "DB_BULK_WRITES");
    }

    #[test]
    fn connection_strings_show_their_host_but_not_their_password() {
        let e = env(&[
            (
                "MONGO_URI",
                "mongodb://sms_user:p@ss:w/rd@mongo-1:27017,mongo-2/db_sms?authSource=db_sms&tlsCertificateKeyFilePassword=k3y",
            ),
            ("AMQP_URL", "amqps://sms:rabbit-pw@rabbit.internal:5671/sms"),
        ]);
        let mongo = format!("{:?}", MongoConfig::from_env(&e).unwrap());
        let amqp = format!("{:?}", AmqpConfig::from_env(&e).unwrap());
        for secret in ["p@ss:w/rd", "ss:w", "k3y", "rabbit-pw"] {
            assert!(
                !mongo.contains(secret) && !amqp.contains(secret),
                "{mongo} {amqp}"
            );
        }
        assert!(mongo.contains(
            "mongodb://sms_user:***@mongo-1:27017,mongo-2/db_sms?authSource=db_sms&tlsCertificateKeyFilePassword=***"
        ), "{mongo}");
        assert!(
            amqp.contains("amqps://sms:***@rabbit.internal:5671/sms"),
            "{amqp}"
        );
        let open = SecretUrl::new("mongodb://127.0.0.1:27017/?directConnection=true");
        assert_eq!(open.redacted(), open.expose_secret(), "nothing to hide");
        assert_eq!(SecretUrl::new("not a url").redacted(), "***");
    }

    #[test]
    fn the_fast_lane_starts_at_80_unless_told_otherwise() {
        assert_eq!(
            AmqpConfig::from_env(&env(&[])).unwrap().fast_lane_priority,
            80
        );
        let set = AmqpConfig::from_env(&env(&[("FAST_LANE_PRIORITY", "100")])).unwrap();
        assert_eq!(set.fast_lane_priority, 100);
        for bad in ["101", "-1", "high"] {
            let err = AmqpConfig::from_env(&env(&[("FAST_LANE_PRIORITY", bad)])).unwrap_err();
            assert_eq!(err.var, "FAST_LANE_PRIORITY");
        }
    }

    #[test]
    fn bad_country_prefix() {
        let err = RulesConfig::from_env(&env(&[("DEFAULT_COUNTRY_PREFIX", "VN")])).unwrap_err();
        assert_eq!(err.var, "DEFAULT_COUNTRY_PREFIX");
    }
}
