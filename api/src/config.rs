//! The API's configuration: the shared parts plus HTTP, proxy and seeding settings.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use sms_shared::config::{
    socket_addr, AmqpConfig, ConfigError, Env, JwtConfig, LogFormat, MongoConfig, RulesConfig,
};

/// Everything `sms-api` reads from the environment, parsed once at start.
#[derive(Debug, Clone)]
pub struct Config {
    pub app_name: String,
    pub app_env: String,
    pub http: HttpConfig,
    pub mongo: MongoConfig,
    pub amqp: AmqpConfig,
    pub jwt: JwtConfig,
    pub rules: RulesConfig,
    pub seed: SeedConfig,
    /// `AGENT_REGISTRATION_SECRET`; the value stored in the database wins over it.
    pub agent_registration_secret: Option<SecretString>,
    /// How old an unpublished message must be before the sweeper republishes it.
    pub outbox_grace: Duration,
    /// How often the reconciler fails timed-out `SENDING` messages and refreshes gauges.
    pub reconcile_interval: Duration,
    /// `LONG_POLL_RECHECK_SECONDS`: how often a waiting long poll looks again without a wake
    /// (a lease that ran out makes a job leasable without one).
    pub long_poll_recheck: Duration,
    pub log_format: LogFormat,
    /// `LOGIN_*`: failed-login limits.
    pub login: crate::login_guard::LoginLimits,
}

/// HTTP serving, host checks and proxy trust.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    /// Route prefix served beside `/`, e.g. `/sms` (empty when disabled).
    pub base_path: String,
    /// `ALLOWED_HOSTS` entries, lower-case.
    pub allowed_hosts: Vec<String>,
    /// `CSRF_TRUSTED_ORIGINS`: origins allowed by CORS.
    pub cors_origins: Vec<String>,
    /// `SECURE_PROXY_SSL_HEADER`: header name and value meaning "the client used https".
    pub proxy_ssl_header: Option<(String, String)>,
    /// `USE_X_FORWARDED_HOST`: trust `X-Forwarded-Host` and `X-Forwarded-For` from the proxy.
    pub trust_forwarded: bool,
    /// `DJANGO_DEBUG`: internal error causes are shown to clients, outside production only.
    pub debug: bool,
    /// `DJANGO_SECRET_KEY`: accepted for compatibility.
    pub secret_key: Option<SecretString>,
    /// `MAX_BODY_BYTES`: a larger body gets 413.
    pub max_body_bytes: usize,
    /// `HTTP_HEADER_TIMEOUT_SECONDS`: how long a client may take to send a request's headers
    /// (also how long an idle keep-alive connection stays open).
    pub header_timeout: Duration,
    /// `HTTP_BODY_TIMEOUT_SECONDS`: how long a client may take to send a request's body.
    pub body_timeout: Duration,
}

/// `SEED_ADMIN*`: the operator account created by `seed-admin`.
#[derive(Debug, Clone)]
pub struct SeedConfig {
    pub enabled: bool,
    pub username: String,
    pub password: Option<SecretString>,
}

impl Config {
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let app_env = env.string("APP_ENV", "development");
        Ok(Self {
            app_name: env.string("APP_NAME", "sms"),
            http: HttpConfig::from_env(env, &app_env)?,
            app_env,
            mongo: MongoConfig::from_env(env)?,
            amqp: AmqpConfig::from_env(env)?,
            jwt: JwtConfig::from_env(env)?,
            rules: RulesConfig::from_env(env)?,
            seed: SeedConfig {
                enabled: env.flag("SEED_ADMIN", false)?,
                username: env.string("SEED_ADMIN_USERNAME", "admin"),
                password: env.get("SEED_ADMIN_PASSWORD").map(SecretString::from),
            },
            agent_registration_secret: env
                .get("AGENT_REGISTRATION_SECRET")
                .filter(|s| !(s.starts_with('<') && s.ends_with('>')))
                .map(SecretString::from),
            outbox_grace: Duration::from_millis(env.ranged(
                "OUTBOX_SWEEP_AFTER_MS",
                3000,
                100,
                600_000,
            )?),
            reconcile_interval: Duration::from_millis(env.ranged(
                "RECONCILE_INTERVAL_MS",
                5000,
                50,
                3_600_000,
            )?),
            long_poll_recheck: Duration::from_secs(env.ranged(
                "LONG_POLL_RECHECK_SECONDS",
                5,
                1,
                30,
            )?),
            log_format: LogFormat::from_env(env)?,
            login: crate::login_guard::LoginLimits::from_env(env)?,
        })
    }
}

