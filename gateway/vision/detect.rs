//! Face detection: YuNet and RetinaFace, each with its own output decoding
//! (a closed set: an enum, not a trait object), shared scaling and NMS.

use std::path::Path;

use ort::session::Session;
use ort::value::TensorRef;
use serde::Serialize;

use super::VisionError;
use super::image::{RgbView, pack_tensor, pack_tensor_mirrored, resize, resize_mirrored};
use super::runtime;
use crate::config::{DetectorKind, DetectorModel};

/// One face: box `[x1, y1, x2, y2]`, score, and five landmarks (eye on the
/// image's left, eye on the right, nose tip, mouth corners left and right),
/// in the coordinates of the image given to the detector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Detection {
    pub bbox: [f32; 4],
    pub score: f32,
    pub landmarks: [[f32; 2]; 5],
}

impl Detection {
    pub fn width(&self) -> f32 {
        self.bbox[2] - self.bbox[0]
    }
    pub fn height(&self) -> f32 {
        self.bbox[3] - self.bbox[1]
    }
    /// Shorter side of the box: the size that decides if a face is usable.
    pub fn size(&self) -> f32 {
        self.width().min(self.height())
    }
    pub fn area(&self) -> f32 {
        self.width().max(0.0) * self.height().max(0.0)
    }

    /// Maps the detection through `p' = p·scale + offset`.
    pub fn transformed(&self, scale: f32, dx: f32, dy: f32) -> Detection {
        let mut d = *self;
        d.bbox = [
            self.bbox[0] * scale + dx,
            self.bbox[1] * scale + dy,
            self.bbox[2] * scale + dx,
            self.bbox[3] * scale + dy,
        ];
        for (o, p) in d.landmarks.iter_mut().zip(&self.landmarks) {
            *o = [p[0] * scale + dx, p[1] * scale + dy];
        }
        d
    }
}

/// A detector's input, prepared: the tensor and how it maps back.
pub struct Prepared {
    pub tensor: Vec<f32>,
    pub width: usize,
    pub height: usize,
    /// Tensor pixels per source pixel.
    pub scale: f32,
}

pub struct Detector {
    cfg: DetectorModel,
    session: Session,
    input: String,
    /// The last input tensor's buffer, reused by the next detection (a
    /// 640×480 input is 3.7 MB: fresh pages on every frame otherwise).
    spare: Vec<f32>,
}

