//! Access JWT validation end to end: the connector binary behind the in-test edge, a real
//! echo origin, and a loopback JWKS server (reached through the test-only
//! `RINGFLARE_ACCESS_CERTS_URL_TEMPLATE`). Tokens are RS256-signed here with the fixture keys.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair, RsaPublicKeyComponents};
use ringflare::runtime::DriverKind;

const KEY_A: &[u8] = include_bytes!("fixtures/access_rsa_a.der");
const KEY_B: &[u8] = include_bytes!("fixtures/access_rsa_b.der");
const ISS: &str = "https://live.cloudflareaccess.com";

fn b64(v: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

fn jwk(key: &[u8], kid: &str) -> String {
    let c: RsaPublicKeyComponents<Vec<u8>> = RsaKeyPair::from_der(key).unwrap().public().into();
    format!(
        r#"{{"kid":"{kid}","kty":"RSA","alg":"RS256","use":"sig","e":"{}","n":"{}"}}"#,
        b64(&c.e),
        b64(&c.n)
    )
}

fn token(key: &[u8], kid: &str, iss: &str, aud: &str, exp: u64) -> String {
    let kp = RsaKeyPair::from_der(key).unwrap();
    let header = format!(r#"{{"alg":"RS256","kid":"{kid}","typ":"JWT"}}"#);
    let claims = format!(r#"{{"iss":"{iss}","aud":["{aud}"],"exp":{exp},"sub":"user"}}"#);
    let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let mut sig = vec![0; kp.public().modulus_len()];
    kp.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{input}.{}", b64(&sig))
}

fn in_a_minute() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60
}

/// A loopback JWKS server: `/live/cdn-cgi/access/certs` answers the current key set (chunked,
/// as a CDN may), `/down/...` drops the connection without answering. Counts `live` fetches.
struct Jwks {
    port: u16,
    body: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

fn jwks_server(initial: String, tls: Option<Arc<rustls::ServerConfig>>) -> Jwks {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = Arc::new(Mutex::new(initial));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (b, f) = (body.clone(), fetches.clone());
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            match &tls {
                None => serve_jwks(s, &b, &f),
                Some(cfg) => {
                    let Ok(conn) = rustls::ServerConnection::new(cfg.clone()) else {
                        continue;
                    };
                    serve_jwks(rustls::StreamOwned::new(conn, s), &b, &f);
                }
            }
        }
    });
    Jwks {
        port,
        body,
        fetches,
    }
}

fn serve_jwks<S: Read + Write>(mut s: S, body: &Mutex<String>, fetches: &AtomicUsize) {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let req = String::from_utf8_lossy(&req);
    if req.starts_with("GET /live/cdn-cgi/access/certs HTTP/1.1\r\n") {
        fetches.fetch_add(1, SeqCst);
        let doc = body.lock().unwrap().clone();
        let (one, two) = doc.split_at(doc.len() / 2);
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{one}\r\n{:x}\r\n{two}\r\n0\r\n\r\n",
            one.len(),
            two.len()
        );
        let _ = s.flush();
    }
}

fn with_token(host: &str, jwt: &str) -> http::Request<()> {
    http::Request::get(format!("https://{host}/x"))
        .header("cf-access-jwt-assertion", jwt)
        .body(())
        .unwrap()
}

