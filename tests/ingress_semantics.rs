//! Config + URL -> matched rule, for every matching quirk of cloudflared, through both the
//! reference linear scan and the compiled table; and every validation error's exact text.

use std::path::Path;

use proptest::prelude::*;
use ringflare::config::file::parse_config;
use ringflare::ingress::gourl::{GoUrl, decode_request_path};
use ringflare::ingress::{Ingress, IngressTable, Matched, RuleIndex};

fn ingress(yaml: &str) -> Ingress {
    let file = parse_config(yaml, Path::new("test.yml")).expect("yaml");
    Ingress::from_config(&file.raw).expect("valid ingress")
}

fn validation_error(yaml: &str) -> String {
    let file = parse_config(yaml, Path::new("test.yml")).expect("yaml");
    Ingress::from_config(&file.raw)
        .expect_err("should fail")
        .message
}

/// Both matchers must give `expected` (0-based rule index) for the URL.
fn assert_match(ing: &Ingress, url: &str, expected: usize) {
    let u = GoUrl::parse(url).expect("url");
    let linear = ing.find_linear(&u.host, &u.path);
    let table = IngressTable::new(ing.clone());
    assert_eq!(linear, RuleIndex(expected), "linear scan for {url}");
    assert_eq!(
        table.find(&u.host, &u.path),
        Matched::Rule(RuleIndex(expected)),
        "table for {url}"
    );
}

const QUIRKS: &str = r#"
ingress:
  - hostname: exact.example.com
    service: http://localhost:1
  - hostname: "*.wild.example.com"
    service: http://localhost:2
  - hostname: môô.cloudflare.com
    service: http://localhost:3
  - hostname: CaseSensitive.example.com
    service: http://localhost:4
  - hostname: api.example.com
    path: /v[0-9]+/
    service: http://localhost:5
  - hostname: api.example.com
    service: http://localhost:6
  - path: \.(jpg|png)$
    service: http://localhost:7
  - hostname: exact.example.com
    service: http://localhost:8
  - service: http_status:404
"#;

#[test]
fn matching_quirks_table() {
    let ing = ingress(QUIRKS);
    let cases: &[(&str, usize)] = &[
        // Exact host, first match wins (rule 7 duplicates rule 0's host).
        ("https://exact.example.com/", 0),
        // Port stripped from the request host.
        ("https://exact.example.com:8443/x", 0),
        // Wildcard: suffix match at any depth, not the bare domain.
        ("https://a.wild.example.com/", 1),
        ("https://a.b.c.wild.example.com/", 1),
        ("https://wild.example.com/", 8),
        // Wildcard rule text also matches itself literally.
        ("https://*.wild.example.com/", 1),
        // Unicode rule matches its punycode form and itself.
        ("https://xn--m-xgaa.cloudflare.com/", 2),
        ("https://môô.cloudflare.com/", 2),
        // Case-sensitive: only the exact spelling (or the lowercase IDNA form) matches.
        ("https://CaseSensitive.example.com/", 3),
        ("https://casesensitive.example.com/", 3),
        ("https://CASESENSITIVE.example.com/", 8),
        // Path regex is unanchored and tested on the decoded path.
        ("https://api.example.com/v2/users", 4),
        ("https://api.example.com/prefix/v10/", 4),
        ("https://api.example.com/v%32/", 4),
        ("https://api.example.com/users", 5),
        // Query strings are not part of the path.
        ("https://api.example.com/users?x=/v1/", 5),
        // Host-less rule with a path applies to every host.
        ("https://other.org/pic.png", 6),
        ("https://exact.example.com/pic.png", 0),
        // Fall through to the last rule.
        ("https://nothing.example.net/", 8),
        ("http://[::1]:8080/", 8),
    ];
    for (url, expected) in cases {
        assert_match(&ing, url, *expected);
    }
}

#[test]
fn rule_numbers_and_catch_all_star() {
    let ing = ingress(
        "ingress:\n  - hostname: a.com\n    service: http://x\n  - hostname: \"*\"\n    service: http://y\n",
    );
    assert_match(&ing, "http://b.com/", 1);
    let table = IngressTable::with_internal(ing, &["management.argotunnel.com"]);
    assert_eq!(
        table.find("management.argotunnel.com:443", "/"),
        Matched::Internal(0)
    );
}

