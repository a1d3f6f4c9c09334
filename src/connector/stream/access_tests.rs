use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};

use super::*;

const KEY_A: &[u8] = include_bytes!("../../../tests/fixtures/access_rsa_a.der");
const KEY_B: &[u8] = include_bytes!("../../../tests/fixtures/access_rsa_b.der");
const ISS: &str = "https://team.cloudflareaccess.com";

fn b64(v: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

fn sign(key: &[u8], header: &str, claims: &str) -> String {
    let kp = RsaKeyPair::from_der(key).unwrap();
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

fn jwk(key: &[u8], kid: &str) -> String {
    let kp = RsaKeyPair::from_der(key).unwrap();
    let c: RsaPublicKeyComponents<Vec<u8>> = kp.public().into();
    let (n, e) = (&c.n, &c.e);
    format!(
        r#"{{"kid":"{kid}","kty":"RSA","alg":"RS256","use":"sig","e":"{}","n":"{}"}}"#,
        b64(e),
        b64(n)
    )
}

fn claims(aud: &str, exp: u64) -> String {
    format!(r#"{{"iss":"{ISS}","aud":{aud},"exp":{exp},"sub":"u"}}"#)
}

fn now() -> u64 {
    now_secs() as u64
}

#[test]
fn valid_token_verifies_with_its_kid_only() {
    let keys = KeySet::parse(
        format!(
            r#"{{"keys":[{},{},{{"kty":"EC","kid":"x"}}],"public_cert":{{}}}}"#,
            jwk(KEY_A, "a"),
            jwk(KEY_B, "b")
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(keys.len(), 2);
    let t = sign(
        KEY_A,
        r#"{"alg":"RS256","kid":"a"}"#,
        &claims(r#"["aud1"]"#, now() + 60),
    );
    let p = parse(t.as_bytes()).unwrap();
    assert_eq!(p.alg, "RS256");
    assert_eq!(p.claims.aud, vec!["aud1".to_owned()]);
    check_claims(&p.claims, ISS, now_secs()).unwrap();
    assert_eq!(keys.verify(&p), Verify::Ok);
    // Signed by A but naming B's kid: the wrong key is tried and fails.
    let t = sign(
        KEY_A,
        r#"{"alg":"RS256","kid":"b"}"#,
        &claims(r#""aud1""#, now() + 60),
    );
    assert_eq!(keys.verify(&parse(t.as_bytes()).unwrap()), Verify::Invalid);
    // No kid: every key is a candidate.
    let t = sign(
        KEY_B,
        r#"{"alg":"RS256"}"#,
        &claims(r#""aud1""#, now() + 60),
    );
    assert_eq!(keys.verify(&parse(t.as_bytes()).unwrap()), Verify::Ok);
    let t = sign(
        KEY_B,
        r#"{"alg":"RS256","kid":"zz"}"#,
        &claims(r#""a""#, now() + 60),
    );
    assert_eq!(keys.verify(&parse(t.as_bytes()).unwrap()), Verify::NoKey);
}

#[test]
fn tampered_payload_fails_the_signature() {
    let keys = KeySet::parse(format!(r#"{{"keys":[{}]}}"#, jwk(KEY_A, "a")).as_bytes()).unwrap();
    let t = sign(
        KEY_A,
        r#"{"alg":"RS256","kid":"a"}"#,
        &claims(r#""x""#, now() + 60),
    );
    let mut parts: Vec<&str> = t.split('.').collect();
    let forged = b64(claims(r#""y""#, now() + 60).as_bytes());
    parts[1] = &forged;
    let p = parse(parts.join(".").as_bytes()).unwrap();
    assert_eq!(keys.verify(&p), Verify::Invalid);
}

#[test]
fn claims_checks_follow_go_oidc() {
    let c = |iss: &str, exp: Option<f64>, nbf: Option<f64>| Claims {
        iss: iss.into(),
        aud: vec![],
        exp,
        nbf,
    };
    let n = 1_000_000.0;
    assert!(check_claims(&c(ISS, Some(n + 1.0), None), ISS, n).is_ok());
    let e = check_claims(&c(ISS, Some(n - 1.0), None), ISS, n).unwrap_err();
    assert!(e.contains("expired"), "{e}");
    assert!(check_claims(&c(ISS, None, None), ISS, n).is_err());
    let e = check_claims(&c("https://evil.example", Some(n + 1.0), None), ISS, n).unwrap_err();
    assert!(e.contains("different provider"), "{e}");
    // nbf has five minutes of leeway.
    assert!(check_claims(&c(ISS, Some(n + 900.0), Some(n + 299.0)), ISS, n).is_ok());
    assert!(check_claims(&c(ISS, Some(n + 900.0), Some(n + 301.0)), ISS, n).is_err());
}

#[test]
fn audience_must_match_one_tag() {
    let tags = vec!["t1".to_owned(), "t2".to_owned()];
    assert_eq!(
        decide_audience(&["x".into(), "t2".into()], &tags),
        Decision::Allow
    );
    assert!(matches!(
        decide_audience(&["x".into()], &tags),
        Decision::Deny(_)
    ));
    assert!(matches!(decide_audience(&[], &tags), Decision::Deny(_)));
}

#[test]
fn malformed_tokens_are_errors_not_panics() {
    let good = sign(KEY_A, r#"{"alg":"RS256"}"#, &claims(r#""a""#, now() + 60));
    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b".".to_vec(),
        b"..".to_vec(),
        b"...".to_vec(),
        b"a.b.c".to_vec(),
        b"\xff\xfe.\x00.".to_vec(),
        format!("{}.{}.", b64(b"{}"), b64(b"{}")).into_bytes(),
        format!("{}.{}.", b64(b"[]"), b64(b"{}")).into_bytes(),
        format!("{}.{}.", b64(br#"{"alg":1}"#), b64(b"{}")).into_bytes(),
        format!("{}.{}.", b64(br#"{"alg":"RS256"}"#), b64(br#"{"aud":5}"#)).into_bytes(),
        format!("{}.{}.!!", b64(br#"{"alg":"RS256"}"#), b64(b"{}")).into_bytes(),
        format!("{good}.extra").into_bytes(),
    ];
    for c in cases {
        assert!(parse(&c).is_err(), "{:?}", String::from_utf8_lossy(&c));
    }
    // Every prefix of a good token parses or fails cleanly.
    for i in 0..good.len() {
        let _ = parse(&good.as_bytes()[..i]);
    }
    // A parsed token with an empty or garbage signature verifies as Invalid.
    let keys = KeySet::parse(format!(r#"{{"keys":[{}]}}"#, jwk(KEY_A, "a")).as_bytes()).unwrap();
    let head = good.rsplit_once('.').unwrap().0;
    for sig in ["", "AAAA"] {
        let p = parse(format!("{head}.{sig}").as_bytes()).unwrap();
        assert_eq!(keys.verify(&p), Verify::Invalid);
    }
}

#[test]
fn malformed_jwks_is_an_error() {
    for body in [
        &b""[..],
        b"{}",
        b"{\"keys\":5}",
        b"{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\"}]}",
        b"{\"keys\":[{\"kty\":\"RSA\",\"n\":\"!\",\"e\":\"AQAB\"}]}",
    ] {
        assert!(KeySet::parse(body).is_err());
    }
    // A key that is not valid RSA material parses but verifies nothing.
    let keys = KeySet::parse(br#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}"#).unwrap();
    let t = sign(KEY_A, r#"{"alg":"RS256"}"#, &claims(r#""a""#, now() + 60));
    assert_eq!(keys.verify(&parse(t.as_bytes()).unwrap()), Verify::Invalid);
}

#[test]
fn jwks_urls_parse() {
    assert_eq!(
        parse_url("https://team.cloudflareaccess.com/cdn-cgi/access/certs").unwrap(),
        Url {
            tls: true,
            host: "team.cloudflareaccess.com".into(),
            port: 443,
            path: "/cdn-cgi/access/certs".into()
        }
    );
    let u = parse_url("http://[::1]:8080/x").unwrap();
    assert_eq!((u.host.as_str(), u.port, u.tls), ("::1", 8080, false));
    let u = parse_url("http://127.0.0.1:9").unwrap();
    assert_eq!(u.path, "/");
    for bad in ["ftp://x/", "https://", "http://h:port/", "http://[::1/"] {
        assert!(parse_url(bad).is_err(), "{bad}");
    }
}

#[test]
fn missing_or_empty_header_is_denied_without_any_fetch() {
    let access = Access {
        required: true,
        team_name: "team".into(),
        aud_tag: vec!["a".into()],
        environment: String::new(),
    };
    let run = |t: Option<&'static [u8]>| futures::executor::block_on(check(&access, t));
    assert!(matches!(run(None), Ok(Decision::Deny(_))));
    assert!(matches!(run(Some(b"")), Ok(Decision::Deny(_))));
    // Malformed and expired tokens fail before any key is needed.
    assert!(run(Some(b"garbage")).is_err());
    let expired = sign(KEY_A, r#"{"alg":"RS256"}"#, &claims(r#""a""#, 1));
    let e = futures::executor::block_on(check(&access, Some(expired.as_bytes()))).unwrap_err();
    assert!(e.contains("expired"), "{e}");
    let hs = sign(KEY_A, r#"{"alg":"HS256"}"#, &claims(r#""a""#, now() + 60));
    let e = futures::executor::block_on(check(&access, Some(hs.as_bytes()))).unwrap_err();
    assert!(e.contains("unsupported algorithm"), "{e}");
}

proptest::proptest! {
    #[test]
    fn arbitrary_tokens_and_jwks_never_panic(
        raw in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        h in "[A-Za-z0-9_-]{0,40}",
        p in "[A-Za-z0-9_-]{0,80}",
        s in "[A-Za-z0-9_-]{0,40}",
    ) {
        let _ = parse(&raw);
        let _ = KeySet::parse(&raw);
        if let Ok(t) = parse(format!("{h}.{p}.{s}").as_bytes()) {
            let _ = check_claims(&t.claims, ISS, now_secs());
        }
        let _ = parse_url(&String::from_utf8_lossy(&raw));
    }
}
