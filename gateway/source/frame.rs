//! A decoded frame as GStreamer gave it (I420 or NV12, the decoder's own
//! buffer), converted to RGB only when a consumer asks.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use gstreamer as gst;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;
use image::RgbImage;

use super::SourceError;
use super::convert::{self, Chroma, Yuv420, YuvMatrix};

/// One decoded frame. Cheap to clone (the pixels are a reference-counted
/// GStreamer buffer). In the slot it is the decoder's own buffer; a consumer
/// takes it through [`CameraHandle::wait_frame`](super::CameraHandle::wait_frame),
/// which gives it a copy of its own ([`Frame::detach`]) so the decoder gets
/// its buffer back at once.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The camera's name from the config.
    pub camera: Arc<str>,
    /// 1, 2, … per camera, never reused (also across reconnects).
    pub seq: u64,
    /// Presentation time in stream time, when the source has one. Restarts
    /// when a looped file wraps or a camera reconnects.
    pub pts: Option<Duration>,
    /// When the frame reached us (monotonic).
    pub arrived: Instant,
    /// When the frame reached us (wall clock, for events and logs).
    pub wall: SystemTime,
    pub width: u32,
    pub height: u32,
    buffer: gst::Buffer,
    info: gst_video::VideoInfo,
}

/// The caps of the last sample and their parsed `VideoInfo`; caps rarely
/// change, so they are parsed once per change rather than once per frame.
#[derive(Debug, Default)]
pub(crate) struct CapsCache(Option<(gst::Caps, gst_video::VideoInfo)>);

impl CapsCache {
    fn info(&mut self, caps: &gst::CapsRef) -> Result<gst_video::VideoInfo, String> {
        if let Some((c, info)) = &self.0
            && (c.as_ptr() == caps.as_ptr() || c.as_ref() == caps)
        {
            return Ok(info.clone());
        }
        let info = gst_video::VideoInfo::from_caps(caps)
            .map_err(|e| format!("unusable caps {caps}: {e}"))?;
        if !matches!(
            info.format(),
            gst_video::VideoFormat::I420 | gst_video::VideoFormat::Nv12
        ) {
            return Err(format!("unexpected pixel format {:?}", info.format()));
        }
        self.0 = Some((caps.to_owned(), info.clone()));
        Ok(info)
    }
}

impl Frame {
    /// Wraps an appsink sample; `cache` keeps the parsed caps between calls.
    pub(crate) fn from_sample(
        camera: &Arc<str>,
        seq: u64,
        sample: &gst::Sample,
        cache: &mut CapsCache,
    ) -> Result<Frame, String> {
        // No copy here: the slot holds at most this one decoder buffer, and
        // replaces it with the next frame. Frames a consumer takes are
        // copied then (`detach`), at the detection rate, not at 25 fps.
        let buffer = sample.buffer_owned().ok_or("sample without a buffer")?;
        let caps = sample.caps().ok_or("sample without caps")?;
        let info = cache.info(caps)?;
        Ok(Frame {
            camera: camera.clone(),
            seq,
            pts: buffer.pts().map(Duration::from),
            arrived: Instant::now(),
            wall: SystemTime::now(),
            width: info.width(),
            height: info.height(),
            buffer,
            info,
        })
    }

    /// The same frame on a copy of the pixels, so the decoder's buffer goes
    /// back to its pool (≈0.5 ms for 1080p I420). Consumers that keep a frame
    /// while they work must hold a detached one: holding the decoder's own
    /// buffers starves its small pool (measured: a 25 fps file then
    /// delivered 15–19 fps; BENCHMARKS.md §4).
    pub fn detach(mut self) -> Result<Frame, SourceError> {
        self.buffer = self
            .buffer
            .copy_deep()
            .map_err(|e| self.error(format!("cannot copy the decoded frame: {e}")))?;
        Ok(self)
    }

