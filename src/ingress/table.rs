//! The compiled ingress lookup table the data-plane cores read, and its atomic publication.
//!
//! Built once per (re)load on the control thread from a validated [`Ingress`], then never
//! mutated: cores load the current `Arc<IngressTable>` through [`SharedIngress`] (arc-swap, no
//! locks) and keep it for the life of one request. A lookup costs a hash of the request host,
//! one probe per `.` in it, and a regex only for the rules that share that host and have a path,
//! so it does not grow with the number of host-only rules. It returns exactly the rule
//! cloudflared's first-match linear scan returns ([`Ingress::find_linear`]).

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use foldhash::fast::RandomState;
use smallvec::SmallVec;

use super::gourl::strip_port;
use super::rules::{Ingress, Rule, RuleIndex};

type Candidates = SmallVec<[u32; 2]>;

/// Which rules can match a host, indexed three ways.
#[derive(Debug)]
pub struct IngressTable {
    ingress: Ingress,
    /// Rule hostnames (and their punycode forms) matched exactly.
    exact: HashMap<Box<str>, Candidates, RandomState>,
    /// `*.x` rules keyed by their suffix `.x`; a host probes each of its own `.`-suffixes.
    suffix: HashMap<Box<str>, Candidates, RandomState>,
    /// Rules with no hostname filter (empty or `*`): every host is a candidate for them.
    any_host: Candidates,
    /// Hostnames served by the connector itself (the management endpoint); checked first.
    internal: HashMap<Box<str>, u32, RandomState>,
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matched {
    /// A user rule (the catch-all when nothing else matched).
    Rule(RuleIndex),
    /// An internal rule, numbered from 0 (cloudflared reports these as `-1 - n`).
    Internal(usize),
}

impl IngressTable {
    /// Compiles `ingress` (already validated, so its last rule is a catch-all).
    pub fn new(ingress: Ingress) -> IngressTable {
        Self::with_internal(ingress, &[])
    }

    /// Like [`IngressTable::new`], plus internal hostnames matched before any user rule.
    pub fn with_internal(ingress: Ingress, internal_hosts: &[&str]) -> IngressTable {
        let mut table = IngressTable {
            exact: HashMap::default(),
            suffix: HashMap::default(),
            any_host: Candidates::new(),
            internal: internal_hosts
                .iter()
                .enumerate()
                .map(|(i, h)| (Box::from(*h), i as u32))
                .collect(),
            ingress,
        };
        let keys: Vec<(u32, Vec<String>, bool)> = table
            .ingress
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| (i as u32, host_keys(rule), rule.matches_any_host()))
            .collect();
        for (index, hosts, any) in keys {
            if any {
                table.any_host.push(index);
                continue;
            }
            for host in hosts {
                table.index_host(host, index);
            }
        }
        table
    }

    fn index_host(&mut self, host: String, index: u32) {
        // A wildcard rule also matches its own literal text exactly (cloudflared compares
        // `ruleHost == reqHost` first), so every hostname goes in the exact map.
        if let Some(suffix) = host.strip_prefix('*').filter(|s| s.starts_with('.')) {
            push_unique(self.suffix.entry(suffix.into()).or_default(), index);
        }
        push_unique(self.exact.entry(host.into_boxed_str()).or_default(), index);
    }

    /// The rule for a request: `host` may carry a port (`:authority`), `path` is the decoded
    /// URL path without the query.
    pub fn find(&self, host: &str, path: &str) -> Matched {
        let host = strip_port(host);
        if let Some(&i) = self.internal.get(host) {
            return Matched::Internal(i as usize);
        }
        Matched::Rule(self.find_user_rule(host, path))
    }

    /// First matching user rule, else the last rule; `host` has no port.
    pub fn find_user_rule(&self, host: &str, path: &str) -> RuleIndex {
        let mut candidates: SmallVec<[u32; 16]> = SmallVec::new();
        if let Some(found) = self.exact.get(host) {
            candidates.extend_from_slice(found);
        }
        for (pos, _) in host.match_indices('.') {
            if let Some(found) = self.suffix.get(&host[pos..]) {
                candidates.extend_from_slice(found);
            }
        }
        candidates.extend_from_slice(&self.any_host);
        candidates.sort_unstable();
        let rules = &self.ingress.rules;
        candidates
            .into_iter()
            .find(|&i| {
                let rule = &rules[i as usize];
                rule.path.as_ref().is_none_or(|re| re.is_match(path))
            })
            .map(|i| RuleIndex(i as usize))
            .unwrap_or(RuleIndex(rules.len() - 1))
    }

    pub fn ingress(&self) -> &Ingress {
        &self.ingress
    }

    pub fn rule(&self, index: RuleIndex) -> &Rule {
        self.ingress.rule(index)
    }
}

fn host_keys(rule: &Rule) -> Vec<String> {
    let mut keys = vec![rule.hostname.clone()];
    keys.extend(rule.punycode.clone());
    keys
}

fn push_unique(list: &mut Candidates, index: u32) {
    if list.last() != Some(&index) {
        list.push(index);
    }
}

/// The published table: one writer (the control thread), any number of lock-free readers.
#[derive(Debug)]
pub struct SharedIngress {
    current: ArcSwap<IngressTable>,
}

impl SharedIngress {
    pub fn new(table: IngressTable) -> SharedIngress {
        SharedIngress {
            current: ArcSwap::from_pointee(table),
        }
    }

    /// The table to use for one request; holding the `Arc` keeps it alive across a reload.
    pub fn load(&self) -> Arc<IngressTable> {
        self.current.load_full()
    }

    /// Publishes a new, fully validated table; requests already holding the old one finish
    /// with it.
    pub fn publish(&self, table: IngressTable) {
        self.current.store(Arc::new(table));
    }
}
