//! The X25519MLKEM768 hybrid key exchange (TLS group 0x11ec) for rustls' ring provider.
//!
//! ring has no ML-KEM and aws-lc-rs needs a C toolchain build (cmake/nasm) this project avoids,
//! so the ML-KEM-768 half is RustCrypto's pure-Rust `ml-kem` and the X25519 half is ring's, via
//! rustls' own X25519 group. Wire format (draft-ietf-tls-ecdhe-mlkem, as Go and cloudflared):
//! client share = ML-KEM encapsulation key (1184) ‖ X25519 public key (32); server share =
//! ML-KEM ciphertext (1088) ‖ X25519 public key (32); secret = ML-KEM secret ‖ X25519 secret.
//! Peer bytes are length-checked before use; bad shares are a `PeerMisbehaved` error, never a panic.

use ml_kem::{
    Decapsulate, KeyExport,
    array::Array,
    ml_kem_768::{Ciphertext, DecapsulationKey, EncapsulationKey},
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::{
    Error, NamedGroup, PeerMisbehaved, ProtocolVersion,
    crypto::{
        ActiveKeyExchange, CompletedKeyExchange, SharedSecret, SupportedKxGroup,
        ring::kx_group::X25519,
    },
};

const EK_LEN: usize = 1184;
const CT_LEN: usize = 1088;
const X25519_LEN: usize = 32;

/// The hybrid group; offered first by the connector and accepted first by the edge.
pub static X25519MLKEM768: &dyn SupportedKxGroup = &X25519MlKem768;

#[derive(Debug)]
struct X25519MlKem768;

fn random<const N: usize>() -> Result<[u8; N], Error> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| Error::FailedToGetRandomBytes)?;
    Ok(out)
}

fn bad_share() -> Error {
    Error::PeerMisbehaved(PeerMisbehaved::InvalidKeyShare)
}

impl SupportedKxGroup for X25519MlKem768 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let dk = DecapsulationKey::from_seed(Array::from(random::<64>()?));
        let x25519 = X25519.start()?;
        let mut pub_key = Vec::with_capacity(EK_LEN + X25519_LEN);
        pub_key.extend_from_slice(&dk.encapsulation_key().to_bytes());
        pub_key.extend_from_slice(x25519.pub_key());
        Ok(Box::new(Active {
            dk: Box::new(dk),
            x25519,
            pub_key,
        }))
    }

    /// The server side: encapsulate to the client's ML-KEM key, X25519 with its share.
    fn start_and_complete(&self, client_share: &[u8]) -> Result<CompletedKeyExchange, Error> {
        if client_share.len() != EK_LEN + X25519_LEN {
            return Err(bad_share());
        }
        let (ek_bytes, x_share) = client_share.split_at(EK_LEN);
        let ek_bytes = Array::try_from(ek_bytes).map_err(|_| bad_share())?;
        let ek = EncapsulationKey::new(&ek_bytes).map_err(|_| bad_share())?;
        let (ct, mlkem_secret) = ek.encapsulate_deterministic(&Array::from(random::<32>()?));
        let x = X25519.start_and_complete(x_share)?;
        let mut pub_key = Vec::with_capacity(CT_LEN + X25519_LEN);
        pub_key.extend_from_slice(&ct);
        pub_key.extend_from_slice(&x.pub_key);
        let mut secret = Vec::with_capacity(64);
        secret.extend_from_slice(&mlkem_secret);
        secret.extend_from_slice(x.secret.secret_bytes());
        Ok(CompletedKeyExchange {
            group: self.name(),
            pub_key,
            secret: SharedSecret::from(secret),
        })
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519MLKEM768
    }

    fn usable_for_version(&self, version: ProtocolVersion) -> bool {
        version == ProtocolVersion::TLSv1_3
    }
}

/// The client's pending exchange: its ML-KEM decapsulation key and X25519 key.
struct Active {
    dk: Box<DecapsulationKey>,
    x25519: Box<dyn ActiveKeyExchange>,
    pub_key: Vec<u8>,
}

impl ActiveKeyExchange for Active {
    fn complete(self: Box<Self>, server_share: &[u8]) -> Result<SharedSecret, Error> {
        if server_share.len() != CT_LEN + X25519_LEN {
            return Err(bad_share());
        }
        let (ct, x_share) = server_share.split_at(CT_LEN);
        let ct: Ciphertext = Array::try_from(ct).map_err(|_| bad_share())?;
        let mlkem_secret = self.dk.decapsulate(&ct);
        let x = self.x25519.complete(x_share)?;
        let mut secret = Vec::with_capacity(64);
        secret.extend_from_slice(&mlkem_secret);
        secret.extend_from_slice(x.secret_bytes());
        Ok(SharedSecret::from(secret))
    }

    fn pub_key(&self) -> &[u8] {
        &self.pub_key
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519MLKEM768
    }
}
