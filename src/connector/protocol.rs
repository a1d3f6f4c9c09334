//! Transport selection as cloudflared 2026.8.2 does it (spec §1.7, §12), pure.
//!
//! `quic` and `http2` are static and never fall back; `h2mux` becomes http2 with a warning;
//! `auto` with a token starts on QUIC with http2 as the fallback; `auto` without a token uses
//! the remote (DNS TXT) selector, whose lookup ringflare does not perform: it behaves as
//! cloudflared does when the lookup fails, starting on http2 with no fallback.

use std::fmt;

/// An edge transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Quic,
    Http2,
}

impl Protocol {
    /// The name cloudflared logs (`protocol=quic`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Quic => "quic",
            Protocol::Http2 => "http2",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// cloudflared's text for an unknown `--protocol`.
const AVAILABLE: &str = "Available protocols: 'auto' - automatically chooses the best protocol over time (the default; and also the recommended one); 'quic' - based on QUIC, relying on UDP egress to Cloudflare edge; 'http2' - using Go's HTTP2 library, relying on TCP egress to Cloudflare edge";

/// The initial transport and the one to switch to, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolSelector {
    pub initial: Protocol,
    pub fallback: Option<Protocol>,
}

/// What resolving `--protocol` produced, with the warning cloudflared logs for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub selector: ProtocolSelector,
    pub warning: Option<&'static str>,
}

impl ProtocolSelector {
    /// Resolves the `--protocol` value; `token` is whether the tunnel runs from a token.
    pub fn resolve(flag: &str, token: bool) -> Result<Selection, String> {
        let fixed = |p| ProtocolSelector {
            initial: p,
            fallback: None,
        };
        let (selector, warning) = match flag {
            "h2mux" => (
                fixed(Protocol::Http2),
                Some(
                    "h2mux is no longer a supported protocol: upgrading edge connection to http2. Please remove '--protocol h2mux' from runtime arguments to remove this warning.",
                ),
            ),
            "quic" => (fixed(Protocol::Quic), None),
            "http2" => (fixed(Protocol::Http2), None),
            "auto" if token => (
                ProtocolSelector {
                    initial: Protocol::Quic,
                    fallback: Some(Protocol::Http2),
                },
                None,
            ),
            // The remote selector's TXT lookup failed: protocol value 0 is http2.
            "auto" => (
                fixed(Protocol::Http2),
                Some("Unable to lookup protocol percentage."),
            ),
            other => return Err(format!("unknown protocol {other}, {AVAILABLE}")),
        };
        Ok(Selection { selector, warning })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_choices_never_fall_back() {
        for (flag, p) in [("quic", Protocol::Quic), ("http2", Protocol::Http2)] {
            for token in [false, true] {
                let s = ProtocolSelector::resolve(flag, token).unwrap();
                assert_eq!(s.selector.initial, p);
                assert_eq!(s.selector.fallback, None);
                assert_eq!(s.warning, None);
            }
        }
    }

    #[test]
    fn auto_with_token_starts_on_quic() {
        let s = ProtocolSelector::resolve("auto", true).unwrap().selector;
        assert_eq!(
            (s.initial, s.fallback),
            (Protocol::Quic, Some(Protocol::Http2))
        );
    }

    #[test]
    fn auto_without_token_is_http2_after_failed_lookup() {
        let s = ProtocolSelector::resolve("auto", false).unwrap();
        assert_eq!(s.selector.initial, Protocol::Http2);
        assert_eq!(s.selector.fallback, None);
        assert!(s.warning.is_some());
    }

    #[test]
    fn h2mux_upgrades_and_unknown_fails() {
        let s = ProtocolSelector::resolve("h2mux", false).unwrap();
        assert_eq!(s.selector.initial, Protocol::Http2);
        assert!(s.warning.unwrap().contains("h2mux"));
        let e = ProtocolSelector::resolve("udp", false).unwrap_err();
        assert!(
            e.starts_with("unknown protocol udp, Available protocols:"),
            "{e}"
        );
    }
}
