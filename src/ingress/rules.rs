//! Validated ingress: the rule list cloudflared's `validateIngress` would build, in order, with
//! its error messages, and the reference (linear) matcher that defines the semantics.
//!
//! The fast path is [`super::table::IngressTable`]; it must agree with [`Ingress::find_linear`]
//! on every input, which the property tests check.

use std::time::Duration;

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

use super::goregex::PathRegex;
use super::gourl::strip_port;
use super::origin_request::{Access, OriginRequest};
use super::service::Service;
use crate::config::raw::{RawConfig, RawRule, RawWarpRouting};

/// Index of a rule in `config.yml` order (0-based, as `ingress rule` prints it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleIndex(pub usize);

/// One validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// As written: empty or `*` match every host; `*.x` is a suffix match.
    pub hostname: String,
    /// IDNA ASCII form of a Unicode (or mixed-case) hostname, when it differs.
    pub punycode: Option<String>,
    pub path: Option<PathRegex>,
    pub service: Service,
    /// The rule's resolved options (defaults <- global <- rule).
    pub options: OriginRequest,
    /// Set when the rule's own `access` block has `required: true`.
    pub access: Option<Access>,
    /// Line of the rule in the file, 0 when it did not come from a file.
    pub line: u64,
}

/// `warp-routing` resolved with cloudflared's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarpRouting {
    pub connect_timeout: Duration,
    pub tcp_keep_alive: Duration,
    /// 0 = unlimited.
    pub max_active_flows: u64,
}

impl Default for WarpRouting {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            tcp_keep_alive: Duration::from_secs(30),
            max_active_flows: 0,
        }
    }
}

impl WarpRouting {
    pub fn from_raw(raw: Option<&RawWarpRouting>) -> WarpRouting {
        let mut w = WarpRouting::default();
        if let Some(raw) = raw {
            if let Some(d) = raw.connect_timeout {
                w.connect_timeout = d.0;
            }
            if let Some(d) = raw.tcp_keep_alive {
                w.tcp_keep_alive = d.0;
            }
            if let Some(n) = raw.max_active_flows {
                w.max_active_flows = n;
            }
        }
        w
    }
}

/// The validated rule set.
#[derive(Debug, Clone, PartialEq)]
pub struct Ingress {
    /// Never empty: the last rule is the catch-all.
    pub rules: Vec<Rule>,
    /// Built-in defaults overridden by the global `originRequest`.
    pub defaults: OriginRequest,
    pub warp_routing: WarpRouting,
}

/// A validation failure: `message` is cloudflared's exact text; the rest locates it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct IngressError {
    pub message: String,
    /// 1-based rule number, when the error is about one rule.
    pub rule: Option<usize>,
    /// Line in the config file, 0 when unknown.
    pub line: u64,
}

impl IngressError {
    fn new(message: impl Into<String>, rule: Option<usize>, line: u64) -> Self {
        Self {
            message: message.into(),
            rule,
            line,
        }
    }
}

pub const ERR_NO_RULES: &str = "The config file doesn't contain any ingress rules";
const ERR_LAST_NOT_CATCH_ALL: &str =
    "The last ingress rule must match all URLs (i.e. it should not have a hostname or path filter)";
const ERR_BAD_WILDCARD: &str = "Hostname patterns can have at most one wildcard character (\"*\") and it can only be used for subdomains, e.g. \"*.example.com\"";
const ERR_HOST_PORT: &str = "Hostname cannot contain a port";
/// Logged when no rule comes from the file or the CLI.
pub const WARN_NO_RULES_CLI: &str = "No ingress rules were defined in provided config (if any) nor from the cli, cloudflared will return 503 for all incoming HTTP requests";

