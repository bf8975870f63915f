//! Talking to a DNS server: the connection URL, queries, and one signed
//! RFC 2136 update that replaces an rrset.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hickory_client::client::Client;
use hickory_client::proto::dnssec::rdata::tsig::TsigAlgorithm;
use hickory_client::proto::dnssec::tsig::TSigner;
use hickory_client::proto::op::{
    Edns, Message, MessageFinalizer, MessageType, OpCode, Query, ResponseCode, UpdateMessage,
};
use hickory_client::proto::rr::{DNSClass, Name, RData, Record, RecordType as WireType};
use hickory_client::proto::runtime::TokioRuntimeProvider;
use hickory_client::proto::tcp::TcpClientStream;
use hickory_client::proto::xfer::{DnsHandle, DnsRequest, DnsRequestOptions, FirstAnswer};

use super::records::{self, RecordType};
pub(super) use crate::failure::Failure;

/// Each exchange with a server gives up after this long.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// The server, zone and TSIG key of a `dns://` URL.
pub(super) struct Server {
    pub(super) addr: SocketAddr,
    pub(super) zone: Name,
    key: Option<Key>,
}

struct Key {
    name: String,
    signer: TSigner,
}

impl Server {
    /// `dns://[KEY_NAME:BASE64_SECRET@]HOST:PORT/ZONE[?algorithm=…]`.
    pub(super) fn from_url(url: &str) -> Result<Server, String> {
        let u = url::Url::parse(url).map_err(|e| format!("the dns URL does not parse: {e}"))?;
        if u.scheme() != "dns" {
            return Err(format!("a dns step needs a dns:// URL, not {}://", u.scheme()));
        }
        let host = u.host_str().ok_or("the dns URL names no server")?;
        let ip: IpAddr = host.trim_matches(['[', ']']).parse().map_err(|_| {
            format!("the dns URL's server `{host}` is not an IP address (a name would need DNS to find DNS)")
        })?;
        let addr = SocketAddr::new(ip, u.port().unwrap_or(53));
        let zone_text = u.path().trim_matches('/');
        if zone_text.is_empty() {
            return Err("the dns URL names no zone: dns://HOST:PORT/ZONE".into());
        }
        let mut zone = Name::from_ascii(zone_text)
            .map_err(|e| format!("the dns URL's zone `{zone_text}` is not a DNS name: {e}"))?;
        zone.set_fqdn(true);
        let algorithm = match u.query_pairs().find(|(k, _)| k == "algorithm") {
            None => TsigAlgorithm::HmacSha256,
            Some((_, a)) => match a.as_ref() {
                "hmac-sha256" => TsigAlgorithm::HmacSha256,
                "hmac-sha384" => TsigAlgorithm::HmacSha384,
                "hmac-sha512" => TsigAlgorithm::HmacSha512,
                other => {
                    return Err(format!(
                        "TSIG algorithm `{other}` is not supported: use hmac-sha256, hmac-sha384 or hmac-sha512"
                    ));
                }
            },
        };
        let key = match (u.username(), u.password()) {
            ("", None) => None,
            (name, Some(secret)) if !name.is_empty() => {
                let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
                let secret = percent_encoding::percent_decode_str(secret).decode_utf8_lossy();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(secret.trim())
                    .map_err(|_| {
                        format!(
                            "the secret of TSIG key `{name}` is not base64 (percent-encode it in \
                             the URL: / as %2F, + as %2B, = as %3D)"
                        )
                    })?;
                let key_name = Name::from_ascii(name.as_ref())
                    .map_err(|e| format!("TSIG key name `{name}` is not a DNS name: {e}"))?;
                let signer = TSigner::new(bytes, algorithm, key_name, 300)
                    .map_err(|e| format!("TSIG key `{name}`: {e}"))?;
                Some(Key { name: name.into_owned(), signer })
            }
            _ => {
                return Err(
                    "the dns URL's TSIG key needs both a name and a secret: dns://NAME:SECRET@HOST/ZONE"
                        .into(),
                );
            }
        };
        Ok(Server { addr, zone, key })
    }
}

/// A `host:port` of `with.servers` (an address: no name resolution).
pub(super) fn parse_server(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>()
        .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| {
            format!(
                "`{text}` is not a server address: write IP:PORT (e.g. 127.0.0.1:5353 or [::1]:53)"
            )
        })
}

/// What a server answered for an rrset: its values, sorted, and their TTL.
pub(super) struct Found {
    pub(super) records: Vec<String>,
    pub(super) ttl: Option<u32>,
}

async fn connect(
    addr: SocketAddr,
    signer: Option<Arc<dyn MessageFinalizer>>,
) -> Result<Client, Failure> {
    let (stream, handle) =
        TcpClientStream::new(addr, None, Some(EXCHANGE_TIMEOUT), TokioRuntimeProvider::new());
    let (client, background) =
        Client::with_timeout(stream, handle, EXCHANGE_TIMEOUT, signer).await.map_err(|e| {
            Failure::retryable(format!("cannot reach {addr}: {e}; check that the server is up"))
        })?;
    tokio::spawn(background);
    Ok(client)
}

