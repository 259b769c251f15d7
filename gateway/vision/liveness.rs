//! Passive liveness: is this a live face, or a printed photo / screen?
//!
//! One or more models (an ensemble), each on its own crop around the face
//! (and, with `flip_average`, on its mirror image too, log-odds averaged);
//! the score is their weighted mean live probability or log-odds, compared
//! with one threshold. A model marked `optional` whose file is absent is
//! left out with a warning. Faces too small or too soft for the models are *not judged*
//! (`None`), which is not a spoof: the decision logic treats it as
//! "liveness uncertain".
//!
//! The crop follows Silent-Face's `CropImage` (`src/generate_patches.py`),
//! on which MiniFASNet was trained: box `[int(x1), int(y1), int(w+1),
//! int(h+1)]`, enlarged around its centre by the model's scale (reduced to
//! what fits), shifted to stay in the frame, corners truncated to integers,
//! both ends inclusive, then `cv2.resize` bilinear (no anti-aliasing).

use std::path::Path;

use ort::session::Session;
use ort::value::TensorRef;
use serde::Serialize;

use super::VisionError;
use super::detect::Detection;
use super::image::{RgbView, pack_tensor};
use super::runtime;
use crate::config::{Combine, Layout, LivenessConfig, LivenessModel};

/// Why a face's liveness was not judged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NotJudged {
    /// Smaller than `vision.liveness.min_face_px`.
    TooSmall { size_px: f32, min_px: u32 },
    /// Softer than `vision.liveness.min_sharpness`.
    TooSoft { sharpness: f32, min: f32 },
}

impl std::fmt::Display for NotJudged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotJudged::TooSmall { size_px, min_px } => {
                write!(f, "liveness not judged: face {size_px:.0} px < {min_px} px")
            }
            NotJudged::TooSoft { sharpness, min } => write!(
                f,
                "liveness not judged: face too soft (sharpness {sharpness:.1} < {min:.1})"
            ),
        }
    }
}

/// The liveness outcome for one face.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    NotJudged(NotJudged),
    /// The ensemble's live probability; below the threshold is a spoof.
    Scored {
        score: f32,
        spoof: bool,
    },
}

/// Silent-Face's crop box `[x0, y0, x1, y1]`, both ends inclusive.
pub fn crop_box(det: &Detection, width: u32, height: u32, scale: f32) -> [i64; 4] {
    let (w, h) = (width as f32, height as f32);
    // get_bbox(): [int(left), int(top), int(right-left+1), int(bottom-top+1)]
    let x = det.bbox[0].trunc();
    let y = det.bbox[1].trunc();
    let bw = (det.bbox[2] - det.bbox[0] + 1.0).trunc().max(1.0);
    let bh = (det.bbox[3] - det.bbox[1] + 1.0).trunc().max(1.0);
    let scale = scale.min((h - 1.0) / bh).min((w - 1.0) / bw);
    let (nw, nh) = (bw * scale, bh * scale);
    let (cx, cy) = (x + bw / 2.0, y + bh / 2.0);
    let (mut x0, mut y0) = (cx - nw / 2.0, cy - nh / 2.0);
    let (mut x1, mut y1) = (cx + nw / 2.0, cy + nh / 2.0);
    if x0 < 0.0 {
        x1 -= x0;
        x0 = 0.0;
    }
    if y0 < 0.0 {
        y1 -= y0;
        y0 = 0.0;
    }
    if x1 > w - 1.0 {
        x0 -= x1 - w + 1.0;
        x1 = w - 1.0;
    }
    if y1 > h - 1.0 {
        y0 -= y1 - h + 1.0;
        y1 = h - 1.0;
    }
    [
        x0.trunc() as i64,
        y0.trunc() as i64,
        x1.trunc() as i64,
        y1.trunc() as i64,
    ]
}

