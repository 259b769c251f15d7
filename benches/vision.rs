//! Vision benches over real photos and the real models, default config.
//!
//! Every facegate figure has the bare ONNX Runtime `session.run` of the same
//! model on the same tensor beside it, measured in the same process: the
//! question these benches answer is how much facegate adds around the
//! models (preparing tensors, decoding, NMS, mirroring, alignment), not how
//! fast the models are. The figure the gateway is held to is printed at the
//! end: time per photo (detect + align + embed every face) over the sum of
//! the bare model runs that same work makes; goal ≤ 1.10.
//!
//! "The same work" follows the config: with `landmark_flip` the engine runs
//! the detector twice (frame and mirror), with `flip_average` the embedder
//! twice per face (crop and mirror), with fusion a second embedder too. The
//! bare side makes exactly those runs, so the ratio is facegate's overhead
//! and not the price of a config choice (that price is in BENCHMARKS.md).
//!
//! Photos come from `../shared/faces` next to the repository, or from
//! `FACEGATE_FACES`; they are never copied into the project. Without them
//! (or without the models) the bench says so loudly and measures nothing.
//!
//! Run: `cargo bench --bench vision`. See BENCHMARKS.md for the figures.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, SamplingMode};
use facegate::config::{Config, EmbedderModel, Layout};
use facegate::vision::detect::Detection;
use facegate::vision::image::{PhotoLimits, RgbView, load_photo, pack_tensor, resize};
use facegate::vision::{FaceEngine, align, resolve_models_dir, runtime};
use image::RgbImage;
use ort::session::Session;
use ort::value::TensorRef;

/// A scene with several faces, resized to the frame size a gate camera's
/// sub-stream delivers.
const SCENE: &str = "scenes/faceapi_bbt4.jpg";
const FRAME_W: u32 = 640;
const FRAME_H: u32 = 480;
/// A high-resolution photo whose faces are several hundred pixels wide
/// (alignment then averages 4×4 source samples per crop pixel), scaled so
/// its biggest face is `LARGE_FACE_PX`.
const LARGE_FACES: &str = "scenes/deepface_couple.jpg";
const LARGE_FACE_PX: f32 = 400.0;

fn main() {
    let Some(faces) = faces_dir() else {
        return;
    };
    let config = Config::default();
    let mut bench = match VisionBench::new(&config, &faces) {
        Ok(b) => b,
        Err(message) => {
            skip(&message);
            return;
        }
    };
    let mut c = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let started = SystemTime::now();
    bench.detection(&mut c);
    bench.alignment(&mut c);
    bench.embedding(&mut c);
    bench.whole_photo(&mut c);
    c.final_summary();
    bench.report_ratio(started);
}

/// Where the test photos are, or `None` (after saying so) when they are absent.
fn faces_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("FACEGATE_FACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/faces"));
    if dir.join(SCENE).is_file() && dir.join(LARGE_FACES).is_file() {
        Some(dir)
    } else {
        skip(&format!(
            "test photos not found: need {SCENE} and {LARGE_FACES} under {} \
             (set FACEGATE_FACES to the faces folder)",
            dir.display()
        ));
        None
    }
}

fn skip(why: &str) {
    eprintln!();
    eprintln!("################################################################");
    eprintln!("##  VISION BENCHES SKIPPED: nothing was measured.");
    eprintln!("##  {why}");
    eprintln!("################################################################");
    eprintln!();
}

/// A model opened a second time, run with nothing around it: the baseline.
struct BareModel {
    session: Session,
    input: String,
}

impl BareModel {
    fn open(models: &Path, file: &Path, sha256: &str, threads: usize) -> Result<Self, String> {
        let session =
            runtime::load_model(&models.join(file), sha256, threads).map_err(|e| e.to_string())?;
        let input = session
            .inputs()
            .first()
            .map(|i| i.name().to_owned())
            .ok_or_else(|| format!("{}: model has no input", file.display()))?;
        Ok(Self { session, input })
    }

    /// `session.run` on a ready tensor; the outputs are dropped unread.
    fn run(&mut self, input: &ModelInput) {
        let tensor = TensorRef::from_array_view((input.shape, input.tensor.as_slice()))
            .expect("bare model input");
        let outputs = self
            .session
            .run(ort::inputs![self.input.as_str() => tensor])
            .expect("bare model run");
        black_box(&outputs);
    }
}

/// A model input, packed as the model wants it.
struct ModelInput {
    shape: [usize; 4],
    tensor: Vec<f32>,
}

