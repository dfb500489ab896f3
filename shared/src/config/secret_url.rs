//! Connection strings that may carry a password, redacted wherever they are shown.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// A connection string that may carry a password (`MONGO_URI`, `AMQP_URL`). Its `Debug` shows
/// it with the password and password-like query values masked, so operators still see the host
/// and database; the full string comes only from [`SecretUrl::expose_secret`].
#[derive(Clone)]
pub struct SecretUrl(SecretString);

/// Query parameters whose values are masked, matched case-insensitively as parts of the name
/// (`tlsCertificateKeyFilePassword`, `authMechanismProperties` with a session token, ...).
const SECRET_PARAMS: [&str; 5] = ["password", "secret", "token", "key", "properties"];

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(SecretString::from(url.into()))
    }

    /// The full connection string, for the driver only.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    /// The connection string with the password after `user:` and secret query values as `***`.
    pub fn redacted(&self) -> String {
        let url = self.expose_secret();
        let Some((scheme, rest)) = url.split_once("://") else {
            return "***".to_owned();
        };
        // The password may hold '@' or '/', so the user part ends at the last '@'; one in the
        // query string only masks more than needed.
        let (user, rest) = match rest.rsplit_once('@') {
            Some((userinfo, after)) => match userinfo.split_once(':') {
                Some((name, _)) => (format!("{name}:***@"), after),
                None => (format!("{userinfo}@"), after),
            },
            None => (String::new(), rest),
        };
        let (address, query) = match rest.split_once('?') {
            Some((address, query)) => (address, Some(query)),
            None => (rest, None),
        };
        let mut out = format!("{scheme}://{user}{address}");
        if let Some(query) = query {
            let params: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if is_secret_param(name) => format!("{name}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            out.push('?');
            out.push_str(&params.join("&"));
        }
        out
    }
}

fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMS.iter().any(|part| name.contains(part))
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.redacted(), f)
    }
}
