//! Secrets handed to clients and phones: API keys and agent tokens.
//!
//! Each is 256 random bits behind a recognisable prefix, shown once, and stored only as its
//! SHA-256 digest. Look-ups go by digest; the final comparison is constant-time.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of every API key (`scsms_live_...`).
pub const API_KEY_PREFIX: &str = "scsms_live_";
/// Prefix of every agent token.
pub const AGENT_TOKEN_PREFIX: &str = "scsms_agent_";

/// A freshly minted secret: the plain value (shown once) and its stored digest.
pub struct Minted {
    pub plain: String,
    pub hash: String,
}

pub fn mint(prefix: &str) -> Minted {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let plain = format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = digest(&plain);
    Minted { plain, hash }
}

/// SHA-256 of the secret, lower-case hex.
pub fn digest(plain: &str) -> String {
    hex::encode(Sha256::digest(plain.as_bytes()))
}

/// Constant-time equality of two digests.
pub fn digests_equal(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Whether a presented value could be one of ours at all (cheap check before any look-up).
pub fn well_formed(plain: &str, prefix: &str) -> bool {
    plain.len() == prefix.len() + 43
        && plain.starts_with(prefix)
        && plain[prefix.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_are_prefixed_long_and_distinct() {
        let a = mint(API_KEY_PREFIX);
        let b = mint(API_KEY_PREFIX);
        assert!(a.plain.starts_with(API_KEY_PREFIX));
        assert!(well_formed(&a.plain, API_KEY_PREFIX));
        assert_ne!(a.plain, b.plain);
        assert_eq!(a.hash, digest(&a.plain));
        assert_eq!(a.hash.len(), 64);
        assert!(!a.hash.contains(&a.plain[API_KEY_PREFIX.len()..]));
    }

    #[test]
    fn malformed_values_are_recognised() {
        assert!(!well_formed("scsms_live_short", API_KEY_PREFIX));
        assert!(!well_formed(
            &mint(AGENT_TOKEN_PREFIX).plain,
            API_KEY_PREFIX
        ));
    }

    #[test]
    fn digest_comparison() {
        let d = digest("x");
        assert!(digests_equal(&d, &digest("x")));
        assert!(!digests_equal(&d, &digest("y")));
    }
}
