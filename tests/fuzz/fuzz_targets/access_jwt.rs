//! Cloudflare Access: arbitrary bytes as the `Cf-Access-Jwt-Assertion` token and as a JWKS
//! document (split at the first newline). Parsing, claim checks and signature checks never panic,
//! and a garbage signature never verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringflare::connector::access::{KeySet, Verify, check_claims, parse};

fuzz_target!(|data: &[u8]| {
    let (token, jwks) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    let keys = KeySet::parse(jwks);
    if let Ok(keys) = &keys {
        assert_eq!(keys.len() == 0, keys.is_empty());
    }
    let Ok(token) = parse(token) else { return };
    let _ = check_claims(&token.claims, "https://team.cloudflareaccess.com", 1.7e9);
    let _ = check_claims(&token.claims, &token.claims.iss, f64::NAN);
    if let Ok(keys) = keys {
        // Forging an RS256 signature by fuzzing is not possible: Ok would be a verifier bug.
        assert_ne!(keys.verify(&token), Verify::Ok);
    }
});
