//! Template placeholders (`{NAME}`) and rendering.

use std::collections::{BTreeSet, HashMap};

/// The distinct placeholder names of `content`, in order of first appearance.
///
/// A placeholder is `{` followed by letters, digits or `_` (starting with a letter or `_`) and `}`;
/// anything else in braces is literal text.
pub fn variables(content: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for name in placeholders(content).map(|(_, name)| name) {
        if seen.insert(name) {
            out.push(name.to_owned());
        }
    }
    out
}

/// Why [`render`] gave no text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// Placeholders without a value, in order of first appearance.
    #[error("missing {}", .0.join(", "))]
    Missing(Vec<String>),
    /// The text would be longer than this many characters.
    #[error("rendered text is longer than {0} characters")]
    TooLong(usize),
}

/// Fills every placeholder, giving a text of at most `max_chars` characters.
///
/// Rendering stops adding text as soon as the next piece would pass `max_chars`, so a huge
/// value repeated by many placeholders never builds a string larger than the limit (the
/// buffer stays within `max_chars` × 4 bytes). Missing values are reported before length:
/// every placeholder is still checked after the text stopped growing.
pub fn render(
    content: &str,
    values: &HashMap<String, String>,
    max_chars: usize,
) -> Result<String, RenderError> {
    let mut out = String::new();
    render_into(&mut out, content, values, max_chars)?;
    Ok(out)
}

fn render_into(
    out: &mut String,
    content: &str,
    values: &HashMap<String, String>,
    max_chars: usize,
) -> Result<(), RenderError> {
    let max_bytes = max_chars.saturating_mul(4);
    out.reserve_exact(content.len().min(max_bytes));
    let mut chars = 0;
    let mut too_long = false;
    let mut append = |piece: &str| {
        if too_long {
            return;
        }
        let room = max_chars - chars;
        let n = piece.chars().take(room.saturating_add(1)).count();
        if n > room {
            too_long = true;
            return;
        }
        if out.capacity() - out.len() < piece.len() {
            // Amortised doubling, but never past the largest text the limit allows.
            let doubled = out.capacity().saturating_mul(2).min(max_bytes);
            let target = doubled.max(out.len() + piece.len());
            out.reserve_exact(target - out.len());
        }
        out.push_str(piece);
        chars += n;
    };
    let mut missing: Vec<String> = Vec::new();
    let mut last = 0;
    for (start, name) in placeholders(content) {
        append(&content[last..start]);
        match values.get(name) {
            Some(v) => append(v),
            None => {
                if !missing.iter().any(|m| m == name) {
                    missing.push(name.to_owned());
                }
            }
        }
        last = start + name.len() + 2;
    }
    append(&content[last..]);
    if !missing.is_empty() {
        Err(RenderError::Missing(missing))
    } else if too_long {
        Err(RenderError::TooLong(max_chars))
    } else {
        Ok(())
    }
}

fn placeholders(content: &str) -> impl Iterator<Item = (usize, &str)> {
    let bytes = content.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() {
            if bytes[i] == b'{' {
                let start = i;
                let mut j = i + 1;
                while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                    j += 1;
                }
                let name = &content[start + 1..j];
                let valid = j < bytes.len()
                    && bytes[j] == b'}'
                    && name
                        .as_bytes()
                        .first()
                        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_');
                if valid {
                    i = j + 1;
                    return Some((start, name));
                }
                i = start + 1;
            } else {
                i += 1;
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn extracts_distinct_placeholders_in_order() {
        assert_eq!(
            variables("Ma OTP {CODE} cho {NAME}, {CODE} het han sau {MINUTES_2} phut"),
            vec!["CODE", "NAME", "MINUTES_2"]
        );
        assert!(variables("no {} {1A} {a-b} { X } placeholders").is_empty());
    }

    const LIMIT: usize = 1600;

    #[test]
    fn renders_and_reports_missing() {
        assert_eq!(
            render("Ma OTP {CODE} {CODE}", &vars(&[("CODE", "123")]), LIMIT).unwrap(),
            "Ma OTP 123 123"
        );
        assert_eq!(
            render("{A} và {B} {A}", &vars(&[]), LIMIT).unwrap_err(),
            RenderError::Missing(vec!["A".into(), "B".into()])
        );
    }

    #[test]
    fn literal_braces_survive() {
        assert_eq!(
            render("{x-y} {} {Z}", &vars(&[("Z", "1")]), LIMIT).unwrap(),
            "{x-y} {} 1"
        );
    }

    #[test]
    fn multibyte_text_around_placeholders() {
        assert_eq!(
            render("Mã: {CODE} — cảm ơn", &vars(&[("CODE", "42")]), LIMIT).unwrap(),
            "Mã: 42 — cảm ơn"
        );
    }

    #[test]
    fn the_limit_counts_characters_not_bytes() {
        let values = vars(&[("A", "ầ")]);
        assert_eq!(render("{A}{A}{A}", &values, 3).unwrap(), "ầầầ");
        assert_eq!(
            render("{A}{A}{A}{A}", &values, 3).unwrap_err(),
            RenderError::TooLong(3)
        );
        assert_eq!(
            render("abcd", &values, 3).unwrap_err().to_string(),
            "rendered text is longer than 3 characters"
        );
    }

    #[test]
    fn missing_values_are_reported_even_past_the_limit() {
        let values = vars(&[("BIG", &"x".repeat(100))]);
        assert_eq!(
            render("{BIG} {BIG} {LATE}", &values, 150).unwrap_err(),
            RenderError::Missing(vec!["LATE".into()])
        );
    }

    #[test]
    fn a_huge_value_in_many_placeholders_never_grows_past_the_limit() {
        let limit = 1600;
        let content = "{V}".repeat(1000);
        for value in ["x".repeat(2_000_000), "ầ".repeat(700_000), "ab".repeat(500)] {
            let values = vars(&[("V", &value)]);
            let mut out = String::new();
            let result = render_into(&mut out, &content, &values, limit);
            assert_eq!(result, Err(RenderError::TooLong(limit)));
            assert!(
                out.chars().count() <= limit,
                "{} chars",
                out.chars().count()
            );
            assert!(
                out.capacity() <= limit * 4,
                "buffer of {} bytes for a {limit}-character limit",
                out.capacity()
            );
        }
    }

    #[test]
    fn many_small_pieces_stay_within_the_bound_up_to_the_limit() {
        let limit = 1000;
        let values = vars(&[("V", "ầ")]);
        let mut out = String::new();
        render_into(&mut out, &"{V}".repeat(limit), &values, limit).unwrap();
        assert_eq!(out.chars().count(), limit);
        assert!(out.capacity() <= limit * 4);
    }
}
