//! A real mosquitto for tests (`mosquitto -c FILE` on a free port of
//! 127.0.0.1, no persistence), and a [`Valve`]: a TCP relay in front of it
//! that a test can close, to cut the network or to decide who reconnects
//! first after a broker restart.
#![allow(dead_code)]

use std::io::Write;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Whether `mosquitto` can run here; when it cannot, the caller skips
/// loudly (or fails, with `FACEGATE_REQUIRE_MOSQUITTO` set, as in CI).
pub fn mosquitto_available() -> bool {
    let ok = Command::new("mosquitto")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if ok {
        return true;
    }
    if std::env::var_os("FACEGATE_REQUIRE_MOSQUITTO").is_some() {
        panic!(
            "mosquitto not found and FACEGATE_REQUIRE_MOSQUITTO is set: apt-get install mosquitto"
        );
    }
    eprintln!(
        "\n!!!!! SKIPPED: mosquitto not found (apt-get install mosquitto mosquitto-clients); this test did not run !!!!!\n"
    );
    false
}

/// A port of 127.0.0.1 nobody listens on right now (here, not in
/// `common/mod.rs`, because `benches/outbox.rs` includes this file alone).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Waits until something accepts connections on the port.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// One mosquitto process; stopped on drop.
pub struct Broker {
    port: u16,
    dir: tempfile::TempDir,
    listener_options: String,
    extra: String,
    child: Option<Child>,
}

impl Broker {
    /// A plain broker: anonymous, no persistence.
    pub fn start() -> Self {
        Self::start_with("", "allow_anonymous true\n")
    }

    /// `listener_options` go under the `listener` line (TLS files),
    /// `extra` after it (authentication).
    pub fn start_with(listener_options: &str, extra: &str) -> Self {
        let mut b = Broker {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            listener_options: listener_options.to_owned(),
            extra: extra.to_owned(),
            child: None,
        };
        b.restart();
        b
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The broker's log (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Starts it (again) on the same port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let conf = self.dir.path().join("mosquitto.conf");
        let mut f = std::fs::File::create(&conf).expect("write mosquitto.conf");
        write!(
            f,
            "listener {} 127.0.0.1\n{}persistence false\n{}",
            self.port, self.listener_options, self.extra
        )
        .expect("write mosquitto.conf");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mosquitto.log"))
            .expect("broker log");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        assert!(
            wait_for_port(self.port, Duration::from_secs(5)),
            "mosquitto did not listen on {}: {}",
            self.port,
            self.log()
        );
    }

    /// Kills it (SIGKILL: no goodbye to clients, as in a crash or power cut).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP relay from a port of its own to the broker's. Closed, it drops
/// every live connection and refuses new ones (accepts and hangs up).
pub struct Valve {
    port: u16,
    open: Arc<AtomicBool>,
    quit: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl Valve {
    pub fn new(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("valve port");
        let port = listener.local_addr().expect("valve addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let open = Arc::new(AtomicBool::new(true));
        let quit = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (o, q, l) = (open.clone(), quit.clone(), live.clone());
        let thread = std::thread::spawn(move || {
            while !q.load(Ordering::SeqCst) {
                let down = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                let _ = down.set_nonblocking(false);
                if !o.load(Ordering::SeqCst) {
                    let _ = down.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(up) = TcpStream::connect_timeout(
                    &([127, 0, 0, 1], upstream).into(),
                    Duration::from_secs(1),
                ) else {
                    let _ = down.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = up.set_nodelay(true);
                let _ = down.set_nodelay(true);
                if let (Ok(d2), Ok(u2)) = (down.try_clone(), up.try_clone())
                    && let Ok(mut g) = l.lock()
                {
                    g.push(d2);
                    g.push(u2);
                }
                pipe(down.try_clone(), up.try_clone());
                pipe(up.try_clone(), down.try_clone());
            }
        });
        Valve {
            port,
            open,
            quit,
            live,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    /// Cuts every connection through the valve and refuses new ones.
    pub fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        if let Ok(mut g) = self.live.lock() {
            for s in g.drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

fn pipe(from: std::io::Result<TcpStream>, to: std::io::Result<TcpStream>) {
    let (Ok(mut from), Ok(mut to)) = (from, to) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}

impl Drop for Valve {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::SeqCst);
        self.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes a file and returns its path (secrets, certificates).
pub fn write_file(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).expect("write test file");
    p
}

/// Polls `cond` every 25 ms until it holds; panics naming `what` after
/// `timeout` (the MQTT tests' one way of waiting).
pub async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < end,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
