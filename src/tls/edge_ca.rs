//! The edge simulator's private CA and server certificate, created once and reused.
//!
//! `ringflare edge` needs a certificate that cloudflared accepts with `--cacert ca.pem`:
//! it must chain to that CA and carry the DNS SANs the connector verifies
//! (`h2.cftunnel.com`, `quic.cftunnel.com`, `probe.cftunnel.com`), because Go ignores the
//! CN. This module generates that material with rcgen (ECDSA P-256), writes it under the
//! state directory (private keys mode 0600) and loads it again on later runs. It never
//! builds rustls configs (see `config.rs`).

use std::{
    fs,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::TlsError;

/// File names inside the state directory.
const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";
const SERVER_CERT: &str = "server.pem";
const SERVER_KEY: &str = "server-key.pem";

/// Names the server certificate is valid for: the three edge names cloudflared verifies,
/// plus loopback for local tools such as curl.
const SERVER_SANS: &[&str] = &[
    "h2.cftunnel.com",
    "quic.cftunnel.com",
    "probe.cftunnel.com",
    "localhost",
    "127.0.0.1",
    "::1",
];

/// The CA and server certificate of the edge simulator.
#[derive(Debug)]
pub struct EdgeCa {
    /// Path of `ca.pem`, to hand to the connector as `--cacert`.
    ca_pem_path: PathBuf,
    /// The CA certificate, as a trust anchor for in-process connectors and tests.
    ca_cert: CertificateDer<'static>,
    /// The server certificate chain presented by the edge (leaf first).
    server_chain: Vec<CertificateDer<'static>>,
    /// The server's private key (PKCS#8).
    server_key: PrivateKeyDer<'static>,
}

impl EdgeCa {
    /// Loads the CA and server certificate from `state_dir`, generating what is missing.
    ///
    /// A missing server pair is re-issued from an existing CA; a half-present CA pair is an
    /// error, because a new CA would break every connector configured with the old `ca.pem`.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, TlsError> {
        fs::create_dir_all(state_dir).map_err(|source| TlsError::Io {
            op: "create directory",
            path: state_dir.to_owned(),
            source,
        })?;
        let ca_key = load_or_create_ca(state_dir)?;
        let server_cert = state_dir.join(SERVER_CERT);
        let server_key = state_dir.join(SERVER_KEY);
        if !(server_cert.exists() && server_key.exists()) {
            issue_server(&ca_key, &server_cert, &server_key)?;
        }
        let ca_pem_path = state_dir.join(CA_CERT);
        Ok(Self {
            ca_cert: first_cert(&ca_pem_path)?,
            server_chain: read_certs(&server_cert)?,
            server_key: read_key(&server_key)?,
            ca_pem_path,
        })
    }

    /// Path of `ca.pem`.
    pub fn ca_pem_path(&self) -> &Path {
        &self.ca_pem_path
    }

    /// The CA certificate.
    pub fn ca_cert(&self) -> &CertificateDer<'static> {
        &self.ca_cert
    }

    /// The server chain, leaf first.
    pub fn server_chain(&self) -> &[CertificateDer<'static>] {
        &self.server_chain
    }

    /// A copy of the server's private key (rustls configs take ownership).
    pub fn server_key(&self) -> PrivateKeyDer<'static> {
        self.server_key.clone_key()
    }
}

/// Issues a fresh leaf certificate for `names` (DNS names or IP addresses) signed by the
/// CA in `state_dir` (which must exist, see [`EdgeCa::load_or_create`]). Used for the edge's
/// HTTPS eyeball listener; nothing is written to disk, the chain (leaf, CA) and key are
/// returned for a rustls server config.
pub fn issue_leaf_certificate(
    state_dir: &Path,
    names: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let key_path = state_dir.join(CA_KEY);
    let ca_key = KeyPair::from_pem(&read_text(&key_path)?).map_err(|e| TlsError::BadPem {
        path: key_path,
        reason: e.to_string(),
    })?;
    let ca_cert = first_cert(&state_dir.join(CA_CERT))?;
    let mut params =
        CertificateParams::new(names.to_vec()).map_err(|source| TlsError::Generate {
            what: "leaf certificate parameters",
            source,
        })?;
    let cn = names.first().map_or("localhost", String::as_str);
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = generate_key("leaf key")?;
    let issuer = Issuer::new(ca_params(&ca_key), &ca_key);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|source| TlsError::Generate {
            what: "leaf certificate",
            source,
        })?;
    let key_der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| TlsError::BadPem {
        path: state_dir.to_owned(),
        reason: e.to_owned(),
    })?;
    Ok((vec![cert.der().clone(), ca_cert], key_der))
}

