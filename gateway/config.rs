//! The TOML configuration: one file, sections by stage, unknown keys refused.
//!
//! Every field has a documented default so that an empty file is a working
//! configuration; `config/facegate.toml` spells all of them out and a test
//! parses it. `validate()` names the bad key and says why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A configuration problem, naming the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: {key}: {reason}")]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub site: SiteConfig,
    /// The cameras and gate readers of the estate; none = demo mode.
    pub cameras: Vec<CameraConfig>,
    pub ingest: IngestConfig,
    pub decide: DecideConfig,
    pub vision: VisionConfig,
    pub matching: MatchingConfig,
    pub storage: StorageConfig,
    pub privacy: PrivacyConfig,
    /// How long each kind of personal data is kept.
    pub retention: RetentionConfig,
    /// Publishing to the command centre; an empty `url` turns it off.
    pub mqtt: crate::publish::MqttConfig,
    /// The HTTP API and web console.
    pub http: HttpConfig,
    /// Owners shared with the other boxes of the site; off by default.
    pub sync: crate::sync::SyncConfig,
}

/// The HTTP API and web console (`facegate run`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on; empty turns the API and console off. The
    /// default is loopback only: opening it to the estate's network is a
    /// deliberate choice (put it behind TLS).
    pub listen: String,
    /// Largest request body (a multipart form with its photos).
    pub max_upload_bytes: u64,
    /// Open connections at most; beyond it new ones wait in the kernel's
    /// queue until one closes (well under the process's file limit).
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers (and an idle
    /// keep-alive connection to start the next one) before it is closed:
    /// idle or slow connections cannot hold the connection slots.
    pub header_timeout_s: u64,
    /// Live event streams (`/api/v1/events/stream`) open at once; one more
    /// gets a 503.
    pub max_event_streams: usize,
    /// Seconds between checks that an open event stream's token is still
    /// active: a revoked token's stream ends within this time.
    pub stream_token_check_s: u64,
    /// Photo requests (identify) worked on at once; others wait. Each holds
    /// a decoded photo (up to 3 bytes a pixel) until it is answered.
    pub max_concurrent_photos: usize,
    /// Seconds a verified token is remembered (and each use renews it), so
    /// the argon2 check is paid once, not per request.
    pub token_cache_s: u64,
    /// Failed authentications from one client address (or for one token
    /// id) within a minute before further attempts get a 429 until the
    /// minute is over. Tokens already verified are not affected.
    pub max_auth_failures: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_upload_bytes: 25 * 1024 * 1024,
            max_connections: 256,
            header_timeout_s: 10,
            max_event_streams: 32,
            stream_token_check_s: 5,
            max_concurrent_photos: 2,
            token_cache_s: 60,
            max_auth_failures: 10,
        }
    }
}

/// Where this gateway stands in the city's grid (street → community → grid).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SiteConfig {
    /// The estate's code, used in MQTT topics and on every event.
    pub code: String,
    pub name: String,
    pub street_code: String,
    pub community_code: String,
    pub grid_code: String,
}

impl Default for SiteConfig {
    fn default() -> Self {
        Self {
            code: "demo-estate".into(),
            name: "Demo estate".into(),
            street_code: String::new(),
            community_code: String::new(),
            grid_code: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VisionConfig {
    /// Folder holding the ONNX files (relative paths are taken from the
    /// current directory, then from the folder above the binary).
    pub models_dir: PathBuf,
    /// Path of `libonnxruntime.so`; empty = `ORT_DYLIB_PATH`, then next to
    /// the binary, then `<models_dir>/onnxruntime/`.
    pub onnxruntime: Option<PathBuf>,
    /// Intra-op threads per ONNX session.
    pub threads: usize,
    /// Face engines working side by side on bulk work (`facegate eval`),
    /// each with its own sessions of `threads` threads; 0 = one per core.
    /// Cameras have one engine each and ignore this.
    pub workers: usize,
    /// Which entry of `detectors` runs.
    pub detector: String,
    /// Which entry of `embedders` runs.
    pub embedder: String,
    pub detectors: BTreeMap<String, DetectorModel>,
    pub embedders: BTreeMap<String, EmbedderModel>,
    /// A second embedder whose similarity is blended in (score =
    /// (1−w)·cos₁ + w·cos₂); its errors differ from the first one's.
    pub fusion: Option<FusionConfig>,
    pub liveness: LivenessConfig,
    pub pose: PoseConfig,
    pub quality: QualityConfig,
}

impl Default for VisionConfig {
    fn default() -> Self {
        let mut detectors = BTreeMap::new();
        detectors.insert("yunet".into(), DetectorModel::yunet());
        detectors.insert("retinaface".into(), DetectorModel::retinaface());
        let mut embedders = BTreeMap::new();
        embedders.insert("arcface_mbf".into(), EmbedderModel::arcface_mbf());
        embedders.insert("mobilefacenet".into(), EmbedderModel::mobilefacenet());
        Self {
            models_dir: PathBuf::from("models"),
            onnxruntime: None,
            threads: 1,
            workers: 0,
            detector: "yunet".into(),
            embedder: "arcface_mbf".into(),
            detectors,
            embedders,
            fusion: Some(FusionConfig {
                enabled: true,
                embedder: "mobilefacenet".into(),
                weight: 0.2,
                optional: true,
            }),
            liveness: LivenessConfig::default(),
            pose: PoseConfig::default(),
            quality: QualityConfig::default(),
        }
    }
}

/// What a camera is for: gates open doors, patrol cameras only watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CameraRole {
    #[default]
    Patrol,
    Gate,
}

/// RTSP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Tcp,
    Udp,
}

/// Decoding, for every camera (`[ingest]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// GStreamer decoders to use before any other, first preferred: a
    /// board's hardware decoders (`mppvideodec` on Rockchip,
    /// `v4l2slh264dec`/`v4l2h264dec` elsewhere). One not installed is
    /// skipped with a warning and software decoding goes on.
    pub prefer_decoders: Vec<String>,
    /// Decoders never to use.
    pub avoid_decoders: Vec<String>,
    /// How much nicer (Linux nice steps, 0–19) the recognition and decoding
    /// threads of cameras that are not gates run than the gate cameras': on a busy box
    /// the gate's decisions come first (BENCHMARKS.md §4 (d): 5 left the gate's
    /// p99 +13–20% next to 8 cameras, 15 and 19 +0–8%). Enrolment models and
    /// index rebuilds run at nice 19 whatever this is.
    #[serde(default = "default_patrol_nice")]
    pub patrol_nice: i32,
}

