//! Face embeddings: an aligned crop in, an L2-normalised vector out.

use std::path::Path;

use ort::session::Session;
use ort::value::TensorRef;

use super::VisionError;
use super::image::{RgbView, pack_tensor};
use super::runtime;
use crate::config::{EmbedderModel, Layout};

pub struct Embedder {
    cfg: EmbedderModel,
    session: Session,
    input: String,
    output: String,
    tensor: Vec<f32>,
}

impl Embedder {
    pub fn new(
        cfg: &EmbedderModel,
        models_dir: &Path,
        threads: usize,
    ) -> Result<Self, VisionError> {
        let path = models_dir.join(&cfg.file);
        let session = runtime::load_model(&path, &cfg.sha256, threads)?;
        let bad = |reason: &str| VisionError::Model {
            path: path.clone(),
            reason: reason.into(),
        };
        let input = runtime::first_input(&session, &path)?;
        let output = session
            .outputs()
            .first()
            .map(|o| o.name().to_owned())
            .ok_or_else(|| bad("model has no output"))?;
        let n = 3 * (cfg.input_size as usize).pow(2);
        Ok(Self {
            cfg: cfg.clone(),
            session,
            input,
            output,
            tensor: vec![0.0; n],
        })
    }

    pub fn config(&self) -> &EmbedderModel {
        &self.cfg
    }

    /// Packs an aligned crop (`input_size²` RGB) into the model's input.
    pub fn prepare(&mut self, crop: &[u8]) -> Result<(), VisionError> {
        let s = self.cfg.input_size;
        let view = RgbView::new(s, s, s as usize * 3, crop).ok_or_else(|| {
            VisionError::Inference(format!(
                "aligned crop is {} bytes, expected {s}x{s} RGB",
                crop.len()
            ))
        })?;
        pack_tensor(
            view,
            &self.cfg.pixels,
            s as usize,
            s as usize,
            &mut self.tensor,
        );
        Ok(())
    }

    /// Runs the model on the prepared input; returns the raw (unnormalised) vector.
    pub fn run(&mut self) -> Result<Vec<f32>, VisionError> {
        let s = self.cfg.input_size as usize;
        let shape = match self.cfg.pixels.layout {
            Layout::Nchw => [1usize, 3, s, s],
            Layout::Nhwc => [1usize, s, s, 3],
        };
        let input = TensorRef::from_array_view((shape, self.tensor.as_slice()))
            .map_err(|e| VisionError::Inference(format!("embedder input: {e}")))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input.as_str() => input])
            .map_err(|e| VisionError::Inference(format!("embedder: {e}")))?;
        let (_, data) = outputs[self.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| VisionError::Inference(format!("embedder output: {e}")))?;
        if data.len() != self.cfg.dim {
            return Err(VisionError::Inference(format!(
                "embedder gave {} values, config says dim = {}",
                data.len(),
                self.cfg.dim
            )));
        }
        Ok(data.to_vec())
    }

    /// Embeds one aligned crop; L2-normalised.
    pub fn embed(&mut self, crop: &[u8]) -> Result<Vec<f32>, VisionError> {
        self.prepare(crop)?;
        let mut v = self.run()?;
        normalize(&mut v)?;
        Ok(v)
    }
}

/// Scales a vector to unit length; a zero or non-finite vector is an error
/// (a model that outputs that is broken, and matching it would be noise).
pub fn normalize(v: &mut [f32]) -> Result<(), VisionError> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !n.is_finite() || n <= f32::EPSILON {
        return Err(VisionError::Inference(
            "embedding is zero or not finite".into(),
        ));
    }
    v.iter_mut().for_each(|x| *x /= n);
    Ok(())
}

/// Cosine similarity of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