/// An embedder as the baseline runs it: its bare session and, per face of
/// the frame, the inputs facegate gives it (the crop, and with
/// `flip_average` the crop's mirror).
struct BareEmbedder {
    model: BareModel,
    per_face: Vec<Vec<ModelInput>>,
}

/// Packs an aligned crop exactly as `Embedder::prepare` does (its tensor is
/// private, so the bench packs its own copy with the same function).
fn embedder_input(cfg: &EmbedderModel, crop: &[u8]) -> ModelInput {
    let (s, n) = (cfg.input_size, cfg.input_size as usize);
    let mut tensor = vec![0f32; 3 * n * n];
    let view = RgbView::new(s, s, n * 3, crop).expect("aligned crop size");
    pack_tensor(view, &cfg.pixels, n, n, &mut tensor);
    let shape = match cfg.pixels.layout {
        Layout::Nchw => [1, 3, n, n],
        Layout::Nhwc => [1, n, n, 3],
    };
    ModelInput { shape, tensor }
}

struct VisionBench {
    engine: FaceEngine,
    /// What the engine runs per photo, from the config.
    landmark_flip: bool,
    flip_average: bool,
    bare_detector: BareModel,
    /// The main embedder, then the fusion embedder when the engine uses one.
    bare_embedders: Vec<BareEmbedder>,
    /// The 640×480 frame and its faces as facegate finds them.
    frame: RgbImage,
    frame_faces: Vec<Detection>,
    /// The detector's inputs, as `Detector::prepare` makes them: the frame,
    /// and its mirror image (`landmark_flip`).
    detector_inputs: Vec<ModelInput>,
    /// The face of the frame closest to 100 px, its index and aligned crop.
    small_face: Detection,
    small_index: usize,
    small_crop: Vec<u8>,
    /// A high-resolution photo and its face closest to `LARGE_FACE_PX`.
    large_photo: RgbImage,
    large_face: Detection,
}

impl VisionBench {
    fn new(config: &Config, faces: &Path) -> Result<Self, String> {
        let mut engine = FaceEngine::new(config).map_err(|e| e.to_string())?;
        let v = &config.vision;
        let models = resolve_models_dir(&v.models_dir);
        let dcfg = config.detector();
        let bare_detector = BareModel::open(&models, &dcfg.file, &dcfg.sha256, v.threads)?;

        let limits = PhotoLimits::default();
        let scene = load_photo(&faces.join(SCENE), limits).map_err(|e| e.to_string())?;
        let frame = resize(RgbView::from_image(&scene), FRAME_W, FRAME_H);
        let view = RgbView::from_image(&frame);
        let frame_faces = engine.detect(view).map_err(|e| e.to_string())?;
        if frame_faces.is_empty() {
            return Err(format!("no face found in {SCENE} at {FRAME_W}x{FRAME_H}"));
        }
        let mirrored = image::imageops::flip_horizontal(&frame);
        let mut detector_inputs = Vec::new();
        for img in [&frame, &mirrored]
            .iter()
            .take(1 + v.quality.landmark_flip as usize)
        {
            let p = engine.detector().prepare(RgbView::from_image(img));
            let shape = [1, 3, p.height, p.width];
            detector_inputs.push(ModelInput {
                shape,
                tensor: p.tensor,
            });
        }

        let crops: Vec<Vec<u8>> = frame_faces.iter().map(|d| engine.align(view, d)).collect();
        let mut embedder_cfgs = vec![config.embedder().clone()];
        // Whether the engine fused a second embedder (configured, enabled,
        // and not dropped as optional-and-absent) shows in its dimension.
        let fused = engine.dim() > config.embedder().dim;
        if let Some(f) = v.fusion.as_ref().filter(|_| fused) {
            let cfg = v
                .embedders
                .get(&f.embedder)
                .ok_or_else(|| format!("vision.fusion.embedder {} is not defined", f.embedder))?;
            embedder_cfgs.push(cfg.clone());
        }
        let mut bare_embedders = Vec::new();
        for cfg in &embedder_cfgs {
            let model = BareModel::open(&models, &cfg.file, &cfg.sha256, v.threads)?;
            let per_face = crops
                .iter()
                .map(|crop| {
                    let mut inputs = vec![embedder_input(cfg, crop)];
                    if v.quality.flip_average {
                        inputs.push(embedder_input(cfg, &align::mirror(crop, cfg.input_size)));
                    }
                    inputs
                })
                .collect();
            bare_embedders.push(BareEmbedder { model, per_face });
        }

        let small_index = closest_to(&frame_faces, 100.0);
        let small_face = frame_faces[small_index];
        let small_crop = engine.align(view, &small_face);

        // Its faces are ~580 px at full size: scale the photo so the
        // biggest is ~400 px, and find the faces again in the scaled photo.
        let original = load_photo(&faces.join(LARGE_FACES), limits).map_err(|e| e.to_string())?;
        let biggest = engine
            .detect(RgbView::from_image(&original))
            .map_err(|e| e.to_string())?
            .iter()
            .map(Detection::size)
            .fold(0.0, f32::max);
        if biggest < LARGE_FACE_PX {
            return Err(format!(
                "no face of {LARGE_FACE_PX} px or more in {LARGE_FACES}"
            ));
        }
        let k = LARGE_FACE_PX / biggest;
        let (w, h) = (original.width() as f32 * k, original.height() as f32 * k);
        let large_photo = resize(
            RgbView::from_image(&original),
            w.round() as u32,
            h.round() as u32,
        );
        let large_faces = engine
            .detect(RgbView::from_image(&large_photo))
            .map_err(|e| e.to_string())?;
        if large_faces.is_empty() {
            return Err(format!("no face found in {LARGE_FACES} scaled by {k:.2}"));
        }
        let large_face = large_faces[closest_to(&large_faces, LARGE_FACE_PX)];

        let bench = Self {
            engine,
            landmark_flip: v.quality.landmark_flip,
            flip_average: v.quality.flip_average,
            bare_detector,
            bare_embedders,
            frame,
            frame_faces,
            detector_inputs,
            small_face,
            small_index,
            small_crop,
            large_photo,
            large_face,
        };
        bench.describe(config);
        Ok(bench)
    }

