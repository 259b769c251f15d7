//! The recognition pipeline over a real video: GStreamer decoding, the real
//! models, a real SQLite file; decisions per person, not per frame.

mod common;

use std::collections::HashSet;
use std::path::Path;

use facegate::config::{CameraRole, Config};
use facegate::events::{Event, EventFilter, EventKind, EventStore};
use facegate::pipeline::{CameraContext, replay_file};

fn gate(config: &Config) -> CameraContext {
    let cam: facegate::config::CameraConfig =
        toml::from_str("name = \"gate-1\"\nurl = \"file:///x.mp4\"\nrole = \"gate\"\ndetect_fps = 5.0\ngrid_code = \"GY-07\"\nbuilding_code = \"B3\"\n").unwrap();
    CameraContext::from_config(&cam, config)
}

#[test]
fn an_owner_at_the_gate_gets_a_pass_and_the_other_man_a_stranger_alert_once_per_track() {
    let Some(faces) = common::faces_dir() else {
        return;
    };
    let config = common::shipped_config();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let video = faces.join("video");
    common::enrol_clip_owner(&config, &db, &video);

    let mut seen: Vec<Event> = Vec::new();
    let stats = replay_file(
        &config,
        gate(&config),
        &video.join("frec_short_hamilton_clip.mp4"),
        &db,
        dir.path(),
        |_, e| seen.push(e.clone()),
    )
    .unwrap();
    eprintln!("{stats:?}");
    assert_eq!(stats.frames, 275);
    // 640×360: the detector runs on the full picture, so every processed
    // frame is converted at full resolution.
    assert_eq!(stats.work.full_frames, stats.processed);
    assert!(stats.processed >= 40, "sampled at 5 fps over 9 s");
    assert!(
        stats.faces >= 60,
        "faces on most sampled frames: {}",
        stats.faces
    );

    // The owner: a pass with an open command for this gate.
    let passes: Vec<&Event> = seen
        .iter()
        .filter(|e| e.kind == EventKind::OwnerPass)
        .collect();
    assert!(!passes.is_empty(), "{seen:#?}");
    for p in &passes {
        assert!(
            matches!(&p.subject, Some(facegate::registry::Subject::Owner { id, .. }) if id == "H-1")
        );
        assert_eq!(p.gate.as_deref(), Some("gate-1"));
        assert!(p.score.unwrap() >= config.matching.threshold);
    }
    // The other man (at the piano): a stranger alert with a stranger id.
    let strangers: Vec<&Event> = seen
        .iter()
        .filter(|e| e.kind == EventKind::Stranger)
        .collect();
    assert!(!strangers.is_empty(), "{seen:#?}");
    assert!(
        strangers
            .iter()
            .all(|e| e.stranger_id.is_some() && e.subject.is_none() && e.gate.is_none())
    );

    // Per person, not per frame: at most one event per track (and revision),
    // and far fewer events than faces.
    let mut keys = HashSet::new();
    for e in seen.iter().filter(|e| e.kind != EventKind::Loitering) {
        assert!(
            keys.insert((e.track_id, e.revision)),
            "two events for track {:?}",
            e.track_id
        );
    }
    // Every track with enough faces is recorded (undecided ones and repeats
    // within the cooldown included), but what reaches people stays per
    // person: passes and alerts that are not repeats.
    let told = seen
        .iter()
        .filter(|e| !e.repeat && e.kind != EventKind::Undecided)
        .count();
    assert!(
        told <= 8,
        "{told} passes and alerts ({} events) for {} faces",
        seen.len(),
        stats.faces
    );

    // Every event carries the camera's place and a snapshot on disk; all are in SQLite.
    for e in &seen {
        assert_eq!(
            (e.place.grid.as_str(), e.place.building.as_deref()),
            ("GY-07", Some("B3"))
        );
        assert_eq!(e.role, CameraRole::Gate);
        let s = e.snapshot.as_ref().expect("snapshot");
        assert!(dir.path().join(&s.face).is_file() && dir.path().join(&s.scene).is_file());
    }
    let stored = EventStore::open(&db)
        .unwrap()
        .list(&EventFilter::default())
        .unwrap();
    assert_eq!(stored.len(), seen.len());
}

/// A 1280×720 H.264 clip of a moving ball (no face), from GStreamer's test source.
fn faceless_clip(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("ball-720p.mp4");
    let status = std::process::Command::new("gst-launch-1.0")
        .arg("-q")
        .args(
            format!(
                "videotestsrc num-buffers=50 pattern=ball ! video/x-raw,width=1280,height=720,framerate=25/1 \
                 ! videoconvert ! x264enc bitrate=1000 key-int-max=25 bframes=0 speed-preset=ultrafast \
                 ! h264parse ! mp4mux ! filesink location={}",
                out.display()
            )
            .split_whitespace(),
        )
        .status()
        .expect("gst-launch-1.0 (gstreamer1.0-tools)");
    assert!(status.success(), "encoding the test clip failed");
    out
}

#[test]
fn only_frames_with_a_face_are_converted_at_full_resolution() {
    let Some(faces) = common::faces_dir() else {
        return;
    };
    let config = common::shipped_config();
    assert!(config.detector().max_side < 1280);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    // No face: the detector's 640-px copy is all that is converted.
    let ball = faceless_clip(dir.path());
    let stats = replay_file(&config, gate(&config), &ball, &db, dir.path(), |_, _| {}).unwrap();
    eprintln!("{stats:?}");
    assert!(stats.processed >= 5, "{stats:?}");
    assert_eq!((stats.faces, stats.work.full_frames), (0, 0), "{stats:?}");
    // 1080p with people: the frames where a face was found are converted
    // whole (the crops and snapshots need it), and the faces are analysed
    // and recorded as before.
    let mut events = 0;
    let stats = replay_file(
        &config,
        gate(&config),
        &faces.join("video/facenet_pytorch_video.mp4"),
        &db,
        dir.path(),
        |_, _| events += 1,
    )
    .unwrap();
    eprintln!("{stats:?}");
    assert!(stats.faces > 0 && events > 0, "{stats:?}");
    assert!(
        stats.work.full_frames > 0 && stats.work.full_frames <= stats.processed,
        "{stats:?}"
    );
    assert!(stats.work.analysed > 0, "{stats:?}");
}

#[test]
fn replay_of_a_missing_or_broken_file_is_a_clear_error() {
    let Some(_) = common::faces_dir() else { return };
    let config = common::shipped_config();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let err = replay_file(
        &config,
        gate(&config),
        Path::new("/nonexistent/clip.mp4"),
        &db,
        dir.path(),
        |_, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/clip.mp4"), "{err}");
    let junk = dir.path().join("junk.mp4");
    std::fs::write(&junk, b"not a video at all").unwrap();
    let err = replay_file(&config, gate(&config), &junk, &db, dir.path(), |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("junk.mp4"), "{err}");
}
