//! A scrape and `/config` of a live connector against what stock cloudflared 2026.8.2 served in
//! the same situation (tests/fixtures/cloudflared/observed/{metrics,config}-after-requests.*,
//! recorded by record_metrics.sh): the same families in the same order with the same HELP,
//! TYPE, series and labels after a served request and an unreachable origin, and `/config`
//! byte for byte.

mod common;

use std::time::Duration;

use common::*;
use ringflare::runtime::DriverKind;

/// A scrape as the fixture keeps it: go_* and ringflare's own family dropped, values dropped,
/// `edge_location` and build_info's labels masked.
fn normalise(scrape: &str) -> Vec<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with("## ") && !l.is_empty())
        .filter(|l| !l.contains("go_") && !l.contains("ringflare_uptime_seconds"))
        .map(|l| {
            let mut l = if l.starts_with('#') {
                l.to_owned()
            } else {
                l.rsplit_once(' ').map_or(l, |(s, _)| s).to_owned()
            };
            if let Some(at) = l.find("edge_location=\"") {
                let start = at + "edge_location=\"".len();
                if let Some(len) = l[start..].find('"') {
                    l.replace_range(start..start + len, "*");
                }
            }
            if l.starts_with("build_info{") {
                l = "build_info".into();
            }
            l
        })
        .collect()
}

fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn scrape_and_config_match_a_live_cloudflared() {
    let origin = echo_origin();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    block_on(DriverKind::Poll, async {
        let edge = TestEdge::new().await;
        let cfg = edge.dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "ingress:
  - hostname: app.test
    path: /bad
    service: http://127.0.0.1:{}
  - hostname: app.test
    service: http://127.0.0.1:{}
    originRequest:
      connectTimeout: 5s
  - service: http_status:404
",
                closed.port(),
                origin.addr.port()
            ),
        )
        .unwrap();
        let connector = Connector::start(&edge, Some(&cfg), &[], &[]);
        let mut conn = edge.accept().await;
        assert_eq!(conn.request(get("app.test", "/"), None).await.status, 200);
        assert_eq!(
            conn.request(get("app.test", "/bad"), None).await.status,
            502
        );
        let metrics = connector.metrics_addr().expect("metrics line");
        let scrape = || http_get(&metrics, "/metrics").1;
        let settled = eventually(Duration::from_secs(10), || {
            let body = scrape();
            value(&body, "cloudflared_tunnel_total_requests") == Some(2.0)
                && value(&body, "cloudflared_config_local_config_pushes") == Some(1.0)
        })
        .await;
        let body = scrape();
        assert!(settled, "{body}");

        let want = normalise(include_str!(
            "fixtures/cloudflared/observed/metrics-after-requests.txt"
        ));
        let got = normalise(&body);
        let missing: Vec<&String> = want.iter().filter(|l| !got.contains(l)).collect();
        let extra: Vec<&String> = got.iter().filter(|l| !want.contains(l)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "missing {missing:#?}\nextra {extra:#?}"
        );
        assert_eq!(got, want, "family order (client_golang sorts by name)");
        // cloudflared's counting in this situation: its own 502 is an error, not a response.
        for (series, v) in [
            ("cloudflared_tunnel_total_requests", 2.0),
            ("cloudflared_tunnel_request_errors", 1.0),
            (
                "cloudflared_tunnel_response_by_code{status_code=\"200\"}",
                1.0,
            ),
            ("cloudflared_orchestration_config_version", 0.0),
            ("promhttp_metric_handler_requests_in_flight", 1.0),
        ] {
            assert_eq!(value(&body, series), Some(v), "{series}\n{body}");
        }
        assert!(
            value(
                &body,
                "promhttp_metric_handler_requests_total{code=\"200\"}"
            )
            .is_some_and(|n| n >= 1.0)
        );

        let config = http_get(&metrics, "/config").1;
        let config = config
            .replace(
                &format!("http://127.0.0.1:{}\"", closed.port()),
                "http://127.0.0.1:CLOSED\"",
            )
            .replace(
                &format!("http://127.0.0.1:{}\"", origin.addr.port()),
                "http://127.0.0.1:ORIGIN\"",
            );
        assert_eq!(
            config,
            include_str!("fixtures/cloudflared/observed/config-after-requests.json")
        );
    });
}
