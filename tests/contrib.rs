//! What ships in `contrib/` for the tools SRE teams already run: the
//! Prometheus alerting rules pass the real `promtool` (checked and
//! unit-tested). That the dashboard and the rules name only exported
//! metrics is a unit test beside the registry (`metrics.rs`): a scrape shows
//! a labelled family only once it has a sample.

use std::process::Command;

use crate::util::root;

fn promtool(args: &[&str]) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .current_dir(root().join("contrib/prometheus"))
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool could not run ({e}): `bash scripts/deps.sh` installs it (Debian package prometheus)")
        })
}

#[test]
fn promtool_checks_and_unit_tests_the_alerting_rules() {
    for args in [
        &["check", "rules", "lifeboat-rules.yml"][..],
        &["test", "rules", "lifeboat-rules.test.yml"][..],
    ] {
        let out = promtool(args);
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_systemd_unit_verifies() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("systemd-analyze is not installed here: the unit is not verified");
        return;
    }
    // The unit as shipped, with ExecStart pointing at this build (verify
    // checks that the program exists) and man pages not looked up.
    let unit =
        std::fs::read_to_string(root().join("contrib/systemd/lifeboat.service")).expect("the unit");
    assert!(unit.contains("ExecStart=/usr/local/bin/lifeboat serve"), "{unit}");
    for line in ["Type=notify", "WatchdogSec=", "StateDirectory=lifeboat", "User=lifeboat"] {
        assert!(unit.contains(line), "the unit lacks {line}");
    }
    let dir = crate::util::scratch("systemd-unit");
    let path = dir.join("lifeboat.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/lifeboat", env!("CARGO_BIN_EXE_lifeboat")))
        .unwrap();
    let out =
        Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&path).output().unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `serve` under a (stand-in) service manager: the datagrams systemd reads
/// from NOTIFY_SOCKET, on a real Unix socket.
#[test]
fn serve_says_ready_keeps_the_watchdog_and_says_stopping() {
    use std::os::unix::net::UnixDatagram;
    use std::time::{Duration, Instant};

    let sb = crate::util::Sandbox::new("systemd-notify");
    let socket = sb.path("notify.sock");
    let manager = UnixDatagram::bind(&socket).expect("bind the notify socket");
    manager.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let sb = sb
        .env("NOTIFY_SOCKET", socket.to_str().unwrap())
        // 200 ms: petted every 100 ms.
        .env("WATCHDOG_USEC", "200000");
    let api = crate::util::Api::start(&sb);
    let next = || {
        let mut buf = [0u8; 512];
        let n = manager.recv(&mut buf).expect("a datagram from serve");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = next();
    let ready = if first.starts_with("WATCHDOG=1") { next() } else { first };
    assert!(ready.starts_with("READY=1\nSTATUS=serving on http://127.0.0.1:"), "{ready:?}");
    let started = Instant::now();
    let mut pets = 0;
    while pets < 3 {
        if next() == "WATCHDOG=1\n" {
            pets += 1;
        }
    }
    assert!(started.elapsed() < Duration::from_secs(2), "3 pets took {:?}", started.elapsed());
    let pid = api.serve.pid().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let stopping = loop {
        let message = next();
        if message != "WATCHDOG=1\n" {
            break message;
        }
    };
    assert_eq!(stopping, "STOPPING=1\nSTATUS=draining\n");
}

#[test]
fn install_sh_installs_the_binary_completions_and_man_pages_under_a_prefix() {
    let prefix = crate::util::scratch("install-prefix");
    let out = Command::new("bash")
        .arg(root().join("scripts/install.sh"))
        .env("PREFIX", &prefix)
        .env("LIFEBOAT_INSTALL_BIN", env!("CARGO_BIN_EXE_lifeboat"))
        .output()
        .unwrap();
    assert!(out.status.success(), "install.sh: {}", String::from_utf8_lossy(&out.stderr));
    for file in [
        "bin/lifeboat",
        "bin/lifeboat-exec",
        "share/man/man1/lifeboat.1",
        "share/man/man1/lifeboat-serve.1",
        "share/bash-completion/completions/lifeboat",
        "share/zsh/site-functions/_lifeboat",
        "share/fish/vendor_completions.d/lifeboat.fish",
    ] {
        assert!(prefix.join(file).is_file(), "install.sh did not install {file}");
    }
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(prefix.join("share/bash-completion/completions/lifeboat"))
        .status()
        .unwrap();
    assert!(syntax.success());
    // Nothing outside the prefix: no unit, no user, for a non-system prefix.
    assert!(String::from_utf8_lossy(&out.stdout).contains("installed lifeboat "));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("unit:"));
}

/// The container image is built where podman can pull its base images
/// (not on the test machine: no registry access). What can be checked
/// here: it is multi-stage, runs as a non-root user, checks /readyz, and
/// the compose example's configuration and workflow validate.
#[test]
fn the_containerfile_and_the_compose_example_hold_together() {
    let file = std::fs::read_to_string(root().join("Containerfile")).unwrap();
    assert_eq!(file.lines().filter(|l| l.starts_with("FROM ")).count(), 2, "multi-stage");
    assert!(file.lines().any(|l| l.starts_with("USER 10001")), "non-root");
    assert!(file.contains("HEALTHCHECK") && file.contains("/readyz"));
    // Shell steps start through lifeboat-exec, found beside lifeboat.
    let shipped = file.lines().find(|l| l.starts_with("COPY --from=build")).unwrap_or_default();
    assert!(
        shipped.contains("release/lifeboat ")
            && shipped.contains("release/lifeboat-exec ")
            && shipped.ends_with(" /usr/local/bin/"),
        "{shipped}"
    );
    let compose = root().join("contrib/compose");
    let out = crate::util::lifeboat(&[
        "validate",
        "--config",
        compose.join("lifeboat.toml").to_str().unwrap(),
        compose.join("workflows").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}{}", crate::util::stdout(&out), crate::util::stderr(&out));
    let yaml = std::fs::read_to_string(compose.join("compose.yaml")).unwrap();
    for replica in ["lifeboat-1:", "lifeboat-2:", "lifeboat-3:"] {
        assert!(yaml.contains(replica), "compose.yaml lacks {replica}");
    }
}