impl Detector {
    pub fn new(
        cfg: &DetectorModel,
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
            spare: Vec::new(),
        })
    }

    pub fn config(&self) -> &DetectorModel {
        &self.cfg
    }

    /// Tensor pixels per image pixel for an image of this size: long side
    /// at most `max_side`; small images up to `upscale_below`.
    pub fn input_scale(&self, width: u32, height: u32) -> f32 {
        let long = width.max(height).max(1) as f32;
        if long > self.cfg.max_side as f32 {
            self.cfg.max_side as f32 / long
        } else if long < self.cfg.upscale_below as f32 {
            self.cfg.upscale_below as f32 / long
        } else {
            1.0
        }
    }

    /// Scales the image by [`Self::input_scale`] and packs it, padded to
    /// multiples of 32.
    pub fn prepare(&self, img: RgbView<'_>) -> Prepared {
        self.prepare_scaled(img, self.input_scale(img.width, img.height))
    }

    /// Scales the image by `scale` and packs it, padded to multiples of 32.
    pub fn prepare_scaled(&self, img: RgbView<'_>, scale: f32) -> Prepared {
        prepare_into(&self.cfg, img, scale, false, Vec::new())
    }

    /// Runs the model on a prepared input and decodes faces in tensor coordinates.
    pub fn run(&mut self, p: &Prepared) -> Result<Vec<Detection>, VisionError> {
        let shape = [1usize, 3, p.height, p.width];
        let input = TensorRef::from_array_view((shape, p.tensor.as_slice()))
            .map_err(|e| VisionError::Inference(format!("detector input: {e}")))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input.as_str() => input])
            .map_err(|e| VisionError::Inference(format!("detector: {e}")))?;
        let get = |name: &str| -> Result<&[f32], VisionError> {
            let v = outputs
                .get(name)
                .ok_or_else(|| VisionError::Inference(format!("detector output {name} missing")))?;
            v.try_extract_tensor::<f32>()
                .map(|(_, d)| d)
                .map_err(|e| VisionError::Inference(format!("detector output {name}: {e}")))
        };
        let th = self.cfg.score_threshold;
        let raw = match self.cfg.kind {
            DetectorKind::Yunet => {
                let mut all = Vec::new();
                for s in [8usize, 16, 32] {
                    let level = YunetLevel {
                        stride: s,
                        cols: p.width / s,
                        rows: p.height / s,
                        cls: get(&format!("cls_{s}"))?,
                        obj: get(&format!("obj_{s}"))?,
                        bbox: get(&format!("bbox_{s}"))?,
                        kps: get(&format!("kps_{s}"))?,
                    };
                    decode_yunet(&level, th, &mut all)?;
                }
                all
            }
            DetectorKind::Retinaface => decode_retinaface(
                get("loc")?,
                get("conf")?,
                get("landmarks")?,
                p.width,
                p.height,
                th,
            )?,
        };
        Ok(nms(raw, self.cfg.nms_iou))
    }

    /// Detects faces in an image; coordinates are the image's own.
    pub fn detect(&mut self, img: RgbView<'_>) -> Result<Vec<Detection>, VisionError> {
        self.detect_at(img, 1.0)
    }

    /// Detects with the detector's input `factor` times larger than usual
    /// (a diagnosis: is a missed face only too small for the input?).
    pub fn detect_at(
        &mut self,
        img: RgbView<'_>,
        factor: f32,
    ) -> Result<Vec<Detection>, VisionError> {
        self.detect_impl(img, factor, false)
    }

    /// Detects faces in the image mirrored left to right, in the mirror
    /// image's coordinates: the same as [`Self::detect`] on the mirror image,
    /// without making it.
    pub fn detect_mirrored(&mut self, img: RgbView<'_>) -> Result<Vec<Detection>, VisionError> {
        self.detect_impl(img, 1.0, true)
    }

    fn detect_impl(
        &mut self,
        img: RgbView<'_>,
        factor: f32,
        mirror: bool,
    ) -> Result<Vec<Detection>, VisionError> {
        let scale = self.input_scale(img.width, img.height) * factor;
        let spare = std::mem::take(&mut self.spare);
        let p = prepare_into(&self.cfg, img, scale, mirror, spare);
        let inv = 1.0 / p.scale;
        let dets = self.run(&p);
        self.spare = p.tensor;
        Ok(dets?
            .into_iter()
            .map(|d| d.transformed(inv, 0.0, 0.0))
            .filter(|d| d.bbox[0] < img.width as f32 && d.bbox[1] < img.height as f32)
            .collect())
    }
}

/// Scales the image (mirrored when `mirror`) by `scale` and packs it into
/// `tensor` (resized, every value written), padded to multiples of 32.
fn prepare_into(
    cfg: &DetectorModel,
    img: RgbView<'_>,
    scale: f32,
    mirror: bool,
    mut tensor: Vec<f32>,
) -> Prepared {
    let w = ((img.width as f32 * scale).round() as u32).max(1);
    let h = ((img.height as f32 * scale).round() as u32).max(1);
    let tw = (w as usize).div_ceil(32) * 32;
    let th = (h as usize).div_ceil(32) * 32;
    tensor.resize(3 * tw * th, 0.0);
    let pack = if mirror {
        pack_tensor_mirrored
    } else {
        pack_tensor
    };
    if w == img.width && h == img.height {
        pack(img, &cfg.pixels, tw, th, &mut tensor);
    } else {
        // The scaled copy is already mirrored: pack it as it is.
        let scaled = if mirror {
            resize_mirrored(img, w, h)
        } else {
            resize(img, w, h)
        };
        pack_tensor(
            RgbView::from_image(&scaled),
            &cfg.pixels,
            tw,
            th,
            &mut tensor,
        );
    }
    // Effective scale per axis differs by rounding; use the mean.
    let eff = (w as f32 / img.width.max(1) as f32 + h as f32 / img.height.max(1) as f32) / 2.0;
    Prepared {
        tensor,
        width: tw,
        height: th,
        scale: eff,
    }
}