fn default_patrol_nice() -> i32 {
    15
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            prefer_decoders: Vec::new(),
            avoid_decoders: Vec::new(),
            patrol_nice: default_patrol_nice(),
        }
    }
}

/// One camera. `url` is `rtsp://host[:port]/path` (no credentials inside:
/// they come from `username_env`/`password_env` or `credentials_file`),
/// `file:///path/video.mp4` (looped) or `image:///path/photo.jpg` (a still).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub role: CameraRole,
    #[serde(default)]
    pub transport: Transport,
    /// Environment variables holding the RTSP user name and password.
    #[serde(default)]
    pub username_env: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file holding `user:password` on its first line (mode 0600 advised).
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// Frames per second run through detection; the rest are dropped (and counted).
    #[serde(default = "default_detect_fps")]
    pub detect_fps: f32,
    /// No frame for this long (seconds) = stalled: the pipeline is rebuilt.
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout_s: f32,
    /// Grid code of the camera's location, when it differs from the site's.
    #[serde(default)]
    pub grid_code: Option<String>,
    #[serde(default)]
    pub building_code: Option<String>,
    /// The gate controller this camera opens (role = gate); default: the camera name.
    #[serde(default)]
    pub gate_id: Option<String>,
    /// Skip detection on frames where nothing moved (a luma-thumbnail
    /// difference; see `source::motion`). Faces on live tracks, the 2 s
    /// after motion, and one frame every 2 s are always detected.
    #[serde(default = "yes")]
    pub motion_skip: bool,
}

fn yes() -> bool {
    true
}

fn default_detect_fps() -> f32 {
    5.0
}

fn default_stall_timeout() -> f32 {
    5.0
}

/// Per-person decisions: tracks, confidence, repeats, cooldowns.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecideConfig {
    /// A track is decided once it has this many usable faces...
    pub min_faces: usize,
    /// ...or once its best match is this far above the threshold.
    pub confident_margin: f32,
    /// A track not seen for this long (seconds) ends.
    pub track_timeout_s: f32,
    /// Box overlap needed to continue a track (IoU), unless the embedding agrees.
    pub track_iou: f32,
    /// Embedding similarity that continues a track even without overlap.
    pub track_similarity: f32,
    /// Same person and camera: no repeat alert within this many seconds.
    pub cooldown_s: f32,
    /// Same owner and gate: no second pass within this many seconds (a
    /// track split by an occlusion is not a second visit).
    pub pass_cooldown_s: f32,
    /// Unknown faces are remembered this long (seconds) so a returning
    /// stranger keeps one stranger id; after that they are forgotten.
    pub stranger_retention_s: f32,
    /// Similarity at which an unknown face is the same stranger as before.
    pub stranger_match: f32,
    /// A stranger seen on this many distinct tracks...
    pub loiter_tracks: usize,
    /// ...within this many seconds gives a loitering alert. Tracks closer
    /// than `visit_gap_s` count as one visit.
    pub loiter_window_s: f32,
    pub visit_gap_s: f32,
    /// Faces of decided tracks are analysed and embedded again at least
    /// this often (seconds of video), and whenever their box jumps, so that
    /// a change of person in the same place is caught.
    pub reverify_s: f32,
    /// A face less similar than this to its track's identity starts a new
    /// track (and a new decision) instead of continuing it.
    pub change_similarity: f32,
    /// A track whose best face is below this size (pixels, shorter side)
    /// is never decided: it ends `undecided` ("faces too small").
    pub min_decide_px: f32,
    /// Below this best-face size a pass needs a higher score...
    pub small_face_px: f32,
    /// ...up to this much above the threshold (at `min_decide_px`).
    pub small_face_margin: f32,
    /// Two enrolled people this close in score: no pass (wait, or undecided).
    pub ambiguity_margin: f32,
    /// A stranger alert before the track ends needs this many usable faces...
    pub stranger_min_faces: usize,
    /// ...a face at least this large (pixels)...
    pub stranger_min_px: f32,
    /// ...and a best score at least this far below the threshold...
    pub stranger_margin: f32,
    /// ...or, with that score, this many seconds since first sight.
    pub decide_within_s: f32,
}

impl Default for DecideConfig {
    fn default() -> Self {
        Self {
            min_faces: 3,
            confident_margin: 0.15,
            track_timeout_s: 2.0,
            track_iou: 0.2,
            track_similarity: 0.5,
            cooldown_s: 60.0,
            pass_cooldown_s: 10.0,
            stranger_retention_s: 24.0 * 3600.0,
            stranger_match: 0.45,
            loiter_tracks: 3,
            loiter_window_s: 600.0,
            visit_gap_s: 30.0,
            reverify_s: 0.5,
            change_similarity: 0.3,
            min_decide_px: 24.0,
            small_face_px: 48.0,
            small_face_margin: 0.08,
            ambiguity_margin: 0.03,
            stranger_min_faces: 6,
            stranger_min_px: 40.0,
            stranger_margin: 0.05,
            decide_within_s: 4.0,
        }
    }
}

/// The decoders facegate knows; a closed set, each with its own output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectorKind {
    Yunet,
    Retinaface,
}

/// Channel order of a model's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channels {
    Rgb,
    Bgr,
}

/// Memory layout of a model's image input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nchw,
    Nhwc,
}

