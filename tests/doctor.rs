//! `facegate doctor` and `facegate config check` through the real binary:
//! a real RTSP camera on loopback, a real mosquitto, the real models and
//! ONNX Runtime library; then the same box with a dead camera, a dead
//! broker and a damaged model, each named on its own FAIL line.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::broker::{Broker, free_port, mosquitto_available};
use common::rtsp::{Codec, RtspServer, video_dir};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn facegate(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_facegate"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run facegate")
}

fn config(dir: &Path, camera_url: &str, mqtt_url: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[site]
code = "doctor-test"

[vision]
models_dir = "{models}"

[storage]
db = "{dir}/facegate.db"
data_dir = "{dir}/data"

[mqtt]
url = "{mqtt_url}"

[[cameras]]
name = "gate-1"
url = "{camera_url}"
role = "patrol"
{extra}
"#,
        models = repo().join("models").display(),
        dir = dir.display(),
    );
    let p = dir.join("facegate.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(prefix))
        .unwrap_or_else(|| panic!("no line with {prefix:?} in:\n{out}"))
}

#[test]
fn doctor_passes_on_a_working_box_and_names_each_failure() {
    let Some(video) = video_dir() else { return };
    if !mosquitto_available() {
        return;
    }
    let server = RtspServer::start(&video.join("frec_short_hamilton_clip.mp4"), Codec::H264);
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();

    // A working box: every check passes (the clock may be unknowable in a
    // container: a warning, not a failure).
    let good = config(dir.path(), &server.url(), &broker.url(), "");
    let o = facegate(&good, &["doctor", "--camera-timeout-s", "20"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "doctor failed on a working box:\n{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(line(&out, "camera gate-1:").starts_with("ok"), "{out}");
    assert!(
        line(&out, "camera gate-1:").contains("x"),
        "resolution shown: {out}"
    );
    assert!(line(&out, "broker:").starts_with("ok"), "{out}");
    assert!(
        line(&out, "model detector yunet:").starts_with("ok"),
        "{out}"
    );
    assert!(line(&out, "onnxruntime:").starts_with("ok"), "{out}");
    assert!(line(&out, "gstreamer:").starts_with("ok"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    // Doctor changes nothing: no database was created.
    assert!(!dir.path().join("facegate.db").exists());

    // The same box with a camera nobody serves, a broker that is down and
    // a detector file that is not the one the config names.
    let dead = format!("rtsp://127.0.0.1:{}/cam", free_port());
    let wrong_model = r#"
[vision.detectors.yunet]
kind = "yunet"
file = "yunet_2023mar_dynamic.onnx"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
pixels = { channels = "bgr", layout = "nchw", mean = [0.0, 0.0, 0.0], std = [1.0, 1.0, 1.0] }
max_side = 640
upscale_below = 0
score_threshold = 0.7
nms_iou = 0.3
"#;
    let bad_dir = tempfile::tempdir().unwrap();
    let broken = config(
        bad_dir.path(),
        &dead,
        &format!("mqtt://127.0.0.1:{}", free_port()),
        "",
    );
    // The model override goes before the cameras (TOML tables).
    let text = std::fs::read_to_string(&broken).unwrap();
    let text = text.replacen("[storage]", &format!("{wrong_model}\n[storage]"), 1);
    std::fs::write(&broken, text).unwrap();
    let o = facegate(&broken, &["doctor", "--camera-timeout-s", "3"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        o.status.code(),
        Some(1),
        "doctor must fail:\n{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let cam = line(&out, "camera gate-1:");
    assert!(cam.starts_with("FAIL") && cam.contains("->"), "{cam}");
    let b = line(&out, "broker:");
    assert!(b.starts_with("FAIL") && b.contains("->"), "{b}");
    let m = line(&out, "model detector yunet:");
    assert!(m.starts_with("FAIL") && m.contains("sha256"), "{m}");
    // What still works is still reported as working.
    assert!(line(&out, "onnxruntime:").starts_with("ok"), "{out}");
    assert!(
        line(&out, "model embedder arcface_mbf:").starts_with("ok"),
        "{out}"
    );
    assert!(line(&out, "doctor:").contains("3 failed"), "{out}");
}

#[test]
fn config_check_validates_without_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let good = config(
        dir.path(),
        "rtsp://192.0.2.10:554/Streaming/Channels/101",
        "",
        "",
    );
    // The global --config points at a file that does not exist: `config
    // check` reads only its argument.
    let o = facegate(
        &dir.path().join("absent.toml"),
        &["config", "check", good.to_str().unwrap()],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("ok (site doctor-test, 1 cameras, MQTT off"),
        "{out}"
    );
    assert!(!dir.path().join("facegate.db").exists(), "nothing started");

    // A typo in a key, a bad value, a camera URL that is not RTSP: each
    // refused with the file named.
    for (what, text) in [
        ("unknown key", "[site]\ncode = \"x\"\ncolour = 1\n"),
        ("bad value", "[matching]\nthreshold = \"high\"\n"),
        (
            "bad camera url",
            "[[cameras]]\nname = \"c\"\nurl = \"http://192.0.2.1/\"\n",
        ),
    ] {
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, text).unwrap();
        let o = facegate(&good, &["config", "check", p.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{what}: must fail: {err}");
        assert!(err.contains("bad.toml"), "{what}: names the file: {err}");
    }
}
