//! Camera sources: GStreamer pipelines for RTSP cameras, looped video files
//! and still images, delivering the newest frame without backlog; and a
//! replay source that gives every frame of a file.
//!
//! # Use
//! ```no_run
//! # async fn demo(cfg: &facegate::config::CameraConfig) -> Result<(), facegate::source::SourceError> {
//! use facegate::source::{spawn_camera, CameraSpec};
//! let (tx, mut events) = tokio::sync::mpsc::channel(64);
//! let cancel = tokio_util::sync::CancellationToken::new();
//! let cam = spawn_camera(CameraSpec::from_config(cfg)?, tx, cancel.clone())?;
//! let frame = cam.slot().next_frame().await;          // newest frame, waits if none
//! let (small, scale) = frame.to_rgb_scaled(640)?;     // for detection
//! let full = frame.to_rgb()?;                         // for alignment crops
//! println!("{:?}", events.recv().await);              // Online / Offline
//! cancel.cancel();
//! cam.stopped().await;
//! # Ok(()) }
//! ```
//!
//! # Parts
//! - [`CameraSpec`]: a camera's URL, transport, credentials (env or file,
//!   set as rtspsrc properties, never in the URL or the logs) and timeouts.
//! - [`spawn_camera`] → [`CameraHandle`]: a supervisor thread per camera that
//!   rebuilds the pipeline with [`Backoff`] on error, end of stream or stall,
//!   sends [`CameraEvent`]s and keeps a [`CameraStatus`].
//! - [`FrameSlot`]: the newest frame; the streaming thread only swaps it in,
//!   consumers take at their rate; frames in / taken / dropped are counted.
//! - [`Frame`]: the decoder's I420/NV12 buffer; RGB is made on request
//!   ([`Frame::to_rgb`], [`Frame::to_rgb_scaled`]), with the `convert`
//!   module's integer YUV→RGB.
//! - [`Replay`]: every frame of a file as fast as it decodes, with PTS.

mod backoff;
mod camera;
pub mod convert;
mod frame;
pub mod motion;
mod pipeline;
mod replay;
mod slot;
mod spec;
mod status;
mod url;

use std::path::PathBuf;
use std::sync::OnceLock;

pub use backoff::{Backoff, BackoffPolicy};
pub use camera::{CameraHandle, spawn_camera};
pub use frame::Frame;
pub use pipeline::{IMAGE_FPS, REQUIRED_ELEMENTS};
pub use replay::Replay;
pub use slot::{Slot, SlotCounters};
pub use spec::{CameraSpec, Credentials};
pub use status::{CameraEvent, CameraState, CameraStatus, FpsMeter, OfflineCause};
pub use url::CameraUrl;

/// The slot a camera's frames go through.
pub type FrameSlot = Slot<Frame>;

/// What went wrong with a camera or a video file. Messages name the camera
/// (or file) and never hold credentials.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "GStreamer cannot start: {0} (install gstreamer1.0-plugins-base, -good, -bad and gstreamer1.0-libav)"
    )]
    Init(String),
    #[error("camera {camera}: {reason}")]
    Config { camera: String, reason: String },
    #[error("camera {camera}: GStreamer element '{element}' is missing: install {package}")]
    MissingElement {
        camera: String,
        element: &'static str,
        package: &'static str,
    },
    #[error("camera {camera}: {reason}")]
    Pipeline { camera: String, reason: String },
    #[error("camera {camera}: frame {seq}: {reason}")]
    Frame {
        camera: String,
        seq: u64,
        reason: String,
    },
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
}

impl SourceError {
    /// Whether trying again later may help (a pipeline that failed to start
    /// or a file that may yet appear), as opposed to a configuration or
    /// installation problem.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SourceError::Pipeline { .. } | SourceError::File { .. }
        )
    }
}

/// Initialises GStreamer once per process; later calls return the first
/// result.
pub fn init() -> Result<(), SourceError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| gstreamer::init().map_err(|e| e.to_string()))
        .clone()
        .map_err(SourceError::Init)
}

/// Decoder choice for `decodebin` (`[ingest]` in the config): each element
/// in `prefer` is ranked above every other decoder, the first highest (so
/// a board's hardware decoder, e.g. `mppvideodec` on Rockchip or
/// `v4l2slh264dec`/`v4l2h264dec` on other ARM boards, is used where it is
/// installed and the software one where it is not); each in `avoid` is
/// ranked NONE, so decodebin never picks it (a hardware decoder that
/// misbehaves on a camera's stream). Process-wide: call before cameras
/// start. Returns the names that are not installed, for a warning.
pub fn rank_decoders(prefer: &[String], avoid: &[String]) -> Result<Vec<String>, SourceError> {
    use gstreamer::prelude::PluginFeatureExtManual;
    init()?;
    let mut missing = Vec::new();
    let n = prefer.len() as i32;
    for (i, name) in prefer.iter().enumerate() {
        match gstreamer::ElementFactory::find(name) {
            Some(f) => f.set_rank(gstreamer::Rank::PRIMARY + (256 + n - i as i32)),
            None => missing.push(name.clone()),
        }
    }
    for name in avoid {
        match gstreamer::ElementFactory::find(name) {
            Some(f) => f.set_rank(gstreamer::Rank::NONE),
            None => missing.push(name.clone()),
        }
    }
    Ok(missing)
}

/// The decoder `decodebin` picks for `caps` (e.g. `video/x-h264`): the
/// highest-ranked installed decoder that accepts them, as decodebin ranks
/// them; `None` when there is none.
pub fn decoder_for(caps: &str) -> Result<Option<String>, SourceError> {
    use gstreamer::prelude::{GstObjectExt, PluginFeatureExtManual};
    init()?;
    let caps: gstreamer::Caps = caps
        .parse()
        .map_err(|e| SourceError::Init(format!("caps {caps}: {e}")))?;
    let mut found: Vec<(gstreamer::Rank, String)> = gstreamer::ElementFactory::factories_with_type(
        gstreamer::ElementFactoryType::DECODER,
        gstreamer::Rank::MARGINAL,
    )
    .into_iter()
    .filter(|f| f.can_sink_any_caps(&caps))
    .map(|f| (f.rank(), f.name().to_string()))
    .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    Ok(found.into_iter().next().map(|(_, name)| name))
}

/// Checks that every element facegate's pipelines use is installed, naming
/// the missing ones (decoders are not checked: `decodebin` picks among them).
pub fn check_elements() -> Result<(), SourceError> {
    init()?;
    let missing: Vec<&str> = REQUIRED_ELEMENTS
        .iter()
        .copied()
        .filter(|e| gstreamer::ElementFactory::find(e).is_none())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(SourceError::Init(format!(
            "missing GStreamer elements: {}",
            missing.join(", ")
        )))
    }
}