/// The crop as `cv2.resize(img[y0:y1+1, x0:x1+1], (size, size))` gives it:
/// bilinear, half-pixel centres, edges clamped, no anti-aliasing.
pub fn crop_resized(img: RgbView<'_>, b: [i64; 4], size: u32) -> Result<Vec<u8>, VisionError> {
    // numpy slicing: negative starts count from the end, ends clip.
    let clip = |v: i64, n: u32| v.clamp(0, n as i64) as u32;
    let (x0, y0) = (clip(b[0], img.width), clip(b[1], img.height));
    let (x1, y1) = (clip(b[2] + 1, img.width), clip(b[3] + 1, img.height));
    if x1 <= x0 || y1 <= y0 {
        return Err(VisionError::Inference("liveness crop is empty".into()));
    }
    let src = img.crop(x0, y0, x1, y1);
    let (sw, sh, n) = (src.width as usize, src.height as usize, size as usize);
    let taps = |dst: usize, len: usize| -> (usize, usize, f32) {
        let s = ((dst as f32 + 0.5) * len as f32 / n as f32 - 0.5).max(0.0);
        let i = (s.floor() as usize).min(len - 1);
        (i, (i + 1).min(len - 1), s - i as f32)
    };
    let xs: Vec<_> = (0..n).map(|x| taps(x, sw)).collect();
    let mut out = vec![0u8; n * n * 3];
    for y in 0..n {
        let (ya, yb, fy) = taps(y, sh);
        let (ra, rb) = (src.row(ya), src.row(yb));
        for (x, &(xa, xb, fx)) in xs.iter().enumerate() {
            for c in 0..3 {
                let top = ra[xa * 3 + c] as f32 * (1.0 - fx) + ra[xb * 3 + c] as f32 * fx;
                let bot = rb[xa * 3 + c] as f32 * (1.0 - fx) + rb[xb * 3 + c] as f32 * fx;
                out[(y * n + x) * 3 + c] = (top * (1.0 - fy) + bot * fy).round() as u8;
            }
        }
    }
    Ok(out)
}

/// Mean squared Laplacian of the grey face box: low for a soft (blurred,
/// heavily compressed or upscaled) face.
pub fn sharpness(img: RgbView<'_>, det: &Detection) -> f32 {
    let x0 = det.bbox[0].max(0.0) as usize;
    let y0 = det.bbox[1].max(0.0) as usize;
    let x1 = (det.bbox[2].max(0.0) as usize).min(img.width as usize);
    let y1 = (det.bbox[3].max(0.0) as usize).min(img.height as usize);
    if x1 < x0 + 3 || y1 < y0 + 3 {
        return 0.0;
    }
    let grey = |x: usize, y: usize| {
        let p = &img.row(y)[x * 3..x * 3 + 3];
        0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32
    };
    let (mut sum, mut n) = (0f64, 0usize);
    for y in y0 + 1..y1 - 1 {
        for x in x0 + 1..x1 - 1 {
            let l = grey(x - 1, y) + grey(x + 1, y) + grey(x, y - 1) + grey(x, y + 1)
                - 4.0 * grey(x, y);
            sum += (l * l) as f64;
            n += 1;
        }
    }
    (sum / n.max(1) as f64) as f32
}

pub(super) fn softmax(v: &[f32]) -> Vec<f32> {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = v.iter().map(|x| (x - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

/// The weighted mean probability, or the probability of the weighted mean
/// log-odds (probabilities clamped to [1e-6, 1 − 1e-6]).
pub fn combine(how: Combine, weighted: impl Iterator<Item = (f32, f32)>) -> f32 {
    let (mut num, mut den) = (0f64, 0f64);
    for (w, p) in weighted {
        let p = f64::from(p).clamp(1e-6, 1.0 - 1e-6);
        num += f64::from(w)
            * match how {
                Combine::Mean => p,
                Combine::LogOdds => (p / (1.0 - p)).ln(),
            };
        den += f64::from(w);
    }
    if den <= 0.0 {
        return 0.0;
    }
    let m = num / den;
    (match how {
        Combine::Mean => m,
        Combine::LogOdds => 1.0 / (1.0 + (-m).exp()),
    }) as f32
}

/// The mirror image of a square `side`² RGB crop.
fn mirror_rows(crop: &[u8], side: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(crop.len());
    for row in crop.chunks_exact(side * 3) {
        for px in row.chunks_exact(3).rev() {
            out.extend_from_slice(px);
        }
    }
    out
}

/// One model of the ensemble with its session.
struct Model {
    cfg: LivenessModel,
    session: Session,
    input: String,
}

impl Model {
    /// Live probability of the face (0..1).
    fn score(&mut self, img: RgbView<'_>, det: &Detection) -> Result<f32, VisionError> {
        let s = self.cfg.input_size as usize;
        let b = crop_box(det, img.width, img.height, self.cfg.crop_scale);
        let crop = crop_resized(img, b, s as u32)?;
        let p = self.run(&crop)?;
        if !self.cfg.flip_average {
            return Ok(p);
        }
        let q = self.run(&mirror_rows(&crop, s))?;
        Ok(combine(Combine::LogOdds, [(1.0, p), (1.0, q)].into_iter()))
    }

    /// Live probability of one `input_size`² RGB crop.
    fn run(&mut self, crop: &[u8]) -> Result<f32, VisionError> {
        let s = self.cfg.input_size as usize;
        let view = RgbView::new(s as u32, s as u32, s * 3, crop)
            .ok_or_else(|| VisionError::Inference("liveness crop buffer".into()))?;
        let mut t = vec![0f32; 3 * s * s];
        pack_tensor(view, &self.cfg.pixels, s, s, &mut t);
        let shape = match self.cfg.pixels.layout {
            Layout::Nchw => [1usize, 3, s, s],
            Layout::Nhwc => [1usize, s, s, 3],
        };
        let name = &self.cfg.name;
        let input = TensorRef::from_array_view((shape, t.as_slice()))
            .map_err(|e| VisionError::Inference(format!("liveness {name} input: {e}")))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input.as_str() => input])
            .map_err(|e| VisionError::Inference(format!("liveness {name}: {e}")))?;
        let (_, logits) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| VisionError::Inference(format!("liveness {name} output: {e}")))?;
        let p = softmax(logits);
        p.get(self.cfg.live_class).copied().ok_or_else(|| {
            VisionError::Inference(format!(
                "liveness {name}: output has {} classes, live_class is {}",
                p.len(),
                self.cfg.live_class
            ))
        })
    }
}

