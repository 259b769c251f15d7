//! Hardening of the MQTT side and of camera URLs (issue 10, findings 6, 13,
//! 14, 15), through the real `facegate run` binary, a real mosquitto on
//! 127.0.0.1 and a real SQLite file in a temp dir:
//!
//! - a signed command replayed after a restart is refused, whatever its
//!   timestamp skew (nonces on disk); one too far ahead is refused outright;
//! - a retained command, left on the broker before the gateway started or
//!   published while it runs (brokers clear the retain flag for existing
//!   subscribers) and re-sent by the broker later, never runs;
//! - `status` and `gate_open` are answered while a `watchlist_add` with a
//!   large photo is embedded (order of replies, not timing);
//! - credentials in a camera URL's query string stop the start with a
//!   clear error that does not show them;
//! - plain `mqtt://` to a broker off this machine is warned about loudly.

mod common;

use common::broker::{Broker, free_port, mosquitto_available, wait_for, write_file};
use common::cli::{shipped_config_head, spawn_run};
use common::mqtt::TestClient;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use facegate::http::commands::sign_command;
use facegate::publish::config::Secret;

const CMD_SECRET: &str = "command-centre-secret-0123456789";
const GATE_SECRET: &str = "gate-1-controller-secret-0123";
const SITE: &str = "hard-1";

// ---------------------------------------------------------------------------
// The gateway binary
// ---------------------------------------------------------------------------

/// A temp dir with a config (the shipped one, with our `[mqtt]` section),
/// the secrets, the database and the data dir, shared by successive runs.
struct Site {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Site {
    /// `mqtt_extra`: more `[mqtt]` keys; `cameras`: `[[cameras]]` tables.
    fn new(mqtt_extra: &str, cameras: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let cmd = write_file(dir.path(), "cmd.secret", CMD_SECRET.as_bytes());
        let gate = write_file(dir.path(), "gate.secret", GATE_SECRET.as_bytes());
        let head = shipped_config_head(SITE);
        let text = format!(
            "{head}\n{cameras}\n[mqtt]\nreconnect_min_s = 0.2\nreconnect_max_s = 1.0\n\
             keep_alive_s = 5\nconnect_timeout_s = 2\nshutdown_grace_s = 1.0\n\
             max_packet_bytes = 16777216\n\
             gate_secrets = {{ \"gate-1\" = \"file:{}\" }}\ncommand_secret = \"file:{}\"\n{mqtt_extra}\n",
            gate.display(),
            cmd.display()
        );
        let config = write_file(dir.path(), "facegate.toml", text.as_bytes());
        Site { dir, config }
    }

    /// `facegate run` on this site's database against `mqtt_url`.
    fn start(&self, mqtt_url: &str) -> Gateway {
        let stderr = Arc::new(Mutex::new(String::new()));
        let child = spawn_run(
            &self.config,
            self.dir.path(),
            &["--http", "127.0.0.1:0", "--mqtt", mqtt_url],
            "warn",
            &stderr,
        );
        Gateway { child, stderr }
    }

