//! The face engine: detect → align → quality (liveness, pose, size) → embed.
//!
//! [`FaceEngine`] owns its ONNX sessions (`Session::run` takes `&mut self`):
//! one engine per inference thread, no locks on the hot path.

pub mod align;
pub mod detect;
pub mod embed;
pub mod image;
pub mod quality;
pub mod runtime;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::Config;
use detect::{Detection, Detector};
use embed::Embedder;
use image::RgbView;
use quality::{HeadPose, Liveness, Pose};

/// What went wrong in the vision stage.
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    #[error("{0}")]
    Runtime(String),
    #[error("model {path}: {reason}")]
    Model { path: PathBuf, reason: String },
    #[error("inference failed: {0}")]
    Inference(String),
}

/// Why a detected face is not used for recognition.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Rejection {
    /// The face is smaller than the configured minimum.
    TooSmall { size_px: f32, min_px: u32 },
    /// The head is turned too far (yaw or pitch, degrees).
    Profile { yaw: f32, pitch: f32 },
    /// The liveness check says printed photo or screen.
    Spoof { liveness: f32, threshold: f32 },
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::TooSmall { size_px, min_px } => {
                write!(f, "face too small ({size_px:.0} px, minimum {min_px} px)")
            }
            Rejection::Profile { yaw, pitch } => write!(
                f,
                "face turned too far (yaw {yaw:.0}°, pitch {pitch:.0}°); look at the camera"
            ),
            Rejection::Spoof {
                liveness,
                threshold,
            } => write!(
                f,
                "liveness check failed (score {liveness:.2} < {threshold:.2}): printed photo or screen?"
            ),
        }
    }
}

/// One face, analysed.
#[derive(Debug, Clone, Serialize)]
pub struct FaceAnalysis {
    #[serde(flatten)]
    pub detection: Detection,
    pub size_px: f32,
    pub liveness: Option<f32>,
    pub pose: Option<Pose>,
    pub rejection: Option<Rejection>,
    #[serde(skip)]
    pub embedding: Option<Vec<f32>>,
}

/// Which checks to apply for a given use (a gate wants liveness; an
/// enrolment photo taken by staff is a photo, and liveness on it says
/// nothing).
#[derive(Debug, Clone, Copy)]
pub struct Checks {
    pub liveness: bool,
    pub pose: bool,
}

/// The outcome of the quality checks on one face.
#[derive(Debug, Clone, Default)]
pub struct QualityCheck {
    pub liveness: Option<f32>,
    pub pose: Option<Pose>,
    /// `None` when the face passed.
    pub rejection: Option<Rejection>,
}

pub struct FaceEngine {
    detector: Detector,
    embedder: Embedder,
    liveness: Option<Liveness>,
    pose: Option<HeadPose>,
    min_face_px: u32,
    flip_average: bool,
    model_id: String,
}

/// Finds the models folder: as configured, else next to the binary's tree.
pub fn resolve_models_dir(configured: &Path) -> PathBuf {
    if configured.is_absolute() || configured.is_dir() {
        return configured.to_owned();
    }
    // An installed binary at <prefix>/bin/facegate looks in <prefix>/share/facegate/models.
    if let Some(bin) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_owned))
    {
        for c in [
            bin.join("../share/facegate").join(configured),
            bin.join("../..").join(configured),
        ] {
            if c.is_dir() {
                return c;
            }
        }
    }
    configured.to_owned()
}

