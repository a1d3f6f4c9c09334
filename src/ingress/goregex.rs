//! Go RE2 path regexes on the `regex` crate, with Go's meaning and Go's error text.
//!
//! Both engines take RE2 syntax, but Go's `\d \w \s \b` are ASCII-only while the `regex` crate's
//! are Unicode-aware. Patterns are rewritten so those classes mean what they mean in Go, and a
//! pattern the parser rejects is reported as Go reports it
//! (`error parsing regexp: missing closing ): `(abc``), because cloudflared's validation
//! message embeds that text.

use regex::Regex;
use regex_syntax::ast::ErrorKind;

/// A compiled path regex that remembers the pattern as written (printed by `ingress rule`).
#[derive(Debug, Clone)]
pub struct PathRegex {
    source: String,
    regex: Regex,
}

impl PathRegex {
    /// Compiles `pattern` with Go semantics, or returns Go's error text.
    pub fn new(pattern: &str) -> Result<PathRegex, String> {
        if let Err(e) = regex_syntax::ast::parse::Parser::new().parse(pattern) {
            return Err(go_error(pattern, &e));
        }
        let regex =
            Regex::new(&translate(pattern)).map_err(|e| format!("error parsing regexp: {e}"))?;
        Ok(PathRegex {
            source: pattern.to_owned(),
            regex,
        })
    }

    /// Unanchored search, as Go's `MatchString`.
    pub fn is_match(&self, path: &str) -> bool {
        self.regex.is_match(path)
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl PartialEq for PathRegex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// Rewrites Perl classes to Go's ASCII meaning; everything else is passed through.
fn translate(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars().peekable();
    let mut class_depth = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(next) = chars.next() else {
                    out.push('\\');
                    break;
                };
                out.push_str(
                    &perl_class(next, class_depth > 0).unwrap_or_else(|| format!("\\{next}")),
                );
            }
            '[' => {
                class_depth += 1;
                out.push('[');
                if chars.peek() == Some(&'^') {
                    out.push(chars.next().unwrap_or('^'));
                }
                // A `]` right after `[` or `[^` is a literal in RE2.
                if chars.peek() == Some(&']') {
                    chars.next();
                    out.push_str("\\]");
                }
                if chars.peek() == Some(&':') {
                    // POSIX class like [[:alpha:]] inside an outer class: copy through `:]`.
                    copy_posix(&mut chars, &mut out);
                }
            }
            ']' if class_depth > 0 => {
                class_depth -= 1;
                out.push(']');
            }
            other => out.push(other),
        }
    }
    out
}

fn copy_posix(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, out: &mut String) {
    let mut prev = '\0';
    for c in chars.by_ref() {
        out.push(c);
        if prev == ':' && c == ']' {
            // This `]` closes the POSIX item, not the class we are in.
            return;
        }
        prev = c;
    }
}

/// Go's ASCII definitions of `\d \w \s` (and negations), and ASCII word boundaries.
fn perl_class(c: char, in_class: bool) -> Option<String> {
    let (set, negated) = match c {
        'd' => ("0-9", false),
        'D' => ("0-9", true),
        'w' => ("0-9A-Za-z_", false),
        'W' => ("0-9A-Za-z_", true),
        's' => ("\\t\\n\\x0C\\r ", false),
        'S' => ("\\t\\n\\x0C\\r ", true),
        'b' if !in_class => return Some("(?-u:\\b)".into()),
        'B' if !in_class => return Some("(?-u:\\B)".into()),
        _ => return None,
    };
    Some(match (in_class, negated) {
        (true, false) => set.to_owned(),
        (_, true) => format!("[^{set}]"),
        (false, false) => format!("[{set}]"),
    })
}

