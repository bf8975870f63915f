//! Where `http` steps may connect: the `[http]` section of `lifeboat.toml`.
//!
//! Rules are host names (`api.example.com`), subdomain wildcards
//! (`*.example.com`), addresses (`10.0.0.5`, `fd00::1`) or networks
//! (`10.0.0.0/8`). Every address a step connects to is checked after DNS
//! resolution (see `connect.rs`), and a URL whose host is an address (in any
//! of the numeric forms a URL parser accepts: `2130706433`, `0x7f.1`) is
//! checked as that address. The decision, for a host and one of its
//! addresses:
//!
//! 1. an `allow` entry naming exactly this address (`10.0.0.5`, a /32 or
//!    /128) allows it, whatever else matches;
//! 2. a `deny` entry matching the host or the address refuses it;
//! 3. the cloud metadata addresses (169.254.169.254, fd00:ec2::254) are
//!    refused;
//! 4. a non-empty `allow` list refuses what none of its entries match;
//! 5. everything else is allowed (the default: no `[http]` section).
//!
//! An IPv4-mapped IPv6 address (`::ffff:169.254.169.254`) is judged as the
//! IPv4 address it carries.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The `[http]` section as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// When not empty, the only hosts and networks steps may reach (plus
    /// what no `deny` entry or built-in rule refuses; see the module docs).
    #[serde(default)]
    pub allow: Vec<Rule>,
    /// Hosts and networks steps may never reach.
    #[serde(default)]
    pub deny: Vec<Rule>,
}

/// One entry of `allow` or `deny`, parsed when the configuration is read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Rule {
    /// As written, for messages.
    text: String,
    matcher: Matcher,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    /// A host name, lower case, without a trailing dot.
    Host(String),
    /// `*.example.com`: `.example.com`, matching any subdomain.
    Subdomains(String),
    /// An address (a /32 or /128) or a network.
    Net(IpNet),
}

impl TryFrom<String> for Rule {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let trimmed = text.trim();
        let invalid = |why: &str| {
            format!(
                "`{text}` is not a host, address or network ({why}); write e.g. `api.example.com`, `*.example.com`, `10.0.0.5` or `10.0.0.0/8`"
            )
        };
        if trimmed.is_empty() {
            return Err(invalid("it is empty"));
        }
        let matcher = if trimmed.contains('/') {
            let net: IpNet = trimmed.parse().map_err(|_| invalid("not a CIDR network"))?;
            Matcher::Net(canonical_net(net.trunc()))
        } else if let Ok(ip) = trimmed.trim_start_matches('[').trim_end_matches(']').parse() {
            Matcher::Net(IpNet::from(canonical(ip)))
        } else if let Some(domain) = trimmed.strip_prefix("*.") {
            match url::Host::parse(domain) {
                Ok(url::Host::Domain(d)) => Matcher::Subdomains(format!(".{}", normal_name(&d))),
                _ => return Err(invalid("`*.` must be followed by a domain name")),
            }
        } else {
            // The URL parser's reading of a host: `0x7f.1` is 127.0.0.1 here
            // exactly as it is in a step's `url`.
            match url::Host::parse(trimmed) {
                Ok(url::Host::Domain(d)) => Matcher::Host(normal_name(&d)),
                Ok(url::Host::Ipv4(ip)) => Matcher::Net(IpNet::from(IpAddr::V4(ip))),
                Ok(url::Host::Ipv6(ip)) => Matcher::Net(IpNet::from(canonical(IpAddr::V6(ip)))),
                Err(e) => return Err(invalid(&e.to_string())),
            }
        };
        Ok(Rule { text: trimmed.to_owned(), matcher })
    }
}

impl From<Rule> for String {
    fn from(rule: Rule) -> String {
        rule.text
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Rule {
    fn matches(&self, host: Option<&str>, ip: IpAddr) -> bool {
        match &self.matcher {
            Matcher::Host(name) => host.is_some_and(|h| h == name),
            Matcher::Subdomains(suffix) => host.is_some_and(|h| h.ends_with(suffix.as_str())),
            Matcher::Net(net) => net.contains(&ip),
        }
    }

    fn matches_host(&self, host: &str) -> bool {
        match &self.matcher {
            Matcher::Host(name) => host == name,
            Matcher::Subdomains(suffix) => host.ends_with(suffix.as_str()),
            Matcher::Net(_) => false,
        }
    }

    /// The single address this rule names, if it names one.
    fn exact_address(&self) -> Option<IpAddr> {
        match &self.matcher {
            Matcher::Net(net) if net.prefix_len() == net.max_prefix_len() => Some(net.addr()),
            _ => None,
        }
    }
}

/// Cloud metadata services: they hand out credentials to whoever asks from
/// inside the machine, the classic target of a forged request.
pub const METADATA_ADDRESSES: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
];

/// A compiled destination policy: built once, shared by every attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
    /// Addresses an `allow` entry names exactly: they pass every other rule.
    exact_allow: Vec<IpAddr>,
}

