//! HMAC-SHA256 webhook signatures: the `X-Lifeboat-Signature` header that
//! outbound webhooks carry and inbound hooks are checked against.
//!
//! The header value is `t=<unix seconds>,v1=<hex>` where `<hex>` is the
//! lowercase hex HMAC-SHA256, keyed with the shared secret, of the bytes
//! `"<t>." + body`. Binding the timestamp into the MAC lets a receiver refuse
//! replays: [`verify`] rejects a timestamp further than `window_secs` from
//! `now` in either direction.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The HTTP header that carries the signature.
pub const HEADER: &str = "X-Lifeboat-Signature";

/// The replay window hooks use by default (5 minutes).
pub const DEFAULT_WINDOW_SECS: i64 = 300;

type HmacSha256 = Hmac<Sha256>;

/// Why a signature was refused. The messages are safe to return to the
/// caller: they never include the secret or the expected MAC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is not `t=<unix seconds>,v1=<hex>`.
    #[error("malformed {HEADER} header: {0}; expected `t=<unix seconds>,v1=<hex hmac-sha256>`")]
    Malformed(String),
    /// The timestamp is outside the window: a replay, or a badly skewed clock.
    #[error(
        "{HEADER} timestamp {timestamp} is {skew}s from now, outside the {window_secs}s window (replayed request or clock skew)"
    )]
    Stale { timestamp: i64, skew: i64, window_secs: i64 },
    /// No `v1` signature matched the body: wrong secret or altered body.
    #[error("{HEADER} does not match the body (wrong secret or altered body)")]
    Mismatch,
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value signing `body` at `timestamp` (unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", to_hex(&tag))
}

/// Checks `header` (the value of [`HEADER`]) against `body`.
///
/// `now` is the receiver's clock in unix seconds; a timestamp more than
/// `window_secs` away from it is refused as [`SignatureError::Stale`]. Several
/// `v1=` entries are allowed (secret rotation): any match is enough. The MAC
/// is compared in constant time.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    window_secs: i64,
) -> Result<(), SignatureError> {
    verify_signed(secret, header, body, now, window_secs).map(|_| ())
}

/// What a valid signature proved, for a receiver that refuses replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The signed timestamp (unix seconds): the request may be replayed
    /// until `timestamp + window_secs`.
    pub timestamp: i64,
    /// The lowercase hex MAC of this timestamp and body, as computed here:
    /// the same for every spelling of the header that verifies.
    pub mac: String,
}

/// [`verify`], returning what the signature proved.
pub fn verify_signed(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    window_secs: i64,
) -> Result<Verified, SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let part = part.trim();
        let Some((key, value)) = part.split_once('=') else {
            return Err(SignatureError::Malformed(format!("`{}` is not key=value", clip(part))));
        };
        match key.trim() {
            "t" => {
                let t = value.trim().parse::<i64>().map_err(|_| {
                    SignatureError::Malformed(format!(
                        "timestamp `{}` is not unix seconds",
                        clip(value)
                    ))
                })?;
                if timestamp.replace(t).is_some() {
                    return Err(SignatureError::Malformed("more than one `t=`".into()));
                }
            }
            "v1" => signatures.push(from_hex(value.trim()).ok_or_else(|| {
                SignatureError::Malformed("`v1` is not a 64-digit hex HMAC-SHA256".into())
            })?),
            // Unknown schemes are ignored so a sender can add v2 later.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or_else(|| SignatureError::Malformed("no `t=`".into()))?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed("no `v1=`".into()));
    }
    let skew = now.saturating_sub(timestamp);
    if skew.saturating_abs() > window_secs {
        return Err(SignatureError::Stale { timestamp, skew, window_secs });
    }
    let expected = mac(secret, timestamp, body);
    // `verify_slice` compares in constant time; clone the keyed state per try.
    if signatures.iter().any(|sig| expected.clone().verify_slice(sig).is_ok()) {
        Ok(Verified { timestamp, mac: to_hex(&expected.finalize().into_bytes()) })
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn to_hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    hex::decode(s).ok()
}

