//! yaml.v3's view of a config file: the first document as a node tree, and the typing rules its
//! decoder applies when a node lands in a Go field (bool, int, uint, string, time.Duration).
//!
//! Events come from `granit-parser` (the YAML 1.2 event parser under serde-saphyr); this module
//! only builds nodes and decides, as yaml.v3 does, what a scalar resolves to. Type errors are not
//! returned one at a time: a [`Decoder`] collects every one with its line, as yaml.v3 reports
//! `yaml: unmarshal errors:` with all of them.

use std::borrow::Cow;

use granit_parser::{Event, Parser, ScalarStyle};

/// One YAML node with the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub line: u64,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `tag` is the explicit tag in yaml.v3's short form (`!!str`), if any.
    Scalar {
        value: String,
        plain: bool,
        tag: Option<String>,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// What a scalar means to yaml.v3 (`resolve`): the tag it reports in errors and its value.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str,
}

impl Resolved {
    fn tag(&self) -> &'static str {
        match self {
            Resolved::Null => "!!null",
            Resolved::Bool(_) => "!!bool",
            Resolved::Int(_) => "!!int",
            Resolved::Float(_) => "!!float",
            Resolved::Str => "!!str",
        }
    }
}

/// Nodes aliases may expand into before the file is refused (yaml.v3 refuses excessive
/// aliasing); a real config uses a handful.
const MAX_ALIAS_NODES: usize = 1_000_000;

/// Nesting yaml.v3 (libyaml) allows; it also keeps the recursive walks here within the stack.
const MAX_DEPTH: usize = 10_000;

/// Parses the first document. `Ok(None)` when the text holds no document at all (yaml.v3's EOF:
/// cloudflared then says the file was empty). Errors are yaml.v3-style `yaml: line N: ...`.
pub fn first_document(text: &str) -> Result<Option<Node>, String> {
    if let Some(err) = tab_indentation(text) {
        return Err(err);
    }
    let mut builder = Builder::default();
    for next in Parser::new_from_str(text) {
        let (event, span) =
            next.map_err(|e| format!("yaml: line {}: {}", e.marker().line().max(1), e.info()))?;
        let line = span.start.line().max(1) as u64;
        if builder.feed(event, line)? {
            return Ok(builder.root.take());
        }
    }
    Ok(builder.root.take())
}

/// yaml.v3 (libyaml) refuses a tab in the indentation of a line inside block context, even
/// on a comment line, and reports it against the line before. The same for a tab before a
/// block sequence indicator (`found character that cannot start any token`).
fn tab_indentation(text: &str) -> Option<String> {
    let mut in_document = false;
    for (i, line) in text.split('\n').enumerate() {
        let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
        let lead = &line[..indent];
        let rest = line[indent..].trim_end_matches('\r');
        if lead.contains('\t') && in_document {
            if rest.starts_with('#') || rest.is_empty() {
                if rest.is_empty() {
                    continue;
                }
                return Some(format!(
                    "yaml: line {}: found a tab character that violates indentation",
                    i
                ));
            }
            if lead.starts_with('\t') {
                return Some(format!(
                    "yaml: line {}: found character that cannot start any token",
                    i + 1
                ));
            }
        }
        if rest == "---" || rest.starts_with("--- ") {
            if in_document {
                return None;
            }
        } else if !rest.is_empty() && !rest.starts_with('#') && !rest.starts_with('%') {
            in_document = true;
        }
    }
    None
}

#[derive(Default)]
struct Builder {
    /// Open collections: the node, a mapping key waiting for its value, the anchor id.
    stack: Vec<(Node, Option<Node>, usize)>,
    anchors: Vec<(usize, Node)>,
    root: Option<Node>,
    alias_nodes: usize,
}

