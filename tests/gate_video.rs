//! Decisions at a gate on video, through the real parts: GStreamer decoding
//! an RTSP stream served on 127.0.0.1, the real models, a real SQLite file.
//!
//! One person, one track: an enrolled owner stands at the gate, then another
//! man takes the same spot with no gap (a looping slideshow of two held-out
//! photos, 640×480 at 10 fps). Before re-verification of decided tracks the
//! stranger inherited the owner's track, and the gateway reported one
//! `owner_pass` and nothing else.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::rtsp::{Codec, RtspServer};
use facegate::events::{Event, EventKind, EventStore};
use facegate::registry::Subject;
use tokio_util::sync::CancellationToken;

/// Writes an H.264 MP4 slideshow: each photo centred on a grey 640×480
/// scene (scaled to 300 px high) for its number of frames, at 10 fps.
fn slideshow(dir: &Path, shots: &[(PathBuf, usize)]) -> PathBuf {
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let mut n = 0;
    for (photo, count) in shots {
        let img = image::open(photo)
            .unwrap_or_else(|e| panic!("{}: {e}", photo.display()))
            .to_rgb8();
        let h = 300u32;
        let w = (img.width() * h / img.height()).min(600);
        let img = image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle);
        let mut canvas = image::RgbImage::from_fn(640, 480, |x, y| {
            let v = (110 + (x + y) / 40) as u8;
            image::Rgb([v, v, v.saturating_add(8)])
        });
        image::imageops::overlay(
            &mut canvas,
            &img,
            i64::from((640 - w) / 2),
            i64::from((480 - h) / 2),
        );
        for _ in 0..*count {
            canvas
                .save(frames.join(format!("f{n:04}.jpg")))
                .expect("frame written");
            n += 1;
        }
    }
    let out = dir.join("slideshow.mp4");
    common::clip::encode_jpeg_frames(&frames, n, &out, 800, 10);
    out
}

fn is_primary(k: EventKind) -> bool {
    matches!(
        k,
        EventKind::OwnerPass
            | EventKind::Stranger
            | EventKind::Watchlist
            | EventKind::Spoof
            | EventKind::Undecided
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_then_stranger_in_the_same_spot_gives_two_decisions_over_rtsp() {
    let Some(faces) = common::faces_dir() else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let ids = faces.join("identities");
    let dir = tempfile::tempdir().unwrap();
    // Owner for 3 s, then another man in the same spot for 2 s, looping.
    let clip = slideshow(
        dir.path(),
        &[
            (ids.join("Colin_Powell/1.jpg"), 30),
            (ids.join("Donald_Rumsfeld/1.jpg"), 20),
        ],
    );
    let server = RtspServer::start(&clip, Codec::H264);
    let db = dir.path().join("g.db");
    let mut config = common::shipped_config();
    // Photos on a screen are prints to a liveness model; this test is about
    // tracks (liveness has its own tests). Short cooldowns: every loop may
    // give its own decisions.
    config.vision.liveness.enabled = false;
    config.decide.pass_cooldown_s = 1.0;
    config.decide.cooldown_s = 1.0;
    config.cameras = vec![common::gate_camera(&server.url(), "detect_fps = 10.0")];
    common::enrol(
        &config,
        &db,
        "C-1",
        "Colin Powell",
        &ids.join("Colin_Powell/2.jpg"),
    );

    let cancel = CancellationToken::new();
    let live = common::spawn_live(&config, &db, dir.path(), &cancel);
    // Watch for up to 60 s, until three passes and two stranger alerts (at
    // least two full loops of owner → stranger → owner).
    let store = EventStore::open(&db).unwrap();
    let start = Instant::now();
    loop {
        let events = common::recent_events(&store);
        let count = |k| events.iter().filter(|e| e.kind == k).count();
        if (count(EventKind::OwnerPass) >= 3 && count(EventKind::Stranger) >= 2)
            || start.elapsed() > Duration::from_secs(60)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    cancel.cancel();
    live.await.unwrap().unwrap();
    drop(server);
    let events: Vec<Event> = common::recent_events(&store)
        .into_iter()
        .filter(|e| is_primary(e.kind))
        .collect();
    let summary: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{} track {:?} r{} score {:?} faces {:?} {:?}",
                e.kind.as_str(),
                e.track_id,
                e.revision,
                e.score,
                e.faces,
                e.reason
            )
        })
        .collect();
    eprintln!("{summary:#?}");

    let passes: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == EventKind::OwnerPass)
        .collect();
    let strangers: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == EventKind::Stranger)
        .collect();
    assert!(
        passes.len() >= 2,
        "the owner passes on each visit: {summary:#?}"
    );
    assert!(
        strangers.len() >= 2,
        "the other man is a stranger alert on each visit: {summary:#?}"
    );
    for p in &passes {
        assert!(
            matches!(&p.subject, Some(Subject::Owner { id, .. }) if id == "C-1"),
            "{p:?}"
        );
        // Never a stranger alert first that a revision turned into a pass.
        assert_eq!(
            p.revision, 0,
            "the owner was alerted as a stranger first: {p:?}"
        );
    }
    for s in &strangers {
        assert!(s.subject.is_none() && s.stranger_id.is_some(), "{s:?}");
    }
    // At most one primary event per track, and no track both passed and alerted.
    let mut per_track: HashMap<u64, HashSet<&str>> = HashMap::new();
    for e in &events {
        per_track
            .entry(e.track_id.expect("track events carry their track"))
            .or_default()
            .insert(e.id.as_str());
    }
    for (track, ids) in &per_track {
        assert_eq!(
            ids.len(),
            1,
            "track {track} has {} primary events",
            ids.len()
        );
    }
}