    fn describe(&self, config: &Config) {
        let q = &config.vision.quality;
        println!(
            "vision bench: {SCENE} at {FRAME_W}x{FRAME_H}: {} faces (sizes {:?} px); \
             detector {} ({}x{} tensor); embedder {}{}; {} intra-op thread(s)",
            self.frame_faces.len(),
            self.frame_faces
                .iter()
                .map(|d| d.size().round() as u32)
                .collect::<Vec<_>>(),
            config.detector().file.display(),
            self.detector_inputs[0].shape[3],
            self.detector_inputs[0].shape[2],
            config.embedder().file.display(),
            match (&config.vision.fusion, self.bare_embedders.len()) {
                (Some(f), 2) => format!(" + fusion {}", f.embedder),
                _ => String::new(),
            },
            config.vision.threads,
        );
        println!(
            "config: landmark_flip {} ({} detector run(s) per photo), flip_average {} \
             ({} run(s) per face per embedder), upsample_blur_sigma {}",
            q.landmark_flip,
            self.detector_runs(),
            q.flip_average,
            1 + q.flip_average as usize,
            q.upsample_blur_sigma,
        );
        println!(
            "alignment faces: {:.0} px in the frame, {:.0} px in {LARGE_FACES} scaled to {}x{}",
            self.small_face.size(),
            self.large_face.size(),
            self.large_photo.width(),
            self.large_photo.height()
        );
    }

    fn detector_runs(&self) -> usize {
        1 + self.landmark_flip as usize
    }

    fn embedder_runs_per_face(&self) -> usize {
        self.bare_embedders.len() * (1 + self.flip_average as usize)
    }

    /// Detection on the 640×480 frame: the engine's `detect` (with
    /// `landmark_flip`: two detector runs), one `Detector::detect` and its
    /// parts, and the bare model run on the same prepared tensor.
    fn detection(&mut self, c: &mut Criterion) {
        let view = RgbView::from_image(&self.frame);
        let mut g = c.benchmark_group("detect_640x480");
        // Model runs take milliseconds: equal-sized samples keep the group
        // inside its measurement time (criterion's linear ramp would not).
        g.sampling_mode(SamplingMode::Flat);
        g.bench_function("engine_detect", |b| {
            b.iter(|| self.engine.detect(black_box(view)).expect("detect"))
        });
        g.bench_function("detector_detect", |b| {
            b.iter(|| {
                self.engine
                    .detector()
                    .detect(black_box(view))
                    .expect("detect")
            })
        });
        g.bench_function("detector_prepare", |b| {
            b.iter(|| self.engine.detector().prepare(black_box(view)))
        });
        let prepared = self.engine.detector().prepare(view);
        g.bench_function("detector_run_decode_nms", |b| {
            b.iter(|| self.engine.detector().run(&prepared).expect("detector run"))
        });
        let input = &self.detector_inputs[0];
        g.bench_function("bare_model_run", |b| {
            b.iter(|| self.bare_detector.run(black_box(input)))
        });
        g.finish();
    }

