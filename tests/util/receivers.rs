//! Notification receivers (tests/people.rs): a scriptable recording HTTP
//! server and the real SMTP sink.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::poll::eventually;
use super::process::root;

/// What a [`Receiver`] answers to one request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer { status, headers: Vec::new(), body: format!("status {status}") }
    }

    pub fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// One request a [`Receiver`] got, and the status it answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
    pub answered: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("request body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body))
        })
    }

    pub fn ok(&self) -> bool {
        (200..300).contains(&self.answered)
    }
}

#[derive(Default)]
struct ReceiverState {
    script: std::collections::VecDeque<Answer>,
    default: Option<Answer>,
    requests: Vec<Received>,
    /// `HEAD /` requests: readiness probes (`lifeboat doctor`, and `serve`
    /// every readiness_interval), kept apart from the notifications.
    probes: Vec<Received>,
}

/// An HTTP/1.1 server on 127.0.0.1:0 that records every request and
/// answers from a script (then a default, 200 unless changed). Each
/// connection is closed after one exchange. Stops when dropped.
pub struct Receiver {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    state: std::sync::Arc<std::sync::Mutex<ReceiverState>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    addr: std::net::SocketAddr,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let state = std::sync::Arc::new(std::sync::Mutex::new(ReceiverState::default()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = Receiver::exchange(conn, &s);
                });
            }
        });
        Receiver { base: format!("http://{addr}"), state, stop, addr }
    }

    fn exchange(
        conn: std::net::TcpStream,
        state: &std::sync::Mutex<ReceiverState>,
    ) -> std::io::Result<()> {
        use std::io::{BufRead, Read, Write};
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = std::io::BufReader::new(conn.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let length = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let answer = {
            let mut st = state.lock().unwrap();
            if method == "HEAD" && path == "/" {
                let at = Instant::now();
                st.probes.push(Received { method, path, headers, body, at, answered: 405 });
                drop(st);
                let mut conn = conn;
                conn.write_all(
                    b"HTTP/1.1 405 X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )?;
                return Ok(());
            }
            let answer = st
                .script
                .pop_front()
                .or_else(|| st.default.clone())
                .unwrap_or_else(|| Answer::status(200));
            st.requests.push(Received {
                method,
                path,
                headers,
                body,
                at: Instant::now(),
                answered: answer.status,
            });
            answer
        };
        let mut out = format!(
            "HTTP/1.1 {} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n",
            answer.status,
            answer.body.len()
        );
        for (k, v) in &answer.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&answer.body);
        let mut conn = conn;
        conn.write_all(out.as_bytes())?;
        conn.flush()?;
        let _ = conn.shutdown(std::net::Shutdown::Both);
        Ok(())
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Answers the next requests with `answers`, in order, then the default.
    pub fn script(&self, answers: Vec<Answer>) {
        self.state.lock().unwrap().script.extend(answers);
    }

    /// What every unscripted request gets from now on.
    pub fn answer_by_default(&self, answer: Answer) {
        self.state.lock().unwrap().default = Some(answer);
    }

    pub fn requests(&self) -> Vec<Received> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The readiness probes (`HEAD /`) that came in.
    pub fn probes(&self) -> Vec<Received> {
        self.state.lock().unwrap().probes.clone()
    }

    /// Waits until `n` requests came in; panics after `timeout`.
    pub fn wait_requests(&self, n: usize, timeout: Duration) -> Vec<Received> {
        if !eventually(timeout, || self.requests().len() >= n) {
            let got: Vec<String> = self
                .requests()
                .iter()
                .map(|r| format!("{} {} -> {}", r.method, r.path, r.answered))
                .collect();
            panic!("{} received {} of {n} requests in {timeout:?}: {got:#?}", self.base, got.len());
        }
        self.requests()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

/// `notify/tests/smtp_sink.py`, a real aiosmtpd SMTP server; killed when dropped.
pub struct SmtpSink {
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
}

impl SmtpSink {
    /// Saves messages under `dir`; `rcpt_reply` (e.g. "550") refuses every recipient.
    pub fn start(dir: PathBuf, rcpt_reply: Option<&str>) -> SmtpSink {
        SmtpSink::start_with(dir, rcpt_reply, None)
    }

    /// A sink that requires a login as `credentials` (`user:password`).
    pub fn with_login(dir: PathBuf, credentials: &str) -> SmtpSink {
        SmtpSink::start_with(dir, None, Some(credentials))
    }

    fn start_with(dir: PathBuf, rcpt_reply: Option<&str>, login: Option<&str>) -> SmtpSink {
        use std::io::BufRead;
        let mut cmd = Command::new("python3");
        cmd.arg(root().join("notify/tests/smtp_sink.py")).arg(&dir);
        if let Some(code) = rcpt_reply {
            cmd.arg(code);
        }
        if let Some(login) = login {
            cmd.env("SMTP_SINK_AUTH", login);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with aiosmtpd (pip install aiosmtpd) runs the SMTP sink");
        let stdout = child.stdout.take().expect("sink stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let Ok(port) = line.trim().parse::<u16>() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the SMTP sink did not print its port (is aiosmtpd installed?): {line:?}");
        };
        SmtpSink { port, dir, child }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The messages received so far, in order.
    pub fn messages(&self) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "json"));
        files.sort();
        files
            .iter()
            .map(|p| {
                serde_json::from_str(&std::fs::read_to_string(p).expect("read mail"))
                    .expect("mail JSON")
            })
            .collect()
    }

    /// Waits until `n` messages arrived; panics after `timeout`.
    pub fn wait_messages(&self, n: usize, timeout: Duration) -> Vec<Value> {
        if !eventually(timeout, || self.messages().len() >= n) {
            panic!("the SMTP sink got {:#?}, not {n} messages, in {timeout:?}", self.messages());
        }
        self.messages()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