async fn exchange(client: &Client, addr: SocketAddr, message: Message) -> Result<Message, Failure> {
    let request = DnsRequest::new(message, DnsRequestOptions::default());
    match client.send(request).first_answer().await {
        Ok(response) => Ok(response.into_message()),
        Err(e) => Err(Failure::retryable(format!("no answer from {addr}: {e}"))),
    }
}

/// Asks `addr` for `name`'s `record_type` rrset (an authoritative answer:
/// no recursion).
pub(super) async fn query(
    addr: SocketAddr,
    name: &Name,
    record_type: RecordType,
) -> Result<Found, Failure> {
    let answer = ask(addr, name, record_type.wire()).await?;
    let mut values = Vec::new();
    let mut ttl = None;
    for record in answer.answers() {
        if record.record_type() == record_type.wire() && record.name() == name {
            values.push(records::text(record.data()));
            ttl = Some(ttl.map_or(record.ttl(), |t: u32| t.min(record.ttl())));
        }
    }
    values.sort();
    values.dedup();
    Ok(Found { records: values, ttl })
}

/// The serial of `zone`'s SOA on `addr`: the server is up and serves the zone.
pub(super) async fn query_soa(addr: SocketAddr, zone: &Name) -> Result<u32, Failure> {
    let answer = ask(addr, zone, WireType::SOA).await?;
    answer
        .answers()
        .iter()
        .find_map(|r| match r.data() {
            RData::SOA(soa) => Some(soa.serial()),
            _ => None,
        })
        .ok_or_else(|| {
            Failure::fatal(format!("{addr} has no SOA for {zone}: it does not serve the zone"))
        })
}

async fn ask(addr: SocketAddr, name: &Name, wire: WireType) -> Result<Message, Failure> {
    let client = connect(addr, None).await?;
    let mut message = Message::new();
    message
        .set_id(fastrand::u16(..))
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(false)
        .add_query(Query::query(name.clone(), wire));
    let answer = exchange(&client, addr, message).await?;
    match answer.response_code() {
        ResponseCode::NoError | ResponseCode::NXDomain => Ok(answer),
        ResponseCode::Refused | ResponseCode::NotAuth => Err(Failure::fatal(format!(
            "{addr} refused to answer for {name} ({}): is it authoritative for the zone?",
            answer.response_code()
        ))),
        code => Err(Failure::retryable(format!("{addr} answered {code} for {name}"))),
    }
}

/// Replaces `name`'s `record_type` rrset with `values` (none: removes it)
/// in one update, signed with the server's TSIG key: the server applies
/// the delete and the adds together or not at all.
pub(super) async fn replace(
    server: &Server,
    name: &Name,
    record_type: RecordType,
    values: &[String],
    ttl: u32,
) -> Result<(), Failure> {
    let Some(key) = &server.key else {
        return Err(Failure::fatal(
            "an update needs a TSIG key: give the URL one, dns://KEY_NAME:SECRET@HOST:PORT/ZONE",
        ));
    };
    let signer: Arc<dyn MessageFinalizer> = Arc::new(key.signer.clone());
    let client = connect(server.addr, Some(signer)).await?;
    let mut message = Message::new();
    let mut zone = Query::new();
    zone.set_name(server.zone.clone()).set_query_class(DNSClass::IN).set_query_type(WireType::SOA);
    message
        .set_id(fastrand::u16(..))
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Update)
        .set_recursion_desired(false)
        .add_zone(zone);
    let mut delete = Record::update0(name.clone(), 0, record_type.wire());
    delete.set_dns_class(DNSClass::ANY);
    message.add_update(delete);
    for value in values {
        let data: RData = record_type.parse(value).map_err(Failure::fatal)?;
        message.add_update(Record::from_rdata(name.clone(), ttl, data));
    }
    message.extensions_mut().get_or_insert_with(Edns::new).set_max_payload(1232).set_version(0);
    // A server that rejects the key answers with an unsigned (or
    // empty-MAC) TSIG, which the client cannot verify: that failure is the
    // rejection, and the driver's own words about it would mislead.
    let answer = exchange(&client, server.addr, message).await.map_err(|f| {
        let text = f.error.to_ascii_lowercase();
        if text.contains("tsig") || text.contains("hmac") {
            Failure::fatal(format!(
                "{} rejected TSIG key `{}` (NOTAUTH: the key name is unknown to the server or its \
                 secret is wrong); check the key in the connection's URL against the server's `key` clause",
                server.addr, key.name
            ))
        } else {
            f
        }
    })?;
    match answer.response_code() {
        ResponseCode::NoError => Ok(()),
        ResponseCode::NotAuth => Err(Failure::fatal(format!(
            "{} refused the update of {name}: NOTAUTH — TSIG key `{}` is unknown to the server or its secret is wrong",
            server.addr, key.name
        ))),
        ResponseCode::Refused => Err(Failure::fatal(format!(
            "{} refused the update of {name}: REFUSED — the zone's update-policy does not let TSIG key `{}` change it",
            server.addr, key.name
        ))),
        ResponseCode::NotZone => Err(Failure::fatal(format!(
            "{} refused the update: {name} is not in zone {}",
            server.addr, server.zone
        ))),
        code => Err(Failure::retryable(format!(
            "{} did not apply the update of {name}: {code}",
            server.addr
        ))),
    }
}