/// How a model wants its pixels: `(x - mean[c]) / std[c]` in the given channel order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PixelFormat {
    pub channels: Channels,
    pub layout: Layout,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl PixelFormat {
    /// BGR 0–255, NCHW, no normalisation (YuNet, MiniFASNet, faceplugin's liveness).
    pub const BGR_RAW: PixelFormat = PixelFormat {
        channels: Channels::Bgr,
        layout: Layout::Nchw,
        mean: [0.0; 3],
        std: [1.0; 3],
    };
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorModel {
    pub kind: DetectorKind,
    pub file: PathBuf,
    /// Expected SHA-256 of the file; empty skips the check (own models).
    #[serde(default)]
    pub sha256: String,
    pub pixels: PixelFormat,
    /// The frame is scaled so its long side is at most this (YuNet misses
    /// very large faces at full resolution).
    pub max_side: u32,
    /// Frames whose long side is below this are scaled up before detection
    /// (small surveillance images: the detector sees more pixels per face).
    #[serde(default)]
    pub upscale_below: u32,
    pub score_threshold: f32,
    pub nms_iou: f32,
}

impl DetectorModel {
    pub fn yunet() -> Self {
        Self {
            kind: DetectorKind::Yunet,
            file: "yunet_2023mar_dynamic.onnx".into(),
            sha256: "04ee49bc2077fefa0cd1898cf02db84726ef6e7b20d14f5f09b720b3e1f16b25".into(),
            pixels: PixelFormat::BGR_RAW,
            max_side: 640,
            upscale_below: 0,
            score_threshold: 0.7,
            nms_iou: 0.3,
        }
    }

    pub fn retinaface() -> Self {
        Self {
            kind: DetectorKind::Retinaface,
            file: "retinaface_mnet025.onnx".into(),
            sha256: "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5".into(),
            pixels: PixelFormat {
                channels: Channels::Bgr,
                layout: Layout::Nchw,
                mean: [104.0, 117.0, 123.0],
                std: [1.0; 3],
            },
            max_side: 640,
            upscale_below: 0,
            score_threshold: 0.7,
            nms_iou: 0.4,
        }
    }
}

/// The 5-point template a face is aligned to before embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlignTemplate {
    /// InsightFace's ArcFace 112×112 points.
    Arcface,
    /// dlib's 150×150 chip points.
    Dlib,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedderModel {
    pub file: PathBuf,
    #[serde(default)]
    pub sha256: String,
    /// Square input side in pixels.
    pub input_size: u32,
    pub template: AlignTemplate,
    pub pixels: PixelFormat,
    /// Embedding length the model outputs.
    pub dim: usize,
    /// Whether the input batch dimension accepts more than one face.
    #[serde(default)]
    pub batch: bool,
}

impl EmbedderModel {
    pub fn arcface_mbf() -> Self {
        Self {
            file: "arcface_mbf_faceplugin_512.onnx".into(),
            sha256: "87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581".into(),
            input_size: 112,
            template: AlignTemplate::Arcface,
            pixels: PixelFormat {
                channels: Channels::Bgr,
                layout: Layout::Nchw,
                mean: [127.0; 3],
                std: [128.0; 3],
            },
            dim: 512,
            batch: false,
        }
    }

    pub fn mobilefacenet() -> Self {
        Self {
            file: "mobilefacenet_sirius_192.onnx".into(),
            sha256: "62cd4ad02b950347a36e2d542b9a9ed01737b9ccd3cefcdec1b7de084d7b6a2b".into(),
            input_size: 112,
            template: AlignTemplate::Arcface,
            pixels: PixelFormat {
                channels: Channels::Rgb,
                layout: Layout::Nhwc,
                mean: [127.5; 3],
                std: [128.0; 3],
            },
            dim: 192,
            batch: true,
        }
    }
}

/// Blending a second embedder into the first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusionConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// An entry of `[vision.embedders.*]` with the same template and input size.
    pub embedder: String,
    /// Its share of the similarity, 0 < w < 1.
    pub weight: f32,
    /// When the second model's file is absent (it is mirror-only), run with
    /// the first embedder alone and warn, instead of refusing to start. A
    /// file that is present but wrong is always an error.
    #[serde(default)]
    pub optional: bool,
}

/// Passive anti-spoofing: one or more models, each on its own crop around
/// the face; the score is their weighted mean live probability.
///
/// A face whose shorter side is below `min_face_px` (or whose crop is
/// softer than `min_sharpness`) is *not judged*: its liveness is `None`,
/// which is not a spoof (the decision logic calls it "liveness uncertain").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LivenessConfig {
    pub enabled: bool,
    /// The ensemble, `[[vision.liveness.models]]`.
    pub models: Vec<LivenessModel>,
    /// How the models' live probabilities are combined.
    pub combine: Combine,
    /// Faces whose combined live probability is below this are spoofs.
    pub threshold: f32,
    /// Faces smaller than this (shorter box side, original pixels) are not judged.
    pub min_face_px: u32,
    /// Faces whose detector box has a mean gradient energy below this are
    /// not judged (0 = no floor). See `vision::liveness::sharpness`.
    pub min_sharpness: f32,
    /// Single-model keys of earlier versions, refused by `validate()` with
    /// a message naming the new ones.
    #[serde(skip_serializing)]
    pub file: Option<toml::Value>,
    #[serde(skip_serializing)]
    pub sha256: Option<toml::Value>,
    #[serde(skip_serializing)]
    pub input_size: Option<toml::Value>,
    #[serde(skip_serializing)]
    pub pixels: Option<toml::Value>,
    #[serde(skip_serializing)]
    pub crop_scale: Option<toml::Value>,
    #[serde(skip_serializing)]
    pub live_class: Option<toml::Value>,
}

/// How an ensemble's live probabilities become one score (0..1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// The weighted mean probability.
    Mean,
    /// The weighted mean log-odds, mapped back to a probability: one model
    /// that is sure (p near 0 or 1) outweighs one that hesitates.
    LogOdds,
}

