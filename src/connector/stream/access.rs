//! Cloudflare Access JWT validation for ingress rules with `originRequest.access.required`
//! (spec §8.2), as cloudflared's `JWTValidator` middleware over go-oidc does it.
//!
//! Owns: parsing and checking the `Cf-Access-Jwt-Assertion` token (issuer, expiry, not-before,
//! RS256 signature, audience), the per-core cache of each team's JWKS, and fetching that JWKS
//! over HTTPS on the core's own compio runtime (never blocking the worker thread). Concurrent
//! fetches for one team on one core share a single request; a token whose `kid` is not cached
//! triggers one refetch at most every [`REFRESH_INTERVAL`]; a failed fetch is not retried for
//! [`FAILURE_BACKOFF`]. Never touches the request beyond reading the token, never writes a
//! response (the caller turns [`Decision::Deny`] into a 403 and an error into a 502).
//!
//! Test-only overrides (undocumented for users): `RINGFLARE_ACCESS_CERTS_URL_TEMPLATE`
//! replaces `https://{team}.cloudflareaccess.com` as the JWKS base (`{team}` is substituted;
//! `http://` is accepted so tests can serve keys on loopback), and `RINGFLARE_ACCESS_CA_POOL`
//! names an extra PEM CA for that server. The expected issuer is never overridden.

#![forbid(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::BytesMut;
use futures_util::future::{FutureExt, LocalBoxFuture, Shared};
use http::Method;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use serde::Deserialize;

use crate::connector::origin::http::{decoder, fill, read_head, response_framing};
use crate::connector::origin::{Dial, OriginTls, Target, TlsParams, dial};
use crate::http1::BodyEvent;
use crate::ingress::Access;

/// The request header carrying the token.
pub const HEADER: &str = "cf-access-jwt-assertion";
/// cloudflared's name for the middleware, used in its error texts.
const HANDLER: &str = "AccessJWTValidator";
/// Path of the JWKS under the team domain.
const CERTS_PATH: &str = "/cdn-cgi/access/certs";
/// The only algorithm go-oidc accepts when none is configured.
const ALG: &str = "RS256";
/// go-oidc's clock-skew allowance on `nbf` (none on `exp`).
const NBF_LEEWAY_SECS: f64 = 300.0;
/// Least time between two refetches caused by an unknown `kid`.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// After a failed fetch, requests fail fast with its error for this long.
pub const FAILURE_BACKOFF: Duration = Duration::from_secs(1);
/// Largest JWKS document accepted.
const MAX_JWKS: usize = 1 << 20;
/// Bound on the whole fetch (connect, TLS, request, response).
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// What the validator decided for a request that must carry a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Valid token with an accepted audience: proxy the request.
    Allow,
    /// Filtered with 403; the reason is for the log.
    Deny(String),
}

/// Checks `token` (the header value, if any) against the rule's `access` block. `Err` is a
/// verification failure, which cloudflared answers with 502.
pub async fn check(access: &Access, token: Option<&[u8]>) -> Result<Decision, String> {
    let token = match token {
        Some(t) if !t.is_empty() => t,
        _ => return Ok(Decision::Deny("no access token in request".into())),
    };
    let wrap = |e: String| format!("error while processing middleware handler {HANDLER}: {e}");
    let parsed = parse(token).map_err(wrap)?;
    let base = team_base(access);
    check_claims(&parsed.claims, &issuer(access), now_secs()).map_err(wrap)?;
    if parsed.alg != ALG {
        return Err(wrap(format!(
            "oidc: id token signed with unsupported algorithm, expected [\"{ALG}\"] got \"{}\"",
            parsed.alg
        )));
    }
    let team = team_state(&format!("{base}{CERTS_PATH}"));
    let keys = team.keys().await.map_err(wrap)?;
    let mut outcome = keys.verify(&parsed);
    let stale = matches!(outcome, Verify::NoKey)
        || (matches!(outcome, Verify::Invalid) && parsed.kid.is_none());
    if stale && team.may_refresh() {
        let keys = team.refetch().await.map_err(wrap)?;
        outcome = keys.verify(&parsed);
    }
    match outcome {
        Verify::Ok => {}
        Verify::NoKey => {
            return Err(wrap(format!(
                "failed to verify signature: no key with kid {:?} in the JWKS",
                parsed.kid.as_deref().unwrap_or("")
            )));
        }
        Verify::Invalid => {
            return Err(wrap(
                "failed to verify signature: failed to verify id token signature".into(),
            ));
        }
    }
    Ok(decide_audience(&parsed.claims.aud, &access.aud_tag))
}