/// Keeps attacker-controlled text short in error messages.
fn clip(s: &str) -> String {
    s.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"s3cret";
    const NOW: i64 = 1_700_000_000;

    #[test]
    fn sign_then_verify_round_trips() {
        let header = sign(SECRET, NOW, b"{\"a\":1}");
        assert!(header.starts_with(&format!("t={NOW},v1=")));
        assert_eq!(verify(SECRET, &header, b"{\"a\":1}", NOW + 10, 300), Ok(()));
    }

    #[test]
    fn every_spelling_of_a_valid_header_proves_the_same_mac() {
        let header = sign(SECRET, NOW, b"x");
        let mac = header.split_once("v1=").unwrap().1.to_string();
        let respelled = format!(" v1={} , t={NOW}, v1={}", mac.to_uppercase(), "0".repeat(64));
        let a = verify_signed(SECRET, &header, b"x", NOW, 300).unwrap();
        let b = verify_signed(SECRET, &respelled, b"x", NOW, 300).unwrap();
        assert_eq!(a, Verified { timestamp: NOW, mac: mac.clone() });
        assert_eq!(a, b);
    }

    #[test]
    fn known_vector_matches_openssl() {
        // printf '1700000000.hello' | openssl dgst -sha256 -hmac s3cret
        assert_eq!(
            sign(SECRET, NOW, b"hello"),
            "t=1700000000,v1=babfa8b593140ee3160bea38210f8fea6712e1f6e073328eb52c4e965bc0ab8d"
        );
    }

    #[test]
    fn tampered_body_is_a_mismatch() {
        let header = sign(SECRET, NOW, b"{\"a\":1}");
        assert_eq!(verify(SECRET, &header, b"{\"a\":2}", NOW, 300), Err(SignatureError::Mismatch));
    }

    #[test]
    fn wrong_secret_is_a_mismatch() {
        let header = sign(b"other", NOW, b"x");
        assert_eq!(verify(SECRET, &header, b"x", NOW, 300), Err(SignatureError::Mismatch));
    }

    #[test]
    fn stale_timestamp_is_a_replay() {
        let header = sign(SECRET, NOW - 301, b"x");
        assert!(matches!(
            verify(SECRET, &header, b"x", NOW, 300),
            Err(SignatureError::Stale { skew: 301, .. })
        ));
    }

    #[test]
    fn future_timestamp_beyond_window_is_refused() {
        let header = sign(SECRET, NOW + 301, b"x");
        assert!(matches!(
            verify(SECRET, &header, b"x", NOW, 300),
            Err(SignatureError::Stale { skew: -301, .. })
        ));
    }

    #[test]
    fn timestamp_cannot_be_swapped_for_a_fresh_one() {
        let header = sign(SECRET, NOW - 1000, b"x");
        let v1 = header.split_once(",v1=").unwrap().1;
        let forged = format!("t={NOW},v1={v1}");
        assert_eq!(verify(SECRET, &forged, b"x", NOW, 300), Err(SignatureError::Mismatch));
    }

    #[test]
    fn malformed_headers_are_refused() {
        let good = sign(SECRET, NOW, b"x");
        let v1 = good.split_once(",v1=").unwrap().1.to_string();
        for bad in [
            String::new(),
            "garbage".to_string(),
            format!("v1={v1}"),
            format!("t={NOW}"),
            format!("t=abc,v1={v1}"),
            format!("t={NOW},v1=zz"),
            format!("t={NOW},v1={}", &v1[..10]),
            format!("t={NOW},t={NOW},v1={v1}"),
        ] {
            assert!(
                matches!(verify(SECRET, &bad, b"x", NOW, 300), Err(SignatureError::Malformed(_))),
                "{bad:?} should be malformed"
            );
        }
    }

    #[test]
    fn any_of_several_v1_signatures_may_match() {
        let good = sign(SECRET, NOW, b"x");
        let v1 = good.split_once(",v1=").unwrap().1;
        let header = format!("t={NOW},v1={},v1={v1}", "0".repeat(64));
        assert_eq!(verify(SECRET, &header, b"x", NOW, 300), Ok(()));
    }
}