/// One liveness model of the ensemble.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LivenessModel {
    /// A short name for reports (`facegate eval-liveness`).
    pub name: String,
    pub file: PathBuf,
    /// Expected SHA-256 of the file; empty skips the check (own models).
    #[serde(default)]
    pub sha256: String,
    /// Square input side in pixels.
    pub input_size: u32,
    pub pixels: PixelFormat,
    /// The crop is the detector box enlarged this much around its centre,
    /// shifted to stay inside the frame (Silent-Face's `CropImage`).
    pub crop_scale: f32,
    /// Index of the "live" class in the softmax output.
    pub live_class: usize,
    /// Its share of the ensemble score (weights are normalised).
    #[serde(default = "one")]
    pub weight: f32,
    /// Score the crop and its mirror image and average their log-odds
    /// (test-time augmentation: two runs of the model per face).
    #[serde(default)]
    pub flip_average: bool,
    /// When the file is absent (the MiniFASNets are mirror-only), skip this
    /// model with a warning naming the file and run the ensemble on the
    /// rest, instead of refusing to start. A file that is present but wrong
    /// is always an error.
    #[serde(default)]
    pub optional: bool,
}

fn one() -> f32 {
    1.0
}

impl LivenessModel {
    /// Silent-Face MiniFASNetV2, crop 2.7×, 80×80, BGR 0–255, class 1 = live.
    pub fn minifasnet_v2() -> Self {
        Self {
            name: "minifasnet_v2".into(),
            file: "minifasnet_v2_80x80_scale2.7.onnx".into(),
            sha256: "3b9e97345d7280301456bd93c0c3ccbfae3c33d653b674ce26901895f3248bfc".into(),
            input_size: 80,
            pixels: PixelFormat::BGR_RAW,
            crop_scale: 2.7,
            live_class: 1,
            weight: 1.0,
            flip_average: true,
            optional: true,
        }
    }

    /// Silent-Face MiniFASNetV1SE, crop 4.0×, 80×80, BGR 0–255, class 1 = live.
    pub fn minifasnet_v1se() -> Self {
        Self {
            name: "minifasnet_v1se".into(),
            file: "minifasnet_v1se_80x80_scale4.0.onnx".into(),
            sha256: "25baf9033178fe5d899b344468812df343578fc7348b2b1e948d96f305402f1c".into(),
            crop_scale: 4.0,
            ..Self::minifasnet_v2()
        }
    }

    /// faceplugin's liveness model, crop 2.7×, 128×128, BGR 0–255, class 0 = live.
    pub fn faceplugin() -> Self {
        Self {
            name: "faceplugin".into(),
            file: "liveness_faceplugin_128.onnx".into(),
            sha256: "afa783b7e902fdfcf323a7240cac2a1c580c25314ea4161129dc1b0d100dc32d".into(),
            input_size: 128,
            pixels: PixelFormat::BGR_RAW,
            crop_scale: 2.7,
            live_class: 0,
            weight: 1.0,
            flip_average: true,
            optional: false,
        }
    }
}

impl Default for LivenessConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            // Chosen on NUAA subjects 1-4 / 5-8 both ways round (BENCHMARKS.md),
            // each model flip-averaged; the mirror-only MiniFASNets optional.
            models: vec![
                LivenessModel::minifasnet_v2(),
                LivenessModel::minifasnet_v1se(),
                LivenessModel::faceplugin(),
            ],
            combine: Combine::LogOdds,
            threshold: 0.05,
            min_face_px: 60,
            min_sharpness: 0.0,
            file: None,
            sha256: None,
            input_size: None,
            pixels: None,
            crop_scale: None,
            live_class: None,
        }
    }
}