    /// `facegate ARGS` that must stop by itself (a start that must fail):
    /// whether it succeeded, and its output. Killed (and failed) if it is
    /// still running after a minute.
    fn run_to_exit(&self, args: &[&str]) -> (bool, String) {
        let mut child = common::cli::facegate()
            .arg("--config")
            .arg(&self.config)
            .arg("--db")
            .arg(self.dir.path().join("registry.db"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > end {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "facegate {args:?} was still running after a minute: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout),
        )
    }
}

struct Gateway {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Gateway {
    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM (an orderly stop), then waits for the exit; the stderr.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if self.child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(Instant::now() < end, "facegate did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(100));
        self.stderr()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// The command centre: a real MQTT client
// ---------------------------------------------------------------------------

/// The command centre's client: subscribed to the site's status, command
/// replies and gate topics before `start` returns.
struct Centre {
    client: TestClient,
}

impl Centre {
    async fn start(port: u16) -> Centre {
        let filters = [
            format!("facegate/{SITE}/status"),
            format!("facegate/{SITE}/cmd/+/reply"),
            format!("facegate/{SITE}/gates/#"),
        ];
        let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
        let client = TestClient::start_with(port, "centre", &filters, 32 * 1024 * 1024);
        wait_for(
            "the centre's subscriptions",
            Duration::from_secs(10),
            || client.subacks() > 0,
        )
        .await;
        // The three SUBACKs come together; one more round trip to be sure.
        tokio::time::sleep(Duration::from_millis(200)).await;
        Centre { client }
    }

    fn on(&self, topic: &str) -> Vec<Value> {
        self.client.on(topic).into_iter().map(|m| m.json).collect()
    }

    fn replies(&self, cmd: &str) -> Vec<Value> {
        self.on(&format!("facegate/{SITE}/cmd/{cmd}/reply"))
    }

    /// Every reply, in arrival order.
    fn all_replies(&self) -> Vec<Value> {
        self.client
            .msgs()
            .into_iter()
            .filter(|m| m.topic.ends_with("/reply"))
            .map(|m| m.json)
            .collect()
    }

    fn gate_opens(&self) -> Vec<Value> {
        self.on(&format!("facegate/{SITE}/gates/gate-1/open"))
    }

    async fn send(&self, cmd: &str, payload: Vec<u8>, retain: bool) {
        self.client
            .send(&format!("facegate/{SITE}/cmd/{cmd}"), payload, retain)
            .await;
    }

    /// Waits for a gateway run's `online` status; runs are told apart by
    /// their `started_at`, so `run` is 1 for the first run, 2 for the next.
    async fn wait_online(&self, run: usize) {
        let topic = format!("facegate/{SITE}/status");
        wait_for("the gateway online", Duration::from_secs(60), || {
            let mut starts: Vec<String> = self
                .on(&topic)
                .iter()
                .filter(|s| s["state"] == json!("online"))
                .filter_map(|s| s["started_at"].as_str().map(str::to_owned))
                .collect();
            starts.dedup();
            starts.len() >= run
        })
        .await;
    }

    async fn wait_replies(&self, cmd: &str, n: usize) -> Value {
        wait_for(
            &format!("{n} replies to {cmd}"),
            Duration::from_secs(60),
            || self.replies(cmd).len() >= n,
        )
        .await;
        self.replies(cmd)[n - 1].clone()
    }
}

fn signed(cmd: &str, ts: OffsetDateTime, nonce: &str, args: Value) -> Vec<u8> {
    sign_command(
        &Secret::new(CMD_SECRET.as_bytes().to_vec()),
        SITE,
        cmd,
        &ts.format(&Rfc3339).unwrap(),
        nonce,
        &args,
    )
}

fn ready() -> bool {
    mosquitto_available() && common::faces_dir().is_some()
}

// ---------------------------------------------------------------------------
// Finding 6: replay across a restart, whatever the skew
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_open_signed_ahead_of_the_clock_opens_once_across_a_restart() {
    if !ready() {
        return;
    }
    let broker = Broker::start();
    let site = Site::new("command_max_age_s = 60\ncommand_max_skew_s = 30\n", "");
    let centre = Centre::start(broker.port()).await;

    let gw = site.start(&broker.url());
    centre.wait_online(1).await;
    // 25 s ahead of the clock: the new run starts before that time comes,
    // so "signed before this run started" cannot catch the replay.
    let ahead = signed(
        "gate_open",
        OffsetDateTime::now_utc() + time::Duration::seconds(25),
        "skew-ahead-0001",
        json!({ "gate": "gate-1", "by": "duty officer" }),
    );
    centre.send("gate_open", ahead.clone(), false).await;
    let r = centre.wait_replies("gate_open", 1).await;
    assert_eq!(r["ok"], json!(true), "{r}");
    wait_for("the gate open", Duration::from_secs(20), || {
        centre.gate_opens().len() == 1
    })
    .await;
    let log1 = gw.stop();
    assert!(
        !log1.contains("INSECURE"),
        "a loopback broker is not warned about: {log1}"
    );

    let gw = site.start(&broker.url());
    centre.wait_online(2).await;
    centre.send("gate_open", ahead, false).await;
    let r = centre.wait_replies("gate_open", 2).await;
    assert_eq!(
        (r["ok"].clone(), r["code"].clone()),
        (json!(false), json!("replayed")),
        "{r}"
    );
    assert_eq!(r["nonce"], json!("skew-ahead-0001"));

    // Beyond the skew allowed: refused before its nonce is recorded.
    let far = signed(
        "gate_open",
        OffsetDateTime::now_utc() + time::Duration::seconds(50),
        "skew-far-0001",
        json!({ "gate": "gate-1" }),
    );
    centre.send("gate_open", far, false).await;
    let r = centre.wait_replies("gate_open", 3).await;
    assert_eq!(r["code"], json!("stale"), "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("in the future"),
        "{r}"
    );
    // A fresh one still works after all that.
    let fresh = signed(
        "gate_open",
        OffsetDateTime::now_utc(),
        "fresh-0001",
        json!({ "gate": "gate-1" }),
    );
    centre.send("gate_open", fresh, false).await;
    let r = centre.wait_replies("gate_open", 4).await;
    assert_eq!(r["ok"], json!(true), "{r}");
    wait_for("the second gate open", Duration::from_secs(20), || {
        centre.gate_opens().len() == 2
    })
    .await;
    let opens: Vec<Value> = centre.gate_opens();
    assert_eq!(
        opens
            .iter()
            .filter(|o| o.to_string().contains("skew-ahead-0001"))
            .count(),
        1,
        "one nonce, one open: {opens:?}"
    );
    gw.stop();
}

// ---------------------------------------------------------------------------
// Finding 15: retained commands never run
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_commands_are_refused_before_start_while_running_and_when_resent() {
    if !ready() {
        return;
    }
    let broker = Broker::start();
    let site = Site::new("", "");
    let centre = Centre::start(broker.port()).await;
    let open = |nonce: &str| {
        signed(
            "gate_open",
            OffsetDateTime::now_utc(),
            nonce,
            json!({ "gate": "gate-1" }),
        )
    };

    // Left on the broker before the gateway starts.
    centre
        .send("gate_open", open("retained-before-01"), true)
        .await;
    let gw = site.start(&broker.url());
    centre.wait_online(1).await;
    let r = centre.wait_replies("gate_open", 1).await;
    assert_eq!(r["code"], json!("retained"), "{r}");

    // Published retained while the gateway is subscribed: mosquitto clears
    // the retain flag for existing subscribers unless they asked for
    // retain-as-published.
    centre
        .send("gate_open", open("retained-live-01"), true)
        .await;
    let r = centre.wait_replies("gate_open", 2).await;
    assert_eq!(r["code"], json!("retained"), "{r}");
    gw.stop();

    // The broker sends the retained one again to the next run.
    let gw = site.start(&broker.url());
    centre.wait_online(2).await;
    let r = centre.wait_replies("gate_open", 3).await;
    assert_eq!(r["code"], json!("retained"), "{r}");
    // A live command is still run (the lanes work), and it is the only open.
    centre.send("gate_open", open("live-0001"), false).await;
    let r = centre.wait_replies("gate_open", 4).await;
    assert_eq!(r["ok"], json!(true), "{r}");
    wait_for("the live gate open", Duration::from_secs(20), || {
        !centre.gate_opens().is_empty()
    })
    .await;
    let opens = centre.gate_opens();
    assert_eq!(opens.len(), 1, "{opens:?}");
    assert!(opens[0].to_string().contains("live-0001"), "{opens:?}");
    gw.stop();
}

// ---------------------------------------------------------------------------
// Finding 13: status and gate_open are not stuck behind a photo
// ---------------------------------------------------------------------------

/// A real face photo scaled up to `side` pixels, as a JPEG under target/.
fn big_photo(faces: &Path, side: u32) -> Vec<u8> {
    let src = image::open(faces.join("identities/Colin_Powell/1.jpg")).unwrap();
    let big = src.resize_exact(side, side, image::imageops::FilterType::Triangle);
    let out =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-media/mqtt-hardening-big.jpg");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    big.to_rgb8().save(&out).unwrap();
    std::fs::read(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_gate_open_answer_while_a_large_watchlist_photo_is_embedded() {
    if !ready() {
        return;
    }
    let faces = common::faces_dir().unwrap();
    let photo = big_photo(&faces, 4000);
    let broker = Broker::start();
    let site = Site::new("command_max_age_s = 120\n", "");
    let centre = Centre::start(broker.port()).await;
    let gw = site.start(&broker.url());
    centre.wait_online(1).await;

    let now = OffsetDateTime::now_utc();
    let add = signed(
        "watchlist_add",
        now,
        "add-big-0001",
        json!({
            "name": "Colin Powell", "reason": "test: missing person",
            "photo": base64::engine::general_purpose::STANDARD.encode(&photo),
        }),
    );
    let sent = Instant::now();
    centre.send("watchlist_add", add, false).await;
    centre
        .send(
            "status",
            signed("status", now, "status-0001", json!(null)),
            false,
        )
        .await;
    centre
        .send(
            "gate_open",
            signed("gate_open", now, "open-0001", json!({ "gate": "gate-1" })),
            false,
        )
        .await;
    centre.wait_replies("status", 1).await;
    let status_after = sent.elapsed();
    let r = centre.wait_replies("watchlist_add", 1).await;
    // Figures for the report, not assertions.
    eprintln!(
        "photo {} bytes: status reply after {:?}, watchlist_add reply after {:?}",
        photo.len(),
        status_after,
        sent.elapsed()
    );
    assert_eq!(r["ok"], json!(true), "the photo was enrolled: {r}");
    let order: Vec<String> = centre
        .all_replies()
        .iter()
        .map(|r| r["cmd"].as_str().unwrap_or("?").to_owned())
        .collect();
    let pos = |c: &str| order.iter().position(|o| o == c);
    assert!(
        pos("status") < pos("watchlist_add") && pos("gate_open") < pos("watchlist_add"),
        "status and gate_open must be answered before the photo is done: {order:?}"
    );
    assert!(
        pos("status").is_some() && pos("gate_open").is_some(),
        "{order:?}"
    );
    gw.stop();
}

// ---------------------------------------------------------------------------
// Finding 14: credentials in a camera URL's query string
// ---------------------------------------------------------------------------

#[test]
fn credentials_in_a_camera_query_string_stop_the_start_without_showing_them() {
    let url = "rtsp://127.0.0.1:8554/live?channel=1&user=admin&password=Hunter2Secret";
    // Config validation, as `facegate run` does it.
    let text = format!("[[cameras]]\nname = \"gate-1\"\nurl = \"{url}\"\n");
    let path = Path::new("c.toml");
    let err = facegate::config::Config::parse(&text, path)
        .and_then(|c| c.validate(path).map(|_| c))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gate-1") && err.contains("username_env") && err.contains("credentials_file"),
        "{err}"
    );
    assert!(!err.contains("Hunter2Secret"), "{err}");

    // The binary: from the config file, and from --camera.
    let site = Site::new(
        "",
        &format!("[[cameras]]\nname = \"gate-1\"\nurl = \"{url}\"\n"),
    );
    let (ok, out) = site.run_to_exit(&["run", "--http", ""]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("credentials") && out.contains("username_env"),
        "{out}"
    );
    assert!(
        !out.contains("Hunter2Secret"),
        "the secret was printed: {out}"
    );
    let site = Site::new("", "");
    let (ok, out) = site.run_to_exit(&["run", "--http", "", "--camera", &format!("gate-2={url}")]);
    assert!(!ok, "{out}");
    assert!(out.contains("credentials"), "{out}");
    assert!(
        !out.contains("Hunter2Secret"),
        "the secret was printed: {out}"
    );
}

// ---------------------------------------------------------------------------
// Finding 15: clear text to a broker off this machine is warned about
// ---------------------------------------------------------------------------

/// This machine's own address on its first non-loopback interface (a UDP
/// "connect" sends nothing), if it has one.
fn own_non_loopback_ip() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_mqtt_to_another_machine_with_commands_is_warned_about_at_start() {
    if common::faces_dir().is_none() {
        return;
    }
    let Some(ip) = own_non_loopback_ip() else {
        eprintln!(
            "\n!!!!! SKIPPED: no non-loopback address on this machine; this test did not run !!!!!\n"
        );
        return;
    };
    // This machine's own address, a port nobody listens on: the connection
    // is refused by the local kernel, nothing leaves the machine.
    let site = Site::new("", "");
    let url = format!("mqtt://{ip}:{}", free_port());
    let gw = site.start(&url);
    let end = Instant::now() + Duration::from_secs(60);
    while !gw.stderr().contains("INSECURE") && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = gw.stop();
    let line = log
        .lines()
        .find(|l| l.contains("INSECURE"))
        .unwrap_or_else(|| panic!("no warning: {log}"));
    assert!(
        line.contains("WARN") && line.contains("clear text") && line.contains("remote commands"),
        "{line}"
    );
    assert!(line.contains("mqtts://"), "says what to do: {line}");
}
