//! ONNX Runtime: finding the library, loading models with their checksums.
//!
//! `ort` is built with `load-dynamic`, so nothing is linked at build time and
//! the library is found at run time. Left to itself `ort` panics when dlopen
//! fails; here the path is resolved first and every failure is an error that
//! says where we looked. ONNX Runtime allows one environment per process, so
//! it lives in a static.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use sha2::{Digest, Sha256};

use super::VisionError;

/// The process's one ONNX Runtime environment (kept alive here: `ort` only
/// holds a weak reference, and a second one can never be created).
static RUNTIME: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// File name of the library inside the wheel and in `models/onnxruntime/`.
const LIB_NAME: &str = "libonnxruntime.so";

/// Candidate library paths in order of precedence.
pub fn library_candidates(configured: Option<&Path>, models_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = configured {
        out.push(p.to_owned());
        return out;
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        out.push(PathBuf::from(p));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_owned))
    {
        out.push(dir.join(LIB_NAME));
        out.push(dir.join("../lib/facegate").join(LIB_NAME));
    }
    out.push(models_dir.join("onnxruntime").join(LIB_NAME));
    out
}

/// Loads ONNX Runtime once per process. Later calls return the first result.
pub fn init(
    configured: Option<&Path>,
    models_dir: &Path,
) -> Result<&'static ort::environment::Environment, VisionError> {
    let result = RUNTIME.get_or_init(|| {
        let candidates = library_candidates(configured, models_dir);
        let Some(path) = candidates.iter().find(|p| p.is_file()) else {
            return Err(format!(
                "ONNX Runtime library not found (looked at {}); run `python3 deploy/fetch-models.py` or set vision.onnxruntime",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let builder = ort::init_from(path)
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?;
        // ONNX Runtime sends usage telemetry unless told not to (1.31 on Linux
        // warns that its HTTPS uploads have no CA bundle): nothing about this
        // box leaves it.
        builder
            .with_name("facegate")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", path.display()))
    });
    result.as_ref().map_err(|m| VisionError::Runtime(m.clone()))
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    Ok(hex(&Sha256::digest(&bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The environment, once [`init`] has succeeded.
fn environment() -> Result<&'static ort::environment::Environment, VisionError> {
    match RUNTIME.get() {
        Some(Ok(env)) => Ok(env),
        Some(Err(m)) => Err(VisionError::Runtime(m.clone())),
        None => Err(VisionError::Runtime(
            "ONNX Runtime is not initialised".into(),
        )),
    }
}

/// Opens a model after checking that the file is there and is the expected
/// one. `expected_sha256` empty skips the check (an operator's own model).
pub fn load_model(
    path: &Path,
    expected_sha256: &str,
    threads: usize,
) -> Result<Session, VisionError> {
    let bytes = std::fs::read(path).map_err(|e| VisionError::Model {
        path: path.to_owned(),
        reason: if e.kind() == std::io::ErrorKind::NotFound {
            "file not found; run `python3 deploy/fetch-models.py`".into()
        } else {
            e.to_string()
        },
    })?;
    if !expected_sha256.is_empty() {
        let actual = hex(&Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(expected_sha256) {
            return Err(VisionError::Model {
                path: path.to_owned(),
                reason: format!(
                    "checksum mismatch: expected sha256 {expected_sha256}, file has {actual}; fetch it again"
                ),
            });
        }
    }
    let model_err = |e: ort::Error| VisionError::Model {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let builder_err = |e: ort::Error<ort::session::builder::SessionBuilder>| VisionError::Model {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    Session::builder(environment()?)
        .map_err(model_err)?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(builder_err)?
        .with_intra_threads(threads)
        .map_err(builder_err)?
        .with_inter_threads(1)
        .map_err(builder_err)?
        .commit_from_memory(&bytes)
        .map_err(model_err)
}

/// The name of a model's first input: every model facegate runs takes one image.
pub fn first_input(session: &Session, path: &Path) -> Result<String, VisionError> {
    session
        .inputs()
        .first()
        .map(|i| i.name().to_owned())
        .ok_or_else(|| VisionError::Model {
            path: path.to_owned(),
            reason: "model has no input".into(),
        })
}
