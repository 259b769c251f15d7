//! `facegate bench ingest` with the shipped motion gate and a gate camera
//! alongside (issue 11 item 4, BENCHMARKS.md §4 (d)): the real binary, real
//! models, real H.264 files decoded by GStreamer.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `seconds` of a GStreamer test pattern at 640×360, 25 fps, H.264 in MP4.
fn clip(dir: &Path, name: &str, pattern: &str, seconds: u32) -> PathBuf {
    let out = dir.join(name);
    let status = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(
            format!(
                "videotestsrc num-buffers={} pattern={pattern} \
                 ! video/x-raw,width=640,height=360,framerate=25/1 ! videoconvert \
                 ! x264enc bitrate=500 key-int-max=50 bframes=0 speed-preset=ultrafast \
                 ! h264parse ! mp4mux ! filesink location={}",
                seconds * 25,
                out.display()
            )
            .split_whitespace(),
        )
        .status()
        .expect("gst-launch-1.0 (gstreamer1.0-tools)");
    assert!(status.success(), "encoding {name} failed");
    out
}

fn bench(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_facegate"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("--db")
        .arg(db)
        .args(["bench", "ingest"])
        .args(args)
        .output()
        .expect("facegate")
}

fn report(db: &Path, args: &[&str]) -> serde_json::Value {
    // The report is the last line (rtspsrc may print to stdout; not here).
    common::cli::last_json_line(args, bench(db, args))
}

fn n(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn still_streams_are_skipped_by_the_shipped_motion_gate_and_the_gate_camera_is_reported_apart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    // A still picture (a grey gradient; videotestsrc's SMPTE bars have an
    // animated corner) and a moving ball.
    let still = clip(dir.path(), "still.mp4", "gradient", 4);
    let ball = clip(dir.path(), "ball.mp4", "ball", 4);
    let (still, ball) = (still.to_str().unwrap(), ball.to_str().unwrap());
    let common = [
        "--streams",
        "2",
        "--detect-fps",
        "5",
        "--role",
        "patrol",
        "--gate",
        ball,
        "--gate-fps",
        "5",
        "--seconds",
        "6",
        "--no-baseline",
    ];
    let mut args = vec!["--video", still, "--video", ball, "--motion-skip"];
    args.extend(common);
    let r = report(&db, &args);
    println!("{r}");
    assert_eq!(r["motion_skip"], true);
    let all = &r["all_streams"];
    let (taken, still_n, detected) = (
        n(all, "frames_taken"),
        n(all, "frames_still"),
        n(all, "frames_detected"),
    );
    assert_eq!(taken, still_n + detected, "{r}");
    // Stream 0 is still: after the 2 s hold that its first frame starts, only
    // the keepalive (one frame every 2 s) is detected. Stream 1 moves: never
    // skipped. So at least a quarter of all taken frames are skipped.
    assert!(still_n * 4 >= taken, "too few still frames: {r}");
    assert!(detected * 2 > taken, "the moving stream was skipped: {r}");
    let gate = &r["gate"];
    assert!(n(gate, "slots") >= 25, "gate slots: {r}");
    assert_eq!(n(gate, "frames_still"), 0, "the moving gate scene: {r}");
    assert!(n(gate, "frames_detected") > 0, "{r}");
    assert_eq!(
        n(gate, "frames_taken"),
        n(gate, "frames_detected"),
        "gate figures are its own: {r}"
    );
    assert!(r["load_before"].as_array().is_some_and(|l| l.len() == 3));

    // The same without the gate: every taken frame is detected.
    let mut args = vec!["--video", still, "--video", ball];
    args.extend(common);
    let r = report(&db, &args);
    let all = &r["all_streams"];
    assert_eq!(n(all, "frames_still"), 0, "{r}");
    assert_eq!(n(all, "frames_detected"), n(all, "frames_taken"), "{r}");
}

#[test]
fn the_gate_alone_and_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    let ball = clip(dir.path(), "ball.mp4", "ball", 2);
    let ball = ball.to_str().unwrap();
    let r = report(
        &db,
        &[
            "--streams",
            "0",
            "--gate",
            ball,
            "--motion-skip",
            "--seconds",
            "3",
            "--no-baseline",
        ],
    );
    assert_eq!(n(&r["all_streams"], "slots"), 0, "no streams: {r}");
    assert!(n(&r["gate"], "frames_detected") > 0, "{r}");

    let err = |args: &[&str]| {
        let o = bench(&db, args);
        assert!(!o.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let e = err(&["--streams", "0", "--seconds", "1"]);
    assert!(e.contains("--streams 0") && e.contains("--gate"), "{e}");
    let e = err(&["--video", "/nonexistent/x.mp4", "--seconds", "1"]);
    assert!(e.contains("/nonexistent/x.mp4: no such file"), "{e}");
    let e = err(&["--video", ball, "--role", "door", "--seconds", "1"]);
    assert!(e.contains("--role door"), "{e}");
}
