//! Server-Sent Events as the API sends them: each event's (id, kind, data).

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// One event of a stream: its id, kind and data.
pub type SseEvent = (i64, String, Value);

/// The events of an SSE stream as they arrive. A cut connection ends them
/// (the assertions on them then fail); data that is not JSON is `null`.
pub fn events_of(response: reqwest::blocking::Response) -> impl Iterator<Item = SseEvent> {
    let mut lines = BufReader::new(response).lines();
    std::iter::from_fn(move || {
        let (mut id, mut kind, mut data) = (None, String::new(), String::new());
        loop {
            let line = lines.next()?.ok()?;
            if line.is_empty() {
                if let Some(n) = id.take() {
                    return Some((n, kind, serde_json::from_str(&data).unwrap_or(Value::Null)));
                }
                data.clear();
            } else if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("event:") {
                kind = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
    })
}

/// Reads an endless stream on a thread of its own.
pub fn follow(response: reqwest::blocking::Response) -> mpsc::Receiver<SseEvent> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for event in events_of(response) {
            if tx.send(event).is_err() {
                return;
            }
        }
    });
    rx
}

/// Events from `rx` until one of `run` is `kind`; fails after 30 s.
pub fn until(rx: &mpsc::Receiver<SseEvent>, run: &str, kind: &str) -> Vec<SseEvent> {
    let mut seen = Vec::new();
    loop {
        let event = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no {kind} of {run}: {seen:?}"));
        let done = event.1 == kind && event.2["run"] == run;
        seen.push(event);
        if done {
            return seen;
        }
    }
}
