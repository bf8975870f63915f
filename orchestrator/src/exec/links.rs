//! One-click links in notifications: `<public_url>/confirm/<token>` where
//! the token names (run, step, decision), is signed with HMAC-SHA256 (the
//! same signature as webhooks) and expires. Following a link only opens a
//! confirmation page — mail scanners follow links, so a GET never decides;
//! the page's POST does, as the person who authenticates there.

use lifeboat_notify::signature;

use super::people::Decision;

/// How long a link stays valid.
pub const LINK_VALIDITY_SECS: i64 = 24 * 3600;

pub struct LinkSigner {
    secret: Vec<u8>,
}

/// What a valid link asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkTarget {
    pub run_id: String,
    pub step_id: String,
    pub decision: Decision,
}

impl LinkSigner {
    pub fn new(secret: &[u8]) -> Self {
        LinkSigner { secret: secret.to_vec() }
    }

    /// From the env variable named in `[server] link_secret_env`; no links without it.
    pub fn from_env(var: &str) -> Option<Self> {
        std::env::var(var).ok().filter(|s| !s.is_empty()).map(|s| LinkSigner::new(s.as_bytes()))
    }

    pub fn token(&self, run_id: &str, step_id: &str, decision: Decision, now_secs: i64) -> String {
        let payload = format!("{run_id}\n{step_id}\n{}", decision.name());
        let header = signature::sign(&self.secret, now_secs, payload.as_bytes());
        // header: t=<secs>,v1=<hex>
        let (t, v1) = header
            .strip_prefix("t=")
            .and_then(|h| h.split_once(",v1="))
            .expect("sign() writes t=…,v1=…");
        format!("{}.{t}.{v1}", hex(payload.as_bytes()))
    }

    pub fn verify(&self, token: &str, now_secs: i64) -> Result<LinkTarget, LinkError> {
        let mut parts = token.split('.');
        let (Some(p), Some(t), Some(v1), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(LinkError::Malformed);
        };
        let payload = unhex(p).ok_or(LinkError::Malformed)?;
        signature::verify(
            &self.secret,
            &format!("t={t},v1={v1}"),
            &payload,
            now_secs,
            LINK_VALIDITY_SECS,
        )
        .map_err(|e| match e {
            signature::SignatureError::Stale { .. } => LinkError::Expired,
            _ => LinkError::Invalid,
        })?;
        let text = String::from_utf8(payload).map_err(|_| LinkError::Malformed)?;
        let mut fields = text.split('\n');
        let (Some(run_id), Some(step_id), Some(decision)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(LinkError::Malformed);
        };
        let decision = match decision {
            "approve" => Decision::Approve,
            "reject" => Decision::Reject,
            "ack" => Decision::Ack,
            _ => return Err(LinkError::Malformed),
        };
        Ok(LinkTarget { run_id: run_id.into(), step_id: step_id.into(), decision })
    }
}

/// Why a link leads nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("malformed link")]
    Malformed,
    #[error("this link is not valid")]
    Invalid,
    #[error("this link has expired")]
    Expired,
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    hex::decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_round_trip_and_expire() {
        let signer = LinkSigner::new(b"k");
        let token = signer.token("r1", "approve", Decision::Approve, 1_000);
        let target = signer.verify(&token, 1_100).unwrap();
        assert_eq!(target.step_id, "approve");
        assert_eq!(target.decision, Decision::Approve);
        assert_eq!(
            signer.verify(&token, 1_000 + LINK_VALIDITY_SECS + 1).unwrap_err(),
            LinkError::Expired
        );
        assert_eq!(LinkSigner::new(b"other").verify(&token, 1_100), Err(LinkError::Invalid));
        let forged = token.replacen(&hex(b"r1"), &hex(b"r2"), 1);
        assert_eq!(signer.verify(&forged, 1_100), Err(LinkError::Invalid));
        assert_eq!(signer.verify("zz.1.x", 1_100), Err(LinkError::Malformed));
    }
}