impl Builder {
    /// Feeds one event; true once the first document is complete.
    fn feed(&mut self, event: Event<'_>, line: u64) -> Result<bool, String> {
        match event {
            Event::DocumentEnd => return Ok(true),
            Event::Scalar(value, style, anchor, tag) => {
                let tag = tag.map(|t| short_tag(t.handle(), t.suffix()));
                let node = Node {
                    line,
                    kind: Kind::Scalar {
                        value: value.into_owned(),
                        plain: style == ScalarStyle::Plain,
                        tag,
                    },
                };
                self.finish(node, anchor)?;
            }
            Event::SequenceStart(_, anchor, _) => self.open(Kind::Seq(Vec::new()), line, anchor)?,
            Event::MappingStart(_, anchor, _) => self.open(Kind::Map(Vec::new()), line, anchor)?,
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((node, _, anchor)) = self.stack.pop() {
                    self.finish(node, anchor)?;
                }
            }
            Event::Alias(id) => {
                let node = self
                    .anchors
                    .iter()
                    .rev()
                    .find(|(a, _)| *a == id)
                    .map(|(_, n)| n.clone())
                    .ok_or_else(|| "yaml: unknown anchor referenced".to_owned())?;
                self.alias_nodes += count(&node);
                if self.alias_nodes > MAX_ALIAS_NODES {
                    return Err("yaml: document contains excessive aliasing".into());
                }
                self.finish(node, 0)?;
            }
            _ => {}
        }
        Ok(false)
    }

    fn open(&mut self, kind: Kind, line: u64, anchor: usize) -> Result<(), String> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(format!(
                "yaml: line {line}: exceeded max depth of {MAX_DEPTH}"
            ));
        }
        self.stack.push((Node { line, kind }, None, anchor));
        Ok(())
    }

    fn finish(&mut self, node: Node, anchor: usize) -> Result<(), String> {
        if anchor != 0 {
            self.anchors.push((anchor, node.clone()));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some((parent, key, _)) => match &mut parent.kind {
                Kind::Seq(items) => items.push(node),
                Kind::Map(pairs) => match key.take() {
                    None => *key = Some(node),
                    Some(k) => pairs.push((k, node)),
                },
                Kind::Scalar { .. } => {}
            },
        }
        Ok(())
    }
}

fn count(node: &Node) -> usize {
    match &node.kind {
        Kind::Scalar { .. } => 1,
        Kind::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        Kind::Map(pairs) => {
            1 + pairs
                .iter()
                .map(|(k, v)| count(k) + count(v))
                .sum::<usize>()
        }
    }
}

fn short_tag(handle: &str, suffix: &str) -> String {
    if handle == "tag:yaml.org,2002:" || handle == "!!" {
        format!("!!{suffix}")
    } else {
        format!("{handle}{suffix}")
    }
}

impl Node {
    /// yaml.v3's `resolve` for a scalar: quoted and `!!str` scalars are strings; plain ones may
    /// be null, bool (`true`/`True`/`TRUE`, ...), int (decimal, `0x`, `0o`, `0b`, `_` allowed,
    /// YAML 1.1 octal `0777`) or float.
    pub fn resolve(&self) -> Resolved {
        let Kind::Scalar { value, plain, tag } = &self.kind else {
            return Resolved::Str;
        };
        match tag.as_deref() {
            Some("!!str") | Some("!!binary") => Resolved::Str,
            Some("!!null") => Resolved::Null,
            None if !*plain => Resolved::Str,
            _ => resolve_plain(value),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.kind, Kind::Scalar { .. }) && self.resolve() == Resolved::Null
    }

    /// The tag yaml.v3 names in a type error.
    fn error_tag(&self) -> Cow<'static, str> {
        match &self.kind {
            Kind::Seq(_) => "!!seq".into(),
            Kind::Map(_) => "!!map".into(),
            Kind::Scalar { tag: Some(t), .. } => t.clone().into(),
            Kind::Scalar { .. } => self.resolve().tag().into(),
        }
    }

    pub fn scalar(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }
}

fn resolve_plain(value: &str) -> Resolved {
    match value {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "true" | "True" | "TRUE" => return Resolved::Bool(true),
        "false" | "False" | "FALSE" => return Resolved::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Resolved::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
        _ => {}
    }
    let first = value.as_bytes()[0];
    if first == b'.' {
        return go_float(value).map_or(Resolved::Str, Resolved::Float);
    }
    if !(first.is_ascii_digit() || first == b'-' || first == b'+') {
        return Resolved::Str;
    }
    let plain = value.replace('_', "");
    if let Some(n) = go_int(&plain) {
        return Resolved::Int(n);
    }
    if is_yaml_float(&plain)
        && let Some(f) = go_float(&plain)
    {
        return Resolved::Float(f);
    }
    let (neg, digits) = match plain.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, plain.as_str()),
    };
    for (prefix, radix) in [("0b", 2), ("0o", 8)] {
        if let Some(d) = digits.strip_prefix(prefix)
            && let Ok(n) = u64::from_str_radix(d, radix)
            && !d.starts_with(['+', '-'])
            && (!neg || i128::from(n) <= 1 << 63)
        {
            let n = i128::from(n);
            return Resolved::Int(if neg { -n } else { n });
        }
    }
    Resolved::Str
}

