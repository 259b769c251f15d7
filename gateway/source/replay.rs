//! Replaying a video file frame by frame, as fast as it decodes, for
//! `facegate replay` and tests: no frame is dropped (the decoder waits for
//! the consumer) and the stream ends at the file's end.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::SourceError;
use super::frame::{CapsCache, Frame};
use super::pipeline::{self, describe};

/// No frame and no message for this long: the file is broken in a way
/// GStreamer does not report.
const REPLAY_STALL: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

/// Every frame of a video file, in order, with its PTS: sample at
/// `detect_fps` in video time with [`Frame::pts`].
///
/// ```no_run
/// # fn main() -> Result<(), facegate::source::SourceError> {
/// for frame in facegate::source::Replay::open("clip.mp4".as_ref())? {
///     let frame = frame?;
///     println!("{:?} {}x{}", frame.pts, frame.width, frame.height);
/// }
/// # Ok(()) }
/// ```
pub struct Replay {
    path: PathBuf,
    name: Arc<str>,
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
    bus: gst::Bus,
    cache: CapsCache,
    seq: u64,
    finished: bool,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("path", &self.path)
            .field("seq", &self.seq)
            .field("finished", &self.finished)
            .finish()
    }
}

impl Replay {
    /// Opens and starts decoding `path`. Frames carry the file name as their camera.
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        super::init()?;
        let name: Arc<str> = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "replay".into())
            .into();
        let (pipeline, sink) = pipeline::build_replay(&name, path)?;
        let bus = pipeline.bus().ok_or_else(|| SourceError::File {
            path: path.to_owned(),
            reason: "pipeline without a bus".into(),
        })?;
        let replay = Self {
            path: path.to_owned(),
            name,
            pipeline,
            sink,
            bus,
            cache: CapsCache::default(),
            seq: 0,
            finished: false,
        };
        if let Err(e) = replay.pipeline.set_state(gst::State::Playing) {
            return Err(replay.bus_error().unwrap_or_else(|| SourceError::File {
                path: path.to_owned(),
                reason: format!("cannot start decoding: {e}"),
            }));
        }
        Ok(replay)
    }

    /// The decoders decodebin put in this pipeline, by element factory
    /// name (e.g. `avdec_h264`, or a hardware one named in `[ingest]`).
    pub fn decoders(&self) -> Vec<String> {
        use gst::prelude::*;
        self.pipeline
            .iterate_recurse()
            .into_iter()
            .flatten()
            .filter_map(|e| e.factory())
            .filter(|f| f.has_type(gst::ElementFactoryType::DECODER))
            .map(|f| f.name().to_string())
            .collect()
    }

    fn bus_error(&self) -> Option<SourceError> {
        let msg = self.bus.pop_filtered(&[gst::MessageType::Error])?;
        let gst::MessageView::Error(err) = msg.view() else {
            return None;
        };
        Some(SourceError::File {
            path: self.path.clone(),
            reason: describe(err.src(), &err.error(), err.debug().as_deref()),
        })
    }

    fn fail(&mut self, e: SourceError) -> Option<Result<Frame, SourceError>> {
        self.finished = true;
        let _ = self.pipeline.set_state(gst::State::Null);
        Some(Err(e))
    }
}

impl Iterator for Replay {
    type Item = Result<Frame, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let waited = Instant::now();
        loop {
            if let Some(sample) = self
                .sink
                .try_pull_sample(gst::ClockTime::from_mseconds(POLL.as_millis() as u64))
            {
                self.seq += 1;
                return match Frame::from_sample(&self.name, self.seq, &sample, &mut self.cache) {
                    Ok(frame) => Some(Ok(frame)),
                    Err(reason) => self.fail(SourceError::Frame {
                        camera: self.name.to_string(),
                        seq: self.seq,
                        reason,
                    }),
                };
            }
            if let Some(e) = self.bus_error() {
                return self.fail(e);
            }
            if self.sink.is_eos() {
                self.finished = true;
                let _ = self.pipeline.set_state(gst::State::Null);
                return None;
            }
            if waited.elapsed() > REPLAY_STALL {
                let e = SourceError::File {
                    path: self.path.clone(),
                    reason: format!("no frame for {} s", REPLAY_STALL.as_secs()),
                };
                return self.fail(e);
            }
        }
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
