//! How `http` steps connect: one pooled client per destination policy,
//! whose resolver hands the connector only the addresses the policy allows.
//!
//! The resolver runs for every new connection (each redirect hop to a new
//! host included), so a name that resolves somewhere else the second time
//! (DNS rebinding) is judged again. Connections to an address literal never
//! reach a resolver: the step checks those itself (`Policy::check_url`).
//! Proxy variables (`HTTP_PROXY`…) are ignored: through a proxy, the
//! address finally connected to would be the proxy's choice, not checked.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::policy::Policy;

/// Bound on establishing a connection, so an unreachable site fails (and is
/// retried) instead of waiting for the OS's TCP timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP client of `http` steps and the policy it enforces. Cheap to
/// clone; build one per policy (the engine builds one when it starts).
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

struct Inner {
    policy: Arc<Policy>,
    /// Built on first use: loading TLS roots costs milliseconds.
    client: OnceLock<Result<reqwest::Client, String>>,
}

impl HttpClient {
    pub fn new(policy: Policy) -> Self {
        HttpClient { inner: Arc::new(Inner { policy: Arc::new(policy), client: OnceLock::new() }) }
    }

    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// The pooled client; redirects are the step's to follow (or not).
    pub(crate) fn client(&self) -> Result<&reqwest::Client, String> {
        self.inner
            .client
            .get_or_init(|| {
                reqwest::Client::builder()
                    .user_agent(concat!("lifeboat/", env!("CARGO_PKG_VERSION")))
                    .connect_timeout(CONNECT_TIMEOUT)
                    .redirect(reqwest::redirect::Policy::none())
                    .no_proxy()
                    .dns_resolver(Arc::new(PolicyResolver { policy: self.inner.policy.clone() }))
                    .build()
                    .map_err(|e| {
                        format!("cannot set up the HTTP client: {}", super::error_chain(&e))
                    })
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// One client for every context that was given no policy: the default
/// policy, shared so its connections are pooled.
impl Default for HttpClient {
    fn default() -> Self {
        static DEFAULT: OnceLock<HttpClient> = OnceLock::new();
        DEFAULT.get_or_init(|| HttpClient::new(Policy::default())).clone()
    }
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").field("policy", &self.inner.policy).finish_non_exhaustive()
    }
}

/// The system resolver, then the policy: refused addresses are dropped; a
/// name with nothing left fails with the first [`super::policy::Refused`],
/// which the step finds in the error's sources.
struct PolicyResolver {
    policy: Arc<Policy>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            policy.check_name(&host)?;
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let mut allowed: Vec<SocketAddr> = Vec::new();
            let mut refused = None;
            for addr in resolved {
                match policy.check(Some(&host), addr.ip()) {
                    Ok(()) => allowed.push(addr),
                    Err(r) => {
                        refused.get_or_insert(r);
                    }
                }
            }
            match (allowed.is_empty(), refused) {
                (true, Some(refusal)) => Err(Box::new(refusal) as _),
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}