/// At least one of the token's audiences must be an accepted tag.
fn decide_audience(aud: &[String], tags: &[String]) -> Decision {
    if aud.iter().any(|a| tags.contains(a)) {
        Decision::Allow
    } else {
        Decision::Deny(format!("Invalid token in jwt: {aud:?}"))
    }
}

/// `https://<team>.cloudflareaccess.com` (or the FedRAMP domain for `environment: fed`).
fn issuer(access: &Access) -> String {
    if access.environment.eq_ignore_ascii_case("fed") {
        format!("https://{}.fed.cloudflareaccess.com", access.team_name)
    } else {
        format!("https://{}.cloudflareaccess.com", access.team_name)
    }
}

/// Where the team's JWKS lives (the issuer unless a test overrides it).
fn team_base(access: &Access) -> String {
    match &overrides().template {
        Some(t) => t.replace("{team}", &access.team_name),
        None => issuer(access),
    }
}

struct Overrides {
    template: Option<String>,
    ca_pool: String,
}

fn overrides() -> &'static Overrides {
    static O: OnceLock<Overrides> = OnceLock::new();
    O.get_or_init(|| Overrides {
        template: std::env::var("RINGFLARE_ACCESS_CERTS_URL_TEMPLATE")
            .ok()
            .filter(|s| !s.is_empty()),
        ca_pool: std::env::var("RINGFLARE_ACCESS_CA_POOL").unwrap_or_default(),
    })
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// Token parsing and checks (pure).

/// The claims go-oidc looks at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claims {
    pub iss: String,
    pub aud: Vec<String>,
    pub exp: Option<f64>,
    pub nbf: Option<f64>,
}

/// A compact JWS split into what verification needs.
#[derive(Debug, Clone)]
pub struct Token {
    pub alg: String,
    pub kid: Option<String>,
    pub claims: Claims,
    /// `header.payload`, the signed bytes.
    signing_input: Vec<u8>,
    signature: Vec<u8>,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawAud {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    iss: String,
    #[serde(default)]
    aud: Option<RawAud>,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
}

/// Splits and decodes a compact JWS; any malformation is an error naming the part.
pub fn parse(token: &[u8]) -> Result<Token, String> {
    let mut parts = token.split(|b| *b == b'.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("oidc: malformed jwt, expected 3 parts".into());
    };
    let b64 = |what: &str, part: &[u8]| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|e| format!("oidc: malformed jwt {what}: {e}"))
    };
    let header: RawHeader = serde_json::from_slice(&b64("header", h)?)
        .map_err(|e| format!("oidc: malformed jwt header: {e}"))?;
    let raw: RawClaims = serde_json::from_slice(&b64("payload", p)?)
        .map_err(|e| format!("oidc: failed to unmarshal claims: {e}"))?;
    let signature = b64("signature", s)?;
    let aud = match raw.aud {
        None => Vec::new(),
        Some(RawAud::One(a)) => vec![a],
        Some(RawAud::Many(v)) => v,
    };
    let signing_input = token
        .get(..h.len() + 1 + p.len())
        .unwrap_or_default()
        .to_vec();
    Ok(Token {
        alg: header.alg,
        kid: header.kid.filter(|k| !k.is_empty()),
        claims: Claims {
            iss: raw.iss,
            aud,
            exp: raw.exp,
            nbf: raw.nbf,
        },
        signing_input,
        signature,
    })
}

/// go-oidc's order: issuer, then expiry (a missing `exp` is expired), then `nbf` with leeway.
pub fn check_claims(c: &Claims, issuer: &str, now: f64) -> Result<(), String> {
    if c.iss != issuer {
        return Err(format!(
            "oidc: id token issued by a different provider, expected {issuer:?} got {:?}",
            c.iss
        ));
    }
    let exp = c.exp.unwrap_or(0.0);
    if exp < now {
        return Err(format!("oidc: token is expired (Token Expiry: {exp})"));
    }
    if let Some(nbf) = c.nbf
        && now + NBF_LEEWAY_SECS < nbf
    {
        return Err(format!(
            "oidc: current time {now} before the nbf (not before) time: {nbf}"
        ));
    }
    Ok(())
}

/// One RSA signing key from a JWKS.
#[derive(Debug, Clone)]
struct Jwk {
    kid: Option<String>,
    n: Vec<u8>,
    e: Vec<u8>,
}

