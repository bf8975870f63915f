//! What the connecting kinds (`postgres`, `dns`, `haproxy`) share about
//! failing: a failure that knows whether another attempt may pass, and
//! hiding the password of the URL they connected with.

use std::future::Future;

use serde_json::{Value, json};

use crate::{AttemptContext, Outcome};

/// Why an action did not complete.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: String,
    pub(crate) retryable: bool,
}

impl Failure {
    /// Another attempt cannot pass (a refused update, a bad value).
    pub(crate) fn fatal(error: impl Into<String>) -> Self {
        Self { error: error.into(), retryable: false }
    }

    /// Another attempt may pass (a refused connection, a timeout).
    pub(crate) fn retryable(error: impl Into<String>) -> Self {
        Self { error: error.into(), retryable: true }
    }

    /// The same failure, its message starting with `target` (`connection `dns``).
    pub(crate) fn about(self, target: &str) -> Self {
        Self { error: format!("{target}: {}", self.error), ..self }
    }

    pub(crate) fn into_outcome(self) -> Outcome {
        if self.retryable { Outcome::retryable(self.error) } else { Outcome::fatal(self.error) }
    }
}

/// `outcome` with the URL's password (a database password, a TSIG secret),
/// should a server or driver message quote it, replaced by `***` whether
/// or not it is a declared secret.
pub(crate) fn hide_url_password(url: &str, outcome: Outcome) -> Outcome {
    match url::Url::parse(url) {
        Ok(u) => match u.password() {
            Some(p) => {
                let decoded = percent_encoding::percent_decode_str(p).decode_utf8_lossy();
                outcome.redacted(&crate::Redactor::new([p, decoded.as_ref()]))
            }
            None => outcome,
        },
        Err(_) => outcome,
    }
}

/// What a connecting step's messages name: its connection, or its URL
/// without the password (`dns dns://lab-key@127.0.0.1:5353/lab.example`).
pub(crate) fn target(kind: &str, connection: Option<&str>, url: &str) -> String {
    match connection {
        Some(name) => format!("connection `{name}`"),
        None => {
            let shown = match url::Url::parse(url) {
                Ok(mut u) => {
                    let _ = u.set_password(None);
                    u.to_string()
                }
                Err(_) => url.to_string(),
            };
            format!("{kind} {shown}")
        }
    }
}

/// One attempt of a connecting kind: `work` bounded by the step's timeout
/// and cancellation, its failure naming `target`, and the URL's password
/// hidden from whatever comes back.
pub(crate) async fn attempt(
    ctx: &AttemptContext,
    url: &str,
    target: &str,
    work: impl Future<Output = Result<Value, Failure>>,
) -> Outcome {
    let outcome = match ctx.bounded(work).await {
        Ok(Ok(outputs)) => Outcome::succeeded(outputs),
        Ok(Err(f)) => f.about(target).into_outcome(),
        Err(interrupted) => interrupted.outcome(None, json!({})),
    };
    hide_url_password(url, outcome)
}
