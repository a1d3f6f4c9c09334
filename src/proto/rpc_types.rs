//! Plain-Rust views ("pogs") of the control-plane RPC structs (spec §5.2-§5.5).
//!
//! Each type mirrors one capnp struct or method parameter list and converts with `read_from(reader)` /
//! `write_to(builder)` against the generated bindings. Reading checks the protocol rules the edge and the
//! connector rely on (16-byte ids, present sub-structs). This module owns no connection state and does no
//! I/O; the RPC plumbing lives in `rpc`.

use std::fmt;
use std::net::IpAddr;

use super::connect::{list_len, text};
use super::error::DecodeError;
use super::generated::tunnelrpc_capnp as schema;
use schema::{configuration_manager, registration_server, session_manager};

/// The tunnel secret: raw bytes that authenticate the connector. `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct TunnelSecret(Vec<u8>);

impl TunnelSecret {
    /// Wraps raw secret bytes (already base64-decoded from the credentials).
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The raw bytes, for putting on the wire or comparing in constant time.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for TunnelSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TunnelSecret(***)")
    }
}

/// Credentials sent with `registerConnection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelAuth {
    /// Cloudflare account that owns the tunnel; the edge looks the tunnel up under it.
    pub account_tag: String,
    /// Proves the connector may serve this tunnel.
    pub tunnel_secret: TunnelSecret,
}

/// Who is connecting; the edge shows it in the dashboard and uses `features` to pick behaviours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// The connector id: 16 random bytes chosen at process start, shared by all HA connections.
    pub client_id: Vec<u8>,
    /// Feature flags such as `serialized_headers` or `support_datagram_v2` (order is not significant).
    pub features: Vec<String>,
    /// Build version, e.g. `2025.5.0`.
    pub version: String,
    /// `os_arch`, e.g. `linux_amd64`.
    pub arch: String,
}

/// Per-connection registration options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionOptions {
    /// Identity of the connector process.
    pub client: ClientInfo,
    /// Raw IP bytes, 16-byte form even for IPv4 (see [`ConnectionOptions::ip_bytes`]).
    pub origin_local_ip: Vec<u8>,
    /// Ask the edge to drop an existing connection with the same index; cloudflared sends false.
    pub replace_existing: bool,
    /// Legacy compression setting; cloudflared sends 0.
    pub compression_quality: u8,
    /// Backoff retry count for this connection index, so the edge can see flapping connectors.
    pub num_previous_attempts: u8,
}

impl ConnectionOptions {
    /// The 16-byte representation cloudflared puts in `originLocalIp` (IPv4 as `::ffff:a.b.c.d`).
    pub fn ip_bytes(ip: IpAddr) -> Vec<u8> {
        match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        }
    }
}

/// Arguments of `RegistrationServer.registerConnection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterConnectionParams {
    /// Account and secret.
    pub auth: TunnelAuth,
    /// The tunnel's UUID as 16 raw bytes.
    pub tunnel_id: [u8; 16],
    /// HA connection index, 0..ha_connections.
    pub conn_index: u8,
    /// Who is connecting and how.
    pub options: ConnectionOptions,
}

/// Why the edge refused a registration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionError {
    /// Edge-provided reason; `EDUPCONN` and anything containing `Unauthorized` are treated specially.
    pub cause: String,
    /// Suggested wait in nanoseconds. cloudflared ignores it; kept for the simulator and for logs.
    pub retry_after: i64,
    /// Whether the connector may retry (otherwise the error is permanent).
    pub should_retry: bool,
}

/// What the edge tells a successfully registered connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionDetails {
    /// The edge-side connection id (16 bytes), logged as `connection=`.
    pub uuid: [u8; 16],
    /// Colo code (e.g. `lhr01`), shown in logs and metrics.
    pub location_name: String,
    /// True when the dashboard owns the configuration; then no local config is uploaded.
    pub tunnel_is_remotely_managed: bool,
}

/// Result of `registerConnection`: the capnp union `result`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionResponse {
    /// Registration refused.
    Error(ConnectionError),
    /// Registration accepted.
    Details(ConnectionDetails),
}

/// Result of `ConfigurationManager.updateConfiguration`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateConfigurationResponse {
    /// The version now in force (unchanged when the push was stale or invalid).
    pub latest_applied_version: i32,
    /// Why the push was rejected; `None` on success (sent as empty text).
    pub err: Option<String>,
}