/// Go's `regexp/syntax` error codes for the parse failures RE2 and `regex-syntax` share.
fn go_error(pattern: &str, err: &regex_syntax::ast::Error) -> String {
    let span = err.span();
    let fragment = match pattern.get(span.start.offset..span.end.offset) {
        Some(f) if !f.is_empty() => f,
        // Zero-width spans point at the offending character (e.g. a bare `*`).
        _ => pattern
            .get(span.start.offset..)
            .and_then(|rest| rest.chars().next().map(|c| &rest[..c.len_utf8()]))
            .unwrap_or(pattern),
    };
    let (code, expr) = match err.kind() {
        ErrorKind::GroupUnclosed => ("missing closing )", pattern),
        ErrorKind::GroupUnopened => ("unexpected )", pattern),
        ErrorKind::ClassUnclosed => ("missing closing ]", &pattern[span.start.offset..]),
        ErrorKind::ClassRangeInvalid => ("invalid character class range", fragment),
        ErrorKind::ClassEscapeInvalid | ErrorKind::EscapeUnrecognized => {
            ("invalid escape sequence", fragment)
        }
        ErrorKind::EscapeUnexpectedEof => ("trailing backslash at end of expression", ""),
        ErrorKind::RepetitionMissing => ("missing argument to repetition operator", fragment),
        ErrorKind::RepetitionCountInvalid | ErrorKind::RepetitionCountDecimalEmpty => {
            ("invalid repeat count", fragment)
        }
        ErrorKind::RepetitionCountUnclosed => ("missing argument to repetition operator", fragment),
        ErrorKind::GroupNameInvalid
        | ErrorKind::GroupNameEmpty
        | ErrorKind::GroupNameUnexpectedEof => ("invalid named capture", fragment),
        ErrorKind::GroupNameDuplicate { .. } => ("duplicate capture group name", fragment),
        ErrorKind::FlagUnrecognized
        | ErrorKind::FlagDanglingNegation
        | ErrorKind::FlagRepeatedNegation { .. }
        | ErrorKind::FlagUnexpectedEof
        | ErrorKind::FlagDuplicate { .. } => ("invalid or unsupported Perl syntax", fragment),
        ErrorKind::UnsupportedBackreference | ErrorKind::UnsupportedLookAround => {
            ("invalid or unsupported Perl syntax", fragment)
        }
        _ => ("invalid or unsupported Perl syntax", fragment),
    };
    if expr.is_empty() {
        format!("error parsing regexp: {code}")
    } else {
        format!("error parsing regexp: {code}: `{expr}`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perl_classes_are_ascii_like_go() {
        let digits = PathRegex::new(r"^/\d+$").unwrap();
        assert!(digits.is_match("/123"));
        assert!(
            !digits.is_match("/١٢٣"),
            "Arabic-Indic digits are not \\d in Go"
        );
        let word = PathRegex::new(r"^/[\w.]+$").unwrap();
        assert!(word.is_match("/a_b.c"));
        assert!(!word.is_match("/é"));
        let not_digit = PathRegex::new(r"^/\D$").unwrap();
        assert!(not_digit.is_match("/é"));
        let posix = PathRegex::new(r"^/[[:alpha:]]+$").unwrap();
        assert!(posix.is_match("/abc"));
        let bracket = PathRegex::new(r"^/[]a]+$").unwrap();
        assert!(bracket.is_match("/]a]"));
    }

    #[test]
    fn unanchored_search() {
        let r = PathRegex::new("/api").unwrap();
        assert!(r.is_match("/v1/api/x"));
        assert_eq!(r.as_str(), "/api");
    }

    #[test]
    fn go_error_texts() {
        let err = |p: &str| PathRegex::new(p).unwrap_err();
        assert_eq!(
            err("(abc"),
            "error parsing regexp: missing closing ): `(abc`"
        );
        assert_eq!(err("abc)"), "error parsing regexp: unexpected ): `abc)`");
        assert_eq!(
            err("[z-a]"),
            "error parsing regexp: invalid character class range: `z-a`"
        );
        assert_eq!(
            err("*a"),
            "error parsing regexp: missing argument to repetition operator: `*`"
        );
        assert_eq!(
            err(r"\q"),
            r"error parsing regexp: invalid escape sequence: `\q`"
        );
        assert_eq!(
            err("[abc"),
            "error parsing regexp: missing closing ]: `[abc`"
        );
    }
}
