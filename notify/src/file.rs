//! The `file` channel: each message written to a directory as one file,
//! `.json` (the [`Message`], as a webhook would receive it) or `.eml` (an
//! RFC 5322 email: headers, text and HTML parts, openable in a mail
//! client). For drills, demos and air-gapped sites: the rendered
//! notifications arrive where anyone can read them, and nobody is paged.
//!
//! Names sort by time and never collide:
//! `<UTC time to the nanosecond>-<sequence>-<workflow>-<event>.<ext>`, e.g.
//! `20250115T030400.123456789Z-000003-failover-failed.json`. The workflow and
//! event are cut to 40 characters of `[A-Za-z0-9_-]` (anything else becomes
//! `_`), so no field of a message can shape a path. A file is written under
//! a hidden temporary name (`.<random>.tmp`), flushed to disk, then linked to
//! its name only if that name is free (so another process writing the same
//! instant takes the next sequence number instead of replacing it): a
//! reader never sees a partial file (a crash mid-write can leave a hidden
//! `.*.tmp`, nothing else).
//!
//! `dir` may not contain `..` (refused when the configuration is read);
//! a relative `dir` is resolved by the caller (lifeboat: against the
//! directory of `lifeboat.toml`). A missing directory is created (with its
//! parents, mode 0700: messages hold one-click approval links) on the first
//! message. A directory that cannot be written is a permanent failure of
//! that message, naming the channel and the directory; a full disk is
//! retried.
//!
//! At least once, like every channel: a crash between writing and
//! recording the delivery writes the message again, under a new name, with
//! the same `idempotency_key` inside.

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::channel::{Channel, ConfigError};
use crate::message::{Delivered, Message, SendError};

/// How each message is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The message as JSON, exactly what a `webhook` channel would POST.
    #[default]
    Json,
    /// An email (`message/rfc822`): headers, text and HTML parts.
    Eml,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Eml => "eml",
        }
    }
}

pub struct File {
    name: String,
    dir: PathBuf,
    format: Format,
}

/// Refuses a `dir` that cannot be a directory to write into: empty, with a
/// NUL byte, or with a `..` component (a path that climbs out of where it
/// appears to point; write the directory it means instead).
pub fn check_dir(channel: &str, dir: &Path) -> Result<(), ConfigError> {
    let shown = dir.display();
    if dir.as_os_str().is_empty() {
        return Err(ConfigError::invalid(
            channel,
            "`dir` is empty; name the directory to write to",
        ));
    }
    if dir.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(ConfigError::invalid(channel, "`dir` contains a NUL byte"));
    }
    if dir.components().any(|c| c == Component::ParentDir) {
        return Err(ConfigError::invalid(
            channel,
            format!(
                "`dir` = `{shown}` contains `..`; write the directory without it (an absolute \
                 path when it lies outside the configuration's directory)"
            ),
        ));
    }
    Ok(())
}

impl File {
    pub fn new(name: &str, dir: &Path, format: Format) -> Result<File, ConfigError> {
        check_dir(name, dir)?;
        Ok(File { name: name.to_string(), dir: dir.to_path_buf(), format })
    }

    /// The bytes written for `msg` (already marked).
    fn render(&self, msg: &Message) -> Result<Vec<u8>, SendError> {
        match self.format {
            Format::Json => {
                let mut bytes = serde_json::to_vec_pretty(msg).map_err(|e| {
                    SendError::Permanent(format!("cannot encode the message as JSON: {e}"))
                })?;
                bytes.push(b'\n');
                Ok(bytes)
            }
            Format::Eml => eml(&self.name, msg),
        }
    }
}

#[async_trait]
impl Channel for File {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "file"
    }

    /// The directory exists (or can be made) and takes a file.
    async fn probe(&self) -> Result<String, String> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let shown = dir.display();
            std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {shown}: {e}"))?;
            let probe = dir.join(format!(".lifeboat-probe-{}", std::process::id()));
            std::fs::write(&probe, b"").map_err(|e| format!("cannot write in {shown}: {e}"))?;
            let _ = std::fs::remove_file(&probe);
            Ok(format!("{shown} is writable"))
        })
        .await
        .map_err(|e| format!("the probe stopped: {e}"))?
    }

    async fn send(&self, msg: &Message) -> Result<Delivered, SendError> {
        let msg = msg.marked();
        let bytes = self.render(&msg)?;
        let stem = format!("{}-{}", slug(&msg.workflow), slug(&msg.event));
        let ext = self.format.extension();
        let (dir, channel) = (self.dir.clone(), self.name.clone());
        let written = tokio::task::spawn_blocking(move || {
            write_new(&dir, &bytes, &channel, || {
                let time = chrono::Utc::now().format("%Y%m%dT%H%M%S%.9fZ");
                let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed) % 1_000_000;
                format!("{time}-{seq:06}-{stem}.{ext}")
            })
        })
        .await
        .map_err(|e| SendError::retryable(format!("the file writer stopped: {e}")))??;
        Ok(Delivered { detail: format!("wrote {}", written.display()) })
    }
}