/// The configured liveness ensemble.
pub struct Liveness {
    models: Vec<Model>,
    combine: Combine,
    threshold: f32,
    min_face_px: u32,
    min_sharpness: f32,
}

impl Liveness {
    pub fn new(
        cfg: &LivenessConfig,
        models_dir: &Path,
        threads: usize,
    ) -> Result<Self, VisionError> {
        let models = cfg
            .models
            .iter()
            .filter(|m| {
                let absent = !models_dir.join(&m.file).exists();
                if absent && m.optional {
                    tracing::warn!(
                        file = %m.file.display(),
                        "vision.liveness: optional model {} not in the models folder (mirror-only); \
                         judging liveness with the other models of the ensemble",
                        m.name
                    );
                }
                !(absent && m.optional)
            })
            .map(|m| {
                let path = models_dir.join(&m.file);
                if !path.exists() {
                    return Err(VisionError::Model {
                        path,
                        reason: format!(
                            "liveness model {} not found; the MiniFASNet files are mirror-only \
                             (deploy/fetch-models.py --mirror DIR), or list other \
                             [[vision.liveness.models]] (their threshold must be chosen again \
                             with facegate eval-liveness)",
                            m.name
                        ),
                    });
                }
                let session = runtime::load_model(&path, &m.sha256, threads)?;
                let input = runtime::first_input(&session, &path)?;
                Ok(Model {
                    cfg: m.clone(),
                    session,
                    input,
                })
            })
            .collect::<Result<Vec<_>, VisionError>>()?;
        if models.is_empty() {
            let files: Vec<String> = cfg
                .models
                .iter()
                .map(|m| m.file.display().to_string())
                .collect();
            return Err(VisionError::Model {
                path: models_dir.to_owned(),
                reason: format!(
                    "no liveness model found (all optional and absent: {}); fetch them \
                     (deploy/fetch-models.py) or set vision.liveness.enabled = false",
                    files.join(", ")
                ),
            });
        }
        Ok(Self {
            models,
            combine: cfg.combine,
            threshold: cfg.threshold,
            min_face_px: cfg.min_face_px,
            min_sharpness: cfg.min_sharpness,
        })
    }

    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// The models' names, in config order.
    pub fn names(&self) -> Vec<String> {
        self.models.iter().map(|m| m.cfg.name.clone()).collect()
    }

    /// Why this face is not judged, if it is not (size, then sharpness).
    pub fn not_judged(&self, img: RgbView<'_>, det: &Detection) -> Option<NotJudged> {
        let size_px = det.size();
        if size_px < self.min_face_px as f32 {
            return Some(NotJudged::TooSmall {
                size_px,
                min_px: self.min_face_px,
            });
        }
        if self.min_sharpness > 0.0 {
            let s = sharpness(img, det);
            if s < self.min_sharpness {
                return Some(NotJudged::TooSoft {
                    sharpness: s,
                    min: self.min_sharpness,
                });
            }
        }
        None
    }

    /// Each model's live probability, in config order (no size check).
    pub fn scores(&mut self, img: RgbView<'_>, det: &Detection) -> Result<Vec<f32>, VisionError> {
        self.models.iter_mut().map(|m| m.score(img, det)).collect()
    }

    /// Model `i`'s live probability (config order; for per-model reports).
    pub fn scores_of(
        &mut self,
        i: usize,
        img: RgbView<'_>,
        det: &Detection,
    ) -> Result<f32, VisionError> {
        let m = self
            .models
            .get_mut(i)
            .ok_or_else(|| VisionError::Inference(format!("no liveness model {i}")))?;
        m.score(img, det)
    }