impl LivenessConfig {
    /// The single-model keys of earlier versions that are set, if any.
    fn legacy_keys(&self) -> Vec<&'static str> {
        [
            ("file", self.file.is_some()),
            ("sha256", self.sha256.is_some()),
            ("input_size", self.input_size.is_some()),
            ("pixels", self.pixels.is_some()),
            ("crop_scale", self.crop_scale.is_some()),
            ("live_class", self.live_class.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect()
    }

    /// Checks the liveness section; `Err((key, reason))`.
    fn check(&self) -> Result<(), (String, String)> {
        let key = |k: &str| format!("vision.liveness.{k}");
        let legacy = self.legacy_keys();
        if let Some(first) = legacy.first() {
            return Err((
                key(first),
                format!(
                    "the single-model keys ({}) moved into [[vision.liveness.models]] entries \
                     (name, file, sha256, input_size, pixels, crop_scale, live_class, weight); \
                     threshold, min_face_px and min_sharpness stay in [vision.liveness]",
                    legacy.join(", ")
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err((key("threshold"), "must be between 0 and 1".into()));
        }
        if self.min_face_px > 4096 {
            return Err((key("min_face_px"), "must be at most 4096 pixels".into()));
        }
        if !(self.min_sharpness.is_finite() && self.min_sharpness >= 0.0) {
            return Err((key("min_sharpness"), "must be 0 (off) or positive".into()));
        }
        if self.enabled && self.models.is_empty() {
            return Err((
                key("models"),
                "no [[vision.liveness.models]] entry (set enabled = false to turn liveness off)"
                    .into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, m) in self.models.iter().enumerate() {
            let k = |f: &str| format!("vision.liveness.models[{i}].{f}");
            if m.name.is_empty() || !names.insert(m.name.as_str()) {
                return Err((k("name"), "must be non-empty and unique".into()));
            }
            if !(16..=512).contains(&m.input_size) {
                return Err((k("input_size"), "must be between 16 and 512".into()));
            }
            if m.live_class > 2 {
                return Err((
                    k("live_class"),
                    "liveness models have 3 classes (0..=2)".into(),
                ));
            }
            if !(1.0..=6.0).contains(&m.crop_scale) {
                return Err((k("crop_scale"), "must be between 1 and 6".into()));
            }
            if !(m.weight.is_finite() && m.weight > 0.0) {
                return Err((k("weight"), "must be positive".into()));
            }
            check_pixels(&m.pixels).map_err(|r| (k("pixels"), r))?;
        }
        Ok(())
    }
}

/// Head pose estimation, used to skip profile faces (they embed badly).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoseConfig {
    pub enabled: bool,
    pub file: PathBuf,
    pub sha256: String,
    pub input_size: u32,
    pub pixels: PixelFormat,
    /// Faces turned further than this (degrees, either side) are rejected.
    pub max_yaw: f32,
    pub max_pitch: f32,
}

impl Default for PoseConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            file: "headpose_hopenet_faceplugin.onnx".into(),
            sha256: "72d032ec941b7153bf8d3f2c03a4c165453cc7e63d479041ec7c6ef087e5839d".into(),
            input_size: 224,
            pixels: PixelFormat {
                channels: Channels::Rgb,
                layout: Layout::Nchw,
                mean: [0.485 * 255.0, 0.456 * 255.0, 0.406 * 255.0],
                std: [0.229 * 255.0, 0.224 * 255.0, 0.225 * 255.0],
            },
            max_yaw: 45.0,
            max_pitch: 40.0,
        }
    }
}

/// Face quality gates and embedding options.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityConfig {
    /// Faces whose box is smaller than this (pixels, shorter side, in the
    /// original image) are rejected as too small to recognise.
    pub min_face_px: u32,
    /// Average the embedding of the face with that of its mirror image.
    pub flip_average: bool,
    /// Detect again on the mirrored image and average the two landmark
    /// estimates: steadier alignment of small faces, at one more detector run.
    pub landmark_flip: bool,
    /// With `landmark_flip`: 0 = the second detector run is on the whole
    /// mirrored frame; above 0 = on a mirrored crop around each face (its
    /// box enlarged 2×), scaled so the face is at most this many pixels:
    /// a fraction of the cost.
    pub landmark_flip_face_px: u32,
    /// Gaussian blur (sigma, pixels) applied to aligned crops that were
    /// enlarged (faces smaller than the template): softens JPEG blocks and
    /// upsampling edges the embedder never saw in training. 0 = off.
    pub upsample_blur_sigma: f32,
    /// When above 0, the blur follows the enlargement instead: sigma =
    /// this × (crop pixels per image pixel), i.e. a fixed blur in the
    /// original image's pixels (smaller faces are softened more).
    pub upsample_blur_sigma_src: f32,
    /// An entry of `[vision.detectors]` whose landmarks replace the main
    /// detector's for alignment (run again on a crop around each face);
    /// empty = the main detector's own landmarks.
    pub landmark_detector: String,
}

impl Default for QualityConfig {
    fn default() -> Self {
        Self {
            min_face_px: 20,
            flip_average: false,
            landmark_flip: true,
            landmark_flip_face_px: 128,
            upsample_blur_sigma: 0.5,
            upsample_blur_sigma_src: 0.3,
            landmark_detector: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchingConfig {
    /// Cosine similarity at or above which a face is taken as a registered person.
    pub threshold: f32,
    /// How many candidates a search returns.
    pub top_k: usize,
}

impl Default for MatchingConfig {
    fn default() -> Self {
        Self {
            threshold: 0.40,
            top_k: 5,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The SQLite registry (owners, consents, templates, watch list, audit).
    pub db: PathBuf,
    /// Where snapshots and other files live.
    pub data_dir: PathBuf,
    /// Largest photo file accepted, bytes.
    pub max_photo_bytes: u64,
    /// Largest photo accepted, pixels (width × height).
    pub max_photo_pixels: u64,
    /// Encryption at rest: a file holding the 32-byte key as 64 hex
    /// characters, mode 0600 or 0400, owned by the service user. It keys the
    /// database (SQLCipher) and, derived, the snapshot files. Unset: the
    /// key comes from the environment variable `FACEGATE_DB_KEY`, and
    /// without either nothing is encrypted (a warning says so).
    pub key_file: Option<PathBuf>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            db: PathBuf::from("data/facegate.db"),
            data_dir: PathBuf::from("data"),
            max_photo_bytes: 20 * 1024 * 1024,
            max_photo_pixels: crate::vision::image::DEFAULT_MAX_PIXELS,
            key_file: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// Event snapshots (face crops, scenes) are deleted after this many
    /// days. Legacy spelling of `retention.snapshots_days`, which wins when
    /// set; [`Config::parse`] copies the effective value here, so readers
    /// of this field see it.
    pub snapshot_retention_days: u32,
    /// Keep the enrolment photo in the registry (off by default: only the
    /// embedding is needed to recognise someone).
    pub store_enrolment_photos: bool,
    /// Keep the face embedding of each event (for as long as its snapshot)
    /// so staff can search "where has this person been seen". Off: events
    /// carry no face data beyond their snapshots.
    pub event_face_search: bool,
}

/// How long each kind of personal data is kept, in days; enforced by the
/// retention task of `facegate run` (hourly, on the blocking pool). PIPL
/// Art. 19: no longer than the shortest period necessary for the purpose;
/// the 2025 Measures on face recognition (Art. 9) say the same of face
/// information. `config/facegate.toml` gives the reason for each default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// How often the retention task runs, seconds.
    pub interval_s: u64,
    /// Events of every kind not named in `event_kinds`.
    pub events_days: u32,
    /// Per event kind (`owner_pass`, `stranger`, ...), overriding `events_days`.
    pub event_kinds: std::collections::BTreeMap<String, u32>,
    /// Face embeddings of events about no enrolled person (strangers, who
    /// never consented), for search by photo.
    pub stranger_faces_days: u32,
    /// Face embeddings of events about enrolled people.
    pub event_faces_days: u32,
    /// Snapshot JPEGs (face crops and scenes). Unset: the legacy
    /// `privacy.snapshot_retention_days` (30 by default).
    pub snapshots_days: Option<u32>,
    /// Audit rows (who changed what; no face data, no names).
    pub audit_days: u32,
    /// Watch-list entries past their expiry: rows and templates deleted
    /// this many days after it.
    pub expired_watchlist_days: u32,
    /// Outbox rows marked delivered.
    pub delivered_outbox_days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            interval_s: 3600,
            events_days: 90,
            event_kinds: [("owner_pass", 30), ("undecided", 7)]
                .into_iter()
                .map(|(k, d)| (k.to_owned(), d))
                .collect(),
            stranger_faces_days: 7,
            event_faces_days: 30,
            snapshots_days: None,
            audit_days: 1095,
            expired_watchlist_days: 0,
            delivered_outbox_days: 0,
        }
    }
}

impl RetentionConfig {
    /// Days an event of `kind` is kept.
    pub fn event_days(&self, kind: &str) -> u32 {
        self.event_kinds
            .get(kind)
            .copied()
            .unwrap_or(self.events_days)
    }

    /// Days snapshots are kept: `snapshots_days`, else the legacy key.
    pub fn snapshot_days(&self, privacy: &PrivacyConfig) -> u32 {
        self.snapshots_days
            .unwrap_or(privacy.snapshot_retention_days)
    }

    fn validate(&self, privacy: &PrivacyConfig) -> Result<(), (String, String)> {
        if self.interval_s == 0 {
            return Err((
                "retention.interval_s".into(),
                "must be at least 1 second".into(),
            ));
        }
        for kind in self.event_kinds.keys() {
            if crate::events::EventKind::parse(kind).is_none() {
                return Err((
                    format!("retention.event_kinds.{kind}"),
                    format!(
                        "unknown event kind (known: {})",
                        crate::events::EventKind::ALL
                            .iter()
                            .map(|k| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        if let Some(days) = self.snapshots_days
            && privacy.snapshot_retention_days != PrivacyConfig::default().snapshot_retention_days
            && privacy.snapshot_retention_days != days
        {
            return Err((
                "retention.snapshots_days".into(),
                format!(
                    "{days} disagrees with privacy.snapshot_retention_days = {}: set only retention.snapshots_days",
                    privacy.snapshot_retention_days
                ),
            ));
        }
        Ok(())
    }
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            snapshot_retention_days: 30,
            store_enrolment_photos: false,
            event_face_search: true,
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        config.validate(path)?;
        config.privacy.snapshot_retention_days = config.retention.snapshot_days(&config.privacy);
        Ok(config)
    }

    /// Checks what serde cannot: references between sections and ranges.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        // Reasons quote the operator's values: control characters (a
        // multi-line string) are escaped so the error stays on one line.
        let bad = |key: &str, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            reason: reason
                .chars()
                .flat_map(|c| {
                    let esc: Vec<char> = if c.is_control() {
                        c.escape_default().collect()
                    } else {
                        vec![c]
                    };
                    esc
                })
                .collect(),
        };
        if !(0..=19).contains(&self.ingest.patrol_nice) {
            return Err(bad(
                "ingest.patrol_nice",
                format!(
                    "{} is not a nice step between 0 and 19",
                    self.ingest.patrol_nice
                ),
            ));
        }
        let v = &self.vision;
        if !v.detectors.contains_key(&v.detector) {
            return Err(bad(
                "vision.detector",
                format!(
                    "no [vision.detectors.{}] section (known: {})",
                    v.detector,
                    join_keys(&v.detectors)
                ),
            ));
        }
        if !v.embedders.contains_key(&v.embedder) {
            return Err(bad(
                "vision.embedder",
                format!(
                    "no [vision.embedders.{}] section (known: {})",
                    v.embedder,
                    join_keys(&v.embedders)
                ),
            ));
        }
        if let Some(f) = v.fusion.as_ref().filter(|f| f.enabled) {
            let Some(second) = v.embedders.get(&f.embedder) else {
                return Err(bad(
                    "vision.fusion.embedder",
                    format!("no [vision.embedders.{}] section", f.embedder),
                ));
            };
            let first = &v.embedders[&v.embedder];
            if f.embedder == v.embedder
                || second.template != first.template
                || second.input_size != first.input_size
            {
                return Err(bad(
                    "vision.fusion.embedder",
                    "must be another embedder with the same alignment template and input size"
                        .into(),
                ));
            }
            if !(f.weight > 0.0 && f.weight < 1.0) {
                return Err(bad(
                    "vision.fusion.weight",
                    "must be between 0 and 1 (exclusive)".into(),
                ));
            }
        }
        if v.threads == 0 || v.threads > 64 {
            return Err(bad("vision.threads", "must be between 1 and 64".into()));
        }
        if v.workers > 64 {
            return Err(bad(
                "vision.workers",
                "must be between 0 (one per core) and 64".into(),
            ));
        }
        for (name, d) in &v.detectors {
            let key = format!("vision.detectors.{name}");
            if !(0.0..=1.0).contains(&d.score_threshold) {
                return Err(bad(
                    &format!("{key}.score_threshold"),
                    "must be between 0 and 1".into(),
                ));
            }
            if !(0.0..=1.0).contains(&d.nms_iou) {
                return Err(bad(
                    &format!("{key}.nms_iou"),
                    "must be between 0 and 1".into(),
                ));
            }
            if d.max_side < 64 || d.max_side > 4096 {
                return Err(bad(
                    &format!("{key}.max_side"),
                    "must be between 64 and 4096".into(),
                ));
            }
            if d.upscale_below > d.max_side {
                return Err(bad(
                    &format!("{key}.upscale_below"),
                    "must not exceed max_side".into(),
                ));
            }
            check_pixels(&d.pixels).map_err(|r| bad(&format!("{key}.pixels"), r))?;
        }
        for (name, e) in &v.embedders {
            let key = format!("vision.embedders.{name}");
            if e.input_size < 32 || e.input_size > 512 {
                return Err(bad(
                    &format!("{key}.input_size"),
                    "must be between 32 and 512".into(),
                ));
            }
            if e.dim == 0 || e.dim > 4096 {
                return Err(bad(
                    &format!("{key}.dim"),
                    "must be between 1 and 4096".into(),
                ));
            }
            check_pixels(&e.pixels).map_err(|r| bad(&format!("{key}.pixels"), r))?;
        }
        v.liveness
            .check()
            .map_err(|(key, reason)| bad(&key, reason))?;
        let ld = &v.quality.landmark_detector;
        if !ld.is_empty() && !v.detectors.contains_key(ld) {
            return Err(bad(
                "vision.quality.landmark_detector",
                format!(
                    "no [vision.detectors.{ld}] section (known: {})",
                    join_keys(&v.detectors)
                ),
            ));
        }
        if !(0.0..=2.0).contains(&v.quality.upsample_blur_sigma_src) {
            return Err(bad(
                "vision.quality.upsample_blur_sigma_src",
                "must be between 0 and 2 pixels".into(),
            ));
        }
        if !(0.0..=3.0).contains(&v.quality.upsample_blur_sigma) {
            return Err(bad(
                "vision.quality.upsample_blur_sigma",
                "must be between 0 and 3 pixels".into(),
            ));
        }
        if !(0.0..=90.0).contains(&v.pose.max_yaw) || !(0.0..=90.0).contains(&v.pose.max_pitch) {
            return Err(bad(
                "vision.pose",
                "max_yaw and max_pitch must be 0..=90 degrees".into(),
            ));
        }
        if !(-1.0..=1.0).contains(&self.matching.threshold) {
            return Err(bad(
                "matching.threshold",
                "a cosine similarity: -1 to 1".into(),
            ));
        }
        if self.matching.top_k == 0 {
            return Err(bad("matching.top_k", "must be at least 1".into()));
        }
        if !self.http.listen.is_empty() && self.http.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(bad(
                "http.listen",
                format!(
                    "'{}' is not an address like 127.0.0.1:8080 (empty turns HTTP off)",
                    self.http.listen
                ),
            ));
        }
        if self.http.max_upload_bytes < 1024 {
            return Err(bad(
                "http.max_upload_bytes",
                "must be at least 1024 bytes".into(),
            ));
        }
        for (key, v) in [
            ("http.max_connections", self.http.max_connections as u64),
            ("http.header_timeout_s", self.http.header_timeout_s),
            ("http.max_event_streams", self.http.max_event_streams as u64),
            ("http.stream_token_check_s", self.http.stream_token_check_s),
            (
                "http.max_concurrent_photos",
                self.http.max_concurrent_photos as u64,
            ),
            ("http.token_cache_s", self.http.token_cache_s),
            (
                "http.max_auth_failures",
                u64::from(self.http.max_auth_failures),
            ),
        ] {
            if v == 0 {
                return Err(bad(key, "must be at least 1".into()));
            }
        }
        self.retention
            .validate(&self.privacy)
            .map_err(|(key, reason)| bad(&key, reason))?;
        if self.storage.max_photo_bytes == 0 || self.storage.max_photo_pixels == 0 {
            return Err(bad("storage", "photo limits must be positive".into()));
        }
        let mut names = std::collections::HashSet::new();
        for (i, c) in self.cameras.iter().enumerate() {
            let key = format!("cameras[{i}]");
            if c.name.is_empty()
                || !c
                    .name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
            {
                return Err(bad(
                    &format!("{key}.name"),
                    "must be non-empty ASCII letters, digits, '-' or '_' (used in topics and paths)".into(),
                ));
            }
            if !names.insert(c.name.as_str()) {
                return Err(bad(
                    &format!("{key}.name"),
                    format!("'{}' is used twice", c.name),
                ));
            }
            crate::source::CameraUrl::parse(&c.url)
                .map_err(|reason| bad(&format!("{key}.url ({})", c.name), reason))?;
            if !(c.detect_fps > 0.0 && c.detect_fps <= 60.0) {
                return Err(bad(
                    &format!("{key}.detect_fps"),
                    "must be in (0, 60]".into(),
                ));
            }
            if !(c.stall_timeout_s >= 0.5 && c.stall_timeout_s <= 600.0) {
                return Err(bad(
                    &format!("{key}.stall_timeout_s"),
                    "must be between 0.5 and 600 seconds".into(),
                ));
            }
        }
        self.mqtt.validate().map_err(|e| {
            let (key, reason) = e.split_once(": ").unwrap_or(("mqtt", e.as_str()));
            bad(key, reason.to_owned())
        })?;
        self.sync
            .validate(&self.mqtt)
            .map_err(|(key, reason)| bad(&key, reason))?;
        if self.decide.min_faces == 0 || self.decide.loiter_tracks == 0 {
            return Err(bad(
                "decide",
                "min_faces and loiter_tracks must be at least 1".into(),
            ));
        }
        let d = &self.decide;
        if !(d.reverify_s > 0.0 && d.reverify_s <= 10.0) {
            return Err(bad(
                "decide.reverify_s",
                "must be in (0, 10] seconds: decided tracks must be re-verified".into(),
            ));
        }
        for (key, v) in [
            ("decide.change_similarity", d.change_similarity),
            ("decide.small_face_margin", d.small_face_margin),
            ("decide.ambiguity_margin", d.ambiguity_margin),
            ("decide.stranger_margin", d.stranger_margin),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(bad(key, format!("{v} is not in [0, 1]")));
            }
        }
        if !(d.min_decide_px >= 0.0 && d.small_face_px >= d.min_decide_px) {
            return Err(bad(
                "decide.small_face_px",
                "must be at least decide.min_decide_px".into(),
            ));
        }
        if self.site.code.is_empty()
            || !self
                .site
                .code
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad(
                "site.code",
                "must be non-empty ASCII letters, digits, '-' or '_' (it is used in MQTT topics)"
                    .into(),
            ));
        }
        Ok(())
    }

    pub fn detector(&self) -> &DetectorModel {
        &self.vision.detectors[&self.vision.detector]
    }

    pub fn embedder(&self) -> &EmbedderModel {
        &self.vision.embedders[&self.vision.embedder]
    }
}

fn check_pixels(p: &PixelFormat) -> Result<(), String> {
    if p.std.iter().any(|s| !s.is_finite() || *s == 0.0) || p.mean.iter().any(|m| !m.is_finite()) {
        return Err("std must be non-zero and mean/std finite".into());
    }
    Ok(())
}

fn join_keys<V>(map: &BTreeMap<String, V>) -> String {
    map.keys().cloned().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default_config() {
        let c = Config::parse("", Path::new("x.toml")).unwrap();
        assert_eq!(c.vision.detector, "yunet");
        assert_eq!(c.embedder().dim, 512);
    }

    #[test]
    fn the_shipped_example_parses_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/facegate.toml");
        let c = Config::load(&path).unwrap();
        let d = Config::default();
        assert_eq!(c.vision.detector, d.vision.detector);
        assert_eq!(c.detector().sha256, d.detector().sha256);
        assert_eq!(c.embedder().pixels, d.embedder().pixels);
        assert_eq!(c.matching.threshold, d.matching.threshold);
        let (cf, df) = (
            c.vision.fusion.clone().unwrap(),
            d.vision.fusion.clone().unwrap(),
        );
        assert_eq!(
            (cf.embedder, cf.weight, cf.optional),
            (df.embedder, df.weight, df.optional)
        );
        assert_eq!(
            c.vision.quality.landmark_flip,
            d.vision.quality.landmark_flip
        );
        let (cq, dq) = (&c.vision.quality, &d.vision.quality);
        assert_eq!(
            (
                cq.upsample_blur_sigma,
                cq.upsample_blur_sigma_src,
                cq.flip_average,
                &cq.landmark_detector
            ),
            (
                dq.upsample_blur_sigma,
                dq.upsample_blur_sigma_src,
                dq.flip_average,
                &dq.landmark_detector
            )
        );
        assert_eq!(c.detector().upscale_below, d.detector().upscale_below);
    }

