//! Shared by the integration tests, one copy of each helper: where the face
//! photos are (and a loud skip when they are not), the real models, a free
//! port, gate events and enrolment. Helpers used by one file stay there.
//!
//! - `broker`: a real mosquitto, and a valve to cut the network to it
//! - `cli`: the `facegate` binary, and a test's temporary folder for it
//! - `clip`: an H.264 MP4 made from JPEG frames
//! - `http`: multipart bodies, JSON answers, the API's state and tokens
//! - `mqtt`: a test's own MQTT client that records what it receives
//! - `rtsp`: an in-process RTSP server looping a real clip
#![allow(dead_code)]

pub mod broker;
pub mod cli;
pub mod clip;
pub mod http;
pub mod mqtt;
pub mod rtsp;

use std::path::PathBuf;

use facegate::config::Config;
use facegate::vision::FaceEngine;

/// `FACEGATE_FACES`, else `../shared/faces` beside the repository.
pub fn faces_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("FACEGATE_FACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/faces"));
    if dir.join("identities").is_dir() {
        return Some(dir);
    }
    if std::env::var_os("FACEGATE_REQUIRE_FACES").is_some() {
        panic!(
            "face photos not found at {} and FACEGATE_REQUIRE_FACES is set (CI): set FACEGATE_FACES",
            dir.display()
        );
    }
    eprintln!(
        "\n!!!!! SKIPPED: face photos not found at {} (set FACEGATE_FACES); this test did not run !!!!!\n",
        dir.display()
    );
    None
}

/// Camera `gate-1` in the gate role at `url`, with more TOML keys in `extra`
/// (one `key = value` per line), as an operator writes it in the config.
pub fn gate_camera(url: &str, extra: &str) -> facegate::config::CameraConfig {
    toml::from_str(&format!(
        "name = \"gate-1\"\nurl = \"{url}\"\nrole = \"gate\"\n{extra}\n"
    ))
    .expect("gate camera config")
}

/// `run::run` (the code `facegate run` uses) on its own task until
/// `cancel`, with the HTTP server off: the cameras, publisher and
/// housekeeping only.
pub fn spawn_live(
    config: &Config,
    db: &std::path::Path,
    data: &std::path::Path,
    cancel: &tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<Result<(), facegate::pipeline::PipelineError>> {
    let mut config = config.clone();
    config.http.listen = String::new();
    let (config, db, data, cancel) = (config, db.to_owned(), data.to_owned(), cancel.clone());
    tokio::spawn(async move { facegate::run::run(config, &db, &data, cancel).await })
}

/// An event of kind `kind` at `ts` from camera `gate-1` in the gate role,
/// no place: what the pipeline starts a gate decision from.
pub fn gate_event(
    kind: facegate::events::EventKind,
    ts: time::OffsetDateTime,
) -> facegate::events::Event {
    facegate::events::Event::new(
        kind,
        ts,
        "gate-1",
        facegate::config::CameraRole::Gate,
        &facegate::events::Place::default(),
    )
}

/// The newest 1000 events in the store (every event of a test).
pub fn recent_events(store: &facegate::events::EventStore) -> Vec<facegate::events::Event> {
    store
        .list(&facegate::events::EventFilter {
            limit: 1000,
            ..Default::default()
        })
        .unwrap()
}

/// The face engine with the shipped configuration and the real models.
pub fn engine() -> FaceEngine {
    FaceEngine::new(&shipped_config()).expect("face engine (run deploy/fetch-models.py first)")
}

pub fn shipped_config() -> Config {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/facegate.toml");
    let mut c = Config::load(&path).expect("config/facegate.toml");
    c.vision.models_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models");
    c
}

/// Enrols an owner from one photo straight into the registry at `db` (real
/// models, real SQLite), as gate staff would with `facegate enroll`.
pub fn enrol(config: &Config, db: &std::path::Path, id: &str, name: &str, photo: &std::path::Path) {
    use facegate::registry::{Consent, ConsentMethod, Gallery, NewOwner, Registry};
    use facegate::vision::image::{PhotoLimits, RgbView, load_photo};
    let mut engine = FaceEngine::new(config).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let mut gallery = Gallery::open(
        Registry::open(db).unwrap(),
        engine.model_id(),
        engine.dim(),
        now,
    )
    .unwrap();
    let img = load_photo(photo, PhotoLimits::default()).unwrap();
    let (_, t) =
        facegate::identify::enrolment_template(&mut engine, RgbView::from_image(&img), "ref")
            .unwrap();
    let owner = NewOwner {
        id: id.into(),
        name: name.into(),
        building: None,
        unit: None,
        grid_code: None,
        minor_under_14: false,
    };
    gallery
        .enroll(
            &owner,
            &Consent::new(now, ConsentMethod::Written, "staff"),
            &[t],
            "test",
            now,
        )
        .unwrap();
}

/// Enrols the man of the test clips (Lin-Manuel Miranda, owner `H-1`) from
/// his reference photo in `video/refs`.
pub fn enrol_clip_owner(config: &Config, db: &std::path::Path, video: &std::path::Path) {
    enrol(
        config,
        db,
        "H-1",
        "Lin-Manuel Miranda",
        &video.join("refs/Lin_Manuel_Miranda.jpg"),
    );
}
