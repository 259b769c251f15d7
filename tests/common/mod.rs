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