    /// Alignment to the embedder's input from the photo the face was found
    /// in, for the frame's smallest face, its face closest to 100 px, and a
    /// large face: `align::align` (estimate + warp) and the engine's `align`
    /// (which also softens crops that were enlarged).
    fn alignment(&mut self, c: &mut Criterion) {
        let cfg = self.engine.embedder().config().clone();
        let mut g = c.benchmark_group("align_112");
        // The smallest face of the frame is enlarged to the crop size, so
        // the engine also softens it (`upsample_blur_sigma`).
        let smallest = self.frame_faces[closest_to(&self.frame_faces, 0.0)];
        let frame = RgbView::from_image(&self.frame);
        let faces = [
            (frame, smallest),
            (frame, self.small_face),
            (RgbView::from_image(&self.large_photo), self.large_face),
        ];
        for (img, face) in faces {
            let px = face.size().round();
            g.bench_function(format!("align_face_{px}px"), |b| {
                b.iter(|| {
                    align::align(
                        black_box(img),
                        &face.landmarks,
                        cfg.template,
                        cfg.input_size,
                    )
                })
            });
            g.bench_function(format!("engine_align_face_{px}px"), |b| {
                b.iter(|| self.engine.align(black_box(img), &face))
            });
        }
        g.finish();
    }

    /// Embedding one aligned face: the engine per face (one model run, or
    /// more with `flip_average` / fusion) beside the bare runs it makes, and
    /// facegate's main embedder per run beside one bare run.
    fn embedding(&mut self, c: &mut Criterion) {
        let crop = &self.small_crop;
        let mut g = c.benchmark_group("embed_112");
        g.sampling_mode(SamplingMode::Flat);
        g.bench_function("engine_embed_aligned_per_face", |b| {
            b.iter(|| self.engine.embed_aligned(black_box(crop)).expect("embed"))
        });
        g.bench_function("embedder_prepare", |b| {
            b.iter(|| {
                self.engine
                    .embedder()
                    .prepare(black_box(crop))
                    .expect("prepare")
            })
        });
        g.bench_function("embedder_prepare_run_per_run", |b| {
            b.iter(|| {
                let e = self.engine.embedder();
                e.prepare(black_box(crop)).expect("prepare");
                e.run().expect("embedder run")
            })
        });
        let face = self.small_index;
        let main = &mut self.bare_embedders[0];
        let input = &main.per_face[face][0];
        g.bench_function("bare_model_run_per_run", |b| {
            b.iter(|| main.model.run(black_box(input)))
        });
        let embedders = &mut self.bare_embedders;
        g.bench_function("bare_model_runs_per_face", |b| {
            b.iter(|| {
                for e in embedders.iter_mut() {
                    for input in &e.per_face[face] {
                        e.model.run(black_box(input));
                    }
                }
            })
        });
        g.finish();
    }

    /// The whole photo: the engine's detect, then align + embed per face,
    /// beside the bare runs that work makes (in the engine's order, and with
    /// fusion also model by model).
    fn whole_photo(&mut self, c: &mut Criterion) {
        let mut g = c.benchmark_group("photo_640x480");
        // ~0.15 s an iteration: 20 equal-sized samples of one or two photos.
        g.sampling_mode(SamplingMode::Flat)
            .sample_size(20)
            .measurement_time(Duration::from_secs(5));
        g.bench_function("facegate_detect_align_embed", |b| {
            b.iter(|| self.facegate_photo())
        });
        g.bench_function("bare_model_runs", |b| b.iter(|| self.bare_photo()));
        if self.bare_embedders.len() > 1 {
            g.bench_function("bare_model_runs_model_major", |b| {
                b.iter(|| self.bare_photo_model_major())
            });
        }
        g.finish();
    }

    fn facegate_photo(&mut self) -> usize {
        let view = RgbView::from_image(&self.frame);
        let faces = self.engine.detect(black_box(view)).expect("detect");
        for face in &faces {
            black_box(self.engine.embed(view, face).expect("embed"));
        }
        faces.len()
    }

    /// The bare runs in the engine's order: the detector, then face by
    /// face every embedder (the order matters: see `bare_photo_model_major`).
    fn bare_photo(&mut self) {
        for input in &self.detector_inputs {
            self.bare_detector.run(black_box(input));
        }
        for face in 0..self.frame_faces.len() {
            for embedder in &mut self.bare_embedders {
                for input in &embedder.per_face[face] {
                    embedder.model.run(black_box(input));
                }
            }
        }
    }

