//! Log lines users grep for, as cloudflared 2026.8.2 prints them: a failed origin request gives
//! the proxy's line with `ingressRule` and `originService` and the connection's
//! `failed to serve incoming request`, both with the error.

mod common;

use std::time::Duration;

use common::*;
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

/// Opens a private-network TCP flow to `dest`; the status and the stream halves.
async fn open_flow(
    conn: &EdgeConn,
    dest: std::net::SocketAddr,
) -> (
    u16,
    h2::SendStream<bytes::Bytes>,
    http::Response<h2::RecvStream>,
) {
    let mut client = conn.client.clone().ready().await.unwrap();
    let req = http::Request::get(format!("https://{dest}/"))
        .header("cf-cloudflared-proxy-src", "10.0.0.1:1234")
        .body(())
        .unwrap();
    let (resp, send) = client.send_request(req, false).unwrap();
    let resp = resp.await.unwrap();
    (resp.status().as_u16(), send, resp)
}

#[test]
fn max_active_flows_refuses_tcp_flows_over_the_limit_and_frees_slots() {
    let echo = tcp_echo();
    block_on(DriverKind::Poll, async {
        let edge = TestEdge::new().await;
        let cfg = edge.dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            "warp-routing:\n  maxActiveFlows: 1\ningress:\n  - service: http_status:404\n",
        )
        .unwrap();
        let connector = Connector::start(&edge, Some(&cfg), &[], &[]);
        let conn = edge.accept().await;
        let metrics = connector.metrics_addr().expect("metrics line");
        let (status, first_send, first_resp) = open_flow(&conn, echo).await;
        assert_eq!(status, 200);
        let (status, _, _) = open_flow(&conn, echo).await;
        assert_eq!(
            status, 502,
            "a second flow over maxActiveFlows 1 is refused"
        );
        let log = connector.log_when(Duration::from_secs(10), |l| {
            l.contains("Too many concurrent flows being handled, rejecting tcp proxy")
        });
        assert!(log.contains("Too many concurrent flows"), "{log}");
        let body = http_get(&metrics, "/metrics").1;
        assert!(
            body.contains("flow_client_registrations_rate_limited_total{flow_type=\"tcp\"} 1"),
            "{body}"
        );
        // Closing the first flow frees its slot.
        drop(first_send);
        drop(first_resp);
        let mut reopened = false;
        for _ in 0..200 {
            let (status, _send, _resp) = open_flow(&conn, echo).await;
            if status == 200 {
                reopened = true;
                break;
            }
            compio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(reopened, "the slot was never released");
    });
}
