# ringflare's description of the tunnel control-plane RPC schema.
#
# Written from the facts in the ringflare protocol spec (section 5.2): every
# file, struct, enum and interface ID and every field ordinal and type matches
# what cloudflared 2025.5.0 puts on the wire. Language annotations are left out.
# Regenerate the Rust bindings with ./regen.sh after editing.
@0xdb8274f9144abc7e;

# ---------------------------------------------------------------------------
# Registration: the connector calls these on the edge's bootstrap capability.
# ---------------------------------------------------------------------------

interface RegistrationServer @0xf71695ec7fe85497 {
  registerConnection @0 (auth :TunnelAuth, tunnelId :Data, connIndex :UInt8,
                         options :ConnectionOptions) -> (result :ConnectionResponse);
  unregisterConnection @1 () -> ();
  updateLocalConfiguration @2 (config :Data) -> ();
}

struct TunnelAuth @0x9496331ab9cd463f {
  accountTag @0 :Text;
  tunnelSecret @1 :Data;
}

struct ConnectionOptions @0xb4bf9861fe035d04 {
  client @0 :ClientInfo;
  originLocalIp @1 :Data;
  replaceExisting @2 :Bool;
  compressionQuality @3 :UInt8;
  numPreviousAttempts @4 :UInt8;
}

struct ClientInfo @0x83ced0145b2f114b {
  clientId @0 :Data;
  features @1 :List(Text);
  version @2 :Text;
  arch @3 :Text;
}

struct ConnectionResponse @0xdbaa9d03d52b62dc {
  result :union {
    error @0 :ConnectionError;
    connectionDetails @1 :ConnectionDetails;
  }
}

struct ConnectionError @0xf5f383d2785edb86 {
  cause @0 :Text;
  retryAfter @1 :Int64;   # nanoseconds; never honoured by the connector
  shouldRetry @2 :Bool;
}

struct ConnectionDetails @0xb5f39f082b9ac18a {
  uuid @0 :Data;          # must be exactly 16 bytes
  locationName @1 :Text;
  tunnelIsRemotelyManaged @2 :Bool;
}

# ---------------------------------------------------------------------------
# Edge -> connector calls: the connector's bootstrap capability.
# ---------------------------------------------------------------------------

interface CloudflaredServer @0xf548cef9dea2a4a1 extends (SessionManager, ConfigurationManager) {}

interface SessionManager @0x839445a59fb01686 {
  registerUdpSession @0 (sessionId :Data, dstIp :Data, dstPort :UInt16,
                         closeAfterIdleHint :Int64, traceContext :Text = "")
                     -> (result :RegisterUdpSessionResponse);
  unregisterUdpSession @1 (sessionId :Data, message :Text) -> ();
}

struct RegisterUdpSessionResponse @0xab6d5210c1f26687 {
  err @0 :Text;
  spans @1 :Data;
}

interface ConfigurationManager @0xb48edfbdaa25db04 {
  updateConfiguration @0 (version :Int32, config :Data) -> (result :UpdateConfigurationResponse);
}

struct UpdateConfigurationResponse @0xdb58ff694ba05cf9 {
  latestAppliedVersion @0 :Int32;
  err @1 :Text;
}

# ---------------------------------------------------------------------------
# Legacy declarations. Nothing here is called by current connectors; they stay
# so that the IDs above and below never get reused for something else.
# ---------------------------------------------------------------------------

interface TunnelServer @0xea58385c65416035 extends (RegistrationServer) {
  registerTunnel @0 (originCert :Data, hostname :Text, options :RegistrationOptions)
                 -> (result :TunnelRegistration);
  getServerInfo @1 () -> (result :ServerInfo);
  unregisterTunnel @2 (gracePeriodNanoSec :Int64) -> ();
  obsoleteDeclarativeTunnelConnect @3 () -> ();
  authenticate @4 (originCert :Data, hostname :Text, options :RegistrationOptions)
               -> (result :AuthenticateResponse);
  reconnectTunnel @5 (jwt :Data, eventDigest :Data, connDigest :Data, hostname :Text,
                      options :RegistrationOptions) -> (result :TunnelRegistration);
}

struct Authentication @0xc082ef6e0d42ed1d {
  key @0 :Text;
  email @1 :Text;
  originCAKey @2 :Text;
}

struct TunnelRegistration @0xf41a0f001ad49e46 {
  err @0 :Text;
  url @1 :Text;
  logLines @2 :List(Text);
  permanentFailure @3 :Bool;
  tunnelID @4 :Text;
  retryAfterSeconds @5 :UInt16;
  eventDigest @6 :Data;
  connDigest @7 :Data;
}

struct RegistrationOptions @0xc793e50592935b4a {
  clientId @0 :Text;
  version @1 :Text;
  os @2 :Text;
  existingTunnelPolicy @3 :ExistingTunnelPolicy;
  poolName @4 :Text;
  tags @5 :List(Tag);
  connectionId @6 :UInt8;
  originLocalIp @7 :Text;
  isAutoupdated @8 :Bool;
  runFromTerminal @9 :Bool;
  compressionQuality @10 :UInt64;
  uuid @11 :Text;
  numPreviousAttempts @12 :UInt8;
  features @13 :List(Text);
}

enum ExistingTunnelPolicy @0x84cb9536a2cf6d3c {
  ignore @0;
  disconnect @1;
  balance @2;
}

struct ServerInfo @0xf2c68e2547ec3866 {
  locationName @0 :Text;
}

struct AuthenticateResponse @0x82c325a07ad22a65 {
  permanentErr @0 :Text;
  retryableErr @1 :Text;
  jwt @2 :Data;
  hoursUntilRefresh @3 :UInt8;
}

struct Tag @0xcbd96442ae3bb01a {
  name @0 :Text;
  value @1 :Text;
}
