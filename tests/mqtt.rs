//! MQTT publishing against a real mosquitto on 127.0.0.1: outages, a
//! `kill -9`, the last will, gate open expiry, signed commands, TLS and
//! login errors. Events go through the real outbox (SQLite in a temp dir)
//! and the real publisher.
//!
//! The broker runs without persistence, so a subscriber must be back before
//! the publisher delivers the backlog. Where a test restarts the broker,
//! the publisher reaches it through a [`broker::Valve`] (a TCP relay) that
//! the test opens only once its subscriber has resubscribed.

mod common;

use common::broker;
use common::broker::wait_for;
use common::mqtt::{Msg, TestClient};

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use broker::{Broker, Valve, mosquitto_available, write_file};
use facegate::config::CameraRole;
use facegate::events::{Event, EventKind, EventStore, Place};
use facegate::http::commands;
use facegate::publish::config::Secret;
use facegate::publish::{self, MqttConfig, PublisherSetup, messages_for, sign};
use facegate::registry::{Gallery, Registry, Subject};

const CMD_SECRET: &str = "command-centre-secret-0123456789";
const GATE_SECRET: &str = "gate-1-controller-secret-0123";

/// Settings for fast tests: short backoff and timeouts. Logs go to the
/// test output with `FACEGATE_LOG=debug` (or another filter).
fn test_cfg(url: &str) -> MqttConfig {
    if let Ok(filter) = std::env::var("FACEGATE_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    MqttConfig {
        url: url.into(),
        reconnect_min_s: 0.2,
        reconnect_max_s: 1.0,
        keep_alive_s: 5,
        connect_timeout_s: 2,
        shutdown_grace_s: 1.0,
        ..Default::default()
    }
}

fn setup(site: &str, db: &Path) -> PublisherSetup {
    PublisherSetup {
        site: site.into(),
        cameras: vec!["cam-1".into(), "gate-1".into()],
        db: db.to_owned(),
        version: env!("CARGO_PKG_VERSION").into(),
    }
}

fn place(site: &str) -> Place {
    Place {
        site: site.into(),
        street: "st-1".into(),
        community: "co-1".into(),
        grid: "grid-7".into(),
        building: None,
    }
}

/// A stranger event, saved with its outbox rows in one transaction.
fn save_stranger(store: &EventStore, cfg: &MqttConfig, site: &str) -> String {
    let mut e = Event::new(
        EventKind::Stranger,
        OffsetDateTime::now_utc(),
        "cam-1",
        CameraRole::Patrol,
        &place(site),
    );
    e.stranger_id = Some("S-1".into());
    e.score = Some(0.21);
    store
        .save_with_outbox(&e, &messages_for(&e, cfg, site))
        .expect("save event with outbox");
    e.id
}

/// What the outage tests start from (`None`, after a loud skip, without
/// mosquitto): a broker, a valve in front of it (to cut the network), and a
/// temporary folder with the database path `r.db` in it.
fn outage_rig() -> Option<(Broker, Valve, tempfile::TempDir, PathBuf)> {
    if !mosquitto_available() {
        return None;
    }
    let broker = Broker::start();
    let valve = Valve::new(broker.port());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    Some((broker, valve, dir, db))
}

fn outbox_rows(db: &Path) -> i64 {
    let c = rusqlite::Connection::open(db).expect("open db");
    c.query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
        .expect("count outbox")
}

// ---------------------------------------------------------------------------
// The test client (common::mqtt): subscribes, records, publishes
// ---------------------------------------------------------------------------

fn last_status(c: &TestClient, site: &str) -> Option<Value> {
    c.on(&format!("facegate/{site}/status"))
        .last()
        .map(|m| m.json.clone())
}