/// Go's `strconv.ParseInt(s, 0, 64)` then `ParseUint(s, 0, 64)`: sign, `0x`/`0o`/`0b`/`0`
/// prefixes, no underscores (already removed).
fn go_int(s: &str) -> Option<i128> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return None;
    }
    let n = i128::from(u64::from_str_radix(digits, radix).ok()?);
    if neg {
        (n <= 1 << 63).then_some(-n)
    } else {
        Some(n)
    }
}

/// yaml.v3's float pattern: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_float(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => !frac.is_empty() && frac.bytes().all(|b| b.is_ascii_digit()),
        Some((int, frac)) => {
            !int.is_empty()
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|b| b.is_ascii_digit()),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    mantissa_ok && exponent_ok
}

fn go_float(s: &str) -> Option<f64> {
    s.parse::<f64>().ok()
}

/// Collects yaml.v3's `unmarshal errors` in decode order.
#[derive(Debug, Default)]
pub struct Decoder {
    pub errors: Vec<String>,
    /// Strict pass (cloudflared's second decode): unknown fields are reported.
    pub unknown: Vec<(u64, String, &'static str)>,
}

impl Decoder {
    /// yaml.v3's type error: `line N: cannot unmarshal !!str `value` into bool`.
    pub fn type_error(&mut self, node: &Node, go_type: &str) {
        let tag = node.error_tag();
        let value = match (&node.kind, node.scalar()) {
            (Kind::Scalar { .. }, Some(v)) if v.len() > 10 => {
                let cut = (0..=7).rev().find(|i| v.is_char_boundary(*i)).unwrap_or(0);
                format!(" `{}...`", &v[..cut])
            }
            (Kind::Scalar { .. }, Some(v)) => format!(" `{v}`"),
            _ => String::new(),
        };
        self.errors.push(format!(
            "line {}: cannot unmarshal {tag}{value} into {go_type}",
            node.line
        ));
    }

    /// The pairs of a mapping with yaml.v3's duplicate-key errors; `None` (after reporting)
    /// when a key repeats or the node is not a mapping.
    pub fn mapping<'n>(&mut self, node: &'n Node, go_type: &str) -> Option<&'n [(Node, Node)]> {
        let Kind::Map(pairs) = &node.kind else {
            self.type_error(node, go_type);
            return None;
        };
        let before = self.errors.len();
        for (i, (a, _)) in pairs.iter().enumerate() {
            for (b, _) in &pairs[i + 1..] {
                if let Some(key) = a.scalar().filter(|k| Some(*k) == b.scalar()) {
                    self.errors.push(format!(
                        "line {}: mapping key {} already defined at line {}",
                        b.line,
                        go_quote(key),
                        a.line
                    ));
                }
            }
        }
        (self.errors.len() == before).then_some(pairs.as_slice())
    }

    pub fn bool(&mut self, node: &Node) -> Option<bool> {
        match node.resolve() {
            Resolved::Null => None,
            Resolved::Bool(b) => Some(b),
            Resolved::Str => match node.scalar().unwrap_or("") {
                "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
                "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
                _ => {
                    self.type_error(node, "bool");
                    None
                }
            },
            _ => {
                self.type_error(node, "bool");
                None
            }
        }
    }

    /// Into a Go integer of `go_type` within `min..=max` (floats truncate, as Go converts them).
    pub fn int(&mut self, node: &Node, go_type: &str, min: i128, max: i128) -> Option<i128> {
        let value = match node.resolve() {
            Resolved::Null => return None,
            Resolved::Int(n) => Some(n),
            Resolved::Float(f) if f.is_finite() => Some(f.trunc() as i128),
            _ => None,
        };
        match value.filter(|n| (min..=max).contains(n)) {
            Some(n) => Some(n),
            None => {
                self.type_error(node, go_type);
                None
            }
        }
    }

    /// Any scalar into a string is its text; collections are type errors.
    pub fn string(&mut self, node: &Node) -> Option<String> {
        if node.is_null() {
            return None;
        }
        match node.scalar() {
            Some(s) => Some(s.to_owned()),
            None => {
                self.type_error(node, "string");
                None
            }
        }
    }

    /// A `time.Duration`: a string Go's `time.ParseDuration` reads; negative values allowed.
    /// Returns nanoseconds.
    pub fn duration(&mut self, node: &Node) -> Option<i128> {
        match node.resolve() {
            Resolved::Null => None,
            Resolved::Str => {
                let text = node.scalar().unwrap_or("");
                let (neg, body) = match text.strip_prefix('-') {
                    Some(b) => (true, b),
                    None => (false, text.strip_prefix('+').unwrap_or(text)),
                };
                let signless = !body.starts_with(['-', '+']);
                match super::duration::parse_go_duration(body) {
                    Ok(d) if signless => {
                        let n = d.as_nanos() as i128;
                        Some(if neg { -n } else { n })
                    }
                    _ => {
                        self.type_error(node, "time.Duration");
                        None
                    }
                }
            }
            _ => {
                self.type_error(node, "time.Duration");
                None
            }
        }
    }

    /// A sequence; `None` after a type error. Null items are skipped by the caller's decode.
    pub fn seq<'n>(&mut self, node: &'n Node, go_type: &str) -> Option<&'n [Node]> {
        match &node.kind {
            Kind::Seq(items) => Some(items),
            _ if node.is_null() => None,
            _ => {
                self.type_error(node, go_type);
                None
            }
        }
    }
}