/// Arguments of `SessionManager.registerUdpSession` (datagram v2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterUdpSessionParams {
    /// Session UUID bytes, used to tag datagrams.
    pub session_id: Vec<u8>,
    /// Destination IP, raw bytes (4 or 16).
    pub dst_ip: Vec<u8>,
    /// Destination UDP port.
    pub dst_port: u16,
    /// Idle timeout hint in nanoseconds.
    pub close_after_idle_hint: i64,
    /// Optional tracing context; empty when absent.
    pub trace_context: String,
}

/// Result of `registerUdpSession`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterUdpSessionResponse {
    /// Why the session could not be registered; `None` on success.
    pub err: Option<String>,
    /// Serialized tracing spans, possibly empty.
    pub spans: Vec<u8>,
}

/// Arguments of `SessionManager.unregisterUdpSession`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnregisterUdpSessionParams {
    /// Session UUID bytes.
    pub session_id: Vec<u8>,
    /// Why the session ended, for logs.
    pub message: String,
}

impl TunnelAuth {
    /// Reads from the capnp struct.
    pub fn read_from(r: schema::tunnel_auth::Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            account_tag: text(r.get_account_tag(), "auth.accountTag")?,
            tunnel_secret: TunnelSecret(r.get_tunnel_secret()?.to_vec()),
        })
    }

    /// Writes into the capnp struct.
    pub fn write_to(&self, mut b: schema::tunnel_auth::Builder<'_>) {
        b.set_account_tag(self.account_tag.as_str());
        b.set_tunnel_secret(self.tunnel_secret.expose());
    }
}

impl ClientInfo {
    /// Reads from the capnp struct.
    pub fn read_from(r: schema::client_info::Reader<'_>) -> Result<Self, DecodeError> {
        let features = r
            .get_features()?
            .iter()
            .map(|f| text(f, "client.features"))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            client_id: r.get_client_id()?.to_vec(),
            features,
            version: text(r.get_version(), "client.version")?,
            arch: text(r.get_arch(), "client.arch")?,
        })
    }

    /// Writes into the capnp struct.
    pub fn write_to(&self, mut b: schema::client_info::Builder<'_>) {
        b.set_client_id(&self.client_id);
        let mut list = b.reborrow().init_features(list_len(self.features.len()));
        for (i, f) in self.features.iter().enumerate() {
            list.set(list_len(i), f.as_str());
        }
        b.set_version(self.version.as_str());
        b.set_arch(self.arch.as_str());
    }
}

impl ConnectionOptions {
    /// Reads from the capnp struct.
    pub fn read_from(r: schema::connection_options::Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            client: ClientInfo::read_from(r.get_client()?)?,
            origin_local_ip: r.get_origin_local_ip()?.to_vec(),
            replace_existing: r.get_replace_existing(),
            compression_quality: r.get_compression_quality(),
            num_previous_attempts: r.get_num_previous_attempts(),
        })
    }

    /// Writes into the capnp struct.
    pub fn write_to(&self, mut b: schema::connection_options::Builder<'_>) {
        self.client.write_to(b.reborrow().init_client());
        b.set_origin_local_ip(&self.origin_local_ip);
        b.set_replace_existing(self.replace_existing);
        b.set_compression_quality(self.compression_quality);
        b.set_num_previous_attempts(self.num_previous_attempts);
    }
}

impl RegisterConnectionParams {
    /// Reads the method parameters; `auth` and `options` must be present and `tunnelId` 16 bytes.
    pub fn read_from(
        r: registration_server::register_connection_params::Reader<'_>,
    ) -> Result<Self, DecodeError> {
        if !r.has_auth() {
            return Err(DecodeError::MissingField { field: "auth" });
        }
        if !r.has_options() {
            return Err(DecodeError::MissingField { field: "options" });
        }
        Ok(Self {
            auth: TunnelAuth::read_from(r.get_auth()?)?,
            tunnel_id: uuid_bytes(r.get_tunnel_id()?, "tunnelId")?,
            conn_index: r.get_conn_index(),
            options: ConnectionOptions::read_from(r.get_options()?)?,
        })
    }

    /// Writes the method parameters.
    pub fn write_to(&self, mut b: registration_server::register_connection_params::Builder<'_>) {
        self.auth.write_to(b.reborrow().init_auth());
        b.set_tunnel_id(&self.tunnel_id);
        b.set_conn_index(self.conn_index);
        self.options.write_to(b.init_options());
    }
}

