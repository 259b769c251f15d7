//! Quality checks on a detected face: passive liveness (is this a live face
//! or a printed photo / screen) and head pose (profile faces embed badly).

use std::path::Path;

use ort::session::Session;
use ort::value::TensorRef;
use serde::Serialize;

use super::VisionError;
use super::detect::Detection;
use super::image::{RgbView, pack_tensor, resize};
use super::runtime;
use crate::config::{LivenessConfig, PoseConfig};

/// Head orientation in degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Pose {
    pub yaw: f32,
    pub pitch: f32,
    pub roll: f32,
}

/// The liveness crop: the box enlarged `scale`× around its centre, the scale
/// reduced if it would not fit, and shifted to stay inside the frame (as the
/// Silent-Face models were trained).
pub fn liveness_crop(det: &Detection, width: u32, height: u32, scale: f32) -> [u32; 4] {
    let (w, h) = (width as f32, height as f32);
    let bw = det.width().max(1.0);
    let bh = det.height().max(1.0);
    let scale = scale.min((h - 1.0) / bh).min((w - 1.0) / bw).max(0.0);
    let (nw, nh) = (bw * scale, bh * scale);
    let cx = det.bbox[0] + bw / 2.0;
    let cy = det.bbox[1] + bh / 2.0;
    let mut x0 = cx - nw / 2.0;
    let mut y0 = cy - nh / 2.0;
    let mut x1 = cx + nw / 2.0;
    let mut y1 = cy + nh / 2.0;
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
        x0.max(0.0) as u32,
        y0.max(0.0) as u32,
        (x1 as u32 + 1).min(width),
        (y1 as u32 + 1).min(height),
    ]
}

/// The pose crop: the box grown by a quarter of its size on each side, clipped.
pub fn pose_crop(det: &Detection, width: u32, height: u32) -> [u32; 4] {
    let (bw, bh) = (det.width(), det.height());
    let x0 = (det.bbox[0] - bw / 4.0).max(0.0);
    let y0 = (det.bbox[1] - bh / 4.0).max(0.0);
    let x1 = (det.bbox[2] + bw / 4.0).min(width as f32);
    let y1 = (det.bbox[3] + bh / 4.0).min(height as f32);
    [x0 as u32, y0 as u32, x1.ceil() as u32, y1.ceil() as u32]
}

fn crop_tensor(
    img: RgbView<'_>,
    r: [u32; 4],
    size: u32,
    fmt: &crate::config::PixelFormat,
) -> Result<Vec<f32>, VisionError> {
    let crop = img.crop(r[0], r[1], r[2], r[3]);
    if crop.width == 0 || crop.height == 0 {
        return Err(VisionError::Inference("face crop is empty".into()));
    }
    let scaled = resize(crop, size, size);
    let mut t = vec![0f32; 3 * (size as usize).pow(2)];
    pack_tensor(
        RgbView::from_image(&scaled),
        fmt,
        size as usize,
        size as usize,
        &mut t,
    );
    Ok(t)
}

fn softmax(v: &[f32]) -> Vec<f32> {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = v.iter().map(|x| (x - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

pub struct Liveness {
    cfg: LivenessConfig,
    session: Session,
    input: String,
}

impl Liveness {
    pub fn new(
        cfg: &LivenessConfig,
        models_dir: &Path,
        threads: usize,
    ) -> Result<Self, VisionError> {
        let path = models_dir.join(&cfg.file);
        let session = runtime::load_model(&path, &cfg.sha256, threads)?;
        let input = runtime::first_input(&session, &path)?;
        Ok(Self {
            cfg: cfg.clone(),
            session,
            input,
        })
    }

    /// Probability that the face is live (0..1).
    pub fn score(&mut self, img: RgbView<'_>, det: &Detection) -> Result<f32, VisionError> {
        let s = self.cfg.input_size;
        let r = liveness_crop(det, img.width, img.height, self.cfg.crop_scale);
        let t = crop_tensor(img, r, s, &self.cfg.pixels)?;
        let input = TensorRef::from_array_view(([1usize, 3, s as usize, s as usize], t.as_slice()))
            .map_err(|e| VisionError::Inference(format!("liveness input: {e}")))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input.as_str() => input])
            .map_err(|e| VisionError::Inference(format!("liveness: {e}")))?;
        let (_, logits) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| VisionError::Inference(format!("liveness output: {e}")))?;
        let p = softmax(logits);
        p.get(self.cfg.live_class).copied().ok_or_else(|| {
            VisionError::Inference(format!(
                "liveness output has {} classes, live_class is {}",
                p.len(),
                self.cfg.live_class
            ))
        })
    }

    pub fn threshold(&self) -> f32 {
        self.cfg.threshold
    }
}

pub struct HeadPose {
    cfg: PoseConfig,
    session: Session,
    input: String,
}

impl HeadPose {
    pub fn new(cfg: &PoseConfig, models_dir: &Path, threads: usize) -> Result<Self, VisionError> {
        let path = models_dir.join(&cfg.file);
        let session = runtime::load_model(&path, &cfg.sha256, threads)?;
        let input = runtime::first_input(&session, &path)?;
        Ok(Self {
            cfg: cfg.clone(),
            session,
            input,
        })
    }

    pub fn estimate(&mut self, img: RgbView<'_>, det: &Detection) -> Result<Pose, VisionError> {
        let s = self.cfg.input_size;
        let r = pose_crop(det, img.width, img.height);
        let t = crop_tensor(img, r, s, &self.cfg.pixels)?;
        let input = TensorRef::from_array_view(([1usize, 3, s as usize, s as usize], t.as_slice()))
            .map_err(|e| VisionError::Inference(format!("pose input: {e}")))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input.as_str() => input])
            .map_err(|e| VisionError::Inference(format!("pose: {e}")))?;
        if outputs.len() < 3 {
            return Err(VisionError::Inference(
                "pose model must output yaw, pitch, roll".into(),
            ));
        }
        let mut angles = [0f32; 3];
        for (k, a) in angles.iter_mut().enumerate() {
            let (_, bins) = outputs[k]
                .try_extract_tensor::<f32>()
                .map_err(|e| VisionError::Inference(format!("pose output {k}: {e}")))?;
            *a = softmax(bins)
                .iter()
                .enumerate()
                .map(|(i, p)| p * i as f32)
                .sum::<f32>()
                * 3.0
                - 99.0;
        }
        Ok(Pose {
            yaw: angles[0],
            pitch: angles[1],
            roll: angles[2],
        })
    }

    /// Whether the face is turned too far to recognise.
    pub fn too_turned(&self, p: &Pose) -> bool {
        p.yaw.abs() > self.cfg.max_yaw || p.pitch.abs() > self.cfg.max_pitch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_crop_stays_inside_the_frame() {
        let d = Detection {
            bbox: [0.0, 0.0, 40.0, 50.0],
            score: 1.0,
            landmarks: [[0.0; 2]; 5],
        };
        let r = liveness_crop(&d, 640, 480, 2.7);
        assert_eq!((r[0], r[1]), (0, 0));
        assert!(r[2] <= 640 && r[3] <= 480);
        assert!((r[2] as f32 - 108.0).abs() <= 2.0, "{r:?}");
        // A face too big for 2.7x gets the largest scale that fits.
        let big = Detection {
            bbox: [100.0, 100.0, 400.0, 400.0],
            ..d
        };
        let r = liveness_crop(&big, 640, 480, 2.7);
        assert!(r[3] <= 480 && r[1] == 0, "{r:?}");
    }

    #[test]
    fn softmax_sums_to_one() {
        let p = softmax(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[2] > p[1] && p[1] > p[0]);
    }
}