impl HttpConfig {
    fn from_env(env: &Env<'_>, app_env: &str) -> Result<Self, ConfigError> {
        let base_path = env.string("BASE_PATH", "/sms");
        let base_path = base_path.trim_end_matches('/').to_owned();
        if !base_path.is_empty()
            && (!base_path.starts_with('/') || base_path.contains(['{', '}', '*', ' ']))
        {
            return Err(ConfigError {
                var: "BASE_PATH".into(),
                problem: format!("{base_path:?} must be a path such as /sms"),
            });
        }
        let proxy_ssl_header = match env.get("SECURE_PROXY_SSL_HEADER") {
            None => None,
            Some(raw) => {
                let (name, value) = raw.split_once(',').ok_or_else(|| ConfigError {
                    var: "SECURE_PROXY_SSL_HEADER".into(),
                    problem: format!(
                        "{raw:?} must be HEADER,VALUE such as HTTP_X_FORWARDED_PROTO,https"
                    ),
                })?;
                let name = name
                    .trim()
                    .trim_start_matches("HTTP_")
                    .replace('_', "-")
                    .to_ascii_lowercase();
                Some((name, value.trim().to_owned()))
            }
        };
        let debug = env.flag("DJANGO_DEBUG", false)?;
        Ok(Self {
            addr: socket_addr(env, "HTTP_ADDR", "0.0.0.0:8000")?,
            base_path,
            allowed_hosts: env
                .list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            cors_origins: env.list("CSRF_TRUSTED_ORIGINS", ""),
            proxy_ssl_header,
            trust_forwarded: env.flag("USE_X_FORWARDED_HOST", false)?,
            debug: debug && app_env != "production",
            secret_key: env.get("DJANGO_SECRET_KEY").map(SecretString::from),
            max_body_bytes: env.ranged(
                "MAX_BODY_BYTES",
                2 * 1024 * 1024,
                1024,
                64 * 1024 * 1024,
            )?,
            header_timeout: seconds(env, "HTTP_HEADER_TIMEOUT_SECONDS", 10.0)?,
            body_timeout: seconds(env, "HTTP_BODY_TIMEOUT_SECONDS", 30.0)?,
        })
    }

    /// Whether `host` (a `Host` or `X-Forwarded-Host` value) names a host in `ALLOWED_HOSTS`,
    /// as Django decides it: a value that is not a host (see [`host_name`]) never is.
    pub fn host_allowed(&self, host: &str) -> bool {
        let Some(name) = host_name(host) else {
            return false;
        };
        self.allowed_hosts.iter().any(|pattern| {
            pattern == "*"
                || *pattern == name
                || pattern
                    .strip_prefix('.')
                    .is_some_and(|domain| name == domain || name.ends_with(&format!(".{domain}")))
        })
    }
}

/// The host part of a `Host` header, lower-cased and without its port or trailing dot, read as
/// Django's `split_domain_port` reads it: a domain name or IPv4 address (letters, digits, `.`
/// and `-`) or an IPv6 address in brackets, then an optional `:` and a port of digits only.
/// Anything else (`localhost:abc`, `a.com, b.com`, a bare IPv6 address) is `None`.
pub fn host_name(host: &str) -> Option<String> {
    let host = host.to_ascii_lowercase();
    let (name, rest) = match host.strip_prefix('[') {
        Some(inner) => {
            let end = inner.find(']')?;
            let (head, tail) = inner[..end].split_once(':')?;
            let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
            let valid = head.bytes().all(hex)
                && !tail.is_empty()
                && tail.bytes().all(|b| hex(b) || b == b'.' || b == b':');
            if !valid {
                return None;
            }
            host.split_at(end + 2)
        }
        None => {
            let (name, rest) = host.split_at(host.find(':').unwrap_or(host.len()));
            let valid = !name.is_empty()
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-'
                });
            if !valid {
                return None;
            }
            (name, rest)
        }
    };
    if !rest.is_empty() {
        let port = rest.strip_prefix(':')?;
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    (!name.is_empty()).then(|| name.to_owned())
}

