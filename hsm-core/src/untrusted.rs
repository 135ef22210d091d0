//! Text that came from outside (a server's answer, a user's argument) on its way into a
//! message: control characters escaped, so that nothing can send escape sequences to a
//! terminal or forge log lines; and, when quoted back, cut to a length a message can carry.

use std::borrow::Cow;

/// The longest value [`quoted`] shows, in characters.
pub const QUOTE_MAX: usize = 64;

/// `text` with its control characters (escape sequences, carriage returns, new lines, ...)
/// escaped as `\u{1b}`, `\r`, `\n`; everything else as it is.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` in double quotes for a message: quotes and backslashes escaped, control characters
/// escaped, cut after [`QUOTE_MAX`] characters (`...` marks the cut) so that a huge value does
/// not flood the message.
pub fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(QUOTE_MAX * 2) + 2);
    out.push('"');
    for (i, c) in text.chars().enumerate() {
        if i == QUOTE_MAX {
            out.push_str("...");
            break;
        }
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_long_values_cut() {
        assert_eq!(printable("plain"), "plain");
        assert!(matches!(printable("plain"), Cow::Borrowed(_)));
        assert_eq!(printable("\u{1b}[31mred\r\n"), "\\u{1b}[31mred\\r\\n");
        assert_eq!(quoted("a\"b\\c\u{7}"), "\"a\\\"b\\\\c\\u{7}\"");
        let long = "x".repeat(100_000);
        let shown = quoted(&long);
        assert_eq!(shown.len(), QUOTE_MAX + 5, "{shown}");
        assert!(shown.ends_with("...\""));
    }
}
