//! The face engine: detect → align → quality (liveness, pose, size) → embed.
//!
//! [`FaceEngine`] owns its ONNX sessions (`Session::run` takes `&mut self`):
//! one engine per inference thread, no locks on the hot path.

pub mod align;
pub mod detect;
pub mod embed;
pub mod image;
pub mod liveness;
pub mod quality;
pub mod runtime;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::Config;
use detect::{Detection, Detector, unmirror};
use embed::Embedder;
use image::RgbView;
use liveness::{Liveness, NotJudged, Verdict};
use quality::{HeadPose, Pose};

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
    /// The liveness score; `None` when not checked or not judged.
    pub liveness: Option<f32>,
    /// Why liveness was checked but not judged (face too small or soft):
    /// "liveness uncertain", never a spoof.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub liveness_not_judged: Option<NotJudged>,
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
    /// Why liveness was checked but not judged; see [`FaceAnalysis`].
    pub liveness_not_judged: Option<NotJudged>,
    pub pose: Option<Pose>,
    /// `None` when the face passed.
    pub rejection: Option<Rejection>,
}

pub struct FaceEngine {
    detector: Detector,
    embedder: Embedder,
    /// The second embedder and its weight, when fusion is configured.
    fusion: Option<(Embedder, f32)>,
    liveness: Option<Liveness>,
    pose: Option<HeadPose>,
    min_face_px: u32,
    flip_average: bool,
    landmark_flip: bool,
    /// `vision.quality.landmark_flip_face_px`: > 0 runs the landmark-flip
    /// pass on a mirrored crop around each face, the face at most this big.
    landmark_flip_face_px: u32,
    /// A second detector whose landmarks are used for alignment.
    landmark_detector: Option<Detector>,
    blur_sigma: f32,
    blur_sigma_src: f32,
    model_id: String,
}

/// A short, stable name for a model: its config name and checksum prefix.
fn model_tag(name: &str, sha256: &str) -> String {
    let hash: String = sha256.chars().take(8).collect();
    if hash.is_empty() {
        format!("{name}@unchecked")
    } else {
        format!("{name}@{hash}")
    }
}

/// One model's unit embedding of a crop, optionally averaged with its mirror's.
fn embed_one(e: &mut Embedder, crop: &[u8], flip: bool) -> Result<Vec<f32>, VisionError> {
    let mut v = e.embed(crop)?;
    if flip {
        let m = e.embed(&align::mirror(crop, e.config().input_size))?;
        v.iter_mut().zip(&m).for_each(|(a, b)| *a += b);
        embed::normalize(&mut v)?;
    }
    Ok(v)
}

/// Averages a face's landmarks with those of the mirrored detection that
/// overlaps it most (IoU ≥ 0.3); unchanged when there is none.
fn average_landmarks(d: Detection, flipped: &[Detection]) -> Detection {
    let best = flipped
        .iter()
        .map(|f| (detect::iou(&d.bbox, &f.bbox), f))
        .filter(|(iou, _)| *iou >= 0.3)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let Some((_, f)) = best else { return d };
    let mut out = d;
    for (o, p) in out.landmarks.iter_mut().zip(&f.landmarks) {
        *o = [(o[0] + p[0]) / 2.0, (o[1] + p[1]) / 2.0];
    }
    out
}

