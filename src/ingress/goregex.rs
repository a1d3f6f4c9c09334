//! Go RE2 path regexes on the `regex` crate, with Go's meaning and Go's error text.
//!
//! [`syntax`] parses the pattern as Go's `regexp/syntax` does: it decides what is valid and
//! which error wins (`error parsing regexp: missing closing ): `(abc``, embedded in
//! cloudflared's validation message), and writes the pattern in the `regex` crate's dialect
//! with Go's meaning (ASCII `\d \w \s \b`, `\Q...\E`, octal escapes, literal `{`).

mod syntax;

use regex::{Regex, RegexBuilder};

/// A compiled path regex that remembers the pattern as written (printed by `ingress rule`).
#[derive(Debug, Clone)]
pub struct PathRegex {
    source: String,
    regex: Regex,
}

impl PathRegex {
    /// Compiles `pattern` with Go semantics, or returns Go's error text.
    pub fn new(pattern: &str) -> Result<PathRegex, String> {
        let translated = syntax::translate(pattern)?;
        // What Go accepts but the `regex` crate cannot build within its limits (size, and
        // nesting past its default of 250, which keeps compilation within a thread's stack) is
        // reported with Go's text for a too large expression.
        let regex = RegexBuilder::new(&translated)
            .build()
            .map_err(|_| format!("error parsing regexp: expression too large: `{pattern}`"))?;
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
    fn go_only_syntax_is_read_as_go_reads_it() {
        let quoted = PathRegex::new(r"^/\Qa.b*\E$").unwrap();
        assert!(quoted.is_match("/a.b*") && !quoted.is_match("/axb"));
        assert!(PathRegex::new(r"^/\101$").unwrap().is_match("/A"));
        let brace = PathRegex::new(r"^/a{,3}x{$").unwrap();
        assert!(brace.is_match("/a{,3}x{"));
        let nested = PathRegex::new(r"(?P<n>a)(?P<n>b)").unwrap();
        assert!(nested.is_match("/ab"));
        assert_eq!(
            PathRegex::new("x**").unwrap_err(),
            "error parsing regexp: invalid nested repetition operator: `**`"
        );
        assert_eq!(
            PathRegex::new("(a{500}){3}").unwrap_err(),
            "error parsing regexp: invalid repeat count: `{3}`"
        );
    }

    #[test]
    fn deep_nesting_stays_within_the_stack() {
        let deep = format!("{}a{}", "(".repeat(999), ")".repeat(999));
        assert!(PathRegex::new(&deep).is_err());
        let deeper = format!("{}a{}", "(".repeat(5000), ")".repeat(5000));
        assert_eq!(
            PathRegex::new(&deeper).unwrap_err(),
            format!("error parsing regexp: expression nests too deeply: `{deeper}`")
        );
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