/// A duration in seconds (fractions allowed), from 0.1 s to an hour.
fn seconds(env: &Env<'_>, name: &str, default: f64) -> Result<Duration, ConfigError> {
    let value: f64 = env.parse(name, default)?;
    if !(0.1..=3600.0).contains(&value) {
        return Err(ConfigError {
            var: name.into(),
            problem: format!("{value} is outside 0.1..=3600 seconds"),
        });
    }
    Ok(Duration::from_secs_f64(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Env<'static> {
        let mut map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        map.entry("JWT_SECRET".into()).or_insert("x".into());
        Env::from_fn(move |k| map.get(k).cloned())
    }

    #[test]
    fn seed_env_example_parses() {
        let seed = [
            ("APP_NAME", "sms"),
            ("APP_ENV", "production"),
            ("BASE_PATH", "/sms"),
            ("DJANGO_SECRET_KEY", "***"),
            ("DJANGO_DEBUG", "0"),
            ("ALLOWED_HOSTS", "api.safecare.vn"),
            ("CSRF_TRUSTED_ORIGINS", "https://api.safecare.vn"),
            ("SECURE_PROXY_SSL_HEADER", "HTTP_X_FORWARDED_PROTO,https"),
            ("USE_X_FORWARDED_HOST", "true"),
            (
                "MONGO_URI",
                "mongodb://sms_user:***@shared_mongo:27017/db_sms?authSource=db_sms",
            ),
            ("MONGO_DB", "db_sms"),
            ("JWT_SECRET", "***"),
            ("JWT_ACCESS_MINUTES", "240"),
            ("LEASE_SECONDS", "300"),
            ("AGENT_RATE_LIMIT_PER_MIN", "10"),
            ("APIKEY_RATE_LIMIT_PER_DAY_DEFAULT", "20000"),
            ("DEFAULT_COUNTRY_PREFIX", "+84"),
            ("BLOCK_INTERNATIONAL", "1"),
            ("ANTI_DUP_MINUTES", "3"),
            ("MAX_RECIPIENTS_PER_REQUEST", "5000"),
            ("MAX_TEXT_LENGTH", "1600"),
            ("SEED_ADMIN", "1"),
            ("SEED_ADMIN_USERNAME", "admin"),
            ("SEED_ADMIN_PASSWORD", "admin123"),
            (
                "AGENT_REGISTRATION_SECRET",
                "<optional shared secret for new agents>",
            ),
        ];
        let c = Config::from_env(&env(&seed)).unwrap();
        assert_eq!(c.http.base_path, "/sms");
        assert_eq!(
            c.http.proxy_ssl_header,
            Some(("x-forwarded-proto".into(), "https".into()))
        );
        assert!(c.http.trust_forwarded);
        assert!(c.seed.enabled);
        assert!(
            c.agent_registration_secret.is_none(),
            "the placeholder is not a secret"
        );
        assert_eq!(c.mongo.db, "db_sms");
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let secrets = [
            "mongo-pw-1",
            "rabbit-pw-2",
            "jwt-secret-3",
            "django-key-4",
            "admin-pw-5",
            "agent-secret-6",
        ];
        let c = Config::from_env(&env(&[
            (
                "MONGO_URI",
                "mongodb://sms_user:mongo-pw-1@shared_mongo:27017/db_sms?authSource=db_sms",
            ),
            ("AMQP_URL", "amqp://sms:rabbit-pw-2@rabbitmq:5672/%2f"),
            ("JWT_SECRET", "jwt-secret-3"),
            ("DJANGO_SECRET_KEY", "django-key-4"),
            ("SEED_ADMIN_PASSWORD", "admin-pw-5"),
            ("AGENT_REGISTRATION_SECRET", "agent-secret-6"),
        ]))
        .unwrap();
        let shown = format!("{c:?}");
        for secret in secrets {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("sms_user:***@shared_mongo:27017/db_sms"),
            "{shown}"
        );
        assert!(shown.contains("sms:***@rabbitmq:5672"), "{shown}");
        use secrecy::ExposeSecret;
        assert_eq!(c.jwt.secret.expose_secret(), "jwt-secret-3");
        let agents = c.agent_registration_secret.as_ref().unwrap();
        assert_eq!(agents.expose_secret(), "agent-secret-6");
    }

    #[test]
    fn hosts_match_like_django() {
        let c = Config::from_env(&env(&[(
            "ALLOWED_HOSTS",
            "api.safecare.vn,.example.com,[::1]",
        )]))
        .unwrap()
        .http;
        assert!(c.host_allowed("api.safecare.vn"));
        assert!(c.host_allowed("API.safecare.vn:8443"));
        assert!(c.host_allowed("example.com"));
        assert!(c.host_allowed("a.b.example.com"));
        assert!(c.host_allowed("[::1]:8000"));
        assert!(!c.host_allowed("evil.com"));
        assert!(!c.host_allowed("badexample.com"));
        let all = Config::from_env(&env(&[("ALLOWED_HOSTS", "*")]))
            .unwrap()
            .http;
        assert!(all.host_allowed("anything:1"));
        assert!(!all.host_allowed("localhost:abc"), "* still needs a host");
    }

    #[test]
    fn host_names_are_read_as_django_splits_them() {
        let cases: &[(&str, Option<&str>)] = &[
            ("localhost", Some("localhost")),
            ("LocalHost:8000", Some("localhost")),
            ("api.safecare.vn.", Some("api.safecare.vn")),
            ("api.safecare.vn.:443", Some("api.safecare.vn")),
            ("127.0.0.1:8000", Some("127.0.0.1")),
            ("[::1]", Some("[::1]")),
            ("[::1]:8000", Some("[::1]")),
            ("[2001:DB8::1]:443", Some("[2001:db8::1]")),
            ("[::ffff:127.0.0.1]", Some("[::ffff:127.0.0.1]")),
            ("localhost:abc", None),
            ("localhost:", None),
            ("localhost:80:80", None),
            ("localhost:٣", None),
            ("::1", None),
            ("[::1", None),
            ("[::1]x", None),
            ("[::1]:", None),
            ("[::1]:8o", None),
            ("[zz::1]", None),
            ("[]", None),
            ("a.com, b.com", None),
            ("a.com,b.com", None),
            ("user@localhost", None),
            ("local_host", None),
            ("", None),
            (".", None),
            (":80", None),
        ];
        for (host, name) in cases {
            assert_eq!(host_name(host).as_deref(), *name, "{host:?}");
        }
    }

    #[test]
    fn ipv6_hosts_match_bracketed_entries() {
        let c = Config::from_env(&env(&[("ALLOWED_HOSTS", "[::1],[2001:db8::1]")]))
            .unwrap()
            .http;
        assert!(c.host_allowed("[::1]:8000"));
        assert!(c.host_allowed("[2001:DB8::1]"));
        assert!(!c.host_allowed("::1"));
        assert!(!c.host_allowed("[::2]"));
    }

    #[test]
    fn timeouts_default_and_refuse_nonsense() {
        let c = Config::from_env(&env(&[])).unwrap().http;
        assert_eq!(c.header_timeout, Duration::from_secs(10));
        assert_eq!(c.body_timeout, Duration::from_secs(30));
        let c = Config::from_env(&env(&[("HTTP_BODY_TIMEOUT_SECONDS", "0.5")]))
            .unwrap()
            .http;
        assert_eq!(c.body_timeout, Duration::from_millis(500));
        for bad in ["0", "NaN", "-1", "1e9", "ten"] {
            let err = Config::from_env(&env(&[("HTTP_HEADER_TIMEOUT_SECONDS", bad)])).unwrap_err();
            assert_eq!(err.var, "HTTP_HEADER_TIMEOUT_SECONDS", "{bad}");
        }
    }

    #[test]
    fn malformed_proxy_header_names_the_variable() {
        let err = Config::from_env(&env(&[(
            "SECURE_PROXY_SSL_HEADER",
            "HTTP_X_FORWARDED_PROTO",
        )]))
        .unwrap_err();
        assert_eq!(err.var, "SECURE_PROXY_SSL_HEADER");
    }

    #[test]
    fn debug_never_applies_in_production() {
        let c =
            Config::from_env(&env(&[("DJANGO_DEBUG", "1"), ("APP_ENV", "production")])).unwrap();
        assert!(!c.http.debug);
        let c = Config::from_env(&env(&[("DJANGO_DEBUG", "1"), ("APP_ENV", "local")])).unwrap();
        assert!(c.http.debug);
    }
}
