//! Cross-file tests for `crate::proto`: schema IDs against the spec, framing edge cases, and
//! `decode(encode(x)) == x` property tests for every codec.

use bytes::{Buf, BytesMut};
use capnp::message::{Builder, HeapAllocator};
use proptest::prelude::*;

use super::connect::*;
use super::error::DecodeError;
use super::framing::*;
use super::generated::quic_metadata_protocol_capnp as q;
use super::generated::tunnelrpc_capnp as t;
use super::headers::*;
use super::rpc_types::*;

fn sid<T: capnp::traits::HasTypeId>() -> u64 {
    T::TYPE_ID
}

#[test]
fn schema_ids_match_spec() {
    let ids = [
        (
            t::registration_server::_private::TYPE_ID,
            0xf716_95ec_7fe8_5497,
        ),
        (t::session_manager::_private::TYPE_ID, 0x8394_45a5_9fb0_1686),
        (
            t::configuration_manager::_private::TYPE_ID,
            0xb48e_dfbd_aa25_db04,
        ),
        (
            t::cloudflared_server::_private::TYPE_ID,
            0xf548_cef9_dea2_a4a1,
        ),
        (t::tunnel_server::_private::TYPE_ID, 0xea58_385c_6541_6035),
        (
            sid::<t::client_info::Reader<'static>>(),
            0x83ce_d014_5b2f_114b,
        ),
        (
            sid::<t::connection_options::Reader<'static>>(),
            0xb4bf_9861_fe03_5d04,
        ),
        (
            sid::<t::connection_response::Reader<'static>>(),
            0xdbaa_9d03_d52b_62dc,
        ),
        (
            sid::<t::connection_error::Reader<'static>>(),
            0xf5f3_83d2_785e_db86,
        ),
        (
            sid::<t::connection_details::Reader<'static>>(),
            0xb5f3_9f08_2b9a_c18a,
        ),
        (
            sid::<t::tunnel_auth::Reader<'static>>(),
            0x9496_331a_b9cd_463f,
        ),
        (
            sid::<t::register_udp_session_response::Reader<'static>>(),
            0xab6d_5210_c1f2_6687,
        ),
        (
            sid::<t::update_configuration_response::Reader<'static>>(),
            0xdb58_ff69_4ba0_5cf9,
        ),
        (
            sid::<t::authentication::Reader<'static>>(),
            0xc082_ef6e_0d42_ed1d,
        ),
        (
            sid::<t::tunnel_registration::Reader<'static>>(),
            0xf41a_0f00_1ad4_9e46,
        ),
        (
            sid::<t::registration_options::Reader<'static>>(),
            0xc793_e505_9293_5b4a,
        ),
        (
            sid::<t::server_info::Reader<'static>>(),
            0xf2c6_8e25_47ec_3866,
        ),
        (
            sid::<t::authenticate_response::Reader<'static>>(),
            0x82c3_25a0_7ad2_2a65,
        ),
        (sid::<t::tag::Reader<'static>>(), 0xcbd9_6442_ae3b_b01a),
        (
            sid::<q::connect_request::Reader<'static>>(),
            0xc471_16a1_045e_4061,
        ),
        (sid::<q::metadata::Reader<'static>>(), 0xe144_6b97_bfd1_cd37),
        (
            sid::<q::connect_response::Reader<'static>>(),
            0xb103_2ec9_1cef_8727,
        ),
    ];
    for (i, (got, want)) in ids.iter().enumerate() {
        assert_eq!(got, want, "entry {i}");
    }
    assert_eq!(
        <t::ExistingTunnelPolicy as capnp::traits::HasTypeId>::TYPE_ID,
        0x84cb_9536_a2cf_6d3c
    );
    assert_eq!(
        <q::ConnectionType as capnp::traits::HasTypeId>::TYPE_ID,
        0xc52e_1bac_26d3_79c8
    );
}

#[test]
fn connect_request_layout_matches_spec() {
    // Single segment; ConnectRequest is 1 data word + 2 pointers and `type` is the u16 at byte 0.
    let req = ConnectRequest {
        dest: "x".into(),
        kind: ConnectionType::Tcp,
        metadata: vec![],
    };
    let mut out = BytesMut::new();
    req.encode(&mut out);
    assert_eq!(&out[..8], b"\x0A\x36\xCD\x12\xA1\x3E01");
    assert_eq!(&out[8..12], &[0, 0, 0, 0], "one segment");
    // root pointer at word 0 of the segment: struct pointer with data size 1, pointer count 2
    let root = &out[16..24];
    assert_eq!(&root[4..8], &[1, 0, 2, 0]);
    // data section word right after the root pointer: ConnectionType::Tcp == 2
    assert_eq!(&out[24..26], &[2, 0]);
}

#[test]
fn framing_incomplete_then_complete() {
    let resp = ConnectResponse {
        error: String::new(),
        metadata: vec![("HttpStatus".into(), "200".into())],
    };
    let mut wire = BytesMut::new();
    resp.encode(&mut wire);
    let limits = FrameLimits::default();
    for cut in 0..wire.len() {
        let mut partial = &wire[..cut];
        let err = ConnectResponse::decode(&mut partial, &limits).unwrap_err();
        assert!(err.is_incomplete(), "cut {cut}: {err}");
        assert_eq!(partial.len(), cut, "nothing consumed on incomplete");
    }
    let mut full = wire.clone().freeze().chain(&b"body"[..]);
    assert_eq!(ConnectResponse::decode(&mut full, &limits).unwrap(), resp);
    assert_eq!(full.remaining(), 4, "body left in place");
}

#[test]
fn framing_limits_checked_before_allocating() {
    let limits = FrameLimits::default();
    // 2^32 segments announced
    let mut huge_count = &[0xff, 0xff, 0xff, 0xff][..];
    assert!(matches!(
        decode_message(&mut huge_count, &limits),
        Err(DecodeError::TooManySegments { .. })
    ));
    // one segment of u32::MAX words, with no body present
    let mut huge_size = &[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff][..];
    assert!(matches!(
        decode_message(&mut huge_size, &limits),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn signatures() {
    let mut rpc = &[0x52, 0xBB, 0x82, 0x5C, 0xDB, 0x65, 0xAA][..];
    assert_eq!(
        StreamSignature::decode(&mut rpc).unwrap(),
        StreamSignature::Rpc
    );
    assert_eq!(rpc, &[0xAA]);
    let mut unknown = &[1, 2, 3, 4, 5, 6, 7, 8][..];
    assert!(matches!(
        StreamSignature::decode(&mut unknown),
        Err(DecodeError::UnknownSignature(_))
    ));
    let mut short = &DATA_STREAM_SIGNATURE[..];
    assert!(
        StreamSignature::decode(&mut short)
            .unwrap_err()
            .is_incomplete()
    );
}

#[test]
fn details_uuid_must_be_16_bytes() {
    let mut message = Builder::new(HeapAllocator::new());
    let root: t::connection_response::Builder<'_> = message.init_root();
    let mut details = root.get_result().init_connection_details();
    details.set_uuid(&[1; 15]);
    let reader = message.get_root_as_reader().unwrap();
    assert!(matches!(
        ConnectionResponse::read_from(reader),
        Err(DecodeError::InvalidField { reason, .. }) if reason.contains("16")
    ));
}

fn text() -> impl Strategy<Value = String> {
    ".{0,24}"
}

fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((text(), text()), 0..6)
}

fn kind() -> impl Strategy<Value = ConnectionType> {
    prop_oneof![
        Just(ConnectionType::Http),
        Just(ConnectionType::Websocket),
        Just(ConnectionType::Tcp)
    ]
}

fn register_params() -> impl Strategy<Value = RegisterConnectionParams> {
    let client = (
        prop::collection::vec(any::<u8>(), 0..20),
        prop::collection::vec(text(), 0..4),
        text(),
        text(),
    )
        .prop_map(|(client_id, features, version, arch)| ClientInfo {
            client_id,
            features,
            version,
            arch,
        });
    let options = (
        client,
        prop::collection::vec(any::<u8>(), 0..17),
        any::<(bool, u8, u8)>(),
    )
        .prop_map(
            |(client, ip, (replace, quality, attempts))| ConnectionOptions {
                client,
                origin_local_ip: ip,
                replace_existing: replace,
                compression_quality: quality,
                num_previous_attempts: attempts,
            },
        );
    (
        text(),
        prop::collection::vec(any::<u8>(), 0..40),
        any::<[u8; 16]>(),
        any::<u8>(),
        options,
    )
        .prop_map(
            |(tag, secret, tunnel_id, conn_index, options)| RegisterConnectionParams {
                auth: TunnelAuth {
                    account_tag: tag,
                    tunnel_secret: TunnelSecret::new(secret),
                },
                tunnel_id,
                conn_index,
                options,
            },
        )
}

fn connection_response() -> impl Strategy<Value = ConnectionResponse> {
    prop_oneof![
        (text(), any::<i64>(), any::<bool>()).prop_map(|(cause, retry_after, should_retry)| {
            ConnectionResponse::Error(ConnectionError {
                cause,
                retry_after,
                should_retry,
            })
        }),
        (any::<[u8; 16]>(), text(), any::<bool>()).prop_map(|(uuid, location_name, remote)| {
            ConnectionResponse::Details(ConnectionDetails {
                uuid,
                location_name,
                tunnel_is_remotely_managed: remote,
            })
        }),
    ]
}

/// Writes `value` into a fresh message, frames it, decodes it back through the framing layer.
fn through_wire<O, T>(write: impl FnOnce(O::Builder<'_>), read: impl Fn(O::Reader<'_>) -> T) -> T
where
    O: capnp::traits::Owned,
{
    let mut message = Builder::new(HeapAllocator::new());
    write(message.init_root::<O::Builder<'_>>());
    let mut wire = BytesMut::new();
    encode_message(&message, &mut wire);
    let mut buf = wire.freeze();
    let decoded = decode_message(&mut buf, &FrameLimits::default()).unwrap();
    assert!(!buf.has_remaining());
    read(decoded.get_root::<O::Reader<'_>>().unwrap())
}

proptest! {
    #[test]
    fn headers_round_trip(pairs in prop::collection::vec(
        (prop::collection::vec(any::<u8>(), 0..16), prop::collection::vec(any::<u8>(), 0..32)), 0..8)) {
        let wire = serialize_headers(pairs.iter().map(|(n, v)| (n, v)));
        let mut decoded = DecodedHeaders::default();
        deserialize_headers_into(wire.as_bytes(), &mut decoded).unwrap();
        let back: Vec<(Vec<u8>, Vec<u8>)> = decoded.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
        prop_assert_eq!(back, pairs);
    }

    #[test]
    fn string_headers_round_trip(pairs in pairs()) {
        let wire = serialize_headers(pairs.iter().map(|(n, v)| (n, v)));
        prop_assert_eq!(deserialize_headers(&wire).unwrap(), pairs);
    }

    #[test]
    fn deserialize_never_panics(input in ".{0,64}") {
        let _ = deserialize_headers(&input);
    }

    #[test]
    fn connect_request_round_trip(dest in text(), kind in kind(), metadata in pairs(), split in 0usize..64) {
        let req = ConnectRequest { dest, kind, metadata };
        let mut wire = BytesMut::new();
        req.encode(&mut wire);
        let wire = wire.freeze();
        // Also across a non-contiguous buffer.
        let split = split.min(wire.len());
        let mut chained = wire.slice(..split).chain(wire.slice(split..));
        prop_assert_eq!(ConnectRequest::decode(&mut chained, &FrameLimits::default()).unwrap(), req);
    }

    #[test]
    fn connect_response_round_trip(error in text(), metadata in pairs()) {
        let resp = ConnectResponse { error, metadata };
        let mut wire = BytesMut::new();
        resp.encode(&mut wire);
        prop_assert_eq!(ConnectResponse::decode(&mut wire.freeze(), &FrameLimits::default()).unwrap(), resp);
    }

    #[test]
    fn connect_decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        let mut with_preamble = BytesMut::from(&b"\x0A\x36\xCD\x12\xA1\x3E01"[..]);
        with_preamble.extend_from_slice(&bytes);
        let _ = ConnectRequest::decode(&mut with_preamble.freeze(), &FrameLimits::default());
        let _ = ConnectRequest::decode_message(&mut &bytes[..], &FrameLimits::default());
    }

    #[test]
    fn register_params_round_trip(params in register_params()) {
        type P = t::registration_server::register_connection_params::Owned;
        let back = through_wire::<P, _>(|b| params.write_to(b), |r| RegisterConnectionParams::read_from(r).unwrap());
        prop_assert_eq!(back, params);
    }

    #[test]
    fn connection_response_round_trip(resp in connection_response()) {
        let back = through_wire::<t::connection_response::Owned, _>(
            |b| resp.write_to(b), |r| ConnectionResponse::read_from(r).unwrap());
        prop_assert_eq!(back, resp);
    }

    #[test]
    fn update_configuration_response_round_trip(v in any::<i32>(), err in proptest::option::of(".{1,20}")) {
        let resp = UpdateConfigurationResponse { latest_applied_version: v, err };
        let back = through_wire::<t::update_configuration_response::Owned, _>(
            |b| resp.write_to(b), |r| UpdateConfigurationResponse::read_from(r).unwrap());
        prop_assert_eq!(back, resp);
    }
}
