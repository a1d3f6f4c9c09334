//! TLS to https and `unix+tls:` origins: one rustls client config per (caPool, noTLSVerify)
//! combination, built on first use and cached per core.
//!
//! The trust pool is cloudflared's: the system roots, Cloudflare's origin CAs and the rule's
//! `caPool` file. `noTLSVerify` accepts any certificate (still checking handshake signatures).

#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::runtime::h2io::{self, RustlsIo, TlsSocket};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, ring::default_provider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;

use super::{DialError, TlsParams};
use crate::tls::cloudflare_roots;

/// Per-core cache of origin TLS client configs.
#[derive(Default)]
pub struct OriginTls {
    /// Keyed by (caPool, noTLSVerify, offer h2).
    configs: RefCell<HashMap<(String, bool, bool), Arc<ClientConfig>>>,
}

/// A TLS origin connection: rustls driven over the socket with owned buffers
/// ([`RustlsIo`]); an idle one holds no read buffer.
pub type OriginTlsIo<T> = RustlsIo<rustls::ClientConnection, T>;

impl OriginTls {
    /// TLS handshake over `stream` (TCP or unix), bounded by `timeout`. The flag says whether
    /// the origin chose HTTP/2 by ALPN (only offered for `http2Origin`).
    pub async fn connect<T: TlsSocket>(
        &self,
        stream: T,
        p: &TlsParams,
        timeout: Duration,
        addr: &str,
    ) -> Result<(OriginTlsIo<T>, bool), DialError> {
        let fail = |reason: String| DialError::Tls {
            addr: addr.to_owned(),
            reason,
        };
        let config = self.config(p).map_err(fail)?;
        let name = p.server_name.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(name.to_owned()).map_err(|e| fail(e.to_string()))?;
        let handshake = h2io::tls_connect_lean(stream, config, name);
        match compio::time::timeout(timeout, handshake).await {
            Ok(Ok(tls)) => {
                let h2 = tls.tls().alpn_protocol() == Some(b"h2");
                Ok((tls, h2))
            }
            Ok(Err(e)) => Err(fail(e.to_string())),
            Err(_) => Err(fail("TLS handshake timeout".into())),
        }
    }

    fn config(&self, p: &TlsParams) -> Result<Arc<ClientConfig>, String> {
        let key = (p.ca_pool.clone(), p.no_verify, p.http2);
        if let Some(c) = self.configs.borrow().get(&key) {
            return Ok(c.clone());
        }
        let config = build(&p.ca_pool, p.no_verify, p.http2)?;
        self.configs.borrow_mut().insert(key, config.clone());
        Ok(config)
    }
}

fn build(ca_pool: &str, no_verify: bool, http2: bool) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = if no_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(roots(ca_pool)?)
            .with_no_client_auth()
    };
    // `http2Origin` lets the origin pick HTTP/2 by ALPN (Go's ForceAttemptHTTP2; no h2c).
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

fn roots(ca_pool: &str) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    store.add_parsable_certificates(cloudflare_roots());
    if !ca_pool.is_empty() {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_pool)
            .map_err(|e| format!("reading caPool {ca_pool}: {e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("parsing caPool {ca_pool}: {e}"))?;
        let (added, _) = store.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!("caPool {ca_pool} holds no usable certificate"));
        }
    }
    Ok(store)
}

/// `noTLSVerify`: any certificate is accepted; signatures are still checked.
#[derive(Debug)]
struct AcceptAny(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
