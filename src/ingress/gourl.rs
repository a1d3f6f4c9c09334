//! The subset of Go's `net/url` that ingress needs, with Go's results and error texts.
//!
//! cloudflared parses `service:` values and the `ingress rule URL` argument with `url.Parse`, and
//! its validation messages embed Go's errors (`parse "x": first path segment in URL cannot
//! contain colon`). The WHATWG parser of the `url` crate normalises differently (it adds a `/`
//! path, rejects some hosts Go accepts), so this module follows Go instead.

use std::borrow::Cow;

/// A URL as Go's `url.Parse` splits it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GoUrl {
    /// Lowercased, as Go lowercases it.
    pub scheme: String,
    /// Set for `scheme:opaque` forms such as `localhost:8000` (scheme `localhost`).
    pub opaque: String,
    pub user: Option<String>,
    /// `host[:port]`, IPv6 literals keep their brackets.
    pub host: String,
    /// Percent-decoded path.
    pub path: String,
    pub raw_query: Option<String>,
    pub fragment: Option<String>,
}

/// Go's `*url.Error` text: `parse "<input>": <reason>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parse \"{input}\": {reason}")]
pub struct UrlError {
    pub input: String,
    pub reason: String,
}

impl GoUrl {
    /// `url.Parse`.
    pub fn parse(input: &str) -> Result<GoUrl, UrlError> {
        let fail = |reason: String| UrlError {
            input: input.to_owned(),
            reason,
        };
        if input.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(fail("net/url: invalid control character in URL".into()));
        }
        let (rest, fragment) = match input.split_once('#') {
            Some((r, f)) => (
                r,
                Some(unescape(f, Mode::Fragment).map_err(fail)?.into_owned()),
            ),
            None => (input, None),
        };
        let (scheme, rest) = split_scheme(rest).map_err(fail)?;
        let mut url = GoUrl {
            scheme: scheme.to_ascii_lowercase(),
            fragment,
            ..GoUrl::default()
        };
        let rest = match rest.split_once('?') {
            Some((r, q)) => {
                url.raw_query = Some(q.to_owned());
                r
            }
            None => rest,
        };
        if !rest.starts_with('/') && !url.scheme.is_empty() {
            url.opaque = rest.to_owned();
            return Ok(url);
        }
        if url.scheme.is_empty() {
            let first_segment = rest.split('/').next().unwrap_or("");
            if first_segment.contains(':') {
                return Err(fail(
                    "first path segment in URL cannot contain colon".into(),
                ));
            }
        }
        let path = match rest.strip_prefix("//") {
            Some(after) if !url.scheme.is_empty() || !rest.starts_with("///") => {
                let end = after.find('/').unwrap_or(after.len());
                let (authority, path) = after.split_at(end);
                let (user, host) = parse_authority(&url.scheme, authority).map_err(fail)?;
                url.user = user;
                url.host = host;
                path
            }
            _ => rest,
        };
        url.path = unescape(path, Mode::Path).map_err(fail)?.into_owned();
        Ok(url)
    }

    /// `URL.Hostname()`: the host without port and brackets.
    pub fn hostname(&self) -> &str {
        split_host_port_lenient(&self.host).0
    }

    /// `URL.Port()`: the digits after the host, or empty.
    pub fn port(&self) -> &str {
        split_host_port_lenient(&self.host).1
    }

    /// `URL.String()` for the forms ingress uses (no path escaping subtleties needed there).
    pub fn to_go_string(&self) -> String {
        let mut out = String::new();
        if !self.scheme.is_empty() {
            out.push_str(&self.scheme);
            out.push(':');
        }
        if !self.opaque.is_empty() {
            out.push_str(&self.opaque);
        } else {
            if !self.scheme.is_empty() || !self.host.is_empty() || self.user.is_some() {
                out.push_str("//");
                if let Some(user) = &self.user {
                    out.push_str(user);
                    out.push('@');
                }
                out.push_str(&escape_host(&self.host));
            }
            if !self.path.is_empty() && !self.path.starts_with('/') && !self.host.is_empty() {
                out.push('/');
            }
            out.push_str(&self.path);
        }
        if let Some(q) = &self.raw_query {
            out.push('?');
            out.push_str(q);
        }
        if let Some(f) = &self.fragment {
            out.push('#');
            out.push_str(f);
        }
        out
    }
}