/// How many engines `vision.workers` asks for: 0 = one per core.
pub fn worker_count(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
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
        let mut model_id = model_tag(&v.embedder, &ecfg.sha256);
        if v.quality.flip_average {
            model_id.push_str("+flip");
        }
        let landmark_detector = match v.quality.landmark_detector.as_str() {
            "" => None,
            name => {
                let cfg = v.detectors.get(name).ok_or_else(|| {
                    VisionError::Runtime(format!(
                        "vision.quality.landmark_detector: no [vision.detectors.{name}]"
                    ))
                })?;
                Some(Detector::new(cfg, &models, v.threads)?)
            }
        };
        let fusion = match v.fusion.as_ref().filter(|f| f.enabled) {
            Some(f) if f.optional && !models.join(&v.embedders[&f.embedder].file).exists() => {
                tracing::warn!(
                    file = %v.embedders[&f.embedder].file.display(),
                    "vision.fusion: second embedder not in the models folder (mirror-only model); \
                     running {} alone, with lower accuracy on small faces",
                    v.embedder
                );
                None
            }
            Some(f) => {
                let cfg = &v.embedders[&f.embedder];
                let e = Embedder::new(cfg, &models, v.threads)?;
                model_id.push_str(&format!(
                    "+{}*{:.2}",
                    model_tag(&f.embedder, &cfg.sha256),
                    f.weight
                ));
                Some((e, f.weight))
            }
            None => None,
        };
        Ok(Self {
            detector,
            embedder,
            fusion,
            liveness,
            pose,
            min_face_px: v.quality.min_face_px,
            flip_average: v.quality.flip_average,
            landmark_flip: v.quality.landmark_flip,
            landmark_flip_face_px: v.quality.landmark_flip_face_px,
            landmark_detector,
            blur_sigma: v.quality.upsample_blur_sigma,
            blur_sigma_src: v.quality.upsample_blur_sigma_src,
            model_id,
        })
    }

    /// `vision.workers` engines (one per core when 0), for bulk work that
    /// spreads photos over them (`facegate eval`). Each owns its sessions.
    pub fn pool(config: &Config) -> Result<Vec<Self>, VisionError> {
        (0..worker_count(config.vision.workers))
            .map(|_| Self::new(config))
            .collect()
    }

    /// Identifies the embedding model and how it is used; templates made
    /// under another id are not comparable with this engine's.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// Length of this engine's embeddings (both models' when fused).
    pub fn dim(&self) -> usize {
        self.embedder.config().dim + self.fusion.as_ref().map_or(0, |(e, _)| e.config().dim)
    }

    /// Faces smaller than this (shorter box side, pixels) are refused.
    pub fn min_face_px(&self) -> u32 {
        self.min_face_px
    }

    pub fn detector(&mut self) -> &mut Detector {
        &mut self.detector
    }

    pub fn embedder(&mut self) -> &mut Embedder {
        &mut self.embedder
    }

    /// The liveness ensemble, when enabled.
    pub fn liveness(&mut self) -> Option<&mut Liveness> {
        self.liveness.as_mut()
    }

    /// All faces in an image, best score first. With `landmark_flip`, each
    /// face's landmarks are the mean of those found on the image and on its
    /// mirror image (mapped back): the two estimates err independently, so
    /// the alignment of small faces steadies.
    pub fn detect(&mut self, img: RgbView<'_>) -> Result<Vec<Detection>, VisionError> {
        let mut found = self.detector.detect(img)?;
        if let Some(second) = &mut self.landmark_detector {
            for d in &mut found {
                if let Some(l) = second.landmarks_for(img, d)? {
                    d.landmarks = l;
                }
            }
            return Ok(found);
        }
        if !self.landmark_flip || found.is_empty() {
            return Ok(found);
        }
        if self.landmark_flip_face_px > 0 {
            let px = self.landmark_flip_face_px as f32;
            for d in &mut found {
                if let Some(f) = self.detector.detect_mirrored_around(img, d, px)? {
                    *d = average_landmarks(*d, std::slice::from_ref(&f));
                }
            }
            return Ok(found);
        }
        let width = img.width as f32;
        let flipped: Vec<Detection> = self
            .detector
            .detect_mirrored(img)?
            .iter()
            .map(|d| unmirror(d, width))
            .collect();
        Ok(found
            .into_iter()
            .map(|d| average_landmarks(d, &flipped))
            .collect())
    }

    /// Detects; if nothing is found, retries once with the image in the
    /// middle of a black canvas twice its size (tight face crops, where the
    /// face fills the frame, are missed by the detector otherwise).
    pub fn detect_with_border(&mut self, img: RgbView<'_>) -> Result<Vec<Detection>, VisionError> {
        Ok(self.detect_with_border_retried(img)?.0)
    }

    /// [`Self::detect_with_border`], also saying whether the border retry
    /// was needed.
    pub fn detect_with_border_retried(
        &mut self,
        img: RgbView<'_>,
    ) -> Result<(Vec<Detection>, bool), VisionError> {
        let found = self.detect(img)?;
        if !found.is_empty() {
            return Ok((found, false));
        }
        let (w, h) = (img.width, img.height);
        let (px, py) = (w / 2, h / 2);
        let mut canvas = ::image::RgbImage::new(w + 2 * px, h + 2 * py);
        for y in 0..h as usize {
            let dst_start = ((y + py as usize) * canvas.width() as usize + px as usize) * 3;
            let row = img.row(y);
            canvas.as_mut()[dst_start..dst_start + row.len()].copy_from_slice(row);
        }
        let found = self.detect(RgbView::from_image(&canvas))?;
        let found = found
            .into_iter()
            .map(|d| d.transformed(1.0, -(px as f32), -(py as f32)))
            .collect();
        Ok((found, true))
    }

    /// The aligned crop the embedder sees (softened when it was enlarged).
    pub fn align(&self, img: RgbView<'_>, det: &Detection) -> Vec<u8> {
        let e = self.embedder.config();
        let m = align::Similarity::estimate(
            &det.landmarks,
            &align::template_points(e.template, e.input_size),
        );
        let mut crop = align::warp(img, &m, e.input_size);
        if m.scale() > 1.0 {
            let sigma = if self.blur_sigma_src > 0.0 {
                (self.blur_sigma_src * m.scale()).min(3.0)
            } else {
                self.blur_sigma
            };
            align::gaussian_blur(&mut crop, e.input_size, sigma);
        }
        crop
    }

    /// Embeds one detected face (aligned from the full-resolution image).
    pub fn embed(&mut self, img: RgbView<'_>, det: &Detection) -> Result<Vec<f32>, VisionError> {
        let crop = self.align(img, det);
        self.embed_aligned(&crop)
    }

    /// Embeds an aligned crop; with `flip_average`, the mean of the crop's
    /// and its mirror's embeddings (faces are nearly symmetric, the noise
    /// of a small face is not: averaging cancels part of it).
    ///
    /// With fusion, the result is `[√(1−w)·e₁, √w·e₂]`: still unit length,
    /// and the dot product of two such vectors is `(1−w)·cos₁ + w·cos₂`, so
    /// the 1:N index needs no change.
    pub fn embed_aligned(&mut self, crop: &[u8]) -> Result<Vec<f32>, VisionError> {
        let flip = self.flip_average;
        let mut v = embed_one(&mut self.embedder, crop, flip)?;
        if let Some((second, w)) = &mut self.fusion {
            let v2 = embed_one(second, crop, flip)?;
            let (a, b) = ((1.0 - *w).sqrt(), w.sqrt());
            v.iter_mut().for_each(|x| *x *= a);
            v.extend(v2.iter().map(|x| x * b));
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
        let (mut liveness, mut liveness_not_judged) = (None, None);
        if let (Some(l), true) = (&mut self.liveness, checks.liveness) {
            match l.judge(img, det)? {
                Verdict::NotJudged(n) => liveness_not_judged = Some(n),
                Verdict::Scored { score, spoof } => {
                    if rejection.is_none() && spoof {
                        rejection = Some(Rejection::Spoof {
                            liveness: score,
                            threshold: l.threshold(),
                        });
                    }
                    liveness = Some(score);
                }
            }
        }
        Ok(QualityCheck {
            liveness,
            liveness_not_judged,
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
        self.analyze_faces(img, dets, checks)
    }

    /// Checks and embeds faces already detected (e.g. on a scaled copy of
    /// the frame, mapped back to `img`'s full-resolution coordinates).
    pub fn analyze_faces(
        &mut self,
        img: RgbView<'_>,
        dets: Vec<Detection>,
        checks: Checks,
    ) -> Result<Vec<FaceAnalysis>, VisionError> {
        let mut out = Vec::with_capacity(dets.len());
        for d in dets {
            let QualityCheck {
                liveness,
                liveness_not_judged,
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
                liveness_not_judged,
                pose,
                rejection,
                embedding,
            });
        }
        Ok(out)
    }
}
