//! `run::run` (cameras, no HTTP) end to end over a real RTSP server on 127.0.0.1: GStreamer
//! decoding, the real models, a real SQLite file. An owner at a gate camera
//! gets a pass; the camera going away, coming back and stalling are events.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::rtsp::{Codec, RtspServer};
use facegate::events::{Event, EventKind, EventStore};
use tokio_util::sync::CancellationToken;

/// Polls the events table until `pred` holds for one event after `after` (index), or times out.
async fn wait_for(
    db: &Path,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    let store = EventStore::open(db).unwrap();
    let start = Instant::now();
    loop {
        let events = common::recent_events(&store);
        if let Some(e) = events.into_iter().find(|e| pred(e)) {
            return e;
        }
        assert!(start.elapsed() < timeout, "no {what} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_camera_over_rtsp_recognises_reports_outages_and_recovers() {
    let Some(faces) = common::faces_dir() else {
        return;
    };
    let video = faces.join("video");
    let server = RtspServer::start(&video.join("frec_short_hamilton_clip.mp4"), Codec::H264);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let mut config = common::shipped_config();
    config.decide.pass_cooldown_s = 1.0;
    config.cameras = vec![common::gate_camera(
        &server.url(),
        "detect_fps = 5.0\nstall_timeout_s = 2.0",
    )];
    common::enrol_clip_owner(&config, &db, &video);

    // The command centre: a real mosquitto and a subscriber to everything of the site.
    let broker = common::broker::Broker::start();
    config.mqtt.url = broker.url();
    config
        .mqtt
        .gate_secrets
        .insert("gate-1".into(), "env:FACEGATE_TEST_GATE1".into());
    // SAFETY: set before any thread of this test reads the environment.
    unsafe { std::env::set_var("FACEGATE_TEST_GATE1", "0123456789abcdef0123456789abcdef") };
    let heard = dir.path().join("mqtt.log");
    let mut sub = std::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port().to_string(),
            "-v",
            "-t",
            "facegate/#",
        ])
        .stdout(std::fs::File::create(&heard).unwrap())
        .spawn()
        .expect("mosquitto_sub");

    let cancel = CancellationToken::new();
    let live = common::spawn_live(&config, &db, dir.path(), &cancel);

    let t0 = time::OffsetDateTime::now_utc();
    let online = wait_for(&db, "camera_online", Duration::from_secs(20), |e| {
        e.kind == EventKind::CameraOnline
    })
    .await;
    assert_eq!(online.camera, "gate-1");
    let pass = wait_for(&db, "owner_pass", Duration::from_secs(60), |e| {
        e.kind == EventKind::OwnerPass
    })
    .await;
    assert!(
        matches!(&pass.subject, Some(facegate::registry::Subject::Owner { id, .. }) if id == "H-1")
    );
    assert_eq!(pass.gate.as_deref(), Some("gate-1"));
    assert!(pass.ts >= t0);
    // The other man (at the piano, at the start of the clip): a stranger alert.
    let stranger = wait_for(&db, "stranger", Duration::from_secs(60), |e| {
        e.kind == EventKind::Stranger
    })
    .await;
    assert!(stranger.stranger_id.is_some() && stranger.subject.is_none());

    // Server gone: camera_offline within the stall timeout (plus margin).
    let stopped_at = time::OffsetDateTime::now_utc();
    server.stop();
    let off = wait_for(&db, "camera_offline", Duration::from_secs(6), |e| {
        e.kind == EventKind::CameraOffline && e.ts >= stopped_at
    })
    .await;
    assert!(off.reason.is_some());

    // Back: camera_online, and recognition resumes (a new pass after it).
    let restarted_at = time::OffsetDateTime::now_utc();
    server.restart();
    wait_for(
        &db,
        "camera_online after restart",
        Duration::from_secs(20),
        |e| e.kind == EventKind::CameraOnline && e.ts >= restarted_at,
    )
    .await;
    wait_for(
        &db,
        "owner_pass after restart",
        Duration::from_secs(60),
        |e| e.kind == EventKind::OwnerPass && e.ts >= restarted_at,
    )
    .await;

    // A stalled stream (session open, nothing sent) is caught by the watchdog.
    let stalled_at = time::OffsetDateTime::now_utc();
    server.set_stalled(true);
    let stalled = wait_for(
        &db,
        "camera_offline (stalled)",
        Duration::from_secs(8),
        |e| e.kind == EventKind::CameraOffline && e.ts >= stalled_at,
    )
    .await;
    assert!(
        stalled.reason.as_deref().unwrap_or("").contains("stalled"),
        "{:?}",
        stalled.reason
    );
    server.set_stalled(false);
    wait_for(
        &db,
        "camera_online after stall",
        Duration::from_secs(20),
        |e| e.kind == EventKind::CameraOnline && e.ts >= stalled_at,
    )
    .await;

    // Clean shutdown: the task ends, everything committed.
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(15), live)
        .await
        .expect("shutdown in time")
        .unwrap()
        .unwrap();

    // What the command centre heard: the pass, its signed open command, the
    // camera alerts, and the gateway's retained status.
    let _ = sub.kill();
    let _ = sub.wait();
    let log = std::fs::read_to_string(&heard).unwrap();
    let site = &config.site.code;
    assert!(
        log.contains(&format!("facegate/{site}/events/gate-1 ")) && log.contains("\"owner_pass\""),
        "{log}"
    );
    assert!(
        log.contains(&format!("facegate/{site}/gates/gate-1/open ")),
        "{log}"
    );
    assert!(
        log.contains(&format!("facegate/{site}/alerts ")) && log.contains("camera_offline"),
        "{log}"
    );
    assert!(log.contains(&format!("facegate/{site}/status ")), "{log}");
    let all = common::recent_events(&EventStore::open(&db).unwrap());
    // Per person, not per frame: dozens of frames with faces, a handful of events.
    let decisions = all
        .iter()
        .filter(|e| !matches!(e.kind, EventKind::CameraOnline | EventKind::CameraOffline))
        .count();
    assert!(decisions < 40, "{decisions} decision events");
    for e in &all {
        assert_eq!(e.place.site, config.site.code);
    }
}