impl Detector {
    /// Re-estimates one face's landmarks with this detector, run on a crop
    /// around it (the box enlarged `CROP` times) scaled so the crop is
    /// `CROP_PX` wide: a small face is seen at a size the detector is good
    /// at. `None` when this detector finds no face overlapping the box.
    pub fn landmarks_for(
        &mut self,
        img: RgbView<'_>,
        face: &Detection,
    ) -> Result<Option<[[f32; 2]; 5]>, VisionError> {
        const CROP: f32 = 2.0;
        const CROP_PX: f32 = 160.0;
        let cx = (face.bbox[0] + face.bbox[2]) / 2.0;
        let cy = (face.bbox[1] + face.bbox[3]) / 2.0;
        let side = face.width().max(face.height()).max(1.0) * CROP;
        let x0 = (cx - side / 2.0).floor().max(0.0) as u32;
        let y0 = (cy - side / 2.0).floor().max(0.0) as u32;
        let x1 = (cx + side / 2.0).ceil().max(0.0) as u32;
        let y1 = (cy + side / 2.0).ceil().max(0.0) as u32;
        let crop = img.crop(x0, y0, x1, y1);
        if crop.width < 8 || crop.height < 8 {
            return Ok(None);
        }
        let p = self.prepare_scaled(crop, CROP_PX / side);
        let inv = 1.0 / p.scale;
        let best = self
            .run(&p)?
            .into_iter()
            .map(|d| d.transformed(inv, x0 as f32, y0 as f32))
            .map(|d| (iou(&d.bbox, &face.bbox), d))
            .filter(|(o, _)| *o >= 0.3)
            .max_by(|a, b| a.0.total_cmp(&b.0));
        Ok(best.map(|(_, d)| d.landmarks))
    }
}

impl Detector {
    /// The landmark-flip pass for one face, on a crop instead of the whole
    /// frame: this detector run on the mirror image of a square around the
    /// face (its box enlarged [`FLIP_CROP`] times, clipped to the image),
    /// scaled so that the face's longer side is at most `face_px` pixels and
    /// never larger than in the whole-frame pass. Returns the detection that
    /// overlaps `face` most (IoU ≥ 0.3), mapped back to the image's
    /// coordinates and unmirrored (as [`unmirror`] does), or `None`.
    ///
    /// A portrait's face is 100–400 px in the whole-frame pass; seen at
    /// ~128 px in a ~256 px crop, the pass costs a fraction of a second
    /// whole-frame run, and on a camera frame the saving is larger still.
    pub fn detect_mirrored_around(
        &mut self,
        img: RgbView<'_>,
        face: &Detection,
        face_px: f32,
    ) -> Result<Option<Detection>, VisionError> {
        let long = face.width().max(face.height()).max(1.0);
        let cx = (face.bbox[0] + face.bbox[2]) / 2.0;
        let cy = (face.bbox[1] + face.bbox[3]) / 2.0;
        let side = long * FLIP_CROP;
        let clamp_x = |v: f32| v.clamp(0.0, img.width as f32) as u32;
        let clamp_y = |v: f32| v.clamp(0.0, img.height as f32) as u32;
        let (x0, x1) = (
            clamp_x((cx - side / 2.0).floor()),
            clamp_x((cx + side / 2.0).ceil()),
        );
        let (y0, y1) = (
            clamp_y((cy - side / 2.0).floor()),
            clamp_y((cy + side / 2.0).ceil()),
        );
        let crop = img.crop(x0, y0, x1, y1);
        if crop.width < 8 || crop.height < 8 {
            return Ok(None);
        }
        let scale = self.input_scale(img.width, img.height).min(face_px / long);
        let spare = std::mem::take(&mut self.spare);
        let p = prepare_into(&self.cfg, crop, scale, true, spare);
        let inv = 1.0 / p.scale;
        let dets = self.run(&p);
        self.spare = p.tensor;
        let crop_w = crop.width as f32;
        Ok(dets?
            .into_iter()
            .map(|d| unmirror(&d.transformed(inv, 0.0, 0.0), crop_w))
            .map(|d| d.transformed(1.0, x0 as f32, y0 as f32))
            .map(|d| (iou(&d.bbox, &face.bbox), d))
            .filter(|(o, _)| *o >= 0.3)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, d)| d))
    }
}