#[test]
fn access_rules_validate_jwts_against_the_team_jwks() {
    let origin = echo_origin();
    let jwks = jwks_server(format!(r#"{{"keys":[{}]}}"#, jwk(KEY_A, "a")), None);
    block_on(DriverKind::Poll, async {
        let edge = TestEdge::new().await;
        let config = edge.dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "ingress:\n  - hostname: app.test\n    service: http://{o}\n    originRequest:\n      access:\n        required: true\n        teamName: live\n        audTag: [aud-other, aud-good]\n  - hostname: down.test\n    service: http://{o}\n    originRequest:\n      access:\n        required: true\n        teamName: down\n        audTag: [aud-good]\n  - service: http_status:404\n",
                o = origin.addr
            ),
        )
        .unwrap();
        let template = format!("http://127.0.0.1:{}/{{team}}", jwks.port);
        let connector = Connector::spawn_env(
            &[edge.addr()],
            &edge.ca,
            &common::token(),
            Some(&config),
            &["--ha-connections".into(), "1".into()],
            &[],
            &[("RINGFLARE_ACCESS_CERTS_URL_TEMPLATE", &template)],
        );
        let mut conn = edge.accept().await;
        let origin_hits = || origin.connections.load(SeqCst);

        // No token: 403, status only, nothing fetched, origin untouched.
        let r = conn.request(get("app.test", "/x"), None).await;
        assert_eq!(r.status, 403, "{}", connector.log_text());
        assert_eq!(r.meta, r#"{"src":"origin"}"#);
        assert!(r.headers.is_empty() && r.body.is_empty());
        assert_eq!(jwks.fetches.load(SeqCst), 0);
        assert_eq!(origin_hits(), 0);

        // A valid token is proxied; the keys are fetched once and then cached.
        let good = token(KEY_A, "a", ISS, "aud-good", in_a_minute());
        for _ in 0..2 {
            let r = conn.request(with_token("app.test", &good), None).await;
            assert_eq!(r.status, 200, "{}", connector.log_text());
            let text = String::from_utf8_lossy(&r.body);
            assert!(text.starts_with("GET /x HTTP/1.1\n"), "{text}");
            assert!(text.contains(&format!("Cf-Access-Jwt-Assertion: {good}\n")));
        }
        assert_eq!(jwks.fetches.load(SeqCst), 1);
        let proxied = origin_hits();
        assert!(proxied >= 1);

        // Audience not among the tags: 403, not proxied.
        let wrong_aud = token(KEY_A, "a", ISS, "aud-nope", in_a_minute());
        let r = conn.request(with_token("app.test", &wrong_aud), None).await;
        assert_eq!((r.status, r.meta.as_str()), (403, r#"{"src":"origin"}"#));
        assert!(r.headers.is_empty());

        // Signed with another key under kid "a", expired, or from another issuer: 502.
        let forged = token(KEY_B, "a", ISS, "aud-good", in_a_minute());
        let expired = token(KEY_A, "a", ISS, "aud-good", 1_000_000);
        let foreign = token(
            KEY_A,
            "a",
            "https://evil.cloudflareaccess.com",
            "aud-good",
            in_a_minute(),
        );
        for bad in [&forged, &expired, &foreign, &"not.a.jwt".to_owned()] {
            let r = conn.request(with_token("app.test", bad), None).await;
            assert_eq!(r.status, 502, "{bad}");
        }
        assert_eq!(jwks.fetches.load(SeqCst), 1, "known kid: no refetch");

        // Key rotation: an unknown kid triggers exactly one refetch, which finds the new key.
        *jwks.body.lock().unwrap() =
            format!(r#"{{"keys":[{},{}]}}"#, jwk(KEY_A, "a"), jwk(KEY_B, "b"));
        let rotated = token(KEY_B, "b", ISS, "aud-good", in_a_minute());
        let r = conn.request(with_token("app.test", &rotated), None).await;
        assert_eq!(r.status, 200, "{}", connector.log_text());
        assert_eq!(jwks.fetches.load(SeqCst), 2);
        // Another unknown kid right after is rate-limited: no fetch, 502.
        let unknown = token(KEY_B, "c", ISS, "aud-good", in_a_minute());
        let r = conn.request(with_token("app.test", &unknown), None).await;
        assert_eq!(r.status, 502);
        assert_eq!(jwks.fetches.load(SeqCst), 2);
        assert_eq!(
            origin_hits(),
            proxied,
            "rejected requests never reach the origin"
        );

        // The JWKS server fails for team "down": 502 and a log line naming the fetch.
        let down = token(
            KEY_A,
            "a",
            "https://down.cloudflareaccess.com",
            "aud-good",
            in_a_minute(),
        );
        let r = conn.request(with_token("down.test", &down), None).await;
        assert_eq!(r.status, 502);

        let log = connector.log_text();
        assert!(
            log.contains("request filtered by middleware handler (AccessJWTValidator) due to: no access token in request"),
            "{log}"
        );
        assert!(log.contains("Invalid token in jwt"), "{log}");
        assert!(log.contains("failed to verify id token signature"), "{log}");
        assert!(log.contains("token is expired"), "{log}");
        assert!(
            log.contains("Access: fetching the team's signing keys failed")
                && log.contains("/down/cdn-cgi/access/certs"),
            "{log}"
        );
    });
}

/// The JWKS over HTTPS, trusted through the test-only extra CA: the real rustls path.
#[test]
fn jwks_is_fetched_over_https_with_the_extra_ca() {
    let origin = echo_origin();
    block_on(DriverKind::Poll, async {
        let edge = TestEdge::new().await;
        let (chain, key) =
            ringflare::tls::issue_leaf_certificate(edge.dir.path(), &["127.0.0.1".into()]).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let jwks = jwks_server(
            format!(r#"{{"keys":[{}]}}"#, jwk(KEY_A, "a")),
            Some(Arc::new(cfg)),
        );
        let config = edge.dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "ingress:\n  - service: http://{}\n    originRequest:\n      access:\n        required: true\n        teamName: live\n        audTag: [aud-good]\n",
                origin.addr
            ),
        )
        .unwrap();
        let template = format!("https://127.0.0.1:{}/{{team}}", jwks.port);
        let ca = edge.ca.to_str().unwrap().to_owned();
        let connector = Connector::spawn_env(
            &[edge.addr()],
            &edge.ca,
            &common::token(),
            Some(&config),
            &["--ha-connections".into(), "1".into()],
            &[],
            &[
                ("RINGFLARE_ACCESS_CERTS_URL_TEMPLATE", &template),
                ("RINGFLARE_ACCESS_CA_POOL", &ca),
            ],
        );
        let mut conn = edge.accept().await;
        let good = token(KEY_A, "a", ISS, "aud-good", in_a_minute());
        let r = conn.request(with_token("any.test", &good), None).await;
        assert_eq!(r.status, 200, "{}", connector.log_text());
        assert_eq!(jwks.fetches.load(SeqCst), 1);
    });
}
