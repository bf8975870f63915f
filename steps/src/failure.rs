//! What the connecting kinds (`postgres`, `dns`, `haproxy`) share about
//! failing: a failure that knows whether another attempt may pass, and
//! hiding the password of the URL they connected with.

use crate::Outcome;

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
