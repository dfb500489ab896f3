//! Auth primitives: operator JWTs (HS256 only) and argon2 password hashes.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::config::JwtConfig;

/// Claims as issued by the external auth-service or by `POST /auth/login`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Claims {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<serde_json::Value>,
    pub exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
}

impl Claims {
    /// The operator's name: `sub`, else `username`, else `user_id`.
    pub fn operator_name(&self) -> String {
        self.sub
            .clone()
            .or_else(|| self.username.clone())
            .or_else(|| {
                self.user_id.as_ref().map(|v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            })
            .unwrap_or_else(|| "unknown".to_owned())
    }
}

/// Verifies and issues operator tokens.
#[derive(Clone)]
pub struct JwtKeys {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
    access_minutes: i64,
    issuer: Option<String>,
    audience: Option<String>,
}

impl JwtKeys {
    pub fn new(config: &JwtConfig) -> Self {
        let secret = config.secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = 30;
        match &config.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                validation.required_spec_claims.insert("iss".into());
            }
            None => validation.iss = None,
        }
        match &config.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        Self {
            decoding: DecodingKey::from_secret(secret),
            encoding: EncodingKey::from_secret(secret),
            validation,
            access_minutes: config.access_minutes,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
        }
    }

    /// Validates a bearer token; any failure (algorithm, signature, expiry, claims) is `None`.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|data| data.claims)
    }

    /// Issues a token for `username`, valid `JWT_ACCESS_MINUTES`. Returns it with its lifetime in seconds.
    pub fn issue(&self, username: &str) -> anyhow::Result<(String, i64)> {
        let lifetime = chrono::Duration::minutes(self.access_minutes);
        Ok((self.issue_for(username, lifetime)?, lifetime.num_seconds()))
    }

    /// Issues an operator token for `subject`, valid `lifetime` from now, carrying the `iss` and
    /// `aud` this verifier requires. The one place operator tokens are minted: `POST /auth/login`,
    /// `sms-api issue-token`, the tools and the tests. A negative `lifetime` gives an expired token.
    pub fn issue_for(&self, subject: &str, lifetime: chrono::Duration) -> anyhow::Result<String> {
        let now = crate::time::now().timestamp();
        let claims = Claims {
            sub: Some(subject.to_owned()),
            username: Some(subject.to_owned()),
            exp: now + lifetime.num_seconds(),
            iat: Some(now),
            iss: self.issuer.clone(),
            aud: self.audience.clone().map(serde_json::Value::String),
            ..Claims::default()
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }
}

/// Hashes a password with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
}

/// Checks a password against a stored PHC string.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn keys(iss: Option<&str>, aud: Option<&str>) -> JwtKeys {
        JwtKeys::new(&JwtConfig {
            secret: SecretString::from("s3cret".to_owned()),
            access_minutes: 5,
            issuer: iss.map(Into::into),
            audience: aud.map(Into::into),
        })
    }

    fn sign(claims: serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn in_minutes(m: i64) -> i64 {
        crate::time::now().timestamp() + m * 60
    }

    #[test]
    fn issued_tokens_verify() {
        let k = keys(Some("auth"), Some("sms"));
        let (token, lifetime) = k.issue("admin").unwrap();
        assert_eq!(lifetime, 300);
        assert_eq!(k.verify(&token).unwrap().operator_name(), "admin");
    }

    #[test]
    fn tokens_issued_for_a_lifetime_verify_until_they_expire() {
        let k = keys(Some("auth"), Some("sms"));
        let token = k.issue_for("ops", chrono::Duration::minutes(90)).unwrap();
        let claims = k.verify(&token).unwrap();
        assert_eq!(claims.operator_name(), "ops");
        assert_eq!(claims.iss.as_deref(), Some("auth"));
        assert_eq!(claims.exp - claims.iat.unwrap(), 90 * 60);
        let expired = k.issue_for("ops", chrono::Duration::minutes(-10)).unwrap();
        assert!(k.verify(&expired).is_none());
        let other = keys(None, None).issue_for("ops", chrono::Duration::minutes(5));
        assert!(k.verify(&other.unwrap()).is_none(), "no iss/aud");
    }

    #[test]
    fn external_tokens_with_username_or_user_id() {
        let k = keys(None, None);
        let t = sign(
            serde_json::json!({"username": "ops", "exp": in_minutes(1)}),
            "s3cret",
        );
        assert_eq!(k.verify(&t).unwrap().operator_name(), "ops");
        let t = sign(
            serde_json::json!({"user_id": 42, "exp": in_minutes(1)}),
            "s3cret",
        );
        assert_eq!(k.verify(&t).unwrap().operator_name(), "42");
    }

    #[test]
    fn rejects_bad_tokens() {
        let k = keys(None, None);
        assert!(
            k.verify(&sign(serde_json::json!({"sub": "a"}), "s3cret"))
                .is_none(),
            "no exp"
        );
        assert!(
            k.verify(&sign(
                serde_json::json!({"sub": "a", "exp": in_minutes(-5)}),
                "s3cret"
            ))
            .is_none(),
            "expired"
        );
        assert!(
            k.verify(&sign(
                serde_json::json!({"sub": "a", "exp": in_minutes(5)}),
                "other"
            ))
            .is_none(),
            "wrong key"
        );
        assert!(
            k.verify(&sign(
                serde_json::json!({"sub": "a", "exp": in_minutes(5), "nbf": in_minutes(5)}),
                "s3cret"
            ))
            .is_none(),
            "not yet valid"
        );
        assert!(k.verify("garbage").is_none());
        // alg: none
        use base64::Engine;
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let none = format!(
            "{}.{}.",
            b64(serde_json::json!({"alg":"none","typ":"JWT"})),
            b64(serde_json::json!({"sub":"a","exp":in_minutes(5)}))
        );
        assert!(k.verify(&none).is_none());
    }

    #[test]
    fn issuer_and_audience_enforced_when_configured() {
        let k = keys(Some("auth"), Some("sms"));
        let ok = sign(
            serde_json::json!({"sub":"a","exp":in_minutes(1),"iss":"auth","aud":"sms"}),
            "s3cret",
        );
        assert!(k.verify(&ok).is_some());
        let wrong = sign(
            serde_json::json!({"sub":"a","exp":in_minutes(1),"iss":"evil","aud":"sms"}),
            "s3cret",
        );
        assert!(k.verify(&wrong).is_none());
        let missing = sign(serde_json::json!({"sub":"a","exp":in_minutes(1)}), "s3cret");
        assert!(k.verify(&missing).is_none());
    }

    #[test]
    fn passwords() {
        let h = hash_password("admin123").unwrap();
        assert!(h.starts_with("$argon2"));
        assert!(verify_password("admin123", &h));
        assert!(!verify_password("admin124", &h));
        assert!(!verify_password("admin123", "not-a-hash"));
    }
}
