//! Shared by the integration tests: where the face photos are, the real
//! models, and a loud skip when the photos are not there.
#![allow(dead_code)]

pub mod broker;
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
