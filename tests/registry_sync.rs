//! Issue 12 item 5: the boxes of one site share owners through the broker.
//!
//! Two real `facegate run` processes (box A, box B) with their own SQLite
//! files and HTTP ports, one real mosquitto on 127.0.0.1, the real models on
//! photos from `../shared/faces`:
//! - an owner enrolled over A's HTTP API is identified by B;
//! - with B stopped, A enrols a second owner and erases the first; B,
//!   started again, catches up: the second identified, the first gone (no
//!   row, not identified, audited as `sync from box-a`);
//! - a forged message (another secret) changes nothing on B, and the real
//!   message is put back on the broker;
//! - the first owner's old state, replayed after the erasure, does not
//!   bring them back, and the tombstone is put back on the broker;
//! - a suspension made with the command line while A's gateway is stopped
//!   reaches B at A's next start, and B's reactivation reaches A;
//! - an enrolment made while the broker is down reaches B when it is back;
//!   the broker lost its retained messages (no persistence) and the boxes
//!   publish them again, so a new box C catches up.

mod common;

use common::broker::{Broker, free_port, mosquitto_available, write_file};
use common::cli::{shipped_config_head, spawn_run};
use common::http::{json, multipart, send_form};

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use facegate::publish::config::Secret;
use facegate::registry::{Registry, Role};
use facegate::sync::message::{Body, SyncKeys, Version};

const SITE: &str = "sync-1";
const SECRET: &str = "site-sync-secret-0123456789abcdef";

