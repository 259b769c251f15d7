//! `facegate bench lock --gate` (issue 11 item 1, BENCHMARKS.md §9.2): a
//! gate camera through the whole pipeline (real clip decoded by GStreamer,
//! real models, the resident enrolled from a real photo, a real SQLite
//! file) while the gallery reloads and four owners enrol, next to the old
//! behaviour (the work under the gallery lock) in the same run.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_facegate"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["bench", "lock"])
        .args(args)
        .output()
        .expect("facegate")
}

fn report(args: &[&str]) -> Value {
    common::cli::last_json_line(args, bench(args))
}

fn n(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn the_gate_keeps_deciding_while_the_gallery_reloads_and_owners_enrol() {
    let Some(faces) = common::faces_dir() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let video = faces.join("video/frec_short_hamilton_clip.mp4");
    let owner = faces.join("video/refs/Lin_Manuel_Miranda.jpg");
    let photos = faces.join("identities");
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let r = report(&[
        "--templates",
        "3000",
        "--seconds",
        "4",
        "--photos",
        &s(&photos),
        "--bench-db",
        &s(&db),
        "--gate",
        &s(&video),
        "--gate-fps",
        "5",
        "--gate-owner",
        &s(&owner),
    ]);
    println!("{r}");
    let g = &r["gate"];
    assert_eq!(g["owner_enrolled"], true, "{r}");
    assert!(
        r["quiet"].is_null(),
        "the bare match thread did not run: {r}"
    );
    assert!(n(&r, "enrolments_done") > 0, "no enrolment finished: {r}");
    // Every phase starts the clip again: the gate sees the resident and
    // decides in each of them, with the work off the lock.
    for phase in ["quiet", "reload", "enrol", "quiet_after"] {
        let p = &g[phase];
        assert!(n(p, "slots") >= 15, "{phase}: {p}");
        assert!(n(p, "frames_detected") > 0, "{phase}: {p}");
        assert!(n(p, "faces") > 0, "{phase}: no face found: {p}");
        assert!(n(p, "decisions") > 0, "{phase}: no decision: {p}");
        assert!(p["frame_latency_p99_ms"].as_f64().is_some(), "{phase}: {p}");
    }
    for ratio in ["ratio_reload_frame_p99", "ratio_enrol_frame_p99"] {
        assert!(g[ratio].as_f64().is_some_and(|x| x > 0.0), "{ratio}: {r}");
    }
    // With decoding and the models under the gallery lock (before), the
    // gate waits for whole enrolments and misses slots it serves now.
    assert!(
        n(&g["enrol_under_lock"], "missed") > n(&g["enrol"], "missed"),
        "the old behaviour should make the gate miss slots: {r}"
    );
}

#[test]
fn without_a_gate_the_bare_match_is_timed_and_bad_arguments_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let db = db.to_str().unwrap();
    let r = report(&["--templates", "2000", "--seconds", "1", "--bench-db", db]);
    assert!(n(&r["quiet"], "matches") > 10, "{r}");
    assert!(r["ratio_reload_p99"].as_f64().is_some(), "{r}");
    assert!(r["gate"].is_null(), "{r}");

    let err = |args: &[&str]| {
        let o = bench(args);
        assert!(!o.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let fresh = dir.path().join("h.db");
    let fresh = fresh.to_str().unwrap();
    let e = err(&["--bench-db", db, "--templates", "10", "--seconds", "1"]);
    assert!(e.contains("exists"), "{e}");
    let e = err(&[
        "--bench-db",
        fresh,
        "--gate-owner",
        "/x.jpg",
        "--seconds",
        "1",
    ]);
    assert!(e.contains("--gate-owner needs --gate"), "{e}");
    let e = err(&[
        "--bench-db",
        fresh,
        "--gate",
        "/nonexistent/g.mp4",
        "--seconds",
        "1",
    ]);
    assert!(e.contains("/nonexistent/g.mp4: no such file"), "{e}");
}