    /// The same runs, model by model: all faces through one embedder, then
    /// all through the next. With fusion this keeps one model's weights in
    /// the caches at a time; the difference to `bare_photo` is what the
    /// engine could win by reordering, not overhead of its own.
    fn bare_photo_model_major(&mut self) {
        for input in &self.detector_inputs {
            self.bare_detector.run(black_box(input));
        }
        for embedder in &mut self.bare_embedders {
            for input in embedder.per_face.iter().flatten() {
                embedder.model.run(black_box(input));
            }
        }
    }

    /// The ratio, twice: from criterion's estimates of this run, and from
    /// a timing that alternates the two (both halves see the same load on
    /// a shared machine).
    fn report_ratio(&mut self, started: SystemTime) {
        let faces = self.frame_faces.len();
        println!();
        println!(
            "== facegate time per photo / sum of bare model runs ({FRAME_W}x{FRAME_H}, {faces} faces: \
             {} detector run(s) + {} embedder runs); goal <= 1.10",
            self.detector_runs(),
            faces * self.embedder_runs_per_face()
        );
        let group = criterion_dir().join("photo_640x480");
        let ours = read_estimates(&group.join("facegate_detect_align_embed"), started);
        let bare = read_estimates(&group.join("bare_model_runs"), started);
        match (ours, bare) {
            (Some(o), Some(b)) => println!(
                "criterion: facegate mean {:.2} ms, median {:.2} ms; bare mean {:.2} ms, \
                 median {:.2} ms; ratio of means {:.3}, of medians {:.3}",
                o.mean_ns / 1e6,
                o.median_ns / 1e6,
                b.mean_ns / 1e6,
                b.median_ns / 1e6,
                o.mean_ns / b.mean_ns,
                o.median_ns / b.median_ns
            ),
            _ => println!(
                "criterion: no estimates from this run under {} (filtered out, or --test?)",
                group.display()
            ),
        }
        if let Some(m) = read_estimates(&group.join("bare_model_runs_model_major"), started) {
            println!(
                "criterion: bare runs model by model: mean {:.2} ms, median {:.2} ms",
                m.mean_ns / 1e6,
                m.median_ns / 1e6
            );
        }
        let (rounds, per_round) = (15, 3);
        let mut ratios = Vec::with_capacity(rounds);
        let (mut ours_total, mut bare_total) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..rounds {
            let t = Instant::now();
            for _ in 0..per_round {
                black_box(self.facegate_photo());
            }
            let ours = t.elapsed();
            let t = Instant::now();
            for _ in 0..per_round {
                self.bare_photo();
            }
            let bare = t.elapsed();
            ours_total += ours;
            bare_total += bare;
            ratios.push(ours.as_secs_f64() / bare.as_secs_f64());
        }
        ratios.sort_by(f64::total_cmp);
        let n = (rounds * per_round) as f64;
        println!(
            "alternating ({rounds} rounds of {per_round} photos each way): facegate {:.2} ms/photo, \
             bare {:.2} ms/photo; ratio of totals {:.3}, median round {:.3} (min {:.3}, max {:.3})",
            ours_total.as_secs_f64() * 1e3 / n,
            bare_total.as_secs_f64() * 1e3 / n,
            ours_total.as_secs_f64() / bare_total.as_secs_f64(),
            ratios[rounds / 2],
            ratios[0],
            ratios[rounds - 1]
        );
    }
}

/// The index of the detection whose size is closest to `px`.
fn closest_to(faces: &[Detection], px: f32) -> usize {
    (0..faces.len())
        .min_by(|&a, &b| {
            let off = |i: usize| (faces[i].size() - px).abs();
            off(a).total_cmp(&off(b))
        })
        .expect("at least one face")
}

/// Where criterion writes its estimates (its own order of preference, less
/// the `cargo metadata` call).
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("criterion")
}

struct Estimates {
    mean_ns: f64,
    median_ns: f64,
}

/// A bench's `new/estimates.json`, if it was written by this run.
fn read_estimates(bench_dir: &Path, since: SystemTime) -> Option<Estimates> {
    let path = bench_dir.join("new/estimates.json");
    let fresh = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t >= since);
    if !fresh {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    let point = |key: &str| json.get(key)?.get("point_estimate")?.as_f64();
    Some(Estimates {
        mean_ns: point("mean")?,
        median_ns: point("median")?,
    })
}