impl ConnectionResponse {
    /// Reads the union; a details `uuid` that is not exactly 16 bytes is an error (spec §5.4).
    pub fn read_from(r: schema::connection_response::Reader<'_>) -> Result<Self, DecodeError> {
        use schema::connection_response::result::Which;
        match r.get_result().which()? {
            Which::Error(e) => {
                let e = e?;
                Ok(Self::Error(ConnectionError {
                    cause: text(e.get_cause(), "error.cause")?,
                    retry_after: e.get_retry_after(),
                    should_retry: e.get_should_retry(),
                }))
            }
            Which::ConnectionDetails(d) => {
                let d = d?;
                Ok(Self::Details(ConnectionDetails {
                    uuid: uuid_bytes(d.get_uuid()?, "connectionDetails.uuid")?,
                    location_name: text(d.get_location_name(), "connectionDetails.locationName")?,
                    tunnel_is_remotely_managed: d.get_tunnel_is_remotely_managed(),
                }))
            }
        }
    }

    /// Writes the union.
    pub fn write_to(&self, b: schema::connection_response::Builder<'_>) {
        match self {
            Self::Error(e) => {
                let mut eb = b.get_result().init_error();
                eb.set_cause(e.cause.as_str());
                eb.set_retry_after(e.retry_after);
                eb.set_should_retry(e.should_retry);
            }
            Self::Details(d) => {
                let mut db = b.get_result().init_connection_details();
                db.set_uuid(&d.uuid);
                db.set_location_name(d.location_name.as_str());
                db.set_tunnel_is_remotely_managed(d.tunnel_is_remotely_managed);
            }
        }
    }
}

impl UpdateConfigurationResponse {
    /// Reads from the capnp struct; empty `err` means success.
    pub fn read_from(
        r: schema::update_configuration_response::Reader<'_>,
    ) -> Result<Self, DecodeError> {
        Ok(Self {
            latest_applied_version: r.get_latest_applied_version(),
            err: non_empty(text(r.get_err(), "err")?),
        })
    }

    /// Writes into the capnp struct.
    pub fn write_to(&self, mut b: schema::update_configuration_response::Builder<'_>) {
        b.set_latest_applied_version(self.latest_applied_version);
        b.set_err(self.err.as_deref().unwrap_or(""));
    }
}

impl RegisterUdpSessionParams {
    /// Reads the method parameters.
    pub fn read_from(
        r: session_manager::register_udp_session_params::Reader<'_>,
    ) -> Result<Self, DecodeError> {
        Ok(Self {
            session_id: r.get_session_id()?.to_vec(),
            dst_ip: r.get_dst_ip()?.to_vec(),
            dst_port: r.get_dst_port(),
            close_after_idle_hint: r.get_close_after_idle_hint(),
            trace_context: text(r.get_trace_context(), "traceContext")?,
        })
    }

    /// Writes the method parameters.
    pub fn write_to(&self, mut b: session_manager::register_udp_session_params::Builder<'_>) {
        b.set_session_id(&self.session_id);
        b.set_dst_ip(&self.dst_ip);
        b.set_dst_port(self.dst_port);
        b.set_close_after_idle_hint(self.close_after_idle_hint);
        b.set_trace_context(self.trace_context.as_str());
    }
}

impl RegisterUdpSessionResponse {
    /// Reads from the capnp struct; empty `err` means success.
    pub fn read_from(
        r: schema::register_udp_session_response::Reader<'_>,
    ) -> Result<Self, DecodeError> {
        Ok(Self {
            err: non_empty(text(r.get_err(), "err")?),
            spans: r.get_spans()?.to_vec(),
        })
    }

    /// Writes into the capnp struct.
    pub fn write_to(&self, mut b: schema::register_udp_session_response::Builder<'_>) {
        b.set_err(self.err.as_deref().unwrap_or(""));
        b.set_spans(&self.spans);
    }
}

impl UnregisterUdpSessionParams {
    /// Reads the method parameters.
    pub fn read_from(
        r: session_manager::unregister_udp_session_params::Reader<'_>,
    ) -> Result<Self, DecodeError> {
        Ok(Self {
            session_id: r.get_session_id()?.to_vec(),
            message: text(r.get_message(), "message")?,
        })
    }

    /// Writes the method parameters.
    pub fn write_to(&self, mut b: session_manager::unregister_udp_session_params::Builder<'_>) {
        b.set_session_id(&self.session_id);
        b.set_message(self.message.as_str());
    }
}

/// Arguments of `ConfigurationManager.updateConfiguration`, read in one step.
pub fn read_update_configuration_params(
    r: configuration_manager::update_configuration_params::Reader<'_>,
) -> Result<(i32, Vec<u8>), DecodeError> {
    Ok((r.get_version(), r.get_config()?.to_vec()))
}

fn uuid_bytes(data: &[u8], field: &'static str) -> Result<[u8; 16], DecodeError> {
    data.try_into().map_err(|_| DecodeError::InvalidField {
        field,
        reason: "must be exactly 16 bytes",
    })
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}