impl Ingress {
    /// `ParseIngress`: the file's rules, validated in order (service, access, hostname, path).
    pub fn from_config(raw: &RawConfig) -> Result<Ingress, IngressError> {
        let rules = raw.ingress.as_deref().unwrap_or(&[]);
        if rules.is_empty() {
            return Err(IngressError::new(ERR_NO_RULES, None, 0));
        }
        let defaults = match &raw.origin_request {
            Some(global) => OriginRequest::default().merged(global),
            None => OriginRequest::default(),
        };
        let mut out = Vec::with_capacity(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            out.push(validate_rule(rule, i, rules.len(), &defaults)?);
        }
        Ok(Ingress {
            rules: out,
            defaults,
            warp_routing: WarpRouting::from_raw(raw.warp_routing.as_ref()),
        })
    }

    /// One catch-all rule (from `--url`, `--hello-world`, ... or the 503 default).
    pub fn single(service: Service, options: OriginRequest) -> Ingress {
        Ingress {
            rules: vec![Rule {
                hostname: String::new(),
                punycode: None,
                path: None,
                service,
                options: options.clone(),
                access: None,
                line: 0,
            }],
            defaults: options,
            warp_routing: WarpRouting::default(),
        }
    }

    /// What cloudflared serves with no rules at all: 503 for everything.
    pub fn default_503() -> Ingress {
        Ingress::single(Service::Status(503), OriginRequest::default())
    }

    /// `FindMatchingRule` exactly as cloudflared does it: strip the port, first match wins,
    /// otherwise the last rule. The reference for the fast table.
    pub fn find_linear(&self, host: &str, path: &str) -> RuleIndex {
        let host = strip_port(host);
        self.rules
            .iter()
            .position(|rule| rule.matches(host, path))
            .map(RuleIndex)
            .unwrap_or(RuleIndex(self.rules.len() - 1))
    }

    pub fn rule(&self, index: RuleIndex) -> &Rule {
        &self.rules[index.0]
    }
}

impl Rule {
    /// cloudflared's `Rule.Matches` (host already stripped of its port).
    pub fn matches(&self, host: &str, path: &str) -> bool {
        let host_match = self.matches_any_host()
            || match_host(&self.hostname, host)
            || self
                .punycode
                .as_deref()
                .is_some_and(|p| match_host(p, host));
        host_match && self.path.as_ref().is_none_or(|re| re.is_match(path))
    }

    pub fn matches_any_host(&self) -> bool {
        self.hostname.is_empty() || self.hostname == "*"
    }

    /// The tab-indented lines `ingress rule` prints under `Matched rule #N`.
    pub fn multi_line_string(&self) -> String {
        let mut out = String::new();
        if !self.hostname.is_empty() {
            out.push_str(&format!("\thostname: {}\n", self.hostname));
        }
        if let Some(path) = &self.path {
            out.push_str(&format!("\tpath: {}\n", path.as_str()));
        }
        out.push_str(&format!("\tservice: {}", self.service));
        out
    }
}

/// Exact, case-sensitive; `*.x` matches any host ending in `.x` (any depth, not `x` itself).
pub fn match_host(rule_host: &str, req_host: &str) -> bool {
    if rule_host == req_host {
        return true;
    }
    match rule_host.strip_prefix('*') {
        Some(suffix) if suffix.starts_with('.') => req_host.ends_with(suffix),
        _ => false,
    }
}