impl FaceEngine {
    /// Loads ONNX Runtime and every configured model, checking checksums.
    pub fn new(config: &Config) -> Result<Self, VisionError> {
        let v = &config.vision;
        let models = resolve_models_dir(&v.models_dir);
        runtime::init(v.onnxruntime.as_deref(), &models)?;
        let detector = Detector::new(config.detector(), &models, v.threads)?;
        let ecfg = config.embedder();
        let embedder = Embedder::new(ecfg, &models, v.threads)?;
        let liveness = if v.liveness.enabled {
            Some(Liveness::new(&v.liveness, &models, v.threads)?)
        } else {
            None
        };
        let pose = if v.pose.enabled {
            Some(HeadPose::new(&v.pose, &models, v.threads)?)
        } else {
            None
        };
        let stem = Path::new(&ecfg.file)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| v.embedder.clone());
        let hash: String = if ecfg.sha256.is_empty() {
            "unchecked".into()
        } else {
            ecfg.sha256.chars().take(12).collect()
        };
        let mode = if v.quality.flip_average { "+flip" } else { "" };
        Ok(Self {
            detector,
            embedder,
            liveness,
            pose,
            min_face_px: v.quality.min_face_px,
            flip_average: v.quality.flip_average,
            model_id: format!("{stem}@{hash}{mode}"),
        })
    }

    /// Identifies the embedding model and how it is used; templates made
    /// under another id are not comparable with this engine's.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    pub fn dim(&self) -> usize {
        self.embedder.config().dim
    }

    pub fn detector(&mut self) -> &mut Detector {
        &mut self.detector
    }

    pub fn embedder(&mut self) -> &mut Embedder {
        &mut self.embedder
    }

    /// All faces in an image, best score first.
    pub fn detect(&mut self, img: RgbView<'_>) -> Result<Vec<Detection>, VisionError> {
        self.detector.detect(img)
    }

    /// Detects; if nothing is found, retries once with the image in the
    /// middle of a black canvas twice its size (tight face crops, where the
    /// face fills the frame, are missed by the detector otherwise).
    pub fn detect_with_border(&mut self, img: RgbView<'_>) -> Result<Vec<Detection>, VisionError> {
        let found = self.detector.detect(img)?;
        if !found.is_empty() {
            return Ok(found);
        }
        let (w, h) = (img.width, img.height);
        let (px, py) = (w / 2, h / 2);
        let mut canvas = ::image::RgbImage::new(w + 2 * px, h + 2 * py);
        for y in 0..h as usize {
            let dst_start = ((y + py as usize) * canvas.width() as usize + px as usize) * 3;
            let row = img.row(y);
            canvas.as_mut()[dst_start..dst_start + row.len()].copy_from_slice(row);
        }
        let found = self.detector.detect(RgbView::from_image(&canvas))?;
        Ok(found
            .into_iter()
            .map(|d| d.transformed(1.0, -(px as f32), -(py as f32)))
            .collect())
    }

    /// The aligned crop the embedder sees.
    pub fn align(&self, img: RgbView<'_>, det: &Detection) -> Vec<u8> {
        let e = self.embedder.config();
        align::align(img, &det.landmarks, e.template, e.input_size)
    }

    /// Embeds one detected face (aligned from the full-resolution image).
    pub fn embed(&mut self, img: RgbView<'_>, det: &Detection) -> Result<Vec<f32>, VisionError> {
        let crop = self.align(img, det);
        self.embed_aligned(&crop)
    }

    /// Embeds an aligned crop; with `flip_average`, the mean of the crop's
    /// and its mirror's embeddings (faces are nearly symmetric, the noise
    /// of a small face is not: averaging cancels part of it).
    pub fn embed_aligned(&mut self, crop: &[u8]) -> Result<Vec<f32>, VisionError> {
        let mut v = self.embedder.embed(crop)?;
        if self.flip_average {
            let size = self.embedder.config().input_size;
            let m = self.embedder.embed(&align::mirror(crop, size))?;
            v.iter_mut().zip(&m).for_each(|(a, b)| *a += b);
            embed::normalize(&mut v)?;
        }
        Ok(v)
    }

    /// Runs the quality checks on one face (size first: a too-small face
    /// is not worth the models).
    pub fn check(
        &mut self,
        img: RgbView<'_>,
        det: &Detection,
        checks: Checks,
    ) -> Result<QualityCheck, VisionError> {
        let size = det.size();
        if size < self.min_face_px as f32 {
            return Ok(QualityCheck {
                rejection: Some(Rejection::TooSmall {
                    size_px: size,
                    min_px: self.min_face_px,
                }),
                ..QualityCheck::default()
            });
        }
        let mut rejection = None;
        let pose = match (&mut self.pose, checks.pose) {
            (Some(p), true) => {
                let pose = p.estimate(img, det)?;
                if p.too_turned(&pose) {
                    rejection = Some(Rejection::Profile {
                        yaw: pose.yaw,
                        pitch: pose.pitch,
                    });
                }
                Some(pose)
            }
            _ => None,
        };
        let liveness = match (&mut self.liveness, checks.liveness) {
            (Some(l), true) => {
                let s = l.score(img, det)?;
                if rejection.is_none() && s < l.threshold() {
                    rejection = Some(Rejection::Spoof {
                        liveness: s,
                        threshold: l.threshold(),
                    });
                }
                Some(s)
            }
            _ => None,
        };
        Ok(QualityCheck {
            liveness,
            pose,
            rejection,
        })
    }

    /// Detects, checks and embeds every face of an image. Rejected faces are
    /// reported without an embedding.
    pub fn analyze(
        &mut self,
        img: RgbView<'_>,
        checks: Checks,
    ) -> Result<Vec<FaceAnalysis>, VisionError> {
        let dets = self.detect_with_border(img)?;
        let mut out = Vec::with_capacity(dets.len());
        for d in dets {
            let QualityCheck {
                liveness,
                pose,
                rejection,
            } = self.check(img, &d, checks)?;
            let embedding = if rejection.is_none() {
                Some(self.embed(img, &d)?)
            } else {
                None
            };
            out.push(FaceAnalysis {
                size_px: d.size(),
                detection: d,
                liveness,
                pose,
                rejection,
                embedding,
            });
        }
        Ok(out)
    }
}