    /// The ensemble score of per-model scores (in config order).
    pub fn combine(&self, scores: &[f32]) -> f32 {
        let weights = self.models.iter().map(|m| m.cfg.weight);
        combine(self.combine, weights.zip(scores.iter().copied()))
    }

    /// The verdict for one face: what the gate and `facegate identify
    /// --liveness` act on, and what `facegate eval-liveness` measures.
    pub fn judge(&mut self, img: RgbView<'_>, det: &Detection) -> Result<Verdict, VisionError> {
        if let Some(n) = self.not_judged(img, det) {
            return Ok(Verdict::NotJudged(n));
        }
        let scores = self.scores(img, det)?;
        let score = self.combine(&scores);
        Ok(Verdict::Scored {
            score,
            spoof: score < self.threshold,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(bbox: [f32; 4]) -> Detection {
        Detection {
            bbox,
            score: 1.0,
            landmarks: [[0.0; 2]; 5],
        }
    }

    #[test]
    fn the_crop_follows_silent_face() {
        // Worked by hand through CropImage._get_new_box: bbox [100, 80, 51, 60],
        // scale 2.7 -> 137.7 x 162 around (125.5, 110).
        let b = crop_box(&det([100.4, 80.2, 150.9, 140.0]), 640, 480, 2.7);
        assert_eq!(b, [56, 29, 194, 191]);
        // Near the left/top edge the crop is shifted inside, not clipped.
        let b = crop_box(&det([0.0, 0.0, 39.0, 49.0]), 640, 480, 2.7);
        assert_eq!(b, [0, 0, 108, 135]);
        // Too big for the scale: the largest that fits ((480-1)/301).
        let b = crop_box(&det([100.0, 100.0, 400.0, 400.0]), 640, 480, 4.0);
        assert_eq!((b[1], b[3]), (0, 479));
    }

    #[test]
    fn bilinear_crop_keeps_a_flat_colour_and_matches_cv2_centres() {
        let img = ::image::RgbImage::from_fn(10, 10, |x, _| ::image::Rgb([(x * 20) as u8, 7, 9]));
        let v = RgbView::from_image(&img);
        let out = crop_resized(v, [0, 0, 9, 9], 5).unwrap();
        // dst x maps to src 2x+0.5: halfway between columns 2x and 2x+1.
        let reds: Vec<u8> = (0..5).map(|x| out[x * 3]).collect();
        assert_eq!(reds, vec![10, 50, 90, 130, 170]);
        assert!(out.chunks(3).all(|p| p[1] == 7 && p[2] == 9));
    }

    #[test]
    fn sharpness_is_low_on_a_flat_face_and_high_on_detail() {
        let flat = ::image::RgbImage::from_pixel(50, 50, ::image::Rgb([120; 3]));
        let busy = ::image::RgbImage::from_fn(50, 50, |x, y| {
            ::image::Rgb([if (x + y) % 2 == 0 { 0 } else { 255 }; 3])
        });
        let d = det([5.0, 5.0, 45.0, 45.0]);
        assert_eq!(sharpness(RgbView::from_image(&flat), &d), 0.0);
        assert!(sharpness(RgbView::from_image(&busy), &d) > 1000.0);
    }

    #[test]
    fn log_odds_lets_a_sure_model_outweigh_a_hesitant_one() {
        let two = |a, b| [(1.0, a), (1.0, b)].into_iter();
        assert!((combine(Combine::Mean, two(0.9, 0.5)) - 0.7).abs() < 1e-6);
        // logit(0.9) = 2.197, logit(0.5) = 0: mean 1.099 -> 0.75.
        assert!((combine(Combine::LogOdds, two(0.9, 0.5)) - 0.75).abs() < 1e-3);
        // A model sure of a spoof (0.001) pulls harder in log-odds.
        assert!(combine(Combine::LogOdds, two(0.001, 0.6)) < 0.05);
        assert!(combine(Combine::Mean, two(0.001, 0.6)) > 0.3);
        // Equal weights and one model: the model's own probability.
        assert!((combine(Combine::LogOdds, [(2.0, 0.3)].into_iter()) - 0.3).abs() < 1e-6);
    }

    #[test]
    fn the_mirror_of_a_crop_reverses_each_row_and_keeps_pixels_whole() {
        // 2x2 RGB: pixels a b / c d -> b a / d c.
        let crop = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        assert_eq!(
            mirror_rows(&crop, 2),
            vec![4, 5, 6, 1, 2, 3, 10, 11, 12, 7, 8, 9]
        );
        assert_eq!(mirror_rows(&mirror_rows(&crop, 2), 2), crop.to_vec());
    }

    #[test]
    fn softmax_sums_to_one() {
        let p = softmax(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[2] > p[1] && p[1] > p[0]);
    }
}
