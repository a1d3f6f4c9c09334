//! The metric families of a running connector against the list extracted from cloudflared
//! 2026.8.2's source (tests/fixtures/cloudflared/metrics-2026.8.2.tsv, made by
//! extract_metrics.py): every plain `cloudflared_*` family cloudflared prints from start (at zero)
//! is there with its type, every `cloudflared_*` family ringflare prints is one of cloudflared's
//! with the same type and labels, histograms have cloudflared's buckets, and the counting of the
//! families added for parity follows cloudflared's rules.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use ringflare::runtime::DriverKind;

struct Family {
    kind: String,
    labels: Vec<String>,
    buckets: Vec<String>,
}

fn cloudflared_families() -> BTreeMap<String, Family> {
    let text = include_str!("fixtures/cloudflared/metrics-2026.8.2.tsv");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            let list = |s: &str| -> Vec<String> {
                s.split(',')
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect()
            };
            (
                cols[0].to_owned(),
                Family {
                    kind: cols[1].to_owned(),
                    labels: list(cols[2]),
                    buckets: list(cols[3]),
                },
            )
        })
        .collect()
}

/// The families of a scrape: name -> (type, sample lines).
fn scrape_families(body: &str) -> BTreeMap<String, (String, Vec<String>)> {
    let mut out: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    let mut current = String::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            current = name.to_owned();
            out.insert(name.to_owned(), (kind.to_owned(), Vec::new()));
        } else if !line.starts_with('#') && !line.is_empty() {
            assert!(
                line.starts_with(&current),
                "sample outside its family: {line}"
            );
            out.get_mut(&current).unwrap().1.push(line.to_owned());
        }
    }
    out
}

/// Label names of a sample line (`name{a="x",b="y"} v`), `le` left out.
fn label_names(sample: &str) -> BTreeSet<String> {
    let Some((_, rest)) = sample.split_once('{') else {
        return BTreeSet::new();
    };
    let inner = &rest[..rest.rfind('}').unwrap()];
    inner
        .split("\",")
        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_owned()))
        .filter(|k| k != "le")
        .collect()
}

fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn check_against_cloudflared(body: &str) {
    let reference = cloudflared_families();
    let got = scrape_families(body);
    // cloudflared prints a plain (unlabelled) family from registration on; those registered at
    // start (all but the QUIC client's, registered with the first QUIC connection) must be here.
    for (name, f) in &reference {
        if f.labels.is_empty() && name.starts_with("cloudflared_") {
            let (kind, samples) = got
                .get(name)
                .unwrap_or_else(|| panic!("cloudflared's family {name} missing:\n{body}"));
            assert_eq!(kind, &f.kind, "{name}");
            assert!(!samples.is_empty(), "{name} has no sample");
        }
    }
    for (name, (kind, samples)) in &got {
        if !name.starts_with("cloudflared_") && name != "build_info" {
            continue;
        }
        let f = reference
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not one of cloudflared's families"));
        assert_eq!(kind, &f.kind, "{name}");
        let want: BTreeSet<String> = f.labels.iter().cloned().collect();
        for s in samples {
            assert_eq!(label_names(s), want, "{name}: {s}");
        }
        if f.kind == "histogram" {
            let les: Vec<String> = samples
                .iter()
                .filter(|s| s.starts_with(&format!("{name}_bucket")))
                .filter_map(|s| Some(s.split("le=\"").nth(1)?.split('"').next()?.to_owned()))
                .filter(|le| le != "+Inf")
                .collect();
            let series = samples.iter().filter(|s| s.contains("le=\"+Inf\"")).count();
            assert!(series > 0, "{name}: no +Inf bucket");
            let want: Vec<String> = (0..series)
                .flat_map(|_| f.buckets.iter().cloned())
                .collect();
            assert_eq!(les, want, "{name} buckets");
        }
    }
}

