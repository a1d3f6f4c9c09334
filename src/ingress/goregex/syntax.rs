//! Go's `regexp/syntax` parser (Perl flags, as `regexp.Compile` uses), reduced to what ingress
//! needs: decide whether Go accepts a pattern, with Go's error text when it does not, and write
//! the accepted pattern out in the `regex` crate's dialect with the same meaning.
//!
//! Written from the behaviour of Go 1.26's parser, not its code. The two dialects disagree on
//! `\Q...\E`, octal escapes, a `{` that does not start a valid repeat (a literal in Go), nested
//! repeats (`x**` is an error in Go), the 1000 repeat-count limit (also across nesting), `\d \w
//! \s \b` (ASCII in Go), `[` inside a class (a literal in Go), duplicate flags and group names
//! (fine in Go). Every literal and class member is therefore written escaped, groups lose their
//! names (ingress never reads captures) and flags are written in canonical form.

/// Go's `*syntax.Error` text (`error parsing regexp: CODE: `EXPR``).
fn error(code: &str, expr: &str) -> String {
    format!("error parsing regexp: {code}: `{expr}`")
}

const MISSING_REPEAT_ARG: &str = "missing argument to repetition operator";
const INVALID_REPEAT_OP: &str = "invalid nested repetition operator";
const INVALID_REPEAT_SIZE: &str = "invalid repeat count";
const INVALID_ESCAPE: &str = "invalid escape sequence";
const INVALID_CHAR_RANGE: &str = "invalid character class range";
const INVALID_NAMED_CAPTURE: &str = "invalid named capture";
const INVALID_PERL_OP: &str = "invalid or unsupported Perl syntax";

/// Go's limit on a repeat count and on the product of nested counts.
const MAX_REPEAT: u64 = 1000;

/// Go's limit on the height of the parse tree, applied here to group nesting.
const MAX_DEPTH: usize = 1000;

/// One thing a quantifier can apply to, already written to the output.
#[derive(Clone, Copy)]
struct Atom {
    /// Byte offset of its first character in the output.
    start: usize,
    /// The smallest budget for which Go's nested-repeat check passes (0 for no repeat inside).
    need: u64,
    /// Already carries a quantifier: a second one needs a group around it.
    repeated: bool,
}

/// An open group (or the whole pattern).
struct Frame {
    /// Output offset where the group's `(` was written.
    start: usize,
    /// The largest `need` of the atoms closed so far in this group.
    need: u64,
    last: Option<Atom>,
}

struct Translator<'a> {
    whole: &'a str,
    out: String,
    frames: Vec<Frame>,
    /// Flags of a `(?i)` group, written just before the next atom so that a quantifier right
    /// after it still applies to the atom before it, as in Go.
    pending_flags: String,
}

/// Checks `pattern` as Go does and returns the `regex`-crate pattern with Go's meaning.
pub fn translate(pattern: &str) -> Result<String, String> {
    let mut tr = Translator {
        whole: pattern,
        out: String::with_capacity(pattern.len() + 16),
        frames: vec![Frame {
            start: 0,
            need: 0,
            last: None,
        }],
        pending_flags: String::new(),
    };
    tr.run()?;
    Ok(tr.out)
}