impl From<&PolicyConfig> for Policy {
    fn from(config: &PolicyConfig) -> Self {
        Policy {
            exact_allow: config.allow.iter().filter_map(Rule::exact_address).collect(),
            allow: config.allow.clone(),
            deny: config.deny.clone(),
        }
    }
}

/// Why a destination was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// An `[http] deny` entry matched.
    Denied(String),
    /// A cloud metadata address, refused unless allowed exactly.
    Metadata,
    /// `[http] allow` is not empty and no entry matched.
    NotAllowed,
}

/// A destination the policy refuses: permanent, never retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The host as the URL names it (a name, or an address).
    pub host: String,
    /// The address refused; `None` when a `deny` entry names the host
    /// itself, which is refused before it is resolved.
    pub address: Option<IpAddr>,
    pub reason: Reason,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            Some(ip)
                if self.host.trim_start_matches('[').trim_end_matches(']') == ip.to_string() =>
            {
                write!(f, "address {ip}")?
            }
            Some(ip) => write!(f, "host `{}` resolves to {ip}", self.host)?,
            None => write!(f, "host `{}`", self.host)?,
        }
        match &self.reason {
            Reason::Denied(rule) => write!(f, ", which [http] deny entry `{rule}` refuses"),
            Reason::Metadata => write!(
                f,
                ", a cloud metadata address, refused unless [http] allow names it exactly"
            ),
            Reason::NotAllowed => write!(f, ", which no [http] allow entry matches"),
        }
    }
}

impl std::error::Error for Refused {}

impl Policy {
    pub fn new(config: &PolicyConfig) -> Self {
        Policy::from(config)
    }

    /// Whether a step may connect to `ip`, an address of `host` (`None`
    /// when the URL names the address itself).
    pub fn check(&self, host: Option<&str>, ip: IpAddr) -> Result<(), Refused> {
        let ip = canonical(ip);
        let refused = |reason| Refused {
            host: host.map_or_else(|| ip.to_string(), str::to_owned),
            address: Some(ip),
            reason,
        };
        if self.exact_allow.contains(&ip) {
            return Ok(());
        }
        if let Some(rule) = self.deny.iter().find(|r| r.matches(host, ip)) {
            return Err(refused(Reason::Denied(rule.text.clone())));
        }
        if METADATA_ADDRESSES.contains(&ip) {
            return Err(refused(Reason::Metadata));
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|r| r.matches(host, ip)) {
            return Err(refused(Reason::NotAllowed));
        }
        Ok(())
    }

    /// A `deny` entry naming the host itself refuses it before any lookup
    /// (so the refusal does not depend on DNS answering).
    pub fn check_name(&self, host: &str) -> Result<(), Refused> {
        let host = normal_name(host);
        match self.deny.iter().find(|r| r.matches_host(&host)) {
            Some(rule) => {
                Err(Refused { host, address: None, reason: Reason::Denied(rule.text.clone()) })
            }
            None => Ok(()),
        }
    }

    /// Checks the host of `url`: an address is judged now (connections to
    /// an address bypass the resolver); a name by its deny entries, and
    /// its addresses when it is resolved.
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refused> {
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check(None, IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check(None, IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) => self.check_name(name),
            None => Ok(()),
        }
    }
}

