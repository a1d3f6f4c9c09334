//! Origin HTTP/1.1 responses: arbitrary bytes as what an origin sends back. Head parsing
//! (including skipped 1xx interim heads), framing and body decoding never panic, and a parsed
//! head always consumes input.
#![no_main]

use bytes::BytesMut;
use http::Method;
use libfuzzer_sys::fuzz_target;
use ringflare::connector::origin::http::{decoder, parse_head, response_framing};
use ringflare::http1::BodyEvent;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    // As `read_head` does: interim responses are skipped, bounded by the input.
    let head = loop {
        let before = buf.len();
        match parse_head(&mut buf) {
            Ok(Some(head)) => {
                assert!(buf.len() < before, "a parsed head consumed nothing");
                if (100..200).contains(&head.status) && head.status != 101 {
                    continue;
                }
                break head;
            }
            Ok(None) | Err(_) => return,
        }
    };
    let _ = head.keep_alive();
    for method in [Method::GET, Method::HEAD] {
        let Ok(framing) = response_framing(&method, &head) else {
            continue;
        };
        let Some(mut body) = decoder(framing) else {
            continue;
        };
        let mut rest = buf.clone();
        let mut got = 0usize;
        // Each event consumes input or ends the body, so this loop is bounded by the input.
        for _ in 0..=data.len() + 2 {
            match body.decode(&mut rest) {
                Ok(Some(BodyEvent::Data(d))) => got += d.len(),
                Ok(Some(BodyEvent::End { .. })) | Ok(None) | Err(_) => break,
            }
        }
        assert!(got <= buf.len());
    }
});