// ---------------------------------------------------------------------------
// 1. A 20 s broker outage
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_s_broker_outage_loses_no_event() {
    let site = "outage";
    let Some((mut broker, valve, _dir, db)) = outage_rig() else {
        return;
    };
    let store = EventStore::open(&db).unwrap();
    let cfg = test_cfg(&valve.url());
    let sub = TestClient::subscribed(broker.port(), &[&format!("facegate/{site}/events/#")]).await;
    let publisher = publish::start(&cfg, setup(site, &db), None).unwrap();
    wait_for("publisher connected", Duration::from_secs(5), || {
        publisher.stats().connected
    })
    .await;
    let before = save_stranger(&store, &cfg, site);
    publisher.notify();
    wait_for("an event before the outage", Duration::from_secs(5), || {
        sub.ids_on("facegate/").contains(&before)
    })
    .await;

    // The broker dies (SIGKILL); 200 events are decided during 20 s without it.
    let outage = Instant::now();
    broker.stop();
    valve.close();
    let mut ids = HashSet::new();
    for i in 0..200 {
        ids.insert(save_stranger(&store, &cfg, site));
        publisher.notify();
        if i % 20 == 19 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    wait_for("publisher to notice", Duration::from_secs(10), || {
        !publisher.stats().connected
    })
    .await;
    assert_eq!(
        outbox_rows(&db),
        400,
        "200 events + 200 alerts wait in the outbox"
    );
    let left = Duration::from_secs(20).saturating_sub(outage.elapsed());
    tokio::time::sleep(left).await;
    let stats = publisher.stats();
    assert!(!stats.connected);
    assert!(stats.last_error.is_some(), "{stats:?}");

    // Back: the subscriber resubscribes first, then the gateway may reconnect.
    let subs = sub.subacks();
    broker.restart();
    wait_for("resubscription", Duration::from_secs(10), || {
        sub.subacks() > subs
    })
    .await;
    valve.open();
    let t = Instant::now();
    wait_for(
        "all 200 ids after the restart",
        Duration::from_secs(30),
        || {
            let got: HashSet<String> = sub.ids_on("facegate/").into_iter().collect();
            ids.is_subset(&got)
        },
    )
    .await;
    let recovery = t.elapsed();
    let received = sub.ids_on(&format!("facegate/{site}/events/"));
    let distinct: HashSet<&String> = received.iter().collect();
    for id in &distinct {
        assert!(ids.contains(*id) || **id == before, "unknown id {id}");
    }
    let duplicates = received.len() - distinct.len();
    wait_for("outbox emptied", Duration::from_secs(10), || {
        outbox_rows(&db) == 0
    })
    .await;
    let stats = publisher.stats();
    assert!(stats.delivered >= 402, "{stats:?}");
    assert_eq!(stats.dropped_age + stats.dropped_size + stats.expired, 0);
    eprintln!(
        "outage test: outage {:.1} s, backlog delivered {:.2} s after the valve opened, {duplicates} duplicates (same id), {} reconnects",
        outage.elapsed().as_secs_f64() - recovery.as_secs_f64(),
        recovery.as_secs_f64(),
        stats.connects
    );
    publisher.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_cuts_in_the_middle_of_a_backlog_lose_nothing() {
    let site = "cuts";
    let Some((broker, valve, _dir, db)) = outage_rig() else {
        return;
    };
    let store = EventStore::open(&db).unwrap();
    let cfg = test_cfg(&valve.url());
    let sub = TestClient::subscribed(broker.port(), &[&format!("facegate/{site}/events/#")]).await;
    valve.close();
    let publisher = publish::start(&cfg, setup(site, &db), None).unwrap();
    let ids: HashSet<String> = (0..1500)
        .map(|_| save_stranger(&store, &cfg, site))
        .collect();
    // The broker stays up (and keeps our session): each cut drops messages
    // in flight, which must be sent again, and nothing else.
    let mut cuts = 0;
    for cut in 1..=8 {
        if outbox_rows(&db) < 400 {
            break;
        }
        cuts = cut;
        let seen = sub.ids_on("facegate/").len();
        valve.open();
        let end = Instant::now() + Duration::from_secs(20);
        while sub.ids_on("facegate/").len() < seen + 60 {
            assert!(
                Instant::now() < end,
                "cut {cut}: no progress; {:?}, outbox {}",
                publisher.stats(),
                outbox_rows(&db)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        valve.close();
        wait_for("the cut noticed", Duration::from_secs(5), || {
            !publisher.stats().connected
        })
        .await;
        if cut % 4 == 0 {
            eprintln!(
                "cut {cut}: {} messages received so far",
                sub.ids_on("facegate/").len()
            );
        }
    }
    assert!(cuts >= 4, "only {cuts} cuts before the backlog ran out");
    valve.open();
    wait_for("every id", Duration::from_secs(30), || {
        let got: HashSet<String> = sub.ids_on("facegate/").into_iter().collect();
        ids.is_subset(&got)
    })
    .await;
    wait_for("outbox emptied", Duration::from_secs(10), || {
        outbox_rows(&db) == 0
    })
    .await;
    let received = sub.ids_on("facegate/");
    assert!(received.iter().all(|i| ids.contains(i)));
    eprintln!(
        "cuts test: {cuts} cuts, {} ids, {} messages received on events/ ({} duplicates, same ids)",
        ids.len(),
        received.len(),
        received.len() - ids.len()
    );
    publisher.shutdown().await;
}

// ---------------------------------------------------------------------------
// 2. kill -9 with undelivered events, and the last will
// ---------------------------------------------------------------------------

/// The gateway's publisher in a child process (this test binary, re-run
/// with `FACEGATE_MQTT_CHILD` set), driven over stdin/stdout.
struct ChildGateway {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
}

impl ChildGateway {
    fn spawn(url: &str, db: &Path, site: &str) -> Self {
        let spec = json!({ "url": url, "db": db, "site": site }).to_string();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_gateway",
                "--include-ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FACEGATE_MQTT_CHILD", spec)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start child gateway");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                // libtest may print "test child_gateway ... " first.
                if let Some(at) = l.find("CHILD ") {
                    let _ = tx.send(l[at + 6..].to_owned());
                }
            }
        });
        let stdin = child.stdin.take();
        let g = ChildGateway {
            child,
            stdin,
            lines,
        };
        assert_eq!(g.expect(Duration::from_secs(20)), "READY");
        g
    }

    fn expect(&self, timeout: Duration) -> String {
        tokio::task::block_in_place(|| self.lines.recv_timeout(timeout))
            .expect("a line from the child gateway")
    }

    /// Makes the child decide `n` stranger events; returns their ids.
    fn produce(&mut self, n: usize) -> Vec<String> {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "produce {n}").unwrap();
        stdin.flush().unwrap();
        let line = self.expect(Duration::from_secs(30));
        let ids = line.strip_prefix("PRODUCED ").expect("PRODUCED line");
        ids.split(',').map(str::to_owned).collect()
    }

    fn kill_9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    fn finish(mut self) {
        drop(self.stdin.take());
        let status = tokio::task::block_in_place(|| self.child.wait()).unwrap();
        assert!(status.success());
    }
}

