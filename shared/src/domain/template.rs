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

/// Fills every placeholder; returns the names left unfilled when some are missing.
pub fn render(content: &str, values: &HashMap<String, String>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(content.len() + 16);
    let mut missing = Vec::new();
    let mut last = 0;
    for (start, name) in placeholders(content) {
        out.push_str(&content[last..start]);
        match values.get(name) {
            Some(v) => out.push_str(v),
            None => {
                if !missing.iter().any(|m| m == name) {
                    missing.push(name.to_owned());
                }
            }
        }
        last = start + name.len() + 2;
    }
    out.push_str(&content[last..]);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
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

    #[test]
    fn renders_and_reports_missing() {
        assert_eq!(
            render("Ma OTP {CODE} {CODE}", &vars(&[("CODE", "123")])).unwrap(),
            "Ma OTP 123 123"
        );
        assert_eq!(
            render("{A} và {B} {A}", &vars(&[])).unwrap_err(),
            vec!["A", "B"]
        );
    }

    #[test]
    fn literal_braces_survive() {
        assert_eq!(
            render("{x-y} {} {Z}", &vars(&[("Z", "1")])).unwrap(),
            "{x-y} {} 1"
        );
    }

    #[test]
    fn multibyte_text_around_placeholders() {
        assert_eq!(
            render("Mã: {CODE} — cảm ơn", &vars(&[("CODE", "42")])).unwrap(),
            "Mã: 42 — cảm ơn"
        );
    }
}
