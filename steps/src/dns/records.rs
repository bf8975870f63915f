//! Record types, values and names of the `dns` kind: parsed from `with`,
//! written back as the text outputs compare and show.

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_client::proto::rr::rdata::{A, AAAA, CNAME, TXT};
use hickory_client::proto::rr::{Name, RData};
use schemars::JsonSchema;
use serde::Deserialize;

/// The record types a `dns` step manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum RecordType {
    A,
    #[serde(rename = "AAAA")]
    Aaaa,
    #[serde(rename = "CNAME")]
    Cname,
    #[serde(rename = "TXT")]
    Txt,
}

impl RecordType {
    pub fn name(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
            RecordType::Cname => "CNAME",
            RecordType::Txt => "TXT",
        }
    }

    pub(super) fn wire(self) -> hickory_client::proto::rr::RecordType {
        use hickory_client::proto::rr::RecordType as Wire;
        match self {
            RecordType::A => Wire::A,
            RecordType::Aaaa => Wire::AAAA,
            RecordType::Cname => Wire::CNAME,
            RecordType::Txt => Wire::TXT,
        }
    }

    /// One value of this type, as written in `records`.
    pub fn parse(self, value: &str) -> Result<RData, String> {
        match self {
            RecordType::A => value
                .parse::<Ipv4Addr>()
                .map(|a| RData::A(A(a)))
                .map_err(|_| format!("`{value}` is not an IPv4 address (an A record holds one)")),
            RecordType::Aaaa => {
                value.parse::<Ipv6Addr>().map(|a| RData::AAAA(AAAA(a))).map_err(|_| {
                    format!("`{value}` is not an IPv6 address (an AAAA record holds one)")
                })
            }
            RecordType::Cname => {
                let name = parse_name(value)?;
                if !name.is_fqdn() {
                    return Err(format!(
                        "`{value}`: a CNAME target is an absolute name, ending in `.`"
                    ));
                }
                Ok(RData::CNAME(CNAME(name)))
            }
            RecordType::Txt => {
                if value.len() > 255 {
                    return Err(format!(
                        "a TXT string is at most 255 bytes; this one is {}",
                        value.len()
                    ));
                }
                Ok(RData::TXT(TXT::new(vec![value.to_string()])))
            }
        }
    }
}

/// A record's value as outputs show it and `records` compare: the address,
/// the lower-cased absolute name, or the text.
pub(super) fn text(data: &RData) -> String {
    match data {
        RData::A(a) => a.0.to_string(),
        RData::AAAA(a) => a.0.to_string(),
        RData::CNAME(c) => c.0.to_lowercase().to_string(),
        RData::TXT(t) => {
            t.txt_data().iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect()
        }
        other => other.to_string(),
    }
}

fn parse_name(value: &str) -> Result<Name, String> {
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{}` is not a DNS name", value.escape_debug()));
    }
    Name::from_ascii(value).map_err(|e| format!("`{value}` is not a DNS name: {e}"))
}

/// Checks an owner name as written in `with.name`.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    if name == "@" {
        return Ok(());
    }
    if crate::is_templated(name) {
        return Ok(());
    }
    parse_name(name).map(|_| ())
}

/// `name` made absolute in `zone`: `@` is the apex, a relative name is
/// under the zone, and an absolute one must be inside it.
pub(super) fn absolute(name: &str, zone: &Name) -> Result<Name, String> {
    let full = match name {
        "@" => zone.clone(),
        _ => {
            let parsed = parse_name(name)?;
            if parsed.is_fqdn() {
                parsed
            } else {
                parsed.append_domain(zone).map_err(|e| format!("`{name}` in zone {zone}: {e}"))?
            }
        }
    };
    if !zone.zone_of(&full) {
        return Err(format!(
            "`{name}` is not in zone {zone}: the connection's URL names the zone this step updates"
        ));
    }
    Ok(full.to_lowercase())
}
