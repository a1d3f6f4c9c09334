//! Eyeball HTTP/1.1: arbitrary bytes as a request head followed by its body. Parsing and body
//! framing never panic; a body decodes to the same bytes and outcome whether its bytes arrive at
//! once or in small pieces; chunked bodies the encoder writes decode back to the same data.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringflare::http1::{
    BodyDecoder, BodyEvent, BodyFraming, Http1Error, encode_chunk, encode_last_chunk,
    parse_request_head,
};

/// How a body decode ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    Ended(usize),
    NeedMore,
    Failed,
}

/// Decodes `input` delivered in pieces of `piece` bytes; returns the data and how it ended.
fn decode(framing: BodyFraming, input: &[u8], piece: usize) -> (Vec<u8>, Outcome) {
    let mut decoder = BodyDecoder::new(framing);
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut fed = 0;
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(BodyEvent::Data(d))) => {
                assert!(!d.is_empty(), "empty Data event");
                data.extend_from_slice(&d);
            }
            Ok(Some(BodyEvent::End { trailers })) => {
                assert!(decoder.is_done());
                return (data, Outcome::Ended(trailers.len()));
            }
            Ok(None) if fed < input.len() => {
                let end = (fed + piece).min(input.len());
                buf.extend_from_slice(&input[fed..end]);
                fed = end;
            }
            Ok(None) => return (data, Outcome::NeedMore),
            Err(_) => return (data, Outcome::Failed),
        }
    }
}

fn check_body(framing: BodyFraming, body: &[u8], piece: usize) {
    let whole = decode(framing, body, body.len().max(1));
    let pieces = decode(framing, body, piece);
    assert_eq!(whole, pieces, "decoding depends on how the bytes arrive");
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, data)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece % 16) + 1;

    // Round trip: the input as chunk payloads, encoded and decoded again.
    let mut encoded = BytesMut::new();
    for chunk in data.chunks(piece * 7) {
        encode_chunk(chunk, &mut encoded);
    }
    encode_last_chunk(&[], &mut encoded).expect("no trailers");
    let (decoded, outcome) = decode(BodyFraming::Chunked, &encoded, piece);
    assert_eq!(decoded, data);
    assert_eq!(outcome, Outcome::Ended(0));

    // The input as a request head and body.
    let mut buf = BytesMut::from(data);
    let head = match parse_request_head(&mut buf) {
        Ok(Some(head)) => head,
        Ok(None) | Err(_) => {
            // The raw bytes as each body framing.
            check_body(BodyFraming::Chunked, data, piece);
            check_body(BodyFraming::Length(data.len() as u64 / 2), data, piece);
            return;
        }
    };
    assert!(buf.len() < data.len(), "a parsed head consumed nothing");
    let _ = head.keep_alive();
    let _ = head.is_websocket_upgrade();
    match head.body_framing() {
        Ok(framing) => check_body(framing, &buf, piece),
        Err(e) => {
            let _: Http1Error = e;
        }
    }
});