/// Go's `getScheme`: a leading `[A-Za-z][A-Za-z0-9+.-]*:`; anything else means "no scheme".
fn split_scheme(raw: &str) -> Result<(&str, &str), String> {
    for (i, c) in raw.char_indices() {
        match c {
            'a'..='z' | 'A'..='Z' => {}
            '0'..='9' | '+' | '-' | '.' if i > 0 => {}
            ':' if i == 0 => return Err("missing protocol scheme".into()),
            ':' => return Ok((&raw[..i], &raw[i + 1..])),
            _ => return Ok(("", raw)),
        }
    }
    Ok(("", raw))
}

fn parse_authority(scheme: &str, authority: &str) -> Result<(Option<String>, String), String> {
    let (user, host) = match authority.rfind('@') {
        Some(i) => (Some(authority[..i].to_owned()), &authority[i + 1..]),
        None => (None, authority),
    };
    if let Some(bad) = host.chars().find(|c| !valid_host_char(*c)) {
        return Err(format!("invalid character \"{bad}\" in host name"));
    }
    Ok((user, parse_host(scheme, host)?))
}

/// Go's `parseHost`: IP literals in brackets (with an optional `%25zone`), the port checked
/// for digits only (65536 passes, as in Go), `%XX` in a host only for non-ASCII bytes.
fn parse_host(scheme: &str, host: &str) -> Result<String, String> {
    match host.rfind('[') {
        Some(i) if i > 0 => return Err("invalid IP-literal".into()),
        Some(_) => return parse_ip_literal(host),
        None => {}
    }
    if let Some(first) = host.find(':') {
        let last = host.rfind(':').unwrap_or(first);
        // Go 1.26 is strict about extra colons for http(s) only.
        let i = if scheme == "http" || scheme == "https" {
            first
        } else {
            last
        };
        check_port(&host[i..])?;
    }
    Ok(unescape(host, Mode::Host)?.into_owned())
}

fn parse_ip_literal(host: &str) -> Result<String, String> {
    let close = host.rfind(']').ok_or("missing ']' in host")?;
    let colon_port = &host[close + 1..];
    check_port(colon_port)?;
    let inner = &host[1..close];
    let unescaped = match inner.find("%25") {
        Some(zone) => format!(
            "{}{}",
            unescape(&inner[..zone], Mode::Host)?,
            unescape(&inner[zone..], Mode::Zone)?
        ),
        None => unescape(inner, Mode::Host)?.into_owned(),
    };
    let addr = unescaped.split('%').next().unwrap_or("");
    if addr.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err("invalid IP-literal".into());
    }
    if addr.parse::<std::net::Ipv6Addr>().is_err() {
        return Err(format!(
            "invalid host: ParseAddr({unescaped:?}): unable to parse IP"
        ));
    }
    Ok(format!("[{unescaped}]{colon_port}"))
}

/// Go's `validOptionalPort`: empty, or `:` and digits.
fn check_port(colon_port: &str) -> Result<(), String> {
    let ok = colon_port.is_empty()
        || colon_port
            .strip_prefix(':')
            .is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid port {colon_port:?} after host"))
    }
}

/// Go's `validOptionalPort`/host character check (non-ASCII is allowed; Go checks bytes < 0x80).
fn valid_host_char(c: char) -> bool {
    !c.is_ascii() || c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:[]%".contains(c)
}

/// Bytes Go's `URL.String()` writes as they are in a host; all others become `%XX`.
fn host_byte_unescaped(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]<>\"".contains(&b)
}