/// How much larger than the face box the crop of
/// [`Detector::detect_mirrored_around`] is (each side).
pub const FLIP_CROP: f32 = 2.0;

/// Maps a detection made on the mirror image of a `width`-wide image back:
/// x → width − x, and the left/right landmarks swap places (eyes 0↔1,
/// mouth corners 3↔4).
pub fn unmirror(d: &Detection, width: f32) -> Detection {
    let mut out = *d;
    out.bbox[0] = width - d.bbox[2];
    out.bbox[2] = width - d.bbox[0];
    for (i, j) in [1usize, 0, 2, 4, 3].into_iter().enumerate() {
        out.landmarks[i] = [width - d.landmarks[j][0], d.landmarks[j][1]];
    }
    out
}

/// One YuNet output level (stride `s`): one anchor per grid cell.
struct YunetLevel<'a> {
    stride: usize,
    cols: usize,
    rows: usize,
    cls: &'a [f32],
    obj: &'a [f32],
    bbox: &'a [f32],
    kps: &'a [f32],
}

fn decode_yunet(
    l: &YunetLevel<'_>,
    threshold: f32,
    out: &mut Vec<Detection>,
) -> Result<(), VisionError> {
    let n = l.cols * l.rows;
    if l.cls.len() < n || l.obj.len() < n || l.bbox.len() < 4 * n || l.kps.len() < 10 * n {
        return Err(VisionError::Inference(format!(
            "YuNet stride {}: outputs shorter than the {}x{} grid",
            l.stride, l.cols, l.rows
        )));
    }
    let s = l.stride as f32;
    for i in 0..n {
        let score = (l.cls[i].clamp(0.0, 1.0) * l.obj[i].clamp(0.0, 1.0)).sqrt();
        if score < threshold {
            continue;
        }
        let col = (i % l.cols) as f32;
        let row = (i / l.cols) as f32;
        let b = &l.bbox[i * 4..i * 4 + 4];
        let cx = (col + b[0]) * s;
        let cy = (row + b[1]) * s;
        let w = b[2].exp() * s;
        let h = b[3].exp() * s;
        let k = &l.kps[i * 10..i * 10 + 10];
        let mut landmarks = [[0f32; 2]; 5];
        for (j, lm) in landmarks.iter_mut().enumerate() {
            *lm = [(col + k[2 * j]) * s, (row + k[2 * j + 1]) * s];
        }
        out.push(Detection {
            bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0],
            score,
            landmarks,
        });
    }
    Ok(())
}

