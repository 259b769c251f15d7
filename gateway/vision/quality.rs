//! Quality checks on a detected face: head pose (profile faces embed badly).
//! Liveness lives in `liveness.rs`.

use std::path::Path;

use ort::session::Session;
use ort::value::TensorRef;
use serde::Serialize;

use super::VisionError;
use super::detect::Detection;
use super::image::{RgbView, pack_tensor, resize};
use super::liveness::softmax;
use super::runtime;
use crate::config::PoseConfig;

/// Head orientation in degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Pose {
    pub yaw: f32,
    pub pitch: f32,
    pub roll: f32,
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