/// A team's signing keys.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<Jwk>,
}

/// Result of checking a signature against a key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    Ok,
    /// No key carries the token's `kid`.
    NoKey,
    /// Candidate keys exist but none verifies the signature.
    Invalid,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<RawJwk>,
}

#[derive(Deserialize)]
struct RawJwk {
    #[serde(default)]
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

impl KeySet {
    /// Parses a JWKS document, keeping RSA signing keys; other key types are skipped.
    pub fn parse(body: &[u8]) -> Result<KeySet, String> {
        let raw: RawJwks = serde_json::from_slice(body)
            .map_err(|e| format!("oidc: failed to decode keys: {e}"))?;
        let mut keys = Vec::new();
        for k in raw.keys {
            if k.kty != "RSA" || k.use_.as_deref().is_some_and(|u| u != "sig") {
                continue;
            }
            let (Some(n), Some(e)) = (k.n, k.e) else {
                return Err("oidc: failed to decode keys: RSA key without n or e".into());
            };
            let dec = |v: &str| {
                URL_SAFE_NO_PAD
                    .decode(v)
                    .map_err(|e| format!("oidc: failed to decode keys: {e}"))
            };
            keys.push(Jwk {
                kid: k.kid,
                n: dec(&n)?,
                e: dec(&e)?,
            });
        }
        Ok(KeySet { keys })
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks the RS256 signature with the key named by `kid` (every key when it has none).
    pub fn verify(&self, t: &Token) -> Verify {
        let mut candidates = self
            .keys
            .iter()
            .filter(|k| t.kid.is_none() || k.kid == t.kid)
            .peekable();
        if candidates.peek().is_none() {
            return Verify::NoKey;
        }
        let ok = candidates.any(|k| {
            RsaPublicKeyComponents { n: &k.n, e: &k.e }
                .verify(&RSA_PKCS1_2048_8192_SHA256, &t.signing_input, &t.signature)
                .is_ok()
        });
        if ok { Verify::Ok } else { Verify::Invalid }
    }
}

// ---------------------------------------------------------------------------------------------
// Per-core JWKS cache and fetch.

type Fetch = Shared<LocalBoxFuture<'static, Result<Rc<KeySet>, String>>>;

/// One team's keys on this core.
struct Team {
    url: String,
    keys: RefCell<Option<Rc<KeySet>>>,
    inflight: RefCell<Option<Fetch>>,
    last_refresh: Cell<Option<Instant>>,
    last_failure: RefCell<Option<(Instant, String)>>,
}

thread_local! {
    static TEAMS: RefCell<HashMap<String, Rc<Team>>> = RefCell::new(HashMap::new());
    static TLS: Rc<OriginTls> = Rc::new(OriginTls::default());
}

fn team_state(url: &str) -> Rc<Team> {
    TEAMS.with(|t| {
        t.borrow_mut()
            .entry(url.to_owned())
            .or_insert_with(|| {
                Rc::new(Team {
                    url: url.to_owned(),
                    keys: RefCell::new(None),
                    inflight: RefCell::new(None),
                    last_refresh: Cell::new(None),
                    last_failure: RefCell::new(None),
                })
            })
            .clone()
    })
}

impl Team {
    /// Cached keys, fetched on first use.
    async fn keys(&self) -> Result<Rc<KeySet>, String> {
        if let Some(k) = self.keys.borrow().clone() {
            return Ok(k);
        }
        self.fetch().await
    }

    /// Whether an unknown-`kid` refetch may run now; if so the slot is taken.
    fn may_refresh(&self) -> bool {
        let now = Instant::now();
        if self
            .last_refresh
            .get()
            .is_some_and(|t| now.duration_since(t) < REFRESH_INTERVAL)
        {
            return false;
        }
        self.last_refresh.set(Some(now));
        true
    }

    /// Refetches; on failure the previous keys stay usable and are returned.
    async fn refetch(&self) -> Result<Rc<KeySet>, String> {
        match self.fetch().await {
            Ok(k) => Ok(k),
            Err(e) => self.keys.borrow().clone().ok_or(e),
        }
    }