impl<'a> Translator<'a> {
    fn run(&mut self) -> Result<(), String> {
        let mut t: &'a str = self.whole;
        let mut last_repeat: &'a str = "";
        while let Some(c) = t.chars().next() {
            let mut repeat: &'a str = "";
            match c {
                '(' if t.as_bytes().get(1) == Some(&b'?') => t = self.perl_group(t)?,
                '(' => {
                    self.open_group("(")?;
                    t = &t[1..];
                }
                '|' => {
                    self.flush_flags();
                    let frame = self.top();
                    frame.need = frame.need.max(frame.last.map_or(0, |a| a.need));
                    frame.last = None;
                    self.out.push('|');
                    t = &t[1..];
                }
                ')' => {
                    self.close_group()?;
                    t = &t[1..];
                }
                '^' => self.atom_str("(?:^)", 0, &mut t, 1),
                '$' => self.atom_str("(?:$)", 0, &mut t, 1),
                '.' => self.atom_str(".", 0, &mut t, 1),
                '[' => t = self.class(t)?,
                '*' | '+' | '?' => {
                    let after = self.repeat(t, 1, &t[..1], last_repeat, None)?;
                    repeat = t;
                    t = after;
                }
                '{' => match parse_repeat(t) {
                    None => self.literal_atom('{', &mut t, 1),
                    Some((min, max, after)) => {
                        let spec = &t[..t.len() - after.len()];
                        let max_repeat = MAX_REPEAT as i64;
                        if min < 0
                            || min > max_repeat
                            || max > max_repeat
                            || (max >= 0 && min > max)
                        {
                            return Err(error(INVALID_REPEAT_SIZE, spec));
                        }
                        let text = if max < 0 {
                            format!("{{{min},}}")
                        } else {
                            format!("{{{min},{max}}}")
                        };
                        let counts = (min as u64, u64::try_from(max).ok());
                        let after = self.repeat(t, spec.len(), &text, last_repeat, Some(counts))?;
                        repeat = t;
                        t = after;
                    }
                },
                '\\' => t = self.escape(t)?,
                c => self.literal_atom(c, &mut t, c.len_utf8()),
            }
            last_repeat = repeat;
        }
        if self.frames.len() != 1 {
            return Err(error("missing closing )", self.whole));
        }
        self.flush_flags();
        Ok(())
    }

    fn top(&mut self) -> &mut Frame {
        let last = self.frames.len() - 1;
        &mut self.frames[last]
    }

    fn flush_flags(&mut self) {
        let flags = std::mem::take(&mut self.pending_flags);
        self.out.push_str(&flags);
    }

    /// Records a finished atom that starts at `start` in the output.
    fn push_atom(&mut self, start: usize, need: u64) {
        let frame = self.top();
        frame.need = frame.need.max(frame.last.map_or(0, |a| a.need));
        frame.last = Some(Atom {
            start,
            need,
            repeated: false,
        });
    }

    fn atom_str(&mut self, text: &str, need: u64, t: &mut &'a str, consumed: usize) {
        self.flush_flags();
        let start = self.out.len();
        self.out.push_str(text);
        self.push_atom(start, need);
        *t = &t[consumed..];
    }

    fn literal_atom(&mut self, c: char, t: &mut &'a str, consumed: usize) {
        self.flush_flags();
        let start = self.out.len();
        push_literal(&mut self.out, c);
        self.push_atom(start, 0);
        *t = &t[consumed..];
    }

    fn open_group(&mut self, text: &str) -> Result<(), String> {
        if self.frames.len() > MAX_DEPTH {
            return Err(error("expression nests too deeply", self.whole));
        }
        self.flush_flags();
        let start = self.out.len();
        self.out.push_str(text);
        self.frames.push(Frame {
            start,
            need: 0,
            last: None,
        });
        Ok(())
    }

    fn close_group(&mut self) -> Result<(), String> {
        if self.frames.len() < 2 {
            return Err(error("unexpected )", self.whole));
        }
        self.flush_flags();
        let frame = self.frames.pop().unwrap_or(Frame {
            start: 0,
            need: 0,
            last: None,
        });
        self.out.push(')');
        let need = frame.need.max(frame.last.map_or(0, |a| a.need));
        self.push_atom(frame.start, need);
        Ok(())
    }

