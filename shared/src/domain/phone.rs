//! Phone number normalisation to E.164, backed by libphonenumber's metadata (`phonenumber` crate)
//! so Vietnamese mobile ranges and every other country's numbering plan stay current.

use phonenumber::Mode;

/// Why a recipient number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("is not a valid phone number")]
    Invalid,
    #[error("international numbers are not allowed (only {0})")]
    International(String),
}

/// Normalises `raw` to E.164 (`+84901234567`).
///
/// A national number (`0901234567`) gets `default_prefix`; `00` is read as `+`; separators
/// (spaces, dots, dashes, parentheses) are ignored. With `block_international`, a number of any
/// other country than `default_prefix` is refused.
pub fn normalize(
    raw: &str,
    default_prefix: &str,
    block_international: bool,
) -> Result<String, PhoneError> {
    let compact: String = raw
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '\u{a0}'))
        .collect();
    let body = compact.strip_prefix('+');
    let digits = body.unwrap_or(&compact);
    if digits.is_empty() || digits.len() > 17 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(PhoneError::Invalid);
    }
    let default_digits = &default_prefix[1..];
    let international = if body.is_some() {
        format!("+{digits}")
    } else if let Some(rest) = digits.strip_prefix("00") {
        format!("+{rest}")
    } else if let Some(rest) = digits.strip_prefix('0') {
        format!("{default_prefix}{rest}")
    } else if digits.starts_with(default_digits) && digits.len() >= default_digits.len() + 8 {
        format!("+{digits}")
    } else {
        format!("{default_prefix}{digits}")
    };
    let number = phonenumber::parse(None, &international).map_err(|_| PhoneError::Invalid)?;
    if !phonenumber::is_valid(&number) {
        return Err(PhoneError::Invalid);
    }
    if block_international && number.code().value().to_string() != default_digits {
        return Err(PhoneError::International(default_prefix.to_owned()));
    }
    Ok(number.format().mode(Mode::E164).to_string())
}

/// Loads the numbering-plan metadata, which the first normalisation would otherwise pay for
/// (about 90 ms), so that the first request after start-up is as fast as the others.
pub fn warm_up() {
    let _ = normalize("+84901234567", "+84", false);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn national_vietnamese_mobiles_get_the_prefix() {
        for (raw, e164) in [
            ("0901234567", "+84901234567"),
            ("090 123 4567", "+84901234567"),
            ("0912-345-678", "+84912345678"),
            ("0387654321", "+84387654321"),
            ("0702345678", "+84702345678"),
            ("84901234567", "+84901234567"),
            ("+84901234567", "+84901234567"),
            ("0084901234567", "+84901234567"),
            ("901234567", "+84901234567"),
        ] {
            assert_eq!(normalize(raw, "+84", true).as_deref(), Ok(e164), "{raw}");
        }
    }

    #[test]
    fn garbage_is_invalid() {
        for raw in ["", "abc", "09012", "0901234567890123", "+", "09x1234567"] {
            assert_eq!(
                normalize(raw, "+84", true),
                Err(PhoneError::Invalid),
                "{raw}"
            );
        }
    }

    #[test]
    fn international_numbers_are_blocked_when_configured() {
        assert_eq!(
            normalize("+14155552671", "+84", true),
            Err(PhoneError::International("+84".into()))
        );
        assert_eq!(
            normalize("+14155552671", "+84", false).as_deref(),
            Ok("+14155552671")
        );
    }
}