/// Returns the CA key, generating and writing the CA pair when neither file exists.
fn load_or_create_ca(dir: &Path) -> Result<KeyPair, TlsError> {
    let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {
            first_cert(&cert_path)?;
            let pem = read_text(&key_path)?;
            KeyPair::from_pem(&pem).map_err(|e| TlsError::BadPem {
                path: key_path,
                reason: e.to_string(),
            })
        }
        (false, false) => {
            let key = generate_key("CA key")?;
            let cert = ca_params(&key)
                .self_signed(&key)
                .map_err(|source| TlsError::Generate {
                    what: "CA certificate",
                    source,
                })?;
            write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
            Ok(key)
        }
        (true, false) => Err(TlsError::IncompleteCa {
            present: cert_path,
            missing: key_path,
        }),
        (false, true) => Err(TlsError::IncompleteCa {
            present: key_path,
            missing: cert_path,
        }),
    }
}

/// The CA's parameters, derived from its key alone so an existing CA key can sign again
/// (the issuer name and key identifier must match `ca.pem`). The CN carries a key
/// fingerprint: two simulators' CAs never share a name, so a connector trusting the wrong
/// one fails with "unknown issuer" rather than a confusing "bad signature".
fn ca_params(key: &KeyPair) -> CertificateParams {
    let fingerprint: String = key
        .public_key_raw()
        .iter()
        .skip(1)
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("ringflare edge simulator CA {fingerprint}"),
    );
    params
        .distinguished_name
        .push(DnType::OrganizationName, "ringflare");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn issue_server(ca_key: &KeyPair, cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    let sans: Vec<String> = SERVER_SANS.iter().map(|s| (*s).to_owned()).collect();
    let mut params = CertificateParams::new(sans).map_err(|source| TlsError::Generate {
        what: "server certificate parameters",
        source,
    })?;
    params
        .distinguished_name
        .push(DnType::CommonName, "h2.cftunnel.com");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = generate_key("server key")?;
    let issuer = Issuer::new(ca_params(ca_key), ca_key);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|source| TlsError::Generate {
            what: "server certificate",
            source,
        })?;
    write_file(key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(cert_path, cert.pem().as_bytes(), 0o644)
}

fn generate_key(what: &'static str) -> Result<KeyPair, TlsError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|source| TlsError::Generate { what, source })
}

/// Writes via a temporary file and a rename, so a crash never leaves half a PEM behind.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension("pem.tmp");
    let io_err = |op, source| TlsError::Io {
        op,
        path: path.to_owned(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| io_err("create", e))?;
    file.write_all(contents).map_err(|e| io_err("write", e))?;
    file.sync_all().map_err(|e| io_err("sync", e))?;
    fs::rename(&tmp, path).map_err(|e| io_err("rename into place", e))
}

fn read_text(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| TlsError::Io {
        op: "read",
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in a PEM file; an error if there is none or one is malformed.
pub(super) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = read_text(path)?;
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::BadPem {
            path: path.to_owned(),
            reason: "no CERTIFICATE section".to_owned(),
        });
    }
    Ok(certs)
}

fn first_cert(path: &Path) -> Result<CertificateDer<'static>, TlsError> {
    // `read_certs` guarantees at least one element.
    read_certs(path).map(|mut certs| certs.swap_remove(0))
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = read_text(path)?;
    PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|e| TlsError::BadPem {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}