/// At most 40 characters of `[A-Za-z0-9_-]`, anything else as `_`; `-` when empty.
fn slug(s: &str) -> String {
    let out: String = s
        .chars()
        .take(40)
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .collect();
    if out.is_empty() { "-".into() } else { out }
}

/// Tells apart the files this process writes within one nanosecond, and
/// keeps them in write order.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to a new file in `dir` named by `name` (asked again while
/// the name is taken), never replacing a file, never visible half-written.
/// Returns its path.
fn write_new(
    dir: &Path,
    bytes: &[u8],
    channel: &str,
    mut name: impl FnMut() -> String,
) -> Result<PathBuf, SendError> {
    let fail = |what: &str, path: &Path, e: std::io::Error| io_error(channel, what, path, e);
    create_dir(dir).map_err(|e| fail("cannot create the directory", dir, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| fail("cannot write to the directory", dir, e))?;
    tmp.write_all(bytes).map_err(|e| fail("cannot write", tmp.path(), e))?;
    tmp.as_file().sync_all().map_err(|e| fail("cannot flush", tmp.path(), e))?;
    loop {
        let path = dir.join(name());
        match tmp.persist_noclobber(&path) {
            Ok(_) => {
                // The new name is durable once the directory is.
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
                return Ok(path);
            }
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => tmp = e.file,
            Err(e) => return Err(fail("cannot name", &path, e.error)),
        }
    }
}

#[cfg(unix)]
fn create_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(not(unix))]
fn create_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// A directory nobody may write to (or a file where the directory should
/// be) will not change by itself: permanent. Anything else (a full disk) is
/// retried.
fn io_error(channel: &str, what: &str, path: &Path, e: std::io::Error) -> SendError {
    use std::io::ErrorKind as K;
    let message = format!("channel `{channel}`: {what} {}: {e}", path.display());
    match e.kind() {
        K::PermissionDenied | K::NotADirectory | K::ReadOnlyFilesystem | K::AlreadyExists => {
            SendError::Permanent(format!(
                "{message}; make the directory writable by lifeboat or change `dir`"
            ))
        }
        _ => SendError::retryable(message),
    }
}