    /// `I420` or `NV12`.
    pub fn pixel_format(&self) -> &'static str {
        self.info.format().to_str()
    }

    /// The matrix the stream says it uses (BT.709 for most HD streams),
    /// BT.601 limited range when it says nothing else.
    pub fn matrix(&self) -> YuvMatrix {
        let c = self.info.colorimetry();
        let full = c.range() == gst_video::VideoColorRange::Range0_255;
        match (c.matrix() == gst_video::VideoColorMatrix::Bt709, full) {
            (true, true) => YuvMatrix::BT709_FULL,
            (true, false) => YuvMatrix::BT709_LIMITED,
            (false, true) => YuvMatrix::BT601_FULL,
            (false, false) => YuvMatrix::BT601_LIMITED,
        }
    }

    fn error(&self, reason: String) -> SourceError {
        SourceError::Frame {
            camera: self.camera.to_string(),
            seq: self.seq,
            reason,
        }
    }

    /// Maps the buffer and hands its planes (with the strides and offsets
    /// GStreamer reports, including a decoder's `VideoMeta`) to `f`.
    pub fn with_yuv<R>(&self, f: impl FnOnce(&Yuv420<'_>) -> R) -> Result<R, SourceError> {
        let vf =
            gst_video::VideoFrameRef::from_buffer_ref_readable(self.buffer.as_ref(), &self.info)
                .map_err(|e| self.error(format!("cannot map the buffer: {e}")))?;
        let stride = |plane: usize| -> Result<usize, SourceError> {
            let s = vf.plane_stride()[plane];
            usize::try_from(s).map_err(|_| self.error(format!("negative stride {s}")))
        };
        let plane = |i: u32| {
            vf.plane_data(i)
                .map_err(|e| self.error(format!("plane {i}: {e}")))
        };
        let chroma = match vf.format() {
            gst_video::VideoFormat::I420 => Chroma::Planar {
                u: plane(1)?,
                u_stride: stride(1)?,
                v: plane(2)?,
                v_stride: stride(2)?,
            },
            gst_video::VideoFormat::Nv12 => Chroma::Interleaved {
                uv: plane(1)?,
                stride: stride(1)?,
            },
            other => return Err(self.error(format!("unexpected pixel format {other:?}"))),
        };
        let yuv = Yuv420::new(self.width, self.height, plane(0)?, stride(0)?, chroma)
            .map_err(|e| self.error(e))?;
        Ok(f(&yuv))
    }

    /// The full frame as packed RGB.
    pub fn to_rgb(&self) -> Result<RgbImage, SourceError> {
        let mut buf = Vec::new();
        self.to_rgb_into(&mut buf)?;
        RgbImage::from_raw(self.width, self.height, buf)
            .ok_or_else(|| self.error("RGB buffer of the wrong size".into()))
    }

    /// The full frame as packed RGB (`width × 3` bytes a row) into a buffer
    /// the caller reuses from frame to frame.
    pub fn to_rgb_into(&self, buf: &mut Vec<u8>) -> Result<(), SourceError> {
        let stride = self.width as usize * 3;
        buf.resize(stride * self.height as usize, 0);
        let m = self.matrix();
        self.with_yuv(|yuv| convert::yuv_to_rgb(yuv, m, buf, stride))
    }

    /// A copy whose long side is at most `max_side`, box-averaged straight
    /// from the YUV planes (for detection; crops for alignment should come
    /// from [`Frame::to_rgb`]). Returns the image and its scale: a point
    /// `(x, y)` in it is `(x / scale, y / scale)` in the frame. Never upscales.
    pub fn to_rgb_scaled(&self, max_side: u32) -> Result<(RgbImage, f32), SourceError> {
        let (w, h) = convert::scaled_size(self.width, self.height, max_side);
        if (w, h) == (self.width, self.height) {
            return Ok((self.to_rgb()?, 1.0));
        }
        let mut buf = vec![0u8; w as usize * h as usize * 3];
        let m = self.matrix();
        self.with_yuv(|yuv| convert::yuv_to_rgb_scaled(yuv, m, w, h, &mut buf))?;
        let img = RgbImage::from_raw(w, h, buf)
            .ok_or_else(|| self.error("RGB buffer of the wrong size".into()))?;
        Ok((img, w as f32 / self.width as f32))
    }
}