#[test]
fn scrape_shows_cloudflared_families_with_its_types_labels_buckets_and_counting() {
    let echo = tcp_echo();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    block_on(DriverKind::Poll, async {
        let edge = TestEdge::new().await;
        let cfg = edge.dir.path().join("config.yml");
        std::fs::write(&cfg, "ingress:\n  - service: http_status:404\n").unwrap();
        let connector = Connector::start(&edge, Some(&cfg), &[], &[]);
        let conn = edge.accept().await;
        let metrics = connector.metrics_addr().expect("metrics line");
        let scrape = || http_get(&metrics, "/metrics").1;
        // Connection 0 registers, then uploads its local configuration (not remotely managed).
        let pushed = eventually(Duration::from_secs(10), || {
            value(&scrape(), "cloudflared_config_local_config_pushes") == Some(1.0)
        })
        .await;
        let body = scrape();
        assert!(pushed, "{body}");
        check_against_cloudflared(&body);
        assert_eq!(
            value(&body, "cloudflared_config_local_config_pushes_errors"),
            Some(0.0)
        );
        for method in ["register_connection", "update_local_configuration"] {
            let labels = format!("{{handler=\"registration\",method=\"{method}\"}}");
            assert_eq!(
                value(&body, &format!("cloudflared_rpc_client_operations{labels}")),
                Some(1.0),
                "{body}"
            );
            assert_eq!(
                value(
                    &body,
                    &format!("cloudflared_rpc_client_latency_secs_count{labels}")
                ),
                Some(1.0),
                "{body}"
            );
        }
        // Nothing failed and nothing unregistered yet: no series, so no family (as Go's vectors).
        assert!(!body.contains("cloudflared_rpc_client_failures"), "{body}");
        assert!(!body.contains("method=\"unregister_connection\""), "{body}");
        // No UDP/ICMP and no TCP flow yet: cloudflared's zeros.
        for zero in [
            "cloudflared_udp_active_sessions",
            "cloudflared_udp_total_sessions",
            "cloudflared_icmp_total_requests",
            "cloudflared_icmp_total_replies",
            "cloudflared_proxy_connect_streams_errors",
            "cloudflared_proxy_connect_latency_count",
        ] {
            assert_eq!(value(&body, zero), Some(0.0), "{zero}: {body}");
        }

        // `/config`: the running ingress as cloudflared's orchestrator prints it (no remote
        // configuration yet: version -1).
        let (line, text) = http_get(&metrics, "/config");
        assert!(line.contains("200"), "{line}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["version"], -1, "{text}");
        assert_eq!(
            v["config"]["ingress"][0]["service"], "http_status:404",
            "{text}"
        );
        assert_eq!(v["config"]["warp-routing"], serde_json::json!({}), "{text}");
        assert_eq!(v["config"]["originRequest"]["connectTimeout"], 30, "{text}");

        // One private-network TCP flow that connects, one whose origin refuses.
        let mut client = conn.client.clone().ready().await.unwrap();
        let req = http::Request::get(format!("https://{echo}/"))
            .header("cf-cloudflared-proxy-src", "10.0.0.1:1234")
            .body(())
            .unwrap();
        let (resp, mut send) = client.send_request(req, false).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        ringflare::runtime::h2stream::send_all(&mut send, Bytes::from_static(b"ping"))
            .await
            .unwrap();
        let mut body = resp.into_body();
        let mut got = Vec::new();
        while got.len() < 4 {
            let chunk = body.data().await.unwrap().unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, b"ping");
        let mut client = conn.client.clone().ready().await.unwrap();
        let req = http::Request::get(format!("https://{closed}/"))
            .header("cf-cloudflared-proxy-src", "10.0.0.1:1235")
            .body(())
            .unwrap();
        let (resp, _send) = client.send_request(req, false).unwrap();
        let resp = resp.await.unwrap();
        assert_ne!(resp.status(), 200);
        let body = scrape();
        check_against_cloudflared(&body);
        assert_eq!(
            value(&body, "cloudflared_proxy_connect_latency_count"),
            Some(1.0),
            "{body}"
        );
        assert_eq!(
            value(
                &body,
                "cloudflared_proxy_connect_latency_bucket{le=\"+Inf\"}"
            ),
            Some(1.0),
            "{body}"
        );
        assert_eq!(
            value(&body, "cloudflared_proxy_connect_streams_errors"),
            Some(1.0),
            "{body}"
        );
        assert_eq!(value(&body, "cloudflared_tcp_total_sessions"), Some(1.0));
    });
}
