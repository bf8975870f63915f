//! SQLite's wake-ups across processes. Each process that works runs
//! (`serve`, `run --wait`) binds a Unix datagram socket in the directory
//! `<database file>.wake/`; a write that can make a run due sends its ring
//! (`Wake::encode`) to every socket there but its own.
//!
//! Why datagram sockets in a directory: nothing to keep alive and no
//! polling; a ring is one non-blocking `sendto` per listener, and one that
//! is lost (a full buffer, a listener starting) costs latency only, because
//! workers still poll as a safety net. The directory sits beside the
//! database, where every process using it can already write (SQLite's WAL
//! needs that), and listing it finds every listener, several `serve`s on one
//! file included. A socket left behind by a killed process refuses the
//! datagram, and its sender removes it.

use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::store::{Doorbell, Wake};

/// This process's doorbell and the other processes': what a write rings.
pub(super) struct Bells {
    pub(super) local: Arc<Doorbell>,
    pub(super) peers: Peers,
}

impl Bells {
    pub(super) fn new(database: Option<&Path>) -> Self {
        Bells { local: Arc::default(), peers: Peers::new(database) }
    }

    /// Rings here and in every other listening process.
    pub(super) fn ring(&self, wake: &Wake) {
        self.local.ring(wake);
        self.peers.send(wake);
    }
}

/// Longest path a Unix socket address holds (`sun_path`, less the NUL).
const SOCKET_PATH_MAX: usize = 107;

/// The other processes on this database file.
pub(super) struct Peers {
    /// `<database>.wake`; `None` for an in-memory database.
    dir: Option<PathBuf>,
    /// This process's socket, once it listens.
    own: OnceLock<PathBuf>,
    /// One unbound, non-blocking socket to send every ring from.
    sender: OnceLock<Option<UnixDatagram>>,
}

impl Peers {
    pub(super) fn new(database: Option<&Path>) -> Self {
        let on_disk = |p: &&Path| !p.as_os_str().is_empty() && p.as_os_str() != ":memory:";
        let dir = database.filter(on_disk).map(|p| {
            let mut dir = p.as_os_str().to_owned();
            dir.push(".wake");
            PathBuf::from(dir)
        });
        Peers { dir, own: OnceLock::new(), sender: OnceLock::new() }
    }

    /// Sends `wake` to every other listening process. Never fails: a ring
    /// that does not arrive is made up for by the poll.
    pub(super) fn send(&self, wake: &Wake) {
        let Some(dir) = &self.dir else { return };
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let sender = self.sender.get_or_init(|| {
            let socket = UnixDatagram::unbound().ok()?;
            socket.set_nonblocking(true).ok()?;
            Some(socket)
        });
        let Some(sender) = sender else { return };
        let payload = wake.encode();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "sock") || self.own.get() == Some(&path) {
                continue;
            }
            match sender.send_to(payload.as_bytes(), &path) {
                Ok(_) => {}
                // Nobody bound there any more: a process that was killed.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    let _ = std::fs::remove_file(&path);
                }
                // A full buffer: that listener is far behind and will claim anyway.
                Err(_) => {}
            }
        }
    }

    /// Binds this process's socket and rings `bell` with what arrives.
    /// Idempotent; the socket file is removed when the runtime drops the
    /// task (a killed process leaves it to the next sender).
    pub(super) fn listen(&self, bell: Arc<Doorbell>) -> std::io::Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        if self.own.get().is_some() {
            return Ok(());
        }
        // Named in the error: the operator fixes that directory's permissions.
        let at = |path: &Path| {
            let path = path.display().to_string();
            move |e: std::io::Error| std::io::Error::new(e.kind(), format!("{path}: {e}"))
        };
        std::fs::create_dir_all(dir).map_err(at(dir))?;
        let suffix = &uuid::Uuid::now_v7().simple().to_string()[20..];
        let path = dir.join(format!("{}-{suffix}.sock", std::process::id()));
        if path.as_os_str().len() > SOCKET_PATH_MAX {
            return Err(std::io::Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "the wake-up socket path {} is longer than a Unix socket allows ({SOCKET_PATH_MAX} bytes); \
                     move the database to a shorter path",
                    path.display()
                ),
            ));
        }
        let socket = tokio::net::UnixDatagram::bind(&path).map_err(at(&path))?;
        if self.own.set(path.clone()).is_err() {
            // Another call bound first; this socket is not needed.
            let _ = std::fs::remove_file(&path);
            return Ok(());
        }
        let bound = Bound(path);
        tokio::spawn(async move {
            let _bound = bound;
            let mut buf = [0u8; 128];
            loop {
                match socket.recv(&mut buf).await {
                    Ok(n) => bell.ring(&Wake::decode(&String::from_utf8_lossy(&buf[..n]))),
                    Err(e) => {
                        tracing::warn!(error = %e, "The wake-up socket failed; other processes' runs are found by polling.");
                        return;
                    }
                }
            }
        });
        Ok(())
    }
}

/// A bound socket's file, removed when the listener ends.
struct Bound(PathBuf);

impl Drop for Bound {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_ring_reaches_the_other_process_and_a_dead_socket_is_swept() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("lb.db");
        let (listener, writer) = (Peers::new(Some(&db)), Peers::new(Some(&db)));
        let bell = Arc::new(Doorbell::default());
        let mut due = bell.due();
        let mut requests = bell.requests();
        listener.listen(bell.clone()).unwrap();
        // A socket file nobody listens on, as a killed process leaves it.
        let stale = dir.path().join("lb.db.wake/1-dead.sock");
        drop(std::os::unix::net::UnixDatagram::bind(&stale).unwrap());
        writer.send(&Wake::Requests("run-1".into()));
        tokio::time::timeout(std::time::Duration::from_secs(5), due.changed())
            .await
            .expect("the ring arrives")
            .unwrap();
        assert_eq!(requests.recv().await.unwrap(), "run-1");
        assert!(!stale.exists(), "the dead socket is removed by its sender");
        assert!(listener.own.get().unwrap().exists());
    }

    #[test]
    fn a_socket_that_cannot_be_made_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("lb.db");
        // A file where the socket directory should be.
        std::fs::write(dir.path().join("lb.db.wake"), "").unwrap();
        let err = Peers::new(Some(&db)).listen(Arc::new(Doorbell::default())).unwrap_err();
        assert!(err.to_string().contains("lb.db.wake"), "{err}");
    }

    #[test]
    fn an_in_memory_database_has_no_peers() {
        let peers = Peers::new(None);
        peers.send(&Wake::Due);
        assert!(peers.listen(Arc::new(Doorbell::default())).is_ok());
    }
}