/// Go's `%#v` of a string (a double-quoted Go literal).
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The node as the untyped value yaml.v3 gives an `interface{}` (used for flag-valued keys).
pub fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value;
    match &node.kind {
        Kind::Seq(items) => Value::Array(items.iter().map(to_json).collect()),
        Kind::Map(pairs) => Value::Object(
            pairs
                .iter()
                .map(|(k, v)| (k.scalar().unwrap_or("").to_owned(), to_json(v)))
                .collect(),
        ),
        Kind::Scalar { value, .. } => match node.resolve() {
            Resolved::Null => Value::Null,
            Resolved::Bool(b) => Value::Bool(b),
            Resolved::Int(n) => i64::try_from(n)
                .map(Value::from)
                .unwrap_or_else(|_| Value::from(n as u64)),
            Resolved::Float(f) => serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(value.clone())),
            Resolved::Str => Value::String(value.clone()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str) -> Resolved {
        first_document(text).unwrap().unwrap().resolve()
    }

    #[test]
    fn scalars_resolve_as_yaml_v3() {
        assert_eq!(resolve("true"), Resolved::Bool(true));
        assert_eq!(resolve("\"true\""), Resolved::Str);
        assert_eq!(resolve("yes"), Resolved::Str);
        assert_eq!(resolve("0x10"), Resolved::Int(16));
        assert_eq!(resolve("0o17"), Resolved::Int(15));
        assert_eq!(resolve("017"), Resolved::Int(15));
        assert_eq!(resolve("1_000"), Resolved::Int(1000));
        assert_eq!(resolve("1e3"), Resolved::Float(1000.0));
        assert_eq!(resolve("8080.0"), Resolved::Float(8080.0));
        assert_eq!(resolve("~"), Resolved::Null);
        assert_eq!(resolve("!!str 5"), Resolved::Str);
        assert_eq!(resolve("1.2.3"), Resolved::Str);
    }

    #[test]
    fn only_the_first_document_counts() {
        let doc = first_document("a: 1\n---\n[\n").unwrap().unwrap();
        assert!(matches!(doc.kind, Kind::Map(ref pairs) if pairs.len() == 1));
        assert_eq!(first_document("# only a comment\n").unwrap(), None);
    }

    #[test]
    fn hostile_nesting_and_aliases_are_refused_not_overflowed() {
        let deep = "[".repeat(20_000);
        assert!(first_document(&deep).is_err());
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let prev = format!("*a{}", i - 1);
            let items = [prev.as_str(); 10].join(", ");
            bomb.push_str(&format!("a{i}: &a{i} [{items}]\n"));
        }
        assert!(
            first_document(&bomb)
                .unwrap_err()
                .contains("excessive aliasing")
        );
    }
}
