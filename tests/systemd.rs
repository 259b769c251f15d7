//! `facegate run` under systemd's notify protocol, as the packaged unit
//! (`Type=notify`, `WatchdogSec=`) runs it: the real binary tells a real
//! unix datagram socket READY=1 once its HTTP address answers, pings the
//! watchdog at half the period it was given, and says STOPPING=1 on SIGTERM.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::broker::free_port;

#[test]
fn run_notifies_systemd_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let port = free_port();
    let config = dir.path().join("facegate.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\ndb = \"{d}/facegate.db\"\ndata_dir = \"{d}/data\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let mut child = common::cli::facegate()
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let mut got: Vec<String> = Vec::new();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    while started.elapsed() < Duration::from_secs(60)
        && got.iter().filter(|m| *m == "WATCHDOG=1").count() < 3
    {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    // READY=1 comes first, and only once the HTTP address answers.
    assert_eq!(got.first().map(String::as_str), Some("READY=1"), "{got:?}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "ready but not serving"
    );
    assert!(
        got.iter().filter(|m| *m == "WATCHDOG=1").count() >= 3,
        "watchdog pings: {got:?}"
    );

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let mut stopping = false;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) && !stopping {
        if let Ok(n) = sock.recv(&mut buf) {
            stopping = &buf[..n] == b"STOPPING=1";
        }
    }
    let status = child.wait().unwrap();
    assert!(stopping, "no STOPPING=1 after SIGTERM");
    assert!(status.success(), "facegate run exited with {status}");
}
