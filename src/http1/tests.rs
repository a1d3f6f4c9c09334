use bytes::{Bytes, BytesMut};
use http::{HeaderName, Method, StatusCode};
use proptest::prelude::*;

use super::*;

fn head(raw: &str) -> RequestHead {
    let mut buf = BytesMut::from(raw);
    parse_request_head(&mut buf).unwrap().unwrap()
}

/// Decodes `input` fed in pieces split at `cuts`; returns the body and trailers.
fn decode_split(
    framing: BodyFraming,
    input: &[u8],
    cuts: &[usize],
) -> Result<(Vec<u8>, Vec<Header>), Http1Error> {
    let mut dec = BodyDecoder::new(framing);
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut fed = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.sort_unstable();
    points.push(input.len());
    for end in points {
        buf.extend_from_slice(&input[fed..end.max(fed)]);
        fed = end.max(fed);
        while let Some(ev) = dec.decode(&mut buf)? {
            match ev {
                BodyEvent::Data(d) => body.extend_from_slice(&d),
                BodyEvent::End { trailers } => return Ok((body, trailers)),
            }
        }
    }
    panic!("body did not end; decoder state {dec:?}");
}

#[test]
fn parses_head_and_leaves_body_bytes() {
    let mut buf = BytesMut::from(
        "POST /a?b=1 HTTP/1.1\r\nHost: x.test\r\nX-Two: a\r\nx-two: b\r\nContent-Length: 3\r\n\r\nabc",
    );
    let head = parse_request_head(&mut buf).unwrap().unwrap();
    assert_eq!(head.method, Method::POST);
    assert_eq!(&head.target[..], b"/a?b=1");
    assert_eq!(head.version, Version::Http11);
    let two = HeaderName::from_static("x-two");
    assert_eq!(head.values(&two).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(head.body_framing().unwrap(), BodyFraming::Length(3));
    assert_eq!(&buf[..], b"abc");
}

#[test]
fn partial_head_needs_more_and_oversized_head_is_rejected() {
    let mut buf = BytesMut::from("GET / HTTP/1.1\r\nHost: x");
    assert_eq!(parse_request_head(&mut buf), Ok(None));
    let mut big = BytesMut::from("GET / HTTP/1.1\r\nX-Big: ");
    big.extend_from_slice(&vec![b'a'; MAX_HEAD_BYTES]);
    let err = parse_request_head(&mut big).unwrap_err();
    assert_eq!(err.status(), 431);
    let mut bad = BytesMut::from("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n");
    assert!(parse_request_head(&mut bad).is_err());
}

#[test]
fn framing_rules() {
    let f = |raw: &str| head(raw).body_framing();
    assert_eq!(f("GET / HTTP/1.1\r\n\r\n"), Ok(BodyFraming::Empty));
    assert_eq!(
        f("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
        Ok(BodyFraming::Chunked)
    );
    assert_eq!(
        f("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n"),
        Ok(BodyFraming::Length(5))
    );
    assert_eq!(
        f("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
        Err(Http1Error::InvalidContentLength)
    );
    assert_eq!(
        f("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
        Err(Http1Error::InvalidContentLength)
    );
    assert_eq!(
        f("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
        Err(Http1Error::ConflictingFraming)
    );
    assert!(f("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n").is_err());
    assert!(f("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
}

#[test]
fn keep_alive_and_upgrade() {
    assert!(head("GET / HTTP/1.1\r\n\r\n").keep_alive());
    assert!(!head("GET / HTTP/1.1\r\nConnection: foo, Close\r\n\r\n").keep_alive());
    assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive());
    assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive());
    let ws = "GET /ws HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n\r\n";
    assert!(head(ws).is_websocket_upgrade());
    assert!(!head("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n").is_websocket_upgrade());
}

#[test]
fn chunked_with_extensions_and_trailers() {
    let input = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Sum: 9\r\n\r\nNEXT";
    let mut buf = BytesMut::from(&input[..]);
    let mut dec = ChunkedDecoder::default();
    let mut body = Vec::new();
    let trailers = loop {
        match dec.decode(&mut buf).unwrap().unwrap() {
            BodyEvent::Data(d) => body.extend_from_slice(&d),
            BodyEvent::End { trailers } => break trailers,
        }
    };
    assert_eq!(body, b"Wikipedia");
    assert_eq!(trailers[0].name, "x-sum");
    assert_eq!(&trailers[0].value[..], b"9");
    assert!(dec.is_done());
    assert_eq!(
        &buf[..],
        b"NEXT",
        "bytes after the body stay for the next request"
    );
}

#[test]
fn chunked_rejects_bad_input() {
    let bad = |input: &[u8]| decode_split(BodyFraming::Chunked, input, &[]).unwrap_err();
    assert_eq!(bad(b"zz\r\n"), Http1Error::InvalidChunkSize);
    assert_eq!(bad(b"4\nWiki\r\n0\r\n\r\n"), Http1Error::InvalidChunkSize);
    assert_eq!(bad(b"4\r\nWikiXX0\r\n\r\n"), Http1Error::BadChunkTerminator);
    assert_eq!(bad(b"11111111111111111\r\n"), Http1Error::InvalidChunkSize);
    let mut long = b"1;".to_vec();
    long.extend_from_slice(&[b'x'; MAX_CHUNK_LINE + 8]);
    assert!(matches!(bad(&long), Http1Error::ChunkLineTooLong { .. }));
}

#[test]
fn content_length_body_stops_at_length() {
    let (body, trailers) = decode_split(BodyFraming::Length(5), b"hello", &[2]).unwrap();
    assert_eq!(body, b"hello");
    assert!(trailers.is_empty());
    let mut dec = BodyDecoder::new(BodyFraming::Length(2));
    let mut buf = BytesMut::from("abGET");
    assert_eq!(
        dec.decode(&mut buf),
        Ok(Some(BodyEvent::Data(Bytes::from_static(b"ab"))))
    );
    assert!(matches!(
        dec.decode(&mut buf),
        Ok(Some(BodyEvent::End { .. }))
    ));
    assert_eq!(&buf[..], b"GET");
}

#[test]
fn response_head_encoding_refuses_splitting() {
    let mut out = BytesMut::new();
    let h = |n: &'static str, v: &'static [u8]| Header {
        name: HeaderName::from_static(n),
        value: Bytes::from_static(v),
    };
    let ok = ResponseHead {
        status: StatusCode::NOT_FOUND,
        headers: vec![h("content-length", b"0")],
    };
    ok.encode(&mut out).unwrap();
    assert_eq!(
        &out[..],
        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
    );
    let evil = ResponseHead {
        status: StatusCode::OK,
        headers: vec![h("x-a", b"1\r\nset-cookie: x")],
    };
    assert!(evil.encode(&mut out).is_err());
}

fn encode_chunked(pieces: &[Vec<u8>], trailers: &[Header]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for p in pieces {
        encode_chunk(p, &mut out);
    }
    encode_last_chunk(trailers, &mut out).unwrap();
    out.to_vec()
}

proptest! {
    #[test]
    fn chunked_roundtrip_under_any_split(
        pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..12),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let trailers = vec![Header {
            name: HeaderName::from_static("x-checksum"),
            value: Bytes::from_static(b"abc"),
        }];
        let wire = encode_chunked(&pieces, &trailers);
        let (body, got_trailers) = decode_split(BodyFraming::Chunked, &wire, &cuts).unwrap();
        prop_assert_eq!(body, pieces.concat());
        prop_assert_eq!(got_trailers, trailers);
    }

    #[test]
    fn head_parse_is_split_independent(split in 0usize..200) {
        let raw = b"PUT /x HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n";
        let split = split % raw.len();
        let mut buf = BytesMut::from(&raw[..split]);
        prop_assert_eq!(parse_request_head(&mut buf), Ok(None));
        buf.extend_from_slice(&raw[split..]);
        let head = parse_request_head(&mut buf).unwrap().unwrap();
        prop_assert_eq!(head.body_framing(), Ok(BodyFraming::Chunked));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut buf = BytesMut::from(&input[..]);
        let _ = parse_request_head(&mut buf);
        let mut dec = ChunkedDecoder::default();
        let mut buf = BytesMut::from(&input[..]);
        // Each event consumes input or ends the body, so this is bounded by the input size.
        for _ in 0..=input.len() + 1 {
            match dec.decode(&mut buf) {
                Ok(Some(BodyEvent::Data(d))) => prop_assert!(!d.is_empty()),
                Ok(Some(BodyEvent::End { .. })) | Ok(None) | Err(_) => break,
            }
        }
    }
}
