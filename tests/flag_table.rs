//! Holds ringflare's flag table against the flags cloudflared 2026.8.2 defines, as extracted
//! from its source by tests/fixtures/cloudflared/extract_flags.py into
//! tests/fixtures/cloudflared/flags-2026.8.2.tsv: same names, aliases, env vars, kinds,
//! defaults and levels, nothing missing and nothing invented.

use std::collections::BTreeSet;

use ringflare::cli::flags::{self, FLAGS, Kind, Scope, Support};
use ringflare::config::duration::parse_go_duration;

const TABLE: &str = include_str!("fixtures/cloudflared/flags-2026.8.2.tsv");
/// ringflare's own flags, absent from cloudflared.
const OWN: &[&str] = &["io-driver", "workers", "config-poll-interval", "json"];

struct Row<'a> {
    level: Scope,
    name: &'a str,
    aliases: Vec<&'a str>,
    env: Vec<&'a str>,
    kind: &'a str,
    default: &'a str,
}

fn rows() -> Vec<Row<'static>> {
    let list = |s: &'static str| s.split(',').filter(|x| !x.is_empty()).collect::<Vec<_>>();
    TABLE
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            assert_eq!(c.len(), 7, "malformed row {l:?}");
            Row {
                level: if c[0] == "run" {
                    Scope::Run
                } else {
                    Scope::Tunnel
                },
                name: c[1],
                aliases: list(c[2]),
                env: list(c[3]),
                kind: c[4],
                default: c[5],
            }
        })
        .collect()
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Bool => "Bool",
        Kind::String => "String",
        Kind::Int => "Int",
        Kind::Duration => "Duration",
        Kind::List => "List",
    }
}

#[test]
fn every_cloudflared_flag_is_defined_alike() {
    let rows = rows();
    assert!(rows.len() > 100, "the extracted list looks truncated");
    let mut problems = Vec::new();
    for r in &rows {
        let Some(f) = flags::find(r.name) else {
            problems.push(format!("--{} is missing", r.name));
            continue;
        };
        let at = if r.level == Scope::Run {
            "run"
        } else {
            "tunnel"
        };
        if f.name != r.name {
            problems.push(format!("--{} resolves to --{}", r.name, f.name));
        }
        if !f.allowed_at(r.level) {
            problems.push(format!("--{} is not accepted at `{at}`", r.name));
        }
        let ours: BTreeSet<&str> = f.aliases.iter().copied().collect();
        let theirs: BTreeSet<&str> = r.aliases.iter().copied().collect();
        if ours != theirs {
            problems.push(format!(
                "--{}: aliases {ours:?}, cloudflared {theirs:?}",
                r.name
            ));
        }
        if f.env != r.env.as_slice() {
            problems.push(format!(
                "--{}: env {:?}, cloudflared {:?}",
                r.name, f.env, r.env
            ));
        }
        let kind = if r.kind == "Uint64" { "Int" } else { r.kind };
        if kind_name(f.kind) != kind {
            problems.push(format!(
                "--{}: kind {:?}, cloudflared {kind}",
                r.name, f.kind
            ));
        }
        if r.default != "<dynamic>" && !same_default(f.kind, f.default, r.default) {
            problems.push(format!(
                "--{}: default {:?}, cloudflared {:?}",
                r.name, f.default, r.default
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn same_default(kind: Kind, ours: &str, theirs: &str) -> bool {
    match kind {
        Kind::Duration => parse_go_duration(ours).ok() == parse_go_duration(theirs).ok(),
        _ => ours == theirs,
    }
}

#[test]
fn no_flag_is_invented_or_placed_where_cloudflared_rejects_it() {
    let rows = rows();
    let defined =
        |name: &str, level: Scope| rows.iter().any(|r| r.name == name && r.level == level);
    for f in FLAGS.iter().filter(|f| !OWN.contains(&f.name)) {
        for level in [Scope::Tunnel, Scope::Run] {
            assert_eq!(
                f.allowed_at(level),
                defined(f.name, level),
                "--{} at {level:?}: ringflare and cloudflared disagree",
                f.name
            );
        }
    }
}

#[test]
fn refused_and_warned_flags_say_why() {
    for f in FLAGS {
        if let Support::Warn(why) | Support::Refuse(why) = f.support {
            assert!(why.len() > 10, "--{}: give a reason", f.name);
        }
    }
    // QUIC landed with post-quantum key agreement: `--pq` is implemented, no longer refused.
    let pq = flags::find("pq").unwrap();
    assert!(
        matches!(pq.support, Support::Implemented),
        "{:?}",
        pq.support
    );
}
