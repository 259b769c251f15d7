//! `run::run`, the one place that starts and stops the gateway, through the
//! real parts: a camera on a still photo, the real models, a SQLite file,
//! mosquitto and the HTTP server on 127.0.0.1. Stopping goes intake →
//! drain → flush: a track still open at the stop is decided then, stored,
//! and on the broker before `run` returns.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::broker::{Broker, free_port, mosquitto_available, wait_for};
use facegate::events::{EventFilter, EventKind, EventStore};
use facegate::registry::{Registry, Role};
use tokio_util::sync::CancellationToken;

/// `facegate_faces_total` of `camera` in a Prometheus page.
fn faces_total(metrics: &str, camera: &str) -> u64 {
    let key = format!("facegate_faces_total{{camera=\"{camera}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The nice value of this process's thread named `name`, from
/// `/proc/self/task/*/stat` (field 19, counted after the name).
fn thread_nice(name: &str) -> Option<i32> {
    std::fs::read_dir("/proc/self/task")
        .ok()?
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .find_map(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().nth(16)?.parse().ok()
        })
}

/// The GStreamer streaming threads of this process (their names are
/// `element:pad`) with their nice values.
fn streaming_thread_nices() -> Vec<(String, i32)> {
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| {
            let name = std::fs::read_to_string(t.path().join("comm")).ok()?;
            let name = name.trim_end().to_owned();
            if !(name.contains(":src") || name.contains(":sink")) {
                return None;
            }
            let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
            let (_, rest) = stat.rsplit_once(')')?;
            Some((name, rest.split_whitespace().nth(16)?.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_open_at_the_stop_is_decided_stored_and_published_before_run_returns() {
    let Some(faces) = common::faces_dir() else {
        return;
    };
    if !mosquitto_available() {
        return;
    }
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let token = Registry::open(&db)
        .unwrap()
        .token_create(
            "watcher",
            Role::Viewer,
            "test",
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();

    // Everything the gateway sends, as the command centre would see it.
    let out_file = dir.path().join("sub.txt");
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(["-t", "facegate/#", "-t", "probe", "-v", "-q", "1"])
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub (apt-get install mosquitto-clients)");
    let received = || {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&out_file) {
            let _ = f.read_to_string(&mut s);
        }
        s
    };
    wait_for("the subscriber", Duration::from_secs(20), || {
        let _ = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
            .args(["-t", "probe", "-m", "up"])
            .status();
        received().contains("probe up")
    })
    .await;

    let mut config = common::shipped_config();
    config.site.code = "run-1".into();
    config.mqtt.url = broker.url();
    let port = free_port();
    config.http.listen = format!("127.0.0.1:{port}");
    // The person in view is never decided while the camera runs (no
    // stranger alert before the track ends, no track timeout): only the
    // stop ends the track, and decides it.
    config.decide.stranger_min_faces = 1_000_000;
    config.decide.stranger_min_px = 1.0e9;
    config.decide.decide_within_s = 1.0e9;
    config.decide.track_timeout_s = 1.0e6;
    let photo = faces.join("identities/Ariel_Sharon/1.jpg");
    config.cameras = vec![
        toml::from_str(&format!(
            "name = \"patrol-1\"\nurl = \"image://{}\"\nrole = \"patrol\"\ndetect_fps = 5.0\n",
            photo.display()
        ))
        .unwrap(),
    ];
    let cancel = CancellationToken::new();
    let gateway = {
        let (db, data, c) = (db.clone(), dir.path().join("data"), cancel.clone());
        tokio::spawn(async move { facegate::run::run(config, &db, &data, c).await })
    };

    // Until the camera has seen the face on a few frames (one open track).
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let auth = format!("Bearer {token}");
    let seen = move || {
        ureq::get(&metrics)
            .set("authorization", &auth)
            .timeout(Duration::from_secs(5))
            .call()
            .ok()
            .and_then(|r| r.into_string().ok())
            .map_or(0, |m| faces_total(&m, "patrol-1"))
    };
    let mut faces_seen = 0;
    for _ in 0..1200 {
        faces_seen = tokio::task::spawn_blocking(seen.clone()).await.unwrap();
        if faces_seen >= 5 || gateway.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        faces_seen >= 5,
        "the camera saw {faces_seen} faces in 120 s"
    );
    // A patrol camera's recognition thread yields to the gates':
    // `ingest.patrol_nice` steps nicer than the process.
    let base = facegate::sched::current_nice().unwrap();
    let patrol_nice = facegate::config::Config::default().ingest.patrol_nice;
    assert!(patrol_nice > 0);
    assert_eq!(
        thread_nice("recog-patrol-1"),
        Some((base + patrol_nice).min(19)),
        "the patrol camera's recognition thread"
    );
    // And so do its GStreamer streaming threads (named `element:pad`).
    let streaming = streaming_thread_nices();
    assert!(!streaming.is_empty(), "no GStreamer streaming thread found");
    for (name, nice) in &streaming {
        assert_eq!(
            *nice,
            (base + patrol_nice).min(19),
            "streaming thread {name} of the patrol camera: {streaming:?}"
        );
    }
    let store = EventStore::open(&db).unwrap();
    let track_events = |store: &EventStore| {
        store
            .list(&EventFilter {
                limit: 100,
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .filter(|e| e.track_id.is_some())
            .collect::<Vec<_>>()
    };
    assert!(
        track_events(&store).is_empty(),
        "nothing is decided while the camera runs"
    );

    cancel.cancel();
    let r = tokio::time::timeout(Duration::from_secs(60), gateway)
        .await
        .expect("run returns after the stop");
    r.unwrap().expect("run ends without an error");

    // Drained: the open track was decided at the stop and stored.
    let events = track_events(&store);
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.kind, EventKind::Undecided, "{e:?}");
    assert_eq!(e.camera, "patrol-1");
    // Flushed: the outbox held nothing undelivered when run returned.
    let pending: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM outbox WHERE delivered_at IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(pending, 0, "messages left in the outbox after the stop");
    let id = e.id.clone();
    wait_for("the event on the broker", Duration::from_secs(10), || {
        received()
            .lines()
            .any(|l| l.starts_with("facegate/run-1/events/patrol-1 ") && l.contains(&id))
    })
    .await;
    let _ = sub.kill();
    let _ = sub.wait();
}
