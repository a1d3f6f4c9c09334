//! Log lines users grep for, as cloudflared 2026.8.2 prints them: a failed origin request gives
//! the proxy's line with `ingressRule` and `originService` and the connection's
//! `failed to serve incoming request`, both with the error.

mod connector_support;

use std::time::Duration;

use connector_support::*;
use ringflare::runtime::DriverKind;

#[test]
fn origin_failure_logs_cloudflared_pair_of_lines_with_rule_and_service() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    block_on(DriverKind::Poll, async {
        let edge = TestEdge::new().await;
        let cfg = edge.dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "ingress:\n  - hostname: ok.test\n    service: http_status:200\n  - hostname: down.test\n    service: http://{closed}\n  - service: http_status:404\n"
            ),
        )
        .unwrap();
        let connector = Connector::start(&edge, Some(&cfg), &[], &[]);
        let mut conn = edge.accept().await;
        let reply = conn.request(get("down.test", "/"), None).await;
        assert_eq!(reply.status, 502);
        let log = connector.log_when(Duration::from_secs(10), |l| {
            l.contains("failed to serve incoming request")
        });
        let proxy_line = log
            .lines()
            .find(|l| l.contains("Unable to reach the origin service") && l.contains("ingressRule"))
            .unwrap_or_else(|| panic!("no proxy line with ingressRule:\n{log}"));
        assert!(proxy_line.contains("ingressRule=1"), "{proxy_line}");
        assert!(
            proxy_line.contains(&format!("originService=http://{closed}")),
            "{proxy_line}"
        );
        assert!(proxy_line.contains("connIndex=0"), "{proxy_line}");
        let serve_line = log
            .lines()
            .find(|l| l.contains("failed to serve incoming request"))
            .unwrap();
        assert!(
            serve_line.contains("Unable to reach the origin service"),
            "the error travels with the second line: {serve_line}"
        );

        // Private-network TCP has no rule: cloudflared's service name is warp-routing.
        let mut client = conn.client.clone().ready().await.unwrap();
        let req = http::Request::get(format!("https://{closed}/"))
            .header("cf-cloudflared-proxy-src", "10.0.0.1:1234")
            .body(())
            .unwrap();
        let (resp, _send) = client.send_request(req, false).unwrap();
        assert_ne!(resp.await.unwrap().status(), 200);
        let log = connector.log_when(Duration::from_secs(10), |l| {
            l.contains("originService=warp-routing")
        });
        assert!(log.contains("originService=warp-routing"), "{log}");
    });
}