/// The host as `URL.String()` writes it (`escape(host, encodeHost)`).
fn escape_host(host: &str) -> Cow<'_, str> {
    if host.bytes().all(host_byte_unescaped) {
        return Cow::Borrowed(host);
    }
    let mut out = String::with_capacity(host.len() * 3);
    for b in host.bytes() {
        if host_byte_unescaped(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Cow::Owned(out)
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Path,
    Host,
    /// An IPv6 zone after `%25`.
    Zone,
    Fragment,
}

/// Percent-decoding as Go's `unescape`; borrowed when there is nothing to decode.
fn unescape(s: &str, mode: Mode) -> Result<Cow<'_, str>, String> {
    if !s.contains('%') {
        return Ok(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| {
                let h = std::str::from_utf8(h).ok()?;
                u8::from_str_radix(h, 16).ok()
            });
            match hex {
                Some(v) => {
                    let escape = &s[i..i + 3];
                    // In a host only non-ASCII bytes may be escaped (and `%25`, for zones);
                    // in a zone anything a host may hold, or a space.
                    let refused = match mode {
                        Mode::Host => v < 0x80 && escape != "%25",
                        Mode::Zone => {
                            escape != "%25" && v != b' ' && !(v >= 0x80 || host_byte_unescaped(v))
                        }
                        _ => false,
                    };
                    if refused {
                        return Err(format!("invalid URL escape \"{escape}\""));
                    }
                    out.push(v);
                    i += 3;
                }
                None => {
                    let end = (i + 3).min(s.len());
                    let shown = s.get(i..end).unwrap_or(&s[i..]);
                    return Err(format!("invalid URL escape \"{shown}\""));
                }
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(Cow::Owned(String::from_utf8_lossy(&out).into_owned()))
}

/// Percent-decodes a request path (`:path` without the query) the way Go's server fills
/// `URL.Path`; malformed escapes leave the path as received.
pub fn decode_request_path(raw: &str) -> Cow<'_, str> {
    unescape(raw, Mode::Path).unwrap_or(Cow::Borrowed(raw))
}

/// `net.SplitHostPort` succeeding or failing as Go's does; on failure the input is kept whole.
/// This is what ingress matching uses to strip a port from the request host.
pub fn strip_port(hostport: &str) -> &str {
    split_host_port(hostport)
        .map(|(h, _)| h)
        .unwrap_or(hostport)
}

/// `net.SplitHostPort`: `host:port` or `[v6]:port`; errors on missing port or stray colons.
pub fn split_host_port(hostport: &str) -> Option<(&str, &str)> {
    let colon = hostport.rfind(':')?;
    let (host, port) = (&hostport[..colon], &hostport[colon + 1..]);
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']')?;
        if inner.contains(']') {
            return None;
        }
        return Some((inner, port));
    }
    if host.contains(':') || host.contains('[') || host.contains(']') || port.contains(']') {
        return None;
    }
    Some((host, port))
}

/// `Hostname()`/`Port()` split: never fails.
fn split_host_port_lenient(host: &str) -> (&str, &str) {
    if let Some(inner) = host.strip_prefix('[') {
        return match inner.find(']') {
            Some(i) => (&inner[..i], inner[i + 1..].strip_prefix(':').unwrap_or("")),
            None => (inner, ""),
        };
    }
    match host.rfind(':') {
        Some(i) if !host[..i].contains(':') => (&host[..i], &host[i + 1..]),
        _ => (host, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_go() {
        let u = GoUrl::parse("HTTP://user@LocalHost:8000?x=1#f").unwrap();
        assert_eq!(u.scheme, "http");
        assert_eq!(u.user.as_deref(), Some("user"));
        assert_eq!(u.host, "LocalHost:8000");
        assert_eq!(u.hostname(), "LocalHost");
        assert_eq!(u.port(), "8000");
        assert_eq!(u.path, "");
        assert_eq!(u.to_go_string(), "http://user@LocalHost:8000?x=1#f");

        let u = GoUrl::parse("localhost:8000").unwrap();
        assert_eq!(
            (u.scheme.as_str(), u.opaque.as_str(), u.hostname()),
            ("localhost", "8000", "")
        );

        let u = GoUrl::parse("https://[::1]:443/a%20b").unwrap();
        assert_eq!(
            (u.hostname(), u.port(), u.path.as_str()),
            ("::1", "443", "/a b")
        );

        let u = GoUrl::parse("example.com/path").unwrap();
        assert_eq!(
            (u.scheme.as_str(), u.host.as_str(), u.path.as_str()),
            ("", "", "example.com/path")
        );
    }

    #[test]
    fn errors_like_go() {
        let err = |s: &str| GoUrl::parse(s).unwrap_err().to_string();
        assert_eq!(
            err("127.0.0.1:8000"),
            "parse \"127.0.0.1:8000\": first path segment in URL cannot contain colon"
        );
        assert_eq!(err(":8000"), "parse \":8000\": missing protocol scheme");
        assert_eq!(
            err("http://host:port"),
            "parse \"http://host:port\": invalid port \":port\" after host"
        );
        assert_eq!(
            err("http://a b"),
            "parse \"http://a b\": invalid character \" \" in host name"
        );
        assert_eq!(
            err("http://x/%zz"),
            "parse \"http://x/%zz\": invalid URL escape \"%zz\""
        );
        assert_eq!(
            err("http://x/\n"),
            "parse \"http://x/\n\": net/url: invalid control character in URL"
        );
    }

    #[test]
    fn split_host_port_matches_go() {
        assert_eq!(strip_port("example.com:443"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("host:"), "host");
    }

    #[test]
    fn request_path_decoding() {
        assert_eq!(decode_request_path("/a%2Fb"), "/a/b");
        assert_eq!(decode_request_path("/plain"), "/plain");
        assert_eq!(decode_request_path("/bad%zz"), "/bad%zz");
    }
}