#[test]
fn every_validation_error_has_cloudflareds_text() {
    let cases: &[(&str, &str)] = &[
        (
            "tunnel: x\n",
            "The config file doesn't contain any ingress rules",
        ),
        (
            "ingress: []\n",
            "The config file doesn't contain any ingress rules",
        ),
        (
            "ingress:\n  - service: http_status:abc\n",
            "invalid HTTP status code: strconv.Atoi: parsing \"abc\": invalid syntax",
        ),
        (
            "ingress:\n  - service: http_status:42\n",
            "invalid HTTP status code: 42",
        ),
        (
            "ingress:\n  - service: \"127.0.0.1:80\"\n",
            "parse \"127.0.0.1:80\": first path segment in URL cannot contain colon",
        ),
        (
            "ingress:\n  - service: localhost:80\n",
            "localhost:80 is an invalid address, please make sure it has a scheme and a hostname",
        ),
        (
            "ingress:\n  - service: http://localhost:80/api\n",
            "http://localhost:80/api is an invalid address, ingress rules don't support proxying to a different path on the origin service. The path will be the same as the eyeball request's path",
        ),
        (
            "ingress:\n  - service: socks-proxy\n    originRequest:\n      ipRules:\n        - prefix: 10.0.0.0\n",
            "unable to create ip rule for socks-proxy: unable to parse cidr: 10.0.0.0",
        ),
        (
            "ingress:\n  - service: socks-proxy\n    originRequest:\n      ipRules:\n        - prefix: 10.0.0.0/8\n          ports: [70000]\n",
            "unable to create ip rule for socks-proxy: invalid port 70000, needs to be between 1 and 65535",
        ),
        (
            "ingress:\n  - service: http://x\n    originRequest:\n      access:\n        required: true\n        audTag: [abc]\n",
            "access.TeamName cannot be blank when access.audTags are present",
        ),
        (
            "ingress:\n  - hostname: a.com:8080\n    service: http://x\n  - service: http://y\n",
            "Hostname cannot contain a port",
        ),
        (
            "ingress:\n  - hostname: a.*.com\n    service: http://x\n  - service: http://y\n",
            "Hostname patterns can have at most one wildcard character (\"*\") and it can only be used for subdomains, e.g. \"*.example.com\"",
        ),
        (
            "ingress:\n  - hostname: a.com\n    service: http://x\n",
            "The last ingress rule must match all URLs (i.e. it should not have a hostname or path filter)",
        ),
        (
            "ingress:\n  - path: /x\n    service: http://x\n",
            "The last ingress rule must match all URLs (i.e. it should not have a hostname or path filter)",
        ),
        (
            "ingress:\n  - hostname: a.com\n    service: http://x\n  - hostname: \"*\"\n    service: http://y\n  - service: http://z\n",
            "Rule #2 is matching the hostname '*', but this will match every hostname, meaning the rules which follow it will never be triggered.",
        ),
        (
            "ingress:\n  - service: http://x\n  - service: http://y\n",
            "Rule #1 is matching the hostname '', but this will match every hostname, meaning the rules which follow it will never be triggered.",
        ),
        (
            "ingress:\n  - hostname: a.com\n    path: \"(unclosed\"\n    service: http://x\n  - service: http://y\n",
            "Rule #1 has an invalid regex: error parsing regexp: missing closing ): `(unclosed`",
        ),
    ];
    for (yaml, message) in cases {
        assert_eq!(&validation_error(yaml), message, "config:\n{yaml}");
    }
}

#[test]
fn service_is_checked_before_hostname() {
    // Both the service and the hostname are bad; cloudflared reports the service.
    let msg = validation_error("ingress:\n  - hostname: a.com:1\n    service: http_status:1\n");
    assert_eq!(msg, "invalid HTTP status code: 1");
}

#[test]
fn multi_line_string_is_what_ingress_rule_prints() {
    let ing = ingress(QUIRKS);
    assert_eq!(
        ing.rules[4].multi_line_string(),
        "\thostname: api.example.com\n\tpath: /v[0-9]+/\n\tservice: http://localhost:5"
    );
    assert_eq!(
        ing.rules[8].multi_line_string(),
        "\tservice: http_status:404"
    );
}

#[test]
fn decoded_path_is_used_for_matching() {
    assert_eq!(decode_request_path("/v%32/"), "/v2/");
}

// --- table == linear scan, on generated rule sets -------------------------------------------

fn host_strategy() -> impl Strategy<Value = String> {
    let labels = prop::sample::select(vec!["a", "b", "api", "www", "x", "ex", "B", "môô"]);
    prop::collection::vec(labels, 1..4).prop_map(|l| l.join("."))
}

fn rule_strategy() -> impl Strategy<Value = (String, Option<&'static str>)> {
    let host = prop_oneof![
        host_strategy(),
        host_strategy().prop_map(|h| format!("*.{h}")),
        Just("*".to_owned()),
        Just(String::new()),
    ];
    let path = prop::option::of(prop::sample::select(vec!["^/a", "b$", "/x/", "[0-9]"]));
    (host, path).prop_filter("non-last catch-alls are invalid", |(h, p)| {
        !((h.is_empty() || h == "*") && p.is_none())
    })
}

fn yaml_for(rules: &[(String, Option<&'static str>)]) -> String {
    let mut y = String::from("ingress:\n");
    for (i, (host, path)) in rules.iter().enumerate() {
        y.push_str(&format!(
            "  - hostname: \"{host}\"\n    service: http://localhost:{}\n",
            i + 1
        ));
        if let Some(p) = path {
            y.push_str(&format!("    path: \"{p}\"\n"));
        }
    }
    y.push_str("  - service: http_status:404\n");
    y
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn table_agrees_with_linear_scan(
        rules in prop::collection::vec(rule_strategy(), 0..12),
        probes in prop::collection::vec(
            (host_strategy(), prop::sample::select(vec!["/", "/a", "/x/1", "/ab", "/b"]),
             prop::option::of(1u16..9999)),
            1..20),
    ) {
        let ing = ingress(&yaml_for(&rules));
        let table = IngressTable::new(ing.clone());
        for (host, path, port) in probes {
            let authority = match port { Some(p) => format!("{host}:{p}"), None => host.clone() };
            prop_assert_eq!(
                table.find(&authority, path),
                Matched::Rule(ing.find_linear(&authority, path)),
                "host {} path {}", authority, path
            );
        }
    }
}