    /// Applies a quantifier (`op_len` source bytes, written as `text`) to the last atom.
    /// `counts` is `Some((min, max))` for `{}` repeats (max `None` = unbounded).
    fn repeat(
        &mut self,
        t: &'a str,
        op_len: usize,
        text: &str,
        last_repeat: &'a str,
        counts: Option<(u64, Option<u64>)>,
    ) -> Result<&'a str, String> {
        let mut after = &t[op_len..];
        let lazy = after.starts_with('?');
        if lazy {
            after = &after[1..];
        }
        if !last_repeat.is_empty() {
            return Err(error(
                INVALID_REPEAT_OP,
                &last_repeat[..last_repeat.len() - after.len()],
            ));
        }
        let spec = &t[..t.len() - after.len()];
        let Some(mut atom) = self.top().last else {
            return Err(error(MISSING_REPEAT_ARG, spec));
        };
        if let Some((min, max)) = counts {
            // Go's check: each `{m}` divides the budget of what it repeats (m = max, or min
            // when unbounded; a zero count stops the check).
            let m = max.unwrap_or(min);
            atom.need = if m == 0 {
                0
            } else {
                m.max(m.saturating_mul(atom.need))
            };
            if (min >= 2 || max.is_some_and(|m| m >= 2)) && atom.need > MAX_REPEAT {
                return Err(error(INVALID_REPEAT_SIZE, spec));
            }
        }
        if atom.repeated {
            self.out.insert_str(atom.start, "(?:");
            self.out.push(')');
        }
        self.out.push_str(text);
        if lazy {
            self.out.push('?');
        }
        atom.repeated = true;
        self.top().last = Some(atom);
        Ok(after)
    }

    /// `(?...`: named groups, flag groups and flag settings.
    fn perl_group(&mut self, s: &'a str) -> Result<&'a str, String> {
        let named_start = if s.len() > 4 && s[2..].starts_with("P<") {
            Some(4)
        } else if s.len() > 3 && s[2..].starts_with('<') {
            Some(3)
        } else {
            None
        };
        if let Some(name_start) = named_start {
            let Some(end) = s.find('>') else {
                return Err(error(INVALID_NAMED_CAPTURE, s));
            };
            let name = &s[name_start..end];
            if name.is_empty() || !name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()) {
                return Err(error(INVALID_NAMED_CAPTURE, &s[..=end]));
            }
            self.open_group("(")?;
            return Ok(&s[end + 1..]);
        }
        // Each of i, m, s, U ends up set or cleared by its last mention.
        let mut state: Vec<(char, bool)> = Vec::new();
        let mut negative = false;
        let mut saw_flag = false;
        let mut rest = &s[2..];
        while let Some(c) = rest.chars().next() {
            rest = &rest[c.len_utf8()..];
            match c {
                'i' | 'm' | 's' | 'U' => {
                    state.retain(|(f, _)| *f != c);
                    state.push((c, !negative));
                    saw_flag = true;
                }
                '-' if !negative => {
                    negative = true;
                    saw_flag = false;
                }
                ':' | ')' if !negative || saw_flag => {
                    let on: String = state.iter().filter(|f| f.1).map(|f| f.0).collect();
                    let off: String = state.iter().filter(|f| !f.1).map(|f| f.0).collect();
                    let mut flags = on;
                    if !off.is_empty() {
                        flags.push('-');
                        flags.push_str(&off);
                    }
                    if c == ':' {
                        self.open_group(&format!("(?{flags}:"))?;
                    } else if !flags.is_empty() {
                        self.pending_flags.push_str(&format!("(?{flags})"));
                    }
                    return Ok(rest);
                }
                _ => break,
            }
        }
        Err(error(INVALID_PERL_OP, &s[..s.len() - rest.len()]))
    }

    /// A backslash outside a class.
    fn escape(&mut self, t: &'a str) -> Result<&'a str, String> {
        let mut rest = t;
        match t.as_bytes().get(1) {
            Some(b'A') => self.atom_str("(?:\\A)", 0, &mut rest, 2),
            Some(b'z') => self.atom_str("(?:\\z)", 0, &mut rest, 2),
            Some(b'b') => self.atom_str("(?-u:\\b)", 0, &mut rest, 2),
            Some(b'B') => self.atom_str("(?-u:\\B)", 0, &mut rest, 2),
            Some(b'C') => return Err(error(INVALID_ESCAPE, &t[..2])),
            Some(b'Q') => {
                let (lit, after) = t[2..].split_once("\\E").unwrap_or((&t[2..], ""));
                for c in lit.chars() {
                    self.flush_flags();
                    let start = self.out.len();
                    push_literal(&mut self.out, c);
                    self.push_atom(start, 0);
                }
                return Ok(after);
            }
            _ => {
                if let Some((class, after)) = unicode_class(t)? {
                    self.flush_flags();
                    let start = self.out.len();
                    self.out.push_str(&class);
                    self.push_atom(start, 0);
                    return Ok(after);
                }
                if let Some(class) = perl_class(t) {
                    self.atom_str(&format!("[{class}]"), 0, &mut rest, 2);
                    return Ok(rest);
                }
                let (c, after) = parse_escape(t)?;
                self.flush_flags();
                let start = self.out.len();
                push_literal(&mut self.out, c);
                self.push_atom(start, 0);
                return Ok(after);
            }
        }
        Ok(rest)
    }

    /// `[...]`, written back with every member escaped.
    fn class(&mut self, s: &'a str) -> Result<&'a str, String> {
        let mut t = &s[1..];
        let mut body = String::from("[");
        if t.starts_with('^') {
            body.push('^');
            t = &t[1..];
        }
        let mut first = true;
        while first || !t.starts_with(']') {
            first = false;
            if t.len() > 2
                && t.starts_with("[:")
                && let Some(i) = t[2..].find(":]")
            {
                let name = &t[..i + 4];
                let bare = name.trim_start_matches("[:").trim_start_matches('^');
                if !POSIX_CLASSES.contains(&bare.trim_end_matches(":]")) {
                    return Err(error(INVALID_CHAR_RANGE, name));
                }
                body.push_str(name);
                t = &t[i + 4..];
                continue;
            }
            if let Some((class, after)) = unicode_class(t)? {
                body.push_str(&class);
                t = after;
                continue;
            }
            if let Some(class) = perl_class(t) {
                body.push_str(&format!("[{class}]"));
                t = &t[2..];
                continue;
            }
            let range = t;
            let (lo, after) = class_char(t, s)?;
            t = after;
            let mut hi = lo;
            if t.len() >= 2 && t.starts_with('-') && !t[1..].starts_with(']') {
                let (h, after) = class_char(&t[1..], s)?;
                t = after;
                hi = h;
                if hi < lo {
                    return Err(error(INVALID_CHAR_RANGE, &range[..range.len() - t.len()]));
                }
            }
            push_literal(&mut body, lo);
            if hi != lo {
                body.push('-');
                push_literal(&mut body, hi);
            }
        }
        body.push(']');
        self.flush_flags();
        let start = self.out.len();
        self.out.push_str(&body);
        self.push_atom(start, 0);
        Ok(&t[1..])
    }
}

const POSIX_CLASSES: [&str; 14] = [
    "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct",
    "space", "upper", "word", "xdigit",
];

/// One member of a class: an escape or a character; running out means the class is unclosed.
fn class_char<'a>(t: &'a str, whole_class: &str) -> Result<(char, &'a str), String> {
    match t.chars().next() {
        None => Err(error("missing closing ]", whole_class)),
        Some('\\') => parse_escape(t),
        Some(c) => Ok((c, &t[c.len_utf8()..])),
    }
}