    #[test]
    fn the_shipped_sync_example_is_valid_once_uncommented_and_checked() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/facegate.toml");
        let shipped = std::fs::read_to_string(&path).unwrap();
        let sync: String = shipped[shipped.find("# [sync]").expect("a [sync] example")..]
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let mqtt = "[mqtt]\nurl = \"mqtt://127.0.0.1\"\nclient_id = \"facegate-north\"\n";
        let c = Config::parse(&format!("{mqtt}{sync}\n"), &path).unwrap();
        assert_eq!(c.sync.box_id, "north-gate");
        assert!(Config::default().sync.box_id.is_empty(), "off by default");
        let err = |text: &str| {
            Config::parse(text, Path::new("c.toml"))
                .unwrap_err()
                .to_string()
        };
        let e = err(&format!("{mqtt}[sync]\nbox_id = \"a\"\n"));
        assert!(e.contains("sync.secret"), "{e}");
        let e = err(&format!(
            "{mqtt}[sync]\nbox_id = \"a/b\"\nsecret = \"env:S\"\n"
        ));
        assert!(e.contains("sync.box_id"), "{e}");
        let e =
            err("[mqtt]\nurl = \"mqtt://127.0.0.1\"\n[sync]\nbox_id = \"a\"\nsecret = \"env:S\"\n");
        assert!(e.contains("mqtt.client_id"), "{e}");
        let e = err("[sync]\nbox_id = \"a\"\nsecret = \"env:S\"\n");
        assert!(e.contains("mqtt.url"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = Config::parse("[vision]\ndetektor = \"yunet\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("detektor"), "{err}");
        assert!(err.contains("c.toml"), "{err}");
    }

    #[test]
    fn a_missing_detector_section_names_the_key() {
        let err = Config::parse("[vision]\ndetector = \"mtcnn\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("vision.detector"), "{err}");
        assert!(err.contains("retinaface"), "{err}");
    }

    #[test]
    fn out_of_range_threshold_is_refused() {
        let err = Config::parse("[matching]\nthreshold = 3.0\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("matching.threshold"), "{err}");
    }

    #[test]
    fn the_shipped_liveness_section_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/facegate.toml");
        let (c, d) = (
            Config::load(&path).unwrap().vision.liveness,
            LivenessConfig::default(),
        );
        assert_eq!(
            (
                c.enabled,
                c.combine,
                c.threshold,
                c.min_face_px,
                c.min_sharpness
            ),
            (
                d.enabled,
                d.combine,
                d.threshold,
                d.min_face_px,
                d.min_sharpness
            )
        );
        let key = |m: &LivenessModel| {
            (
                m.name.clone(),
                m.file.clone(),
                m.sha256.clone(),
                m.input_size,
                m.pixels.clone(),
                m.crop_scale,
                m.live_class,
                m.weight,
                m.flip_average,
                m.optional,
            )
        };
        let (cm, dm): (Vec<_>, Vec<_>) = (
            c.models.iter().map(key).collect(),
            d.models.iter().map(key).collect(),
        );
        assert_eq!(cm, dm);
    }

    #[test]
    fn old_single_model_liveness_keys_name_the_new_ones() {
        let text = "[vision.liveness]\nfile = \"liveness_faceplugin_128.onnx\"\nlive_class = 0\n";
        let err = Config::parse(text, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("vision.liveness.file"), "{err}");
        assert!(err.contains("file, live_class"), "{err}");
        assert!(err.contains("[[vision.liveness.models]]"), "{err}");
    }

    #[test]
    fn a_liveness_ensemble_parses_and_bad_entries_are_named() {
        let model = |extra: &str| {
            format!(
                "[[vision.liveness.models]]\nname = \"a\"\nfile = \"a.onnx\"\ninput_size = 80\n\
                 pixels = {{ channels = \"bgr\", layout = \"nchw\", mean = [0.0, 0.0, 0.0], std = [1.0, 1.0, 1.0] }}\n\
                 crop_scale = 2.7\nlive_class = 1\n{extra}"
            )
        };
        let c = Config::parse(
            &format!(
                "[vision.liveness]\nthreshold = 0.3\nmin_face_px = 50\n{}",
                model("")
            ),
            Path::new("c.toml"),
        )
        .unwrap();
        let l = &c.vision.liveness;
        assert_eq!(
            (l.models.len(), l.models[0].weight, l.min_face_px),
            (1, 1.0, 50)
        );
        // An own model is required and scored once unless it says otherwise.
        assert!(!l.models[0].optional && !l.models[0].flip_average);
        let c = Config::parse(
            &model("flip_average = true\noptional = true\n"),
            Path::new("c.toml"),
        )
        .unwrap();
        let m = &c.vision.liveness.models[0];
        assert!(m.optional && m.flip_average);
        let err = Config::parse(&model("weight = 0.0\n"), Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("vision.liveness.models[0].weight"), "{err}");
        let err = Config::parse("[vision.liveness]\nmodels = []\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("vision.liveness.models"), "{err}");
    }
}