/// One box: its directory (config, secret, database, data), HTTP port and
/// admin token, and the running process.
struct Gatebox {
    name: String,
    dir: tempfile::TempDir,
    port: u16,
    token: String,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

impl Gatebox {
    fn new(name: &str, mqtt_url: &str) -> Gatebox {
        let dir = tempfile::tempdir().unwrap();
        let secret = write_file(dir.path(), "sync.secret", SECRET.as_bytes());
        let head = shipped_config_head(SITE);
        let text = format!(
            "{head}\n[mqtt]\nurl = \"{mqtt_url}\"\nclient_id = \"facegate-{SITE}-{name}\"\n\
             reconnect_min_s = 0.2\nreconnect_max_s = 1.0\nkeep_alive_s = 5\nconnect_timeout_s = 2\n\
             shutdown_grace_s = 1.0\n\n[sync]\nbox_id = \"{name}\"\nsecret = \"file:{}\"\n\
             scan_interval_s = 0.2\n",
            secret.display()
        );
        write_file(dir.path(), "facegate.toml", text.as_bytes());
        let db = dir.path().join("registry.db");
        let token = Registry::open(&db)
            .unwrap()
            .token_create("boss", Role::Admin, "test", time::OffsetDateTime::now_utc())
            .unwrap();
        Gatebox {
            name: name.to_owned(),
            dir,
            port: free_port(),
            token,
            child: None,
            log: Arc::new(Mutex::new(String::new())),
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("registry.db")
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `facegate run` (no camera: the API, the console and the sync), up
    /// when `/healthz` answers.
    fn start(&mut self) {
        assert!(self.child.is_none());
        let child = spawn_run(
            &self.dir.path().join("facegate.toml"),
            self.dir.path(),
            &["--http", &format!("127.0.0.1:{}", self.port)],
            "warn,facegate::sync=info",
            &self.log,
        );
        self.child = Some(child);
        let up = wait_for(Duration::from_secs(90), || {
            ureq::get(&format!("{}/healthz", self.base()))
                .call()
                .is_ok()
        });
        assert!(up, "box {} did not come up: {}", self.name, self.log());
    }

    /// Stopped hard, as a power cut would.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        ureq::request(method, &format!("{}{path}", self.base()))
            .set("authorization", &format!("Bearer {}", self.token))
    }

    fn enrol(&self, id: &str, name: &str, photo: &Path) {
        let form = multipart(
            &[("id", id), ("name", name), ("consent_method", "written")],
            &[("p.jpg", std::fs::read(photo).unwrap())],
        );
        let (s, v) = json(send_form(self.request("POST", "/api/v1/owners"), form));
        assert_eq!(s, 201, "enrol {id} on {}: {v}", self.name);
    }

    fn erase(&self, id: &str) {
        let (s, v) = json(
            self.request("DELETE", &format!("/api/v1/owners/{id}"))
                .call(),
        );
        assert!(s == 200 || s == 204, "erase {id} on {}: {s} {v}", self.name);
    }

    /// The owner id the photo's face is identified as, if any.
    fn identify(&self, photo: &Path) -> Option<String> {
        let form = multipart(&[], &[("p.jpg", std::fs::read(photo).unwrap())]);
        let (s, v) = json(send_form(self.request("POST", "/api/v1/identify"), form));
        assert_eq!(s, 200, "identify on {}: {v}", self.name);
        let face = &v["faces"][0];
        if face["decision"] != "owner" {
            return None;
        }
        let id = face["best_match"]["id"].as_str();
        Some(
            id.unwrap_or_else(|| panic!("an owner match names the owner: {face}"))
                .to_owned(),
        )
    }

    /// `facegate ARGS` on this box's config and database (the command
    /// line beside, or instead of, the running gateway).
    fn cli(&self, args: &[&str]) {
        let out = common::cli::facegate()
            .arg("--config")
            .arg(self.dir.path().join("facegate.toml"))
            .arg("--db")
            .arg(self.db())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "facegate {args:?} on {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// One series of this box's `/metrics`, e.g.
    /// `facegate_sync_messages_total{result="applied"}` (`None`: absent).
    fn metric(&self, series: &str) -> Option<f64> {
        let text = self
            .request("GET", "/metrics")
            .call()
            .unwrap_or_else(|e| panic!("/metrics on {}: {e}", self.name))
            .into_string()
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// `status` of an owner as the API shows it (`None`: no such owner).
    fn status_of(&self, id: &str) -> Option<String> {
        let (s, v) = json(self.request("GET", &format!("/api/v1/owners/{id}")).call());
        (s == 200).then(|| v["status"].as_str().unwrap_or_default().to_owned())
    }

    fn owner_status(&self, id: &str) -> u16 {
        json(self.request("GET", &format!("/api/v1/owners/{id}")).call()).0
    }

    /// Waits (bounded) until `id` is identified from `photo` (`Some`) or
    /// not (`None`).
    fn wait_identified(&self, photo: &Path, want: Option<&str>, what: &str) {
        let ok = wait_for(Duration::from_secs(60), || {
            self.identify(photo).as_deref() == want
        });
        assert!(
            ok,
            "box {}: {what}: still {:?}\n{}",
            self.name,
            self.identify(photo),
            self.log()
        );
    }

    /// Nothing left to publish and `id` published at a version: the box
    /// has sent its changes.
    fn wait_published(&self, ids: &[&str]) {
        let db = self.db();
        let ok = wait_for(Duration::from_secs(60), || {
            let c = rusqlite::Connection::open(&db).unwrap();
            let pending: i64 = c
                .query_row("SELECT count(*) FROM sync_dirty", [], |r| r.get(0))
                .unwrap();
            let known: i64 = ids
                .iter()
                .map(|id| {
                    c.query_row(
                        "SELECT count(*) FROM sync_owners WHERE owner_id = ?1",
                        [id],
                        |r| r.get::<_, i64>(0),
                    )
                    .unwrap()
                })
                .sum();
            pending == 0 && known == ids.len() as i64
        });
        assert!(
            ok,
            "box {} did not publish {ids:?}: {}",
            self.name,
            self.log()
        );
    }
}

impl Drop for Gatebox {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `cond` every 200 ms until it holds (true) or `timeout` (false).
fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn topic_of(id: &str) -> String {
    let keys = SyncKeys::derive(&Secret::new(SECRET.as_bytes().to_vec()));
    format!("facegate/{SITE}/registry/owners/{}", keys.owner_key(id))
}

/// The retained message on `topic` (what a box that subscribes now reads).
fn retained(broker: &Broker, topic: &str) -> Vec<u8> {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(["-t", topic, "-C", "1", "-W", "5", "-N"])
        .output()
        .expect("mosquitto_sub");
    assert!(out.status.success(), "no retained message on {topic}");
    out.stdout
}

/// The retained message on `topic`, if the broker has one.
fn retained_opt(broker: &Broker, topic: &str) -> Option<Vec<u8>> {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(["-t", topic, "-C", "1", "-W", "1", "-N"])
        .output()
        .expect("mosquitto_sub");
    (out.status.success() && !out.stdout.is_empty()).then_some(out.stdout)
}

fn publish_retained(broker: &Broker, topic: &str, payload: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "payload.json", payload);
    let ok = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(["-t", topic, "-q", "1", "-r", "-f"])
        .arg(&file)
        .status()
        .expect("mosquitto_pub")
        .success();
    assert!(ok, "mosquitto_pub to {topic}");
}

/// Opens a message with the site's real secret.
fn open(topic: &str, payload: &[u8]) -> (Version, Body) {
    let keys = SyncKeys::derive(&Secret::new(SECRET.as_bytes().to_vec()));
    let key = topic.rsplit('/').next().unwrap();
    let (env, body) = keys
        .open(SITE, key, payload)
        .expect("a genuine registry message");
    (env.version(), body)
}

#[test]
fn two_boxes_share_enrolments_and_erasures_through_the_broker() {
    let Some(faces) = common::faces_dir() else {
        return;
    };
    if !mosquitto_available() {
        return;
    }
    let ids = faces.join("identities");
    let (obama_enrol, obama_probe) = (
        ids.join("Barack_Obama/1.jpg"),
        ids.join("Barack_Obama/3.jpg"),
    );
    let (biden_enrol, biden_probe) = (ids.join("Joe_Biden/1.jpg"), ids.join("Joe_Biden/2.jpg"));
    let (powell_enrol, powell_probe) = (
        ids.join("Colin_Powell/1.jpg"),
        ids.join("Colin_Powell/2.jpg"),
    );
    let mut broker = Broker::start();
    let mut a = Gatebox::new("box-a", &broker.url());
    let mut b = Gatebox::new("box-b", &broker.url());
    a.start();
    b.start();
    assert_eq!(b.identify(&obama_probe), None, "B knows nobody yet");

    // Enrolled on A over HTTP: identified on B within a bounded wait.
    a.enrol("O-1", "Owner One", &obama_enrol);
    b.wait_identified(&obama_probe, Some("O-1"), "owner 1 enrolled on A");
    a.wait_published(&["O-1"]);
    // The sync's work shows in /metrics on both boxes.
    let sync_total = |r: &str| format!("facegate_sync_messages_total{{result=\"{r}\"}}");
    for (bx, result) in [(&a, "published"), (&b, "applied")] {
        let n = bx.metric(&sync_total(result));
        assert!(n.is_some_and(|n| n >= 1.0), "{} {result}: {n:?}", bx.name);
        assert_eq!(
            bx.metric("facegate_sync_connected"),
            Some(1.0),
            "{}",
            bx.name
        );
    }
    assert_eq!(b.metric(&sync_total("refused")), Some(0.0));
    let o1_topic = topic_of("O-1");
    let o1_state = retained(&broker, &o1_topic);
    let (v1, body) = open(&o1_topic, &o1_state);
    assert_eq!(v1.origin, "box-a");
    let state = body.state.expect("a state, not a tombstone");
    assert_eq!(state.templates.len(), 1);
    eprintln!(
        "registry state message, one {}-d template: {} bytes",
        state.templates[0].vector().unwrap().len(),
        o1_state.len()
    );
    // Templates only: no photo, nothing in clear on the broker.
    let text = String::from_utf8_lossy(&o1_state);
    assert!(
        !text.contains("O-1") && !text.contains("Owner One") && !text.contains("photo"),
        "{text}"
    );

    // B is down while A enrols owner 2 and erases owner 1.
    b.kill();
    a.enrol("O-2", "Owner Two", &biden_enrol);
    a.erase("O-1");
    a.wait_published(&["O-1", "O-2"]);
    eprintln!(
        "registry tombstone message: {} bytes",
        retained(&broker, &o1_topic).len()
    );
    b.start();
    b.wait_identified(
        &biden_probe,
        Some("O-2"),
        "owner 2 enrolled on A while B was down",
    );
    b.wait_identified(&obama_probe, None, "owner 1 erased on A while B was down");
    assert_eq!(b.owner_status("O-1"), 404, "owner 1's row is gone on B");
    assert_eq!(b.owner_status("O-2"), 200);
    let (s, audit) = json(b.request("GET", "/api/v1/audit?limit=50").call());
    assert_eq!(s, 200, "{audit}");
    let rows = audit.as_array().cloned().unwrap_or_default();
    assert!(
        rows.iter().any(|e| e["action"] == "owner.remove"
            && e["subject"] == "O-1"
            && e["actor"] == "sync from box-a"),
        "B's audit names the erasure's origin: {audit}"
    );

    // A forged message (another secret) on owner 2's topic: refused by
    // name, nothing changes, and the real state goes back on the broker.
    let o2_topic = topic_of("O-2");
    let wrong = SyncKeys::derive(&Secret::new(b"not-the-site-secret-at-all".to_vec()));
    let mut forged = wrong
        .seal(
            SITE,
            &Version {
                counter: 1_000_000,
                origin: "box-a".into(),
            },
            &Body {
                owner_id: "O-2".into(),
                state: None,
                erasure_reason: Some("request".into()),
            },
        )
        .unwrap();
    forged.key = o2_topic.rsplit('/').next().unwrap().to_owned();
    publish_retained(&broker, &o2_topic, &serde_json::to_vec(&forged).unwrap());
    let refused = wait_for(Duration::from_secs(30), || {
        b.log().contains("message refused") && b.log().contains(&o2_topic)
    });
    assert!(
        refused,
        "B must refuse the forged message with a WARN naming the topic: {}",
        b.log()
    );
    assert_eq!(
        b.identify(&biden_probe).as_deref(),
        Some("O-2"),
        "forged erasure changed B"
    );
    assert_eq!(b.owner_status("O-2"), 200);
    let repaired = wait_for(Duration::from_secs(30), || {
        let keys = SyncKeys::derive(&Secret::new(SECRET.as_bytes().to_vec()));
        let key = o2_topic.rsplit('/').next().unwrap();
        keys.open(SITE, key, &retained(&broker, &o2_topic)).is_ok()
    });
    assert!(repaired, "the real state of owner 2 is back on the broker");
    let n = b.metric(&sync_total("refused"));
    assert!(n.is_some_and(|n| n >= 1.0), "B counts the refusal: {n:?}");

    // Owner 1's old state replayed after the erasure: they stay erased, and
    // the tombstone goes back on the broker.
    publish_retained(&broker, &o1_topic, &o1_state);
    let stale = wait_for(Duration::from_secs(30), || {
        b.log().contains("an older version than this box has")
    });
    assert!(stale, "B saw the replay as stale: {}", b.log());
    let n = b.metric(&sync_total("stale"));
    assert!(
        n.is_some_and(|n| n >= 1.0),
        "B counts the stale replay: {n:?}"
    );
    let tombstone_back = wait_for(Duration::from_secs(30), || {
        open(&o1_topic, &retained(&broker, &o1_topic))
            .1
            .state
            .is_none()
    });
    assert!(tombstone_back, "the tombstone is back on the broker");
    assert_eq!(
        b.identify(&obama_probe),
        None,
        "replayed state resurrected owner 1 on B"
    );
    assert_eq!(b.owner_status("O-1"), 404);
    assert_eq!(a.owner_status("O-1"), 404);

    // A suspension made with the command line while A's gateway is down is
    // published when it starts again; B's reactivation over HTTP reaches A.
    a.kill();
    a.cli(&["owners", "suspend", "O-2", "--by", "staff-li"]);
    a.start();
    let suspended = wait_for(Duration::from_secs(60), || {
        b.status_of("O-2").as_deref() == Some("suspended")
    });
    assert!(suspended, "B: O-2 not suspended: {}\n{}", a.log(), b.log());
    assert_eq!(
        b.identify(&biden_probe),
        None,
        "a suspended owner is not identified"
    );
    let (s, v) = json(b.request("POST", "/api/v1/owners/O-2/activate").call());
    assert!(s == 200 || s == 204, "activate on B: {s} {v}");
    a.wait_identified(&biden_probe, Some("O-2"), "owner 2 reactivated on B");
    assert_eq!(a.status_of("O-2").as_deref(), Some("active"));

    // The broker restarts without persistence: its retained messages are
    // gone. An enrolment made while it is down waits in A's database and is
    // published once it is back; the boxes notice what the broker lacks and
    // publish it again, so a third box, new to the site, learns owners 2
    // and 3 and not owner 1.
    broker.stop();
    a.enrol("O-3", "Owner Three", &powell_enrol);
    std::thread::sleep(Duration::from_secs(1));
    broker.restart();
    b.wait_identified(
        &powell_probe,
        Some("O-3"),
        "owner 3 enrolled while the broker was down",
    );
    let restored = wait_for(Duration::from_secs(60), || {
        let (o1, o2) = (
            retained_opt(&broker, &o1_topic),
            retained_opt(&broker, &o2_topic),
        );
        o1.is_some_and(|m| open(&o1_topic, &m).1.state.is_none())
            && o2.is_some_and(|m| open(&o2_topic, &m).1.state.is_some())
    });
    assert!(restored, "the registry is back on the broker: {}", a.log());
    let mut c = Gatebox::new("box-c", &broker.url());
    c.start();
    c.wait_identified(&biden_probe, Some("O-2"), "a new box catches up");
    c.wait_identified(&powell_probe, Some("O-3"), "a new box catches up");
    assert_eq!(c.identify(&obama_probe), None);
    assert_eq!(c.owner_status("O-1"), 404);
    // A box never applies its own messages when they come back from the
    // broker (doing so before the PUBACK would undo a newer local change).
    let echoes: Vec<String> = a
        .log()
        .lines()
        .filter(|l| l.contains("registry sync: applied") && l.contains("@box-a"))
        .map(str::to_owned)
        .collect();
    assert!(echoes.is_empty(), "A applied its own messages: {echoes:#?}");
}
