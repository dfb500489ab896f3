//! Tracing set-up: `RUST_LOG` filtering, plain or JSON lines (`LOG_FORMAT=json`), and
//! [`untrusted`], the one way a client-supplied string reaches a log line.

use std::fmt::{self, Write as _};

use tracing_subscriber::fmt::layer;
use tracing_subscriber::{prelude::*, EnvFilter};

use crate::config::LogFormat;

/// Installs the global subscriber once; later calls (tests) are ignored.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry
            .with(layer().json().flatten_event(true).with_current_span(true))
            .try_init(),
        LogFormat::Text => registry.with(layer().with_target(false)).try_init(),
    };
}

/// Most characters of a client-supplied string that reach a log line; longer strings are cut
/// there and end with `…`.
pub const UNTRUSTED_MAX_CHARS: usize = 200;

/// A client-supplied string (a path, a host, a device id, a name) as a log field.
///
/// Plain-text log lines write `Display` fields as they are, so a value holding a line break
/// could forge a whole log line, and a megabyte-long value would be logged whole. Displayed
/// through this, control characters, line and paragraph separators and bidirectional
/// overrides are escaped (`\n`, `\u{1b}`), quotes and backslashes are escaped (`\"`, `\\`),
/// and at most [`UNTRUSTED_MAX_CHARS`] characters are written, then `…`.
pub fn untrusted(value: &str) -> Untrusted<'_> {
    Untrusted(value)
}

/// See [`untrusted`].
#[derive(Clone, Copy)]
pub struct Untrusted<'a>(&'a str);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.chars().enumerate() {
            if i == UNTRUSTED_MAX_CHARS {
                return f.write_char('…');
            }
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                c if c.is_control() => write!(f, "{}", c.escape_default())?,
                '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}' => write!(f, "{}", c.escape_unicode())?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_passes_unchanged() {
        let s = "/sms/requests?x=1 Phòng khám Hà Nội";
        assert_eq!(untrusted(s).to_string(), s);
        assert_eq!(untrusted("").to_string(), "");
    }

    #[test]
    fn line_breaks_and_control_characters_cannot_start_a_new_line() {
        let forged = "dev-1\n2026-11-25T08:00:00Z  INFO admin logged in\r\x1b[31m\t\0";
        let shown = untrusted(forged).to_string();
        assert_eq!(
            shown,
            "dev-1\\n2026-11-25T08:00:00Z  INFO admin logged in\\r\\u{1b}[31m\\t\\u{0}"
        );
        assert!(!shown.chars().any(char::is_control));
    }

    #[test]
    fn quotes_backslashes_and_invisible_reordering_are_escaped() {
        assert_eq!(
            untrusted(r#"a" admin="true\"#).to_string(),
            r#"a\" admin=\"true\\"#
        );
        assert_eq!(
            untrusted("x\u{202e}gnp.exe\u{2028}y").to_string(),
            "x\\u{202e}gnp.exe\\u{2028}y"
        );
        assert_eq!(format!("{:?}", untrusted("a\"b")), r#""a\"b""#);
    }

    #[test]
    fn long_values_are_cut_at_the_bound_with_an_ellipsis() {
        let exact = "é".repeat(UNTRUSTED_MAX_CHARS);
        assert_eq!(untrusted(&exact).to_string(), exact, "at the bound: whole");
        let huge = "é".repeat(1_000_000);
        let shown = untrusted(&huge).to_string();
        assert_eq!(shown.chars().count(), UNTRUSTED_MAX_CHARS + 1);
        assert!(shown.starts_with(&exact));
        assert!(shown.ends_with('…'));
        let escapes = "\n".repeat(10_000);
        let shown = untrusted(&escapes).to_string();
        assert_eq!(shown, format!("{}…", "\\n".repeat(UNTRUSTED_MAX_CHARS)));
    }
}
