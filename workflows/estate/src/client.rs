//! A minimal blocking HTTP/1.1 client for the CLI verbs that talk to the
//! daemon (loopback only, JSON in and out, `Connection: close`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

/// `http://127.0.0.1:9100` -> `127.0.0.1:9100`.
pub fn authority(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("estate URL `{url}` must start with http://"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("estate URL `{url}` names no host"));
    }
    Ok(if host.contains(':') { host.to_string() } else { format!("{host}:80") })
}

/// The port of an estate URL.
pub fn port(url: &str) -> Result<u16, String> {
    let authority = authority(url)?;
    let (host, port) = authority.rsplit_once(':').unwrap_or((&authority, "80"));
    if !matches!(host, "127.0.0.1" | "localhost") {
        return Err(format!("the estate serves on loopback only; `{url}` is not 127.0.0.1"));
    }
    port.parse().map_err(|_| format!("estate URL `{url}`: bad port `{port}`"))
}

pub enum Error {
    /// Nothing answers at the URL.
    Down(String),
    Other(String),
}

/// One request; the response's status and JSON body (`null` if not JSON).
pub fn request(
    url: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), Error> {
    let authority = authority(url).map_err(Error::Other)?;
    let mut stream = TcpStream::connect(&authority)
        .map_err(|e| Error::Down(format!("no estate answers at {url} ({e})")))?;
    let timeout = Some(Duration::from_secs(30));
    stream.set_read_timeout(timeout).map_err(|e| Error::Other(e.to_string()))?;
    stream.set_write_timeout(timeout).map_err(|e| Error::Other(e.to_string()))?;
    let payload = body.map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        payload.len()
    );
    let io = |e: std::io::Error| Error::Other(format!("{method} {url}{path}: {e}"));
    stream.write_all(head.as_bytes()).map_err(io)?;
    stream.write_all(payload.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(io)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Other(format!("{method} {url}{path}: not an HTTP response")))?;
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}