#[test]
#[ignore = "the gateway side of kill_9_...: started by that test with FACEGATE_MQTT_CHILD"]
fn child_gateway() {
    let Ok(spec) = std::env::var("FACEGATE_MQTT_CHILD") else {
        return;
    };
    let spec: Value = serde_json::from_str(&spec).unwrap();
    let (url, site) = (
        spec["url"].as_str().unwrap(),
        spec["site"].as_str().unwrap(),
    );
    let db = PathBuf::from(spec["db"].as_str().unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cfg = test_cfg(url);
        let store = EventStore::open(&db).unwrap();
        let publisher = publish::start(&cfg, setup(site, &db), None).unwrap();
        println!("CHILD READY");
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(4);
        std::thread::spawn(move || {
            for l in std::io::stdin().lines().map_while(Result::ok) {
                if tx.blocking_send(l).is_err() {
                    break;
                }
            }
        });
        while let Some(line) = rx.recv().await {
            if let Some(n) = line.strip_prefix("produce ") {
                let ids: Vec<String> = (0..n.parse::<usize>().unwrap())
                    .map(|_| {
                        let id = save_stranger(&store, &cfg, site);
                        publisher.notify();
                        id
                    })
                    .collect();
                println!("CHILD PRODUCED {}", ids.join(","));
            }
        }
        publisher.shutdown().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_and_the_last_will_marks_the_gateway_offline() {
    let site = "kill9";
    let Some((broker, valve, _dir, db)) = outage_rig() else {
        return;
    };
    let sub = TestClient::subscribed(broker.port(), &[&format!("facegate/{site}/#")]).await;
    let online = |sub: &TestClient, n: usize| {
        sub.on(&format!("facegate/{site}/status"))
            .iter()
            .filter(|m| m.json["state"] == "online")
            .count()
            >= n
    };

    // The gateway comes up, says online, and dies without a word.
    let a = ChildGateway::spawn(&valve.url(), &db, site);
    wait_for("status online", Duration::from_secs(10), || online(&sub, 1)).await;
    let first = last_status(&sub, site).unwrap();
    assert_eq!(first["version"], json!(env!("CARGO_PKG_VERSION")));
    assert_eq!(first["cameras"], json!(["cam-1", "gate-1"]));
    assert!(first["started_at"].as_str().unwrap().ends_with("+08:00"));
    a.kill_9();
    wait_for("the last will", Duration::from_secs(10), || {
        last_status(&sub, site).is_some_and(|s| s["state"] == "offline")
    })
    .await;
    let will = last_status(&sub, site).unwrap();
    assert_eq!(will["reason"], json!("connection lost"));
    assert_eq!(will["started_at"], first["started_at"]);

    // A second run: online again; 100 events delivered, then the network is
    // cut, 100 more wait in the outbox, and the process is killed.
    let mut b = ChildGateway::spawn(&valve.url(), &db, site);
    wait_for("status online again", Duration::from_secs(10), || {
        online(&sub, 2)
    })
    .await;
    let mut ids = b.produce(100);
    wait_for("the first 100 events", Duration::from_secs(15), || {
        let got: HashSet<String> = sub
            .ids_on(&format!("facegate/{site}/events/"))
            .into_iter()
            .collect();
        ids.iter().all(|i| got.contains(i))
    })
    .await;
    wait_for("outbox emptied", Duration::from_secs(10), || {
        outbox_rows(&db) == 0
    })
    .await;
    valve.close();
    wait_for(
        "the will after the network cut",
        Duration::from_secs(10),
        || last_status(&sub, site).is_some_and(|s| s["state"] == "offline"),
    )
    .await;
    let undelivered = b.produce(100);
    assert_eq!(outbox_rows(&db), 200, "100 events + 100 alerts undelivered");
    b.kill_9();
    ids.extend(undelivered.iter().cloned());

    // Restart: everything arrives, the status is online (and retained).
    valve.open();
    let c = ChildGateway::spawn(&valve.url(), &db, site);
    wait_for("all 200 ids after kill -9", Duration::from_secs(20), || {
        let got: HashSet<String> = sub
            .ids_on(&format!("facegate/{site}/events/"))
            .into_iter()
            .collect();
        ids.iter().all(|i| got.contains(i))
    })
    .await;
    let alerts: HashSet<String> = sub
        .ids_on(&format!("facegate/{site}/alerts"))
        .into_iter()
        .collect();
    assert!(
        undelivered.iter().all(|i| alerts.contains(i)),
        "alerts delivered too"
    );
    wait_for("outbox emptied", Duration::from_secs(10), || {
        outbox_rows(&db) == 0
    })
    .await;
    wait_for(
        "status online a third time",
        Duration::from_secs(10),
        || online(&sub, 3),
    )
    .await;
    let late = TestClient::start(broker.port(), &[&format!("facegate/{site}/status")]);
    wait_for("the retained status", Duration::from_secs(5), || {
        !late.msgs().is_empty()
    })
    .await;
    let retained = &late.msgs()[0];
    assert!(retained.retain);
    assert_eq!(retained.json["state"], json!("online"));
    assert_ne!(retained.json["started_at"], first["started_at"]);
    c.finish();
    // A clean stop says offline with its reason (no will).
    wait_for(
        "offline after a clean stop",
        Duration::from_secs(10),
        || {
            last_status(&sub, site)
                .is_some_and(|s| s["state"] == "offline" && s["reason"] == "shutdown")
        },
    )
    .await;
}

// ---------------------------------------------------------------------------
// 3. A gate open that expired while the broker was away is never sent
// ---------------------------------------------------------------------------

fn owner_pass(store: &EventStore, cfg: &MqttConfig, site: &str) -> Event {
    let mut e = Event::new(
        EventKind::OwnerPass,
        OffsetDateTime::now_utc(),
        "gate-1",
        CameraRole::Gate,
        &place(site),
    );
    e.subject = Some(Subject::Owner {
        id: "A-101".into(),
        name: "Li Wei".into(),
    });
    e.score = Some(0.71);
    e.gate = Some("gate-1".into());
    store
        .save_with_outbox(&e, &messages_for(&e, cfg, site))
        .unwrap();
    e
}

fn verify_gate_open(m: &Msg, site: &str) -> bool {
    let j = &m.json;
    let signed = sign::gate_open_string(
        site,
        j["gate"].as_str().unwrap_or_default(),
        j["ts"].as_str().unwrap_or_default(),
        j["expires_at"].as_str().unwrap_or_default(),
        j["nonce"].as_str().unwrap_or_default(),
    );
    sign::verify_hex(
        &Secret::new(GATE_SECRET.as_bytes().to_vec()),
        signed.as_bytes(),
        j["sig"].as_str().unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_open_that_expired_during_an_outage_is_never_sent() {
    let site = "gates";
    let Some((broker, valve, dir, db)) = outage_rig() else {
        return;
    };
    let store = EventStore::open(&db).unwrap();
    let secret = write_file(dir.path(), "gate-1.secret", GATE_SECRET.as_bytes());
    let mut cfg = test_cfg(&valve.url());
    cfg.gate_open_ttl_s = 1;
    cfg.gate_secrets
        .insert("gate-1".into(), format!("file:{}", secret.display()));
    let sub = TestClient::subscribed(broker.port(), &[&format!("facegate/{site}/#")]).await;
    let publisher = publish::start(&cfg, setup(site, &db), None).unwrap();
    wait_for("connected", Duration::from_secs(5), || {
        publisher.stats().connected
    })
    .await;

    valve.close();
    wait_for("disconnected", Duration::from_secs(5), || {
        !publisher.stats().connected
    })
    .await;
    let late = owner_pass(&store, &cfg, site);
    publisher.notify();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    valve.open();
    wait_for("reconnected", Duration::from_secs(5), || {
        publisher.stats().connected
    })
    .await;
    let fresh = owner_pass(&store, &cfg, site);
    publisher.notify();

    let gate_topic = format!("facegate/{site}/gates/gate-1/open");
    wait_for(
        "the fresh open and both events",
        Duration::from_secs(10),
        || {
            let events = sub.ids_on(&format!("facegate/{site}/events/"));
            !sub.on(&gate_topic).is_empty()
                && events.contains(&late.id)
                && events.contains(&fresh.id)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let opens = sub.on(&gate_topic);
    assert_eq!(opens.len(), 1, "only the fresh open: {opens:?}");
    let open = &opens[0];
    assert_eq!(open.json["event_id"], json!(fresh.id));
    assert!(!open.retain);
    assert!(verify_gate_open(open, site), "signature: {}", open.json);
    let ts = OffsetDateTime::parse(open.json["ts"].as_str().unwrap(), &Rfc3339).unwrap();
    let exp = OffsetDateTime::parse(open.json["expires_at"].as_str().unwrap(), &Rfc3339).unwrap();
    assert_eq!(exp - ts, time::Duration::seconds(1));
    assert_eq!(open.expiry, Some(1), "the broker drops it too once expired");
    assert_eq!(publisher.stats().expired, 1);
    assert_eq!(outbox_rows(&db), 0);
    // Nothing retained on the gate topic for a controller that connects later.
    let later = TestClient::subscribed(broker.port(), &[&format!("facegate/{site}/gates/#")]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(later.msgs().is_empty(), "gate commands are never retained");
    publisher.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_drops_the_oldest_and_says_so_on_the_status_topic() {
    if !mosquitto_available() {
        return;
    }
    let site = "bounds";
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let store = EventStore::open(&db).unwrap();
    let mut cfg = test_cfg(&broker.url());
    cfg.outbox_max_rows = 10;
    cfg.alert_expiry_s = 600;
    let sub = TestClient::subscribed(broker.port(), &[&format!("facegate/{site}/#")]).await;
    // 30 events (60 messages) waited while the gateway was down.
    let ids: Vec<String> = (0..30).map(|_| save_stranger(&store, &cfg, site)).collect();
    let publisher = publish::start(&cfg, setup(site, &db), None).unwrap();
    wait_for("the newest 5 events", Duration::from_secs(10), || {
        let got = sub.ids_on(&format!("facegate/{site}/events/"));
        ids[25..].iter().all(|i| got.contains(i))
    })
    .await;
    let status = last_status(&sub, site).unwrap();
    assert_eq!(status["outbox"]["dropped_size"], json!(50), "{status}");
    let got = sub.ids_on(&format!("facegate/{site}/"));
    assert!(
        ids[..25].iter().all(|i| !got.contains(i)),
        "the oldest were dropped"
    );
    assert_eq!(publisher.stats().dropped_size, 50);
    let alerts = sub.on(&format!("facegate/{site}/alerts"));
    assert_eq!(alerts.len(), 5);
    assert!(
        alerts
            .iter()
            .all(|m| m.expiry.is_some_and(|e| e <= 600 && e > 590))
    );
    publisher.shutdown().await;
}

// ---------------------------------------------------------------------------
// 4. Commands: refused with a reason and no effect, or run
// ---------------------------------------------------------------------------

fn command(cmd: &str, site: &str, ts: OffsetDateTime, nonce: &str, args: Value) -> Vec<u8> {
    commands::sign_command(
        &Secret::new(CMD_SECRET.as_bytes().to_vec()),
        site,
        cmd,
        &ts.format(&Rfc3339).unwrap(),
        nonce,
        &args,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_verified_and_a_valid_watchlist_add_makes_a_hit() {
    let Some(faces) = common::faces_dir() else {
        return;
    };
    if !mosquitto_available() {
        return;
    }
    use facegate::identify::{self, Decision};
    use facegate::vision::Checks;
    use facegate::vision::image::{PhotoLimits, RgbView, load_photo};

    let site = "cmds";
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let cmd_secret = write_file(dir.path(), "cmd.secret", CMD_SECRET.as_bytes());
    let gate_secret = write_file(dir.path(), "gate.secret", GATE_SECRET.as_bytes());
    let mut cfg = test_cfg(&broker.url());
    cfg.command_secret = Some(format!("file:{}", cmd_secret.display()));
    cfg.gate_secrets
        .insert("gate-1".into(), format!("file:{}", gate_secret.display()));

    let config = common::shipped_config();
    let engine = Arc::new(Mutex::new(common::engine()));
    let (model, dim) = {
        let e = engine.lock().unwrap();
        (e.model_id().to_owned(), e.dim())
    };
    let now = OffsetDateTime::now_utc();
    let gallery = Arc::new(Mutex::new(
        Gallery::open(Registry::open(&db).unwrap(), &model, dim, now).unwrap(),
    ));
    let probe = load_photo(
        &faces.join("identities/Colin_Powell/2.jpg"),
        PhotoLimits::default(),
    )
    .unwrap();
    let who = |engine: &Arc<Mutex<_>>, gallery: &Arc<Mutex<Gallery>>| {
        identify::identify(
            &mut engine.lock().unwrap(),
            &gallery.lock().unwrap(),
            RgbView::from_image(&probe),
            Checks {
                liveness: false,
                pose: true,
            },
            config.matching.threshold,
            OffsetDateTime::now_utc(),
        )
        .unwrap()
    };
    let before = who(&engine, &gallery);
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].decision, Decision::Stranger);

    let e2 = engine.clone();
    let embed: commands::EmbedFn = Box::new(move |bytes: &[u8]| {
        let img = facegate::vision::image::decode_photo(bytes, "photo", PhotoLimits::default())
            .map_err(|e| e.to_string())?;
        identify::enrolment_template(&mut e2.lock().unwrap(), RgbView::from_image(&img), "photo")
            .map(|(_, t)| t)
            .map_err(|e| e.to_string())
    });
    let handler = commands::CommandHandler::new(&cfg, site, gallery.clone(), embed).unwrap();

    let photo = std::fs::read(faces.join("identities/Colin_Powell/1.jpg")).unwrap();
    let add_args = json!({
        "name": "Colin Powell",
        "reason": "test: missing person",
        "priority": "high",
        "photo": base64::engine::general_purpose::STANDARD.encode(&photo),
        "by": "duty officer 12",
    });
    let cmd_topic = |name: &str| format!("facegate/{site}/cmd/{name}");
    let centre = TestClient::subscribed(
        broker.port(),
        &[
            &format!("facegate/{site}/cmd/+/reply"),
            &format!("facegate/{site}/gates/#"),
        ],
    )
    .await;

    // A valid command left retained on the broker before the gateway starts.
    let retained = command(
        "watchlist_add",
        site,
        OffsetDateTime::now_utc(),
        "retained-0001",
        add_args.clone(),
    );
    centre
        .publish(&cmd_topic("watchlist_add"), retained, true)
        .await;
    let publisher = publish::start(&cfg, setup(site, &db), Some(handler)).unwrap();

    let replies = |c: &TestClient| c.on(&format!("facegate/{site}/cmd/watchlist_add/reply"));
    let next_reply = |n: usize| {
        let centre = &centre;
        async move {
            wait_for("a reply", Duration::from_secs(20), || {
                replies(centre).len() >= n
            })
            .await;
            replies(centre)[n - 1].json.clone()
        }
    };
    let r = next_reply(1).await;
    assert_eq!(
        (r["ok"].clone(), r["code"].clone()),
        (json!(false), json!("retained")),
        "{r}"
    );
    assert_eq!(
        r["nonce"],
        json!(null),
        "refused before the signature was looked at"
    );
    // Clearing the retained message (an empty payload) gets no reply.
    centre
        .publish(&cmd_topic("watchlist_add"), Vec::new(), true)
        .await;

    let now = OffsetDateTime::now_utc();
    let stale = command(
        "watchlist_add",
        site,
        now - time::Duration::seconds(45),
        "stale-0001",
        add_args.clone(),
    );
    centre
        .publish(&cmd_topic("watchlist_add"), stale, false)
        .await;
    let r = next_reply(2).await;
    assert_eq!(r["code"], json!("stale"), "{r}");

    let mut forged: Value = serde_json::from_slice(&command(
        "watchlist_add",
        site,
        now,
        "forged-0001",
        add_args.clone(),
    ))
    .unwrap();
    forged["sig"] = json!(sign::sign_hex(
        &Secret::new(b"not-the-command-secret-000".to_vec()),
        forged["signed"].as_str().unwrap().as_bytes()
    ));
    centre
        .publish(
            &cmd_topic("watchlist_add"),
            forged.to_string().into_bytes(),
            false,
        )
        .await;
    let r = next_reply(3).await;
    assert_eq!(r["code"], json!("bad_signature"), "{r}");

    centre
        .publish(
            &cmd_topic("watchlist_add"),
            b"{\"signed\": 12".to_vec(),
            false,
        )
        .await;
    let r = next_reply(4).await;
    assert_eq!(r["code"], json!("malformed"), "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed command"),
        "{r}"
    );

    assert!(
        gallery
            .lock()
            .unwrap()
            .registry()
            .watchlist(OffsetDateTime::now_utc())
            .unwrap()
            .is_empty(),
        "refused commands changed nothing"
    );

    let valid = command(
        "watchlist_add",
        site,
        OffsetDateTime::now_utc(),
        "valid-0001",
        add_args.clone(),
    );
    centre
        .publish(&cmd_topic("watchlist_add"), valid.clone(), false)
        .await;
    let r = next_reply(5).await;
    assert_eq!(r["ok"], json!(true), "{r}");
    assert_eq!(r["nonce"], json!("valid-0001"));
    let watch_id = r["result"]["watch_id"].as_i64().unwrap();

    centre
        .publish(&cmd_topic("watchlist_add"), valid, false)
        .await;
    let r = next_reply(6).await;
    assert_eq!(r["code"], json!("replayed"), "{r}");

    let list = gallery
        .lock()
        .unwrap()
        .registry()
        .watchlist(OffsetDateTime::now_utc())
        .unwrap();
    assert_eq!(
        list.len(),
        1,
        "one entry: the valid command, not its replay"
    );
    assert_eq!(list[0].id, watch_id);
    assert_eq!(list[0].created_by, "mqtt:duty officer 12");

    // The other photo of the same man is now a watch-list hit.
    let after = who(&engine, &gallery);
    assert_eq!(
        after[0].decision,
        Decision::Watchlist,
        "{:?}",
        after[0].best_match
    );
    match &after[0].best_match.as_ref().unwrap().subject {
        Subject::Watch { id, name, .. } => {
            assert_eq!((*id, name.as_str()), (watch_id, "Colin Powell"))
        }
        other => panic!("not a watch-list match: {other:?}"),
    }

    // A remote gate open goes out signed; status answers with the counters.
    let open = command(
        "gate_open",
        site,
        OffsetDateTime::now_utc(),
        "open-0001",
        json!({ "gate": "gate-1", "reason": "visitor" }),
    );
    centre.publish(&cmd_topic("gate_open"), open, false).await;
    let gate_topic = format!("facegate/{site}/gates/gate-1/open");
    wait_for("the gate open", Duration::from_secs(10), || {
        !centre.on(&gate_topic).is_empty()
    })
    .await;
    let g = &centre.on(&gate_topic)[0];
    assert_eq!(g.json["source"], json!("command"));
    assert!(verify_gate_open(g, site));
    let st = command(
        "status",
        site,
        OffsetDateTime::now_utc(),
        "status-0001",
        Value::Null,
    );
    centre.publish(&cmd_topic("status"), st, false).await;
    let status_reply = format!("facegate/{site}/cmd/status/reply");
    wait_for("status reply", Duration::from_secs(10), || {
        !centre.on(&status_reply).is_empty()
    })
    .await;
    let s = &centre.on(&status_reply)[0].json;
    assert_eq!(s["ok"], json!(true), "{s}");
    assert_eq!(s["result"]["site"], json!(site));
    assert!(
        s["result"]["outbox"]["commands_refused"].as_u64().unwrap() >= 5,
        "{s}"
    );
    assert_eq!(
        replies(&centre).len(),
        6,
        "no reply to the retained-message clear"
    );
    publisher.shutdown().await;
}

// ---------------------------------------------------------------------------
// 5. mqtts:// and broker login: it works, and errors say what to fix
// ---------------------------------------------------------------------------

fn openssl(dir: &Path, args: &str) -> bool {
    Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Test keys only: the folder and its files readable by the broker's user.
fn readable_by_all(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let _ = std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o644));
    }
}

/// A CA, a broker certificate for 127.0.0.1, a client certificate, and a
/// stranger CA.
fn make_certs(dir: &Path) -> bool {
    write_file(dir, "san.ext", b"subjectAltName=IP:127.0.0.1\n");
    write_file(dir, "client.ext", b"extendedKeyUsage=clientAuth\n");
    let new_key = "req -newkey rsa:2048 -nodes -days 2";
    [
        format!("{new_key} -x509 -subj /CN=test-ca -keyout ca.key -out ca.pem"),
        format!("{new_key} -subj /CN=127.0.0.1 -keyout server.key -out server.csr"),
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
         -extfile san.ext -out server.pem"
            .into(),
        format!("{new_key} -subj /CN=gateway -keyout client.key -out client.csr"),
        "x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
         -extfile client.ext -out client.pem"
            .into(),
        format!("{new_key} -x509 -subj /CN=other-ca -keyout other.key -out other.pem"),
    ]
    .iter()
    .all(|cmd| openssl(dir, cmd))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_works_and_bad_certificates_or_logins_are_named() {
    if !mosquitto_available() {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    if !make_certs(certs.path()) {
        if std::env::var_os("FACEGATE_REQUIRE_MOSQUITTO").is_some() {
            panic!("openssl could not make test certificates");
        }
        eprintln!("\n!!!!! SKIPPED: openssl not usable; the TLS test did not run !!!!!\n");
        return;
    }
    let c = certs.path();
    // mosquitto started as root drops to its own user before it reads keys.
    readable_by_all(c);
    let tls = format!(
        "cafile {}\ncertfile {}\nkeyfile {}\n",
        c.join("ca.pem").display(),
        c.join("server.pem").display(),
        c.join("server.key").display()
    );
    let broker = Broker::start_with(&tls, "allow_anonymous true\n");
    let site = "tls";
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let store = EventStore::open(&db).unwrap();
    let url = format!("mqtts://127.0.0.1:{}", broker.port());

    // The right CA: connected, an event delivered.
    let mut cfg = test_cfg(&url);
    cfg.ca_file = Some(c.join("ca.pem"));
    let p = publish::start(&cfg, setup(site, &db), None).unwrap();
    wait_for("TLS connection", Duration::from_secs(10), || {
        p.stats().connected
    })
    .await;
    save_stranger(&store, &cfg, site);
    p.notify();
    wait_for("delivery over TLS", Duration::from_secs(10), || {
        outbox_rows(&db) == 0
    })
    .await;
    p.shutdown().await;

    // Another CA: refused, and the error names the key to fix.
    cfg.ca_file = Some(c.join("other.pem"));
    let p = publish::start(&cfg, setup(site, &db), None).unwrap();
    wait_for("a TLS error", Duration::from_secs(10), || {
        p.stats().last_error.is_some()
    })
    .await;
    let e = p.stats().last_error.unwrap();
    assert!(e.contains("mqtt.ca_file"), "{e}");
    assert!(!p.stats().connected);
    p.shutdown().await;

    // A broker that wants client certificates: without one the error says
    // so; with one it connects.
    let mtls = Broker::start_with(
        &format!("{tls}require_certificate true\n"),
        "allow_anonymous true\n",
    );
    let url = format!("mqtts://127.0.0.1:{}", mtls.port());
    let mut cfg = test_cfg(&url);
    cfg.ca_file = Some(c.join("ca.pem"));
    let p = publish::start(&cfg, setup(site, &db), None).unwrap();
    wait_for(
        "a client certificate error",
        Duration::from_secs(10),
        || p.stats().last_error.is_some(),
    )
    .await;
    let e = p.stats().last_error.unwrap();
    assert!(e.contains("mqtt.client_cert_file"), "{e}");
    p.shutdown().await;
    cfg.client_cert_file = Some(c.join("client.pem"));
    cfg.client_key_file = Some(c.join("client.key"));
    let p = publish::start(&cfg, setup(site, &db), None).unwrap();
    wait_for("mutual TLS", Duration::from_secs(10), || {
        p.stats().connected
    })
    .await;
    p.shutdown().await;

    // A broker with logins: a wrong password is named as such, and the
    // password never appears in the error.
    let pwfile = dir.path().join("passwd");
    let made = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&pwfile)
        .args(["gateway", "right-password"])
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        eprintln!(
            "\n!!!!! SKIPPED: mosquitto_passwd not usable; the login part did not run !!!!!\n"
        );
        return;
    }
    readable_by_all(dir.path());
    let auth = Broker::start_with(
        "",
        &format!(
            "allow_anonymous false\npassword_file {}\n",
            pwfile.display()
        ),
    );
    let user = write_file(dir.path(), "user", b"gateway\n");
    let pass = write_file(dir.path(), "pass", b"wrong-password\n");
    let mut cfg = test_cfg(&auth.url());
    cfg.username = Some(format!("file:{}", user.display()));
    cfg.password = Some(format!("file:{}", pass.display()));
    let p = publish::start(&cfg, setup(site, &db), None).unwrap();
    wait_for("a login error", Duration::from_secs(10), || {
        p.stats().last_error.is_some()
    })
    .await;
    let e = p.stats().last_error.unwrap();
    // mosquitto answers a wrong password with "not authorized" (0x87).
    assert!(e.contains("refused") && e.contains("mqtt.password"), "{e}");
    assert!(!e.contains("wrong-password"));
    p.shutdown().await;
    std::fs::write(&pass, "right-password\n").unwrap();
    let p = publish::start(&cfg, setup(site, &db), None).unwrap();
    wait_for("login accepted", Duration::from_secs(10), || {
        p.stats().connected
    })
    .await;
    p.shutdown().await;
}