/// Writes `c` so that the `regex` crate reads it as exactly that character, in or out of a class.
fn push_literal(out: &mut String, c: char) {
    if regex_syntax::is_meta_character(c) {
        out.push('\\');
        out.push(c);
    } else if c.is_control() || c.is_whitespace() {
        out.push_str(&format!("\\x{{{:X}}}", c as u32));
    } else {
        out.push(c);
    }
}

/// Go's `\d \D \s \S \w \W`, as the body of a class (without brackets).
fn perl_class(t: &str) -> Option<&'static str> {
    Some(match t.as_bytes().get(..2)? {
        b"\\d" => "0-9",
        b"\\D" => "^0-9",
        b"\\s" => "\\t\\n\\x0C\\r ",
        b"\\S" => "^\\t\\n\\x0C\\r ",
        b"\\w" => "0-9A-Za-z_",
        b"\\W" => "^0-9A-Za-z_",
        _ => return None,
    })
}

/// `\pL`, `\p{Greek}`, `\P{^Greek}`: the class in the `regex` crate's syntax and the rest.
/// Names are checked by the `regex` crate's Unicode tables.
fn unicode_class(s: &str) -> Result<Option<(String, &str)>, String> {
    let negated = match s.as_bytes().get(..2) {
        Some(b"\\p") => false,
        Some(b"\\P") => true,
        _ => return Ok(None),
    };
    let Some(c) = s[2..].chars().next() else {
        return Ok(None);
    };
    let (seq, mut name) = if c == '{' {
        let Some(end) = s.find('}') else {
            return Err(error(INVALID_CHAR_RANGE, s));
        };
        (&s[..=end], &s[3..end])
    } else {
        let seq = &s[..2 + c.len_utf8()];
        (seq, &seq[2..])
    };
    let mut negated = negated;
    if let Some(n) = name.strip_prefix('^') {
        negated = !negated;
        name = n;
    }
    let valid = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && regex_syntax::Parser::new()
            .parse(&format!("\\p{{{name}}}"))
            .is_ok();
    if !valid {
        return Err(error(INVALID_CHAR_RANGE, seq));
    }
    let class = format!("\\{}{{{name}}}", if negated { 'P' } else { 'p' });
    Ok(Some((class, &s[seq.len()..])))
}