fn decode_retinaface(
    loc: &[f32],
    conf: &[f32],
    lms: &[f32],
    width: usize,
    height: usize,
    threshold: f32,
) -> Result<Vec<Detection>, VisionError> {
    let (w, h) = (width as f32, height as f32);
    let mut priors = Vec::new();
    for (s, sizes) in [
        (8usize, [16f32, 32.0]),
        (16, [64.0, 128.0]),
        (32, [256.0, 512.0]),
    ] {
        let rows = height.div_ceil(s);
        let cols = width.div_ceil(s);
        for y in 0..rows {
            for x in 0..cols {
                for m in sizes {
                    priors.push([
                        (x as f32 + 0.5) * s as f32 / w,
                        (y as f32 + 0.5) * s as f32 / h,
                        m / w,
                        m / h,
                    ]);
                }
            }
        }
    }
    let n = priors.len();
    if loc.len() < 4 * n || conf.len() < 2 * n || lms.len() < 10 * n {
        return Err(VisionError::Inference(format!(
            "RetinaFace: outputs shorter than the {n} priors of a {width}x{height} input"
        )));
    }
    let mut out = Vec::new();
    for (i, p) in priors.iter().enumerate() {
        let (c0, c1) = (conf[2 * i], conf[2 * i + 1]);
        let m = c0.max(c1);
        let score = (c1 - m).exp() / ((c0 - m).exp() + (c1 - m).exp());
        if score < threshold {
            continue;
        }
        let l = &loc[4 * i..4 * i + 4];
        let cx = p[0] + l[0] * 0.1 * p[2];
        let cy = p[1] + l[1] * 0.1 * p[3];
        let bw = p[2] * (l[2] * 0.2).exp();
        let bh = p[3] * (l[3] * 0.2).exp();
        let k = &lms[10 * i..10 * i + 10];
        let mut landmarks = [[0f32; 2]; 5];
        for (j, lm) in landmarks.iter_mut().enumerate() {
            *lm = [
                (p[0] + k[2 * j] * 0.1 * p[2]) * w,
                (p[1] + k[2 * j + 1] * 0.1 * p[3]) * h,
            ];
        }
        out.push(Detection {
            bbox: [
                (cx - bw / 2.0) * w,
                (cy - bh / 2.0) * h,
                (cx + bw / 2.0) * w,
                (cy + bh / 2.0) * h,
            ],
            score,
            landmarks,
        });
    }
    Ok(out)
}

/// Intersection over union of two boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let ix = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let iy = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = ix * iy;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// Greedy non-maximum suppression, best score first.
pub fn nms(mut dets: Vec<Detection>, threshold: f32) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut keep: Vec<Detection> = Vec::with_capacity(dets.len().min(64));
    for d in dets {
        if keep.iter().all(|k| iou(&k.bbox, &d.bbox) <= threshold) {
            keep.push(d);
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(bbox: [f32; 4], score: f32) -> Detection {
        Detection {
            bbox,
            score,
            landmarks: [[0.0; 2]; 5],
        }
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes_and_separate_ones() {
        let out = nms(
            vec![
                det([0.0, 0.0, 10.0, 10.0], 0.8),
                det([1.0, 1.0, 11.0, 11.0], 0.9),
                det([50.0, 50.0, 60.0, 60.0], 0.75),
            ],
            0.3,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].score, 0.9);
        assert_eq!(out[1].bbox[0], 50.0);
    }

    #[test]
    fn yunet_decoding_follows_the_grid() {
        // 2x1 grid at stride 8; only cell 1 is a face.
        let cls = [0.1, 0.81];
        let obj = [0.1, 1.0];
        let bbox = [0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 1.0f32.ln(), 2.0f32.ln()];
        let mut kps = [0f32; 20];
        kps[10] = 0.25;
        let l = YunetLevel {
            stride: 8,
            cols: 2,
            rows: 1,
            cls: &cls,
            obj: &obj,
            bbox: &bbox,
            kps: &kps,
        };
        let mut out = Vec::new();
        decode_yunet(&l, 0.7, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        let d = out[0];
        assert!((d.score - 0.9).abs() < 1e-6);
        // centre (1.5·8, 0.5·8) = (12, 4); size 8 x 16
        assert_eq!(d.bbox, [8.0, -4.0, 16.0, 12.0]);
        assert_eq!(d.landmarks[0], [10.0, 0.0]);
    }

    #[test]
    fn short_outputs_are_an_error_not_a_panic() {
        let l = YunetLevel {
            stride: 8,
            cols: 4,
            rows: 4,
            cls: &[0.0; 3],
            obj: &[0.0; 16],
            bbox: &[0.0; 64],
            kps: &[0.0; 160],
        };
        assert!(decode_yunet(&l, 0.7, &mut Vec::new()).is_err());
        assert!(decode_retinaface(&[], &[], &[], 64, 64, 0.7).is_err());
    }
}