    /// One fetch shared by every request of this core that needs it meanwhile.
    async fn fetch(&self) -> Result<Rc<KeySet>, String> {
        if let Some((at, err)) = self.last_failure.borrow().as_ref()
            && at.elapsed() < FAILURE_BACKOFF
        {
            return Err(err.clone());
        }
        let existing = self.inflight.borrow().clone();
        let fut = match existing {
            Some(f) => f,
            None => {
                let url = self.url.clone();
                let f = async move { fetch_jwks(&url).await.map(Rc::new) }
                    .boxed_local()
                    .shared();
                *self.inflight.borrow_mut() = Some(f.clone());
                f
            }
        };
        let result = fut.clone().await;
        let mut inflight = self.inflight.borrow_mut();
        if inflight.as_ref().is_some_and(|f| f.ptr_eq(&fut)) {
            *inflight = None;
            match &result {
                Ok(k) => {
                    *self.keys.borrow_mut() = Some(k.clone());
                    *self.last_failure.borrow_mut() = None;
                }
                Err(e) => {
                    log::error!(url = self.url.as_str(), error = e.as_str(); "Access: fetching the team's signing keys failed");
                    *self.last_failure.borrow_mut() = Some((Instant::now(), e.clone()));
                }
            }
        }
        result
    }
}

/// A parsed `http(s)://host[:port]/path` URL.
#[derive(Debug, PartialEq, Eq)]
struct Url {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Result<Url, String> {
    let bad = || format!("invalid JWKS URL {url:?}");
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(bad());
    };
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(bad)?;
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().map_err(|_| bad())?,
        None if tls => 443,
        None => 80,
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok(Url {
        tls,
        host: host.to_owned(),
        port,
        path: path.to_owned(),
    })
}

/// GETs and parses the JWKS at `url`, bounded by [`FETCH_TIMEOUT`].
async fn fetch_jwks(url: &str) -> Result<KeySet, String> {
    let wrap = |e: String| format!("oidc: get keys failed: {url}: {e}");
    match compio::time::timeout(FETCH_TIMEOUT, get(url)).await {
        Ok(Ok(body)) => KeySet::parse(&body).map_err(wrap),
        Ok(Err(e)) => Err(wrap(e)),
        Err(_) => Err(wrap("timeout".into())),
    }
}

async fn get(url: &str) -> Result<Vec<u8>, String> {
    let u = parse_url(url)?;
    let d = Dial {
        target: Target::Tcp {
            host: u.host.clone(),
            port: u.port,
        },
        tls: u.tls.then(|| TlsParams {
            server_name: u.host.clone(),
            ca_pool: overrides().ca_pool.clone(),
            no_verify: false,
            http2: false,
        }),
        connect_timeout: Duration::from_secs(10),
        tls_timeout: Duration::from_secs(10),
        tcp_keep_alive: Duration::ZERO,
    };
    let tls = TLS.with(Rc::clone);
    let (mut s, mut w) = dial(&d, &tls).await.map_err(|e| e.to_string())?.split();
    let host = if u.host.contains(':') {
        format!("[{}]", u.host)
    } else {
        u.host.clone()
    };
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ringflare\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
        u.path
    );
    w.write_bytes(bytes::Bytes::from(req))
        .await
        .map_err(|e| e.to_string())?;
    w.flush().await.map_err(|e| e.to_string())?;
    let mut buf = BytesMut::new();
    let mut got = false;
    let head = read_head(&mut s, &mut buf, &mut got)
        .await
        .map_err(|e| e.to_string())?;
    if head.status != 200 {
        return Err(format!(
            "{} {}",
            head.status,
            http::StatusCode::from_u16(head.status)
                .ok()
                .and_then(|c| c.canonical_reason())
                .unwrap_or("")
        ));
    }
    let framing = response_framing(&Method::GET, &head).map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    let too_large = || format!("JWKS larger than {MAX_JWKS} bytes");
    match decoder(framing) {
        Some(mut dec) => loop {
            match dec.decode(&mut buf).map_err(|e| e.to_string())? {
                Some(BodyEvent::Data(b)) => {
                    body.extend_from_slice(&b);
                    if body.len() > MAX_JWKS {
                        return Err(too_large());
                    }
                }
                Some(BodyEvent::End { .. }) => break,
                None => {
                    if fill(&mut s, &mut buf).await.map_err(|e| e.to_string())? == 0 {
                        return Err("connection closed before the end of the body".into());
                    }
                }
            }
        },
        None => loop {
            body.extend_from_slice(&buf);
            buf.clear();
            if body.len() > MAX_JWKS {
                return Err(too_large());
            }
            if fill(&mut s, &mut buf).await.map_err(|e| e.to_string())? == 0 {
                break;
            }
        },
    }
    Ok(body)
}

#[cfg(test)]
#[path = "access_tests.rs"]
mod tests;