/// A single-character escape (`\n`, `\101`, `\x41`, `\x{263a}`, `\.`) and the rest.
fn parse_escape(s: &str) -> Result<(char, &str), String> {
    let t = &s[1..];
    let Some(c) = t.chars().next() else {
        return Err(error("trailing backslash at end of expression", ""));
    };
    let mut t = &t[c.len_utf8()..];
    let invalid = |t: &str| Err(error(INVALID_ESCAPE, &s[..s.len() - t.len()]));
    let octal = |t: &str| {
        t.as_bytes()
            .first()
            .is_some_and(|b| (b'0'..=b'7').contains(b))
    };
    match c {
        '1'..='7' if !octal(t) => invalid(t),
        '0'..='7' => {
            let mut r = c as u32 - '0' as u32;
            for _ in 1..3 {
                if !octal(t) {
                    break;
                }
                r = r * 8 + u32::from(t.as_bytes()[0] - b'0');
                t = &t[1..];
            }
            Ok((char::from_u32(r).unwrap_or('\0'), t))
        }
        'x' => hex_escape(s, t),
        'a' => Ok(('\x07', t)),
        'f' => Ok(('\x0C', t)),
        'n' => Ok(('\n', t)),
        'r' => Ok(('\r', t)),
        't' => Ok(('\t', t)),
        'v' => Ok(('\x0B', t)),
        c if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok((c, t)),
        _ => invalid(t),
    }
}

/// `\xHH` or `\x{H...}`; `t` is what follows the `x`.
fn hex_escape<'a>(s: &'a str, t: &'a str) -> Result<(char, &'a str), String> {
    let fail = |t: &str| Err(error(INVALID_ESCAPE, &s[..s.len() - t.len()]));
    let mut chars = t.char_indices();
    let Some((_, c)) = chars.next() else {
        return fail(t);
    };
    if c == '{' {
        let mut value: u32 = 0;
        for (digits, (i, c)) in chars.enumerate() {
            if c == '}' {
                if digits == 0 {
                    return fail(&t[i + 1..]);
                }
                let rest = &t[i + 1..];
                return char::from_u32(value)
                    .map(|c| (c, rest))
                    .map_or_else(|| fail(rest), Ok);
            }
            let Some(v) = c.to_digit(16) else {
                return fail(&t[i + c.len_utf8()..]);
            };
            value = value * 16 + v;
            if value > 0x10FFFF {
                return fail(&t[i + c.len_utf8()..]);
            }
        }
        return fail("");
    }
    let after_first = &t[c.len_utf8()..];
    let Some(c2) = after_first.chars().next() else {
        return fail(after_first);
    };
    let rest = &after_first[c2.len_utf8()..];
    match (c.to_digit(16), c2.to_digit(16)) {
        (Some(x), Some(y)) => Ok((char::from_u32(x * 16 + y).unwrap_or('\0'), rest)),
        _ => fail(rest),
    }
}

/// `{n}`, `{n,}`, `{n,m}` at the start of `s`: (min, max, rest) with Go's conventions: max
/// -1 when unbounded, a count too large to read is -1 and an unreadable max makes min -1.
/// `None` when `{` does not start a repeat (then Go reads it as a literal).
fn parse_repeat(s: &str) -> Option<(i64, i64, &str)> {
    let (mut min, s) = parse_int(&s[1..])?;
    let (max, s) = match s.strip_prefix(',') {
        None => (min, s),
        Some(rest) if rest.starts_with('}') => (-1, rest),
        Some(rest) => {
            let (max, rest) = parse_int(rest)?;
            if max < 0 {
                min = -1;
            }
            (max, rest)
        }
    };
    Some((min, max, s.strip_prefix('}')?))
}

/// Decimal digits without a leading zero (`0` alone is fine); -1 when too large.
fn parse_int(s: &str) -> Option<(i64, &str)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || (digits >= 2 && s.starts_with('0')) {
        return None;
    }
    let value = if digits > 9 {
        -1
    } else {
        s[..digits].parse().unwrap_or(-1)
    };
    Some((value, &s[digits..]))
}
