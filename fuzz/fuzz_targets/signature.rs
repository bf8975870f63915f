//! The webhook HMAC signature header parser (`X-Lifeboat-Signature`):
//! arbitrary headers never panic, and only a real signature verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeboat_notify::signature::{sign, verify};

const SECRET: &[u8] = b"fuzz-secret";
const NOW: i64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    // First line: the header; the rest: the body.
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let Ok(header) = std::str::from_utf8(&data[..split]) else { return };
    let body = data.get(split + 1..).unwrap_or_default();
    let accepted = verify(SECRET, header, body, NOW, 300).is_ok();
    if accepted {
        // Accepted means it carries the real MAC of this body at its time.
        let genuine = header.split(',').any(|part| {
            part.trim().strip_prefix("t=").and_then(|t| t.trim().parse::<i64>().ok()).is_some_and(
                |t| {
                    let real = sign(SECRET, t, body);
                    let real_mac = real.split("v1=").nth(1).unwrap_or_default().to_string();
                    header.to_ascii_lowercase().contains(&real_mac)
                },
            )
        });
        assert!(genuine, "accepted a forged signature: {header:?}");
    }
    // And a real signature of this body always verifies.
    let real = sign(SECRET, NOW, body);
    assert!(verify(SECRET, &real, body, NOW, 300).is_ok());
});