fn validate_rule(
    raw: &RawRule,
    i: usize,
    total: usize,
    defaults: &OriginRequest,
) -> Result<Rule, IngressError> {
    let line = raw
        .service
        .as_ref()
        .or(raw.hostname.as_ref())
        .map(|s| s.line)
        .unwrap_or(0);
    let fail = |msg: String| IngressError::new(msg, Some(i + 1), line);
    let options = OriginRequest::for_rule(defaults, raw.origin_request.as_ref());
    let own_ip_rules = raw
        .origin_request
        .as_ref()
        .and_then(|o| o.ip_rules.as_deref())
        .unwrap_or(&[]);
    let service_text = raw.service.as_ref().map(|s| s.value.as_str()).unwrap_or("");
    let service = Service::parse(service_text, &options, own_ip_rules).map_err(fail)?;
    let mut options = options;
    if service == Service::Bastion {
        options.bastion_mode = true;
    }
    let access = validate_access(raw).map_err(fail)?;
    let hostname = raw
        .hostname
        .as_ref()
        .map(|s| s.value.clone())
        .unwrap_or_default();
    let path_text = raw.path.as_ref().map(|s| s.value.as_str()).unwrap_or("");
    validate_hostname(&hostname, path_text, i, total).map_err(fail)?;
    let catch_all = (hostname.is_empty() || hostname == "*") && path_text.is_empty();
    let punycode = if catch_all {
        None
    } else {
        punycode_of(&hostname)
    };
    let path = if path_text.is_empty() {
        None
    } else {
        Some(
            PathRegex::new(path_text)
                .map_err(|e| fail(format!("Rule #{} has an invalid regex: {e}", i + 1)))?,
        )
    };
    Ok(Rule {
        hostname,
        punycode,
        path,
        service,
        options,
        access,
        line,
    })
}

fn validate_access(raw: &RawRule) -> Result<Option<Access>, String> {
    let Some(access) = raw.origin_request.as_ref().and_then(|o| o.access.as_ref()) else {
        return Ok(None);
    };
    let access = Access::from_raw(access);
    if !access.required {
        return Ok(None);
    }
    if access.team_name.is_empty() && !access.aud_tag.is_empty() {
        return Err("access.TeamName cannot be blank when access.audTags are present".into());
    }
    Ok(Some(access))
}

fn validate_hostname(hostname: &str, path: &str, i: usize, total: usize) -> Result<(), String> {
    if super::gourl::split_host_port(hostname).is_some() {
        return Err(ERR_HOST_PORT.into());
    }
    if hostname.rfind('*').is_some_and(|pos| pos > 0) {
        return Err(ERR_BAD_WILDCARD.into());
    }
    let catch_all = (hostname.is_empty() || hostname == "*") && path.is_empty();
    let last = i == total - 1;
    if last && !catch_all {
        return Err(ERR_LAST_NOT_CATCH_ALL.into());
    }
    if !last && catch_all {
        return Err(format!(
            "Rule #{} is matching the hostname '{hostname}', but this will match every hostname, meaning the rules which follow it will never be triggered.",
            i + 1
        ));
    }
    Ok(())
}

/// Go's `idna.Lookup.ToASCII` (UTS 46, STD3 rules, hyphen checks, lowercase mapping); only a
/// result that differs from the rule's hostname is kept.
fn punycode_of(hostname: &str) -> Option<String> {
    let ascii = Uts46::new()
        .to_ascii(
            hostname.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::Check,
            DnsLength::Ignore,
        )
        .ok()?;
    (ascii != hostname).then(|| ascii.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::parse_config;
    use std::path::Path;

    fn ingress(yaml: &str) -> Result<Ingress, IngressError> {
        let file = parse_config(yaml, Path::new("t.yml")).unwrap();
        Ingress::from_config(&file.raw)
    }

    #[test]
    fn punycode_follows_go_lookup_profile() {
        assert_eq!(
            punycode_of("môô.cloudflare.com").as_deref(),
            Some("xn--m-xgaa.cloudflare.com")
        );
        assert_eq!(punycode_of("Example.COM").as_deref(), Some("example.com"));
        assert_eq!(punycode_of("example.com"), None);
        assert_eq!(punycode_of("*.môô.com"), None, "STD3 rejects '*'");
    }

    #[test]
    fn bastion_service_sets_bastion_mode() {
        let ing = ingress("ingress:\n  - service: bastion\n").unwrap();
        assert!(ing.rules[0].options.bastion_mode);
    }

    #[test]
    fn errors_carry_rule_and_line() {
        let err = ingress("ingress:\n  - hostname: a.com\n    service: http://x\n  - hostname: b.com\n    service: http://y\n")
            .unwrap_err();
        assert_eq!(err.rule, Some(2));
        assert_eq!(err.line, 5);
    }
}