/// Control characters (CR, LF, ESC, NUL…) in a header value become spaces:
/// a subject can never add a header or end the header block.
fn header_text(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// A body part. lettre would send text with NUL, ESC or a bare CR as
/// `7bit`, raw; such text is quoted-printable instead, where they are `=00`,
/// `=1B`, `=0D`. Clean text keeps lettre's choice (`7bit` when it can).
fn part(content_type: ContentType, body: &str) -> SinglePart {
    let clean = body.char_indices().all(|(i, c)| match c {
        '\n' | '\t' => true,
        '\r' => body[i + 1..].starts_with('\n'),
        c => !c.is_control(),
    });
    let builder = SinglePart::builder().header(content_type);
    if clean {
        builder.body(body.to_string())
    } else {
        builder.header(ContentTransferEncoding::QuotedPrintable).body(body.to_string())
    }
}

/// `msg` as an email: From lifeboat, the subject, `X-Lifeboat-*` headers
/// with the facts, the text part and the HTML part when there is one.
/// lettre encodes headers (RFC 2047) and bodies (quoted-printable or
/// base64), so any text yields lines of at most 998 ASCII bytes.
fn eml(channel: &str, msg: &Message) -> Result<Vec<u8>, SendError> {
    let bad = |e: String| SendError::Permanent(format!("cannot build the email: {e}"));
    let from: Mailbox = "lifeboat <lifeboat@localhost>".parse().map_err(|e| bad(format!("{e}")))?;
    let to: Mailbox = "file <file@localhost>".parse().map_err(|e| bad(format!("{e}")))?;
    let mut builder =
        lettre::Message::builder().from(from).to(to).subject(header_text(&msg.subject)).date_now();
    let mut facts = vec![
        ("X-Lifeboat-Channel", channel.to_string()),
        ("X-Lifeboat-Event", msg.event.clone()),
        ("X-Lifeboat-Action", msg.action.as_str().to_string()),
        ("X-Lifeboat-Run", msg.run_id.clone()),
        ("X-Lifeboat-Workflow", msg.workflow.clone()),
        ("X-Lifeboat-Severity", msg.severity.as_str().to_string()),
        ("X-Lifeboat-Dedup-Key", msg.dedup_key.clone()),
        ("X-Lifeboat-Idempotency-Key", msg.idempotency_key.clone()),
    ];
    if let Some(link) = &msg.link {
        facts.push(("X-Lifeboat-Link", link.clone()));
    }
    if msg.drill {
        facts.push(("X-Lifeboat-Drill", "true".to_string()));
    }
    if let Some(live) = &msg.live_channel {
        facts.push(("X-Lifeboat-Live-Channel", live.clone()));
    }
    for (name, value) in facts {
        let name = HeaderName::new_from_ascii_str(name);
        builder = builder.raw_header(HeaderValue::new(name, header_text(&value)));
    }
    let text = part(ContentType::TEXT_PLAIN, &msg.text);
    let email = match &msg.html {
        Some(html) => builder.multipart(
            MultiPart::alternative()
                .singlepart(text)
                .singlepart(part(ContentType::TEXT_HTML, html)),
        ),
        None => builder.singlepart(text),
    }
    .map_err(|e| bad(e.to_string()))?;
    Ok(email.formatted())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{Context, Mode};
    use crate::templates::Templates;

    fn message(mode: Mode) -> Message {
        let mut ctx = Context::sample("failed");
        ctx.run.mode = mode;
        let rendered = Templates::load(None).unwrap().render("incident", &ctx).unwrap();
        Message::new(&ctx, rendered)
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn channel(dir: &Path, format: Format) -> File {
        File::new("drills-file", dir, format).unwrap()
    }

    #[tokio::test]
    async fn a_json_file_is_the_marked_message() {
        let dir = tempfile::tempdir().unwrap();
        let delivered =
            channel(dir.path(), Format::Json).send(&message(Mode::Drill)).await.unwrap();

        let names = files(dir.path());
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(names[0].ends_with("-failover-failed.json"), "{names:?}");
        assert_eq!(delivered.detail, format!("wrote {}", dir.path().join(&names[0]).display()));
        let written: Message =
            serde_json::from_slice(&std::fs::read(dir.path().join(&names[0])).unwrap()).unwrap();
        assert!(written.drill);
        assert!(written.subject.starts_with("[DRILL] "), "{}", written.subject);
        assert_eq!(written.dedup_key, format!("drill-{}", written.run_id));
    }

    #[tokio::test]
    async fn an_eml_file_has_the_subject_facts_and_both_parts() {
        let dir = tempfile::tempdir().unwrap();
        let mut msg = message(Mode::Drill);
        msg.live_channel = Some("oncall-pager".into());
        channel(dir.path(), Format::Eml).send(&msg).await.unwrap();

        let names = files(dir.path());
        assert_eq!(names.len(), 1);
        assert!(names[0].ends_with("-failover-failed.eml"), "{names:?}");
        let text = std::fs::read_to_string(dir.path().join(&names[0])).unwrap();
        assert!(text.contains("Subject: [DRILL] [P0] Recovery FAILED: failover (dc01)"), "{text}");
        assert!(text.contains("X-Lifeboat-Drill: true"), "{text}");
        assert!(text.contains("X-Lifeboat-Live-Channel: oncall-pager"), "{text}");
        assert!(text.contains("X-Lifeboat-Channel: drills-file"), "{text}");
        assert!(text.contains("Content-Type: text/plain"), "{text}");
        assert!(text.contains("Content-Type: text/html"), "{text}");
    }

    #[tokio::test]
    async fn names_sort_in_write_order_and_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let file = channel(dir.path(), Format::Json);
        let mut paths = Vec::new();
        for i in 0..50 {
            let mut msg = message(Mode::Live);
            msg.idempotency_key = format!("k{i}");
            let detail = file.send(&msg).await.unwrap().detail;
            paths.push(detail.trim_start_matches("wrote ").to_string());
        }
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(sorted, paths, "names sort in the order they were written");
        let names = files(dir.path());
        assert_eq!(names.len(), 50, "no file replaced another");
        for (i, name) in names.iter().enumerate() {
            let msg: Message =
                serde_json::from_slice(&std::fs::read(dir.path().join(name)).unwrap()).unwrap();
            assert_eq!(msg.idempotency_key, format!("k{i}"));
        }
    }

    #[tokio::test]
    async fn writers_racing_on_one_directory_each_get_their_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let dir = dir.path().to_path_buf();
            tasks.push(tokio::spawn(async move {
                let file = File::new("race", &dir, Format::Json).unwrap();
                for _ in 0..20 {
                    file.send(&message(Mode::Live)).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let names = files(dir.path());
        assert_eq!(names.len(), 160);
        assert!(names.iter().all(|n| n.ends_with(".json") && !n.starts_with('.')), "{names:?}");
    }

    #[test]
    fn a_name_taken_by_another_writer_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("1.json"), b"theirs").unwrap();
        let mut names = ["1.json", "2.json"].into_iter();
        let path =
            write_new(dir.path(), b"mine", "c", || names.next().unwrap().to_string()).unwrap();
        assert_eq!(path, dir.path().join("2.json"));
        assert_eq!(std::fs::read(dir.path().join("1.json")).unwrap(), b"theirs");
        assert_eq!(std::fs::read(&path).unwrap(), b"mine");
        assert_eq!(files(dir.path()), ["1.json", "2.json"], "no temporary file is left");
    }

    #[tokio::test]
    async fn control_characters_shape_neither_the_name_nor_the_headers() {
        let dir = tempfile::tempdir().unwrap();
        let mut msg = message(Mode::Live);
        msg.workflow = "../../etc/\u{0}passwd\n".into();
        msg.event = "fail\r\nX: y/..".into();
        msg.subject = "evil\r\nBcc: victim@example.com\u{1b}[31m\u{0}".into();
        msg.text = "line\u{0}one\r\u{1b}[2J\nline two".into();
        channel(dir.path(), Format::Eml).send(&msg).await.unwrap();

        let names = files(dir.path());
        assert_eq!(names.len(), 1, "written inside the directory: {names:?}");
        let name = &names[0];
        assert!(name.ends_with("-______etc__passwd_-fail__X__y___.eml"), "{name}");
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)), "{name}");
        let bytes = std::fs::read(dir.path().join(name)).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(!text.lines().any(|l| l.starts_with("Bcc:")), "{text}");
        assert!(text.contains("Subject: evil  Bcc: victim@example.com"), "{text}");
        assert!(
            text.bytes()
                .all(|b| b == b'\r' || b == b'\n' || b == b'\t' || (0x20..0x7f).contains(&b)),
            "only printable ASCII and line ends: {text:?}"
        );
    }

    #[tokio::test]
    async fn a_huge_body_is_written_whole_in_lines_mail_readers_accept() {
        let dir = tempfile::tempdir().unwrap();
        let mut msg = message(Mode::Live);
        msg.text = "é".repeat(3 * 1024 * 1024);
        msg.html = None;
        channel(dir.path(), Format::Eml).send(&msg).await.unwrap();
        channel(dir.path(), Format::Json).send(&msg).await.unwrap();

        let names = files(dir.path());
        assert_eq!(names.len(), 2);
        let eml = std::fs::read_to_string(dir.path().join(&names[0])).unwrap();
        assert!(eml.split("\r\n").all(|l| l.len() <= 998), "no line over 998 bytes");
        let json: Message =
            serde_json::from_slice(&std::fs::read(dir.path().join(&names[1])).unwrap()).unwrap();
        assert_eq!(json.text, msg.text);
    }

    #[tokio::test]
    async fn a_missing_directory_is_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b/notifications");
        channel(&nested, Format::Json).send(&message(Mode::Live)).await.unwrap();
        assert_eq!(files(&nested).len(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&nested).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
            let file = nested.join(&files(&nested)[0]);
            let mode = std::fs::metadata(file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[tokio::test]
    async fn a_file_where_the_directory_should_be_is_a_permanent_error_naming_the_channel() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, b"x").unwrap();
        let err = channel(&blocker, Format::Json).send(&message(Mode::Live)).await.unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        let text = err.to_string();
        assert!(text.contains("channel `drills-file`") && text.contains("not-a-dir"), "{text}");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_read_only_directory_is_a_permanent_error_and_leaves_nothing() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o500)).unwrap();
        if std::fs::write(ro.join("probe"), b"").is_ok() {
            return; // running as root: permissions do not bind
        }
        let err = channel(&ro, Format::Json).send(&message(Mode::Live)).await.unwrap_err();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains("make the directory writable"), "{err}");
        assert!(files(&ro).is_empty());
    }

    #[test]
    fn a_dir_that_climbs_with_dot_dot_is_refused_at_configuration() {
        let err = File::new("drops", Path::new("notes/../../etc"), Format::Json).err().unwrap();
        let text = err.to_string();
        assert!(text.contains("channel `drops`") && text.contains("`..`"), "{text}");
        assert!(File::new("drops", Path::new(""), Format::Json).is_err());
        assert!(File::new("drops", Path::new("/var/lib/lifeboat/out"), Format::Json).is_ok());
    }

    #[test]
    fn slugs_keep_only_safe_characters() {
        assert_eq!(slug("step_failed"), "step_failed");
        assert_eq!(slug("a/b c.d"), "a_b_c_d");
        assert_eq!(slug(""), "-");
        assert_eq!(slug(&"x".repeat(100)).len(), 40);
    }
}