/// Lower case, no trailing dot: `API.Example.com.` is `api.example.com`.
fn normal_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// An IPv4-mapped IPv6 address as the IPv4 address it carries.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], deny: &[&str]) -> Policy {
        let rules = |list: &[&str]| {
            list.iter().map(|s| Rule::try_from(s.to_string()).unwrap()).collect::<Vec<_>>()
        };
        Policy::new(&PolicyConfig { allow: rules(allow), deny: rules(deny) })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_default_allows_everything_but_metadata_addresses() {
        let p = Policy::default();
        for ok in ["127.0.0.1", "10.1.2.3", "93.184.216.34", "::1"] {
            assert_eq!(p.check(Some("x"), ip(ok)), Ok(()), "{ok}");
        }
        for metadata in ["169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"] {
            let refused = p.check(None, ip(metadata)).unwrap_err();
            assert_eq!(refused.reason, Reason::Metadata, "{metadata}");
        }
    }

    #[test]
    fn deny_wins_over_an_allowed_network_but_not_over_an_exact_address() {
        let p = policy(&["10.0.0.0/8", "10.1.2.3"], &["10.1.0.0/16"]);
        assert_eq!(p.check(None, ip("10.2.0.1")), Ok(()));
        assert_eq!(
            p.check(None, ip("10.1.9.9")).unwrap_err().reason,
            Reason::Denied("10.1.0.0/16".into())
        );
        assert_eq!(p.check(None, ip("10.1.2.3")), Ok(()));
    }

    #[test]
    fn metadata_is_reachable_only_when_allowed_exactly() {
        assert!(policy(&["169.254.0.0/16"], &[]).check(None, ip("169.254.169.254")).is_err());
        assert_eq!(policy(&["169.254.169.254"], &[]).check(None, ip("169.254.169.254")), Ok(()));
        assert_eq!(policy(&["[fd00:ec2::254]"], &[]).check(None, ip("fd00:ec2::254")), Ok(()));
    }

    #[test]
    fn an_allow_list_refuses_everything_it_does_not_name() {
        let p = policy(&["api.example.com", "*.internal", "192.168.0.0/24"], &[]);
        assert_eq!(p.check(Some("api.example.com"), ip("93.184.216.34")), Ok(()));
        assert_eq!(p.check(Some("db.internal"), ip("10.0.0.1")), Ok(()));
        assert_eq!(p.check(Some("other.example.com"), ip("192.168.0.7")), Ok(()));
        let refused = p.check(Some("evil.example.com"), ip("93.184.216.34")).unwrap_err();
        assert_eq!(refused.reason, Reason::NotAllowed);
        assert_eq!(
            refused.to_string(),
            "host `evil.example.com` resolves to 93.184.216.34, which no [http] allow entry matches"
        );
        // `*.internal` is for subdomains, not `internal` itself.
        assert!(p.check(Some("internal"), ip("10.0.0.1")).is_err());
    }

    #[test]
    fn a_denied_host_is_refused_by_name_and_its_addresses_by_network() {
        let p = policy(&[], &["localhost", "127.0.0.0/8"]);
        let refused = p.check_name("LocalHost.").unwrap_err();
        assert_eq!(
            refused.to_string(),
            "host `localhost`, which [http] deny entry `localhost` refuses"
        );
        let refused = p.check(Some("loopback.test"), ip("127.0.0.2")).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "host `loopback.test` resolves to 127.0.0.2, which [http] deny entry `127.0.0.0/8` refuses"
        );
    }

    #[test]
    fn numeric_host_forms_are_checked_as_the_address_they_are() {
        let p = policy(&[], &["127.0.0.0/8"]);
        for url in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://017700000001/",
            "http://127.1/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            let refused = p.check_url(&url::Url::parse(url).unwrap()).unwrap_err();
            assert_eq!(refused.address, Some(ip("127.0.0.1")), "{url}");
            assert_eq!(
                refused.to_string(),
                "address 127.0.0.1, which [http] deny entry `127.0.0.0/8` refuses",
                "{url}"
            );
        }
        let refused =
            Policy::default().check_url(&url::Url::parse("http://169.254.169.254/").unwrap());
        assert_eq!(refused.unwrap_err().reason, Reason::Metadata);
    }

    #[test]
    fn rules_in_numeric_or_mapped_forms_mean_the_same_address() {
        let p = policy(&[], &["0x7f.1", "::ffff:10.0.0.0/104"]);
        assert!(p.check(None, ip("127.0.0.1")).is_err());
        assert!(p.check(None, ip("10.9.9.9")).is_err());
        assert!(p.check(None, ip("11.0.0.1")).is_ok());
    }

    #[test]
    fn invalid_rules_name_the_value() {
        for bad in ["", "10.0.0.0/33", "*.", "exa mple.com", "http://x/"] {
            let e = Rule::try_from(bad.to_string()).unwrap_err();
            assert!(e.starts_with(&format!("`{bad}` is not a host, address or network")), "{e}");
        }
    }

    #[test]
    fn the_section_deserializes_and_rejects_unknown_keys() {
        let c: PolicyConfig = serde_json::from_value(
            serde_json::json!({"allow": ["*.corp"], "deny": ["10.0.0.0/8"]}),
        )
        .unwrap();
        assert_eq!(c.allow[0].to_string(), "*.corp");
        assert!(serde_json::from_value::<PolicyConfig>(serde_json::json!({"alow": []})).is_err());
    }
}
