//! Building the GStreamer pipelines. Decoding goes through `decodebin`, so
//! the highest-ranked decoder present is used (v4l2/Rockchip hardware
//! decoders on ARM boxes, avdec/openh264 elsewhere); frames leave as I420 or
//! NV12 (`videoconvert` passes those through untouched) and are converted to
//! RGB in Rust only when taken.
//!
//! ```text
//! RTSP:   rtspsrc protocols=tcp|udp latency=200 (video streams only)
//!           ! decodebin ! videoconvert ! appsink caps=I420|NV12 max-buffers=1 drop=true sync=false
//! file:   filesrc ! decodebin ! videoconvert ! appsink … sync=true  (real time; loops by seeking at EOS)
//! image:  filesrc ! decodebin ! videoconvert ! videoflip video-direction=auto ! videoconvert
//!           ! imagefreeze ! appsink caps=…,framerate=10/1 … sync=true
//! replay: filesrc ! decodebin ! videoconvert ! appsink max-buffers=2 drop=false sync=false
//! ```
//! Audio streams are not set up (RTSP) or not decoded and go to a
//! `fakesink` (files).

use std::path::Path;
use std::sync::Arc;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::config::Transport;

use super::frame::{CapsCache, Frame};
use super::{CameraSpec, CameraUrl, FrameSlot, SourceError};

/// The RTSP jitter buffer (ms): enough to reorder packets on a LAN, small
/// enough that the newest frame is fresh.
const RTSP_LATENCY_MS: u32 = 200;
/// Frames per second an image source repeats its picture.
pub const IMAGE_FPS: i32 = 10;

/// Which Debian package ships an element, for error messages.
fn package_of(element: &str) -> &'static str {
    match element {
        "filesrc" | "fakesink" => "libgstreamer1.0-0",
        "rtspsrc" | "videoflip" | "imagefreeze" => "gstreamer1.0-plugins-good",
        _ => "gstreamer1.0-plugins-base",
    }
}

/// The elements facegate's pipelines are made of (decoders excluded:
/// `decodebin` picks whatever is installed).
pub const REQUIRED_ELEMENTS: &[&str] = &[
    "rtspsrc",
    "filesrc",
    "decodebin",
    "videoconvert",
    "videoflip",
    "imagefreeze",
    "appsink",
    "fakesink",
];

fn make(camera: &str, factory: &'static str) -> Result<gst::Element, SourceError> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| SourceError::MissingElement {
            camera: camera.to_owned(),
            element: factory,
            package: package_of(factory),
        })
}

fn pipeline_error(camera: &str, what: &str, e: impl std::fmt::Display) -> SourceError {
    SourceError::Pipeline {
        camera: camera.to_owned(),
        reason: format!("{what}: {e}"),
    }
}

/// I420 or NV12: what decoders give natively, so `videoconvert` is a no-op.
fn yuv_caps(framerate: Option<i32>) -> gst::Caps {
    let mut b = gst::Caps::builder("video/x-raw").field("format", gst::List::new(["I420", "NV12"]));
    if let Some(fps) = framerate {
        b = b.field("framerate", gst::Fraction::new(fps, 1));
    }
    b.build()
}

fn appsink(caps: &gst::Caps, live: bool, sync: bool) -> gst_app::AppSink {
    gst_app::AppSink::builder()
        .caps(caps)
        // Live: keep one frame and drop the rest inside GStreamer too, so its
        // streaming thread never waits for us. Replay: a short queue that
        // makes the decoder wait, so no frame is lost.
        .max_buffers(if live { 1 } else { 2 })
        .drop(live)
        .sync(sync)
        // The last-sample property would hold one more decoder buffer.
        .enable_last_sample(false)
        .build()
}

fn check_file(path: &Path) -> Result<(), SourceError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(SourceError::File {
            path: path.to_owned(),
            reason: "not a file".into(),
        }),
        Err(e) => Err(SourceError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// A camera's pipeline, with its appsink feeding `slot`. Built in Null
/// state; the supervisor starts it.
pub(crate) fn build_live(
    spec: &CameraSpec,
    camera: &Arc<str>,
    slot: &Arc<FrameSlot>,
) -> Result<gst::Pipeline, SourceError> {
    let name = spec.name.as_str();
    let pipeline = gst::Pipeline::with_name(&format!("camera-{name}"));
    let convert = make(name, "videoconvert")?;
    let is_rtsp = matches!(spec.url, CameraUrl::Rtsp(_));
    let image = matches!(spec.url, CameraUrl::Image(_));
    let caps = yuv_caps(image.then_some(IMAGE_FPS));
    // Files and images play in real time like a camera; RTSP is live already.
    let sink = appsink(&caps, true, !is_rtsp);
    pipeline
        .add_many([&convert, sink.upcast_ref()])
        .map_err(|e| pipeline_error(name, "add", e))?;
    // Where decodebin's video pad goes.
    let video_in = if image {
        let pre = make(name, "videoconvert")?;
        let flip = make(name, "videoflip")?;
        flip.set_property_from_str("video-direction", "auto");
        let freeze = make(name, "imagefreeze")?;
        pipeline
            .add_many([&pre, &flip, &freeze])
            .map_err(|e| pipeline_error(name, "add", e))?;
        gst::Element::link_many([&pre, &flip, &convert, &freeze, sink.upcast_ref()])
            .map_err(|e| pipeline_error(name, "link", e))?;
        pre
    } else {
        convert
            .link(&sink)
            .map_err(|e| pipeline_error(name, "link", e))?;
        convert.clone()
    };
    let decode = make(name, "decodebin")?;
    pipeline
        .add(&decode)
        .map_err(|e| pipeline_error(name, "add", e))?;
    link_decoded_video(&pipeline, &decode, &video_in);
    match &spec.url {
        CameraUrl::Rtsp(url) => {
            let src = rtspsrc(spec, url)?;
            pipeline
                .add(&src)
                .map_err(|e| pipeline_error(name, "add", e))?;
            let decode_weak = decode.downgrade();
            src.connect_pad_added(move |_, pad| {
                let Some(decode) = decode_weak.upgrade() else {
                    return;
                };
                if let Some(sinkpad) = decode.static_pad("sink")
                    && !sinkpad.is_linked()
                {
                    let _ = pad.link(&sinkpad);
                }
            });
        }
        CameraUrl::File(path) | CameraUrl::Image(path) => {
            check_file(path)?;
            let src = make(name, "filesrc")?;
            src.set_property("location", path.to_string_lossy().as_ref());
            pipeline
                .add(&src)
                .map_err(|e| pipeline_error(name, "add", e))?;
            src.link(&decode)
                .map_err(|e| pipeline_error(name, "link", e))?;
        }
    }
    feed_slot(&sink, camera.clone(), slot.clone());
    Ok(pipeline)
}

fn rtspsrc(spec: &CameraSpec, url: &str) -> Result<gst::Element, SourceError> {
    let name = spec.name.as_str();
    let src = make(name, "rtspsrc")?;
    src.set_property("location", url);
    src.set_property("latency", RTSP_LATENCY_MS);
    src.set_property_from_str(
        "protocols",
        match spec.transport {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        },
    );
    // Credentials go in properties, never in the URL: the URL is logged.
    if let Some(c) = &spec.credentials {
        src.set_property("user-id", c.user.as_str());
        src.set_property("user-pw", c.password.as_str());
    }
    // Only video streams are set up (no audio RTP to receive and discard).
    src.connect("select-stream", false, |args| {
        let media = args
            .get(2)
            .and_then(|v| v.get::<gst::Caps>().ok())
            .and_then(|caps| {
                caps.structure(0)
                    .and_then(|s| s.get::<String>("media").ok())
            });
        Some(media.is_none_or(|m| m == "video").to_value())
    });
    Ok(src)
}

/// Links decodebin's first raw video pad to `video_in`; other streams are
/// left undecoded and end in a fakesink. A source without video is an error.
fn link_decoded_video(pipeline: &gst::Pipeline, decode: &gst::Element, video_in: &gst::Element) {
    // Do not decode audio only to throw it away.
    decode.connect("autoplug-continue", false, |args| {
        let audio = args
            .get(2)
            .and_then(|v| v.get::<gst::Caps>().ok())
            .and_then(|caps| caps.structure(0).map(|s| s.name().starts_with("audio/")))
            .unwrap_or(false);
        Some((!audio).to_value())
    });
    let video_weak = video_in.downgrade();
    let pipeline_weak = pipeline.downgrade();
    decode.connect_pad_added(move |_, pad| {
        let (Some(video_in), Some(pipeline)) = (video_weak.upgrade(), pipeline_weak.upgrade())
        else {
            return;
        };
        let is_video = pad
            .current_caps()
            .unwrap_or_else(|| pad.query_caps(None))
            .structure(0)
            .is_some_and(|s| s.name().starts_with("video/x-raw"));
        if let Some(sinkpad) = video_in.static_pad("sink")
            && is_video
            && !sinkpad.is_linked()
        {
            let _ = pad.link(&sinkpad);
            return;
        }
        // Anything else: a sink that accepts and discards it, so an unlinked
        // pad cannot stop the demuxer.
        if let Ok(fake) = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .build()
            && pipeline.add(&fake).is_ok()
        {
            let _ = fake.sync_state_with_parent();
            if let Some(sinkpad) = fake.static_pad("sink") {
                let _ = pad.link(&sinkpad);
            }
        }
    });
    let video_weak = video_in.downgrade();
    decode.connect_no_more_pads(move |decode| {
        let linked = video_weak
            .upgrade()
            .and_then(|v| v.static_pad("sink"))
            .is_some_and(|p| p.is_linked());
        if !linked {
            gst::element_error!(
                decode,
                gst::StreamError::WrongType,
                ("no video stream in this source")
            );
        }
    });
}

/// The appsink callback: wrap the sample (no pixel work) and swap it into
/// the slot. Runs on GStreamer's streaming thread, so it must never wait.
fn feed_slot(sink: &gst_app::AppSink, camera: Arc<str>, slot: Arc<FrameSlot>) {
    let mut cache = CapsCache::default();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                match Frame::from_sample(&camera, slot.next_seq(), &sample, &mut cache) {
                    Ok(frame) => {
                        slot.put(frame);
                        Ok(gst::FlowSuccess::Ok)
                    }
                    Err(reason) => {
                        gst::element_error!(sink, gst::StreamError::Format, ("{}", reason));
                        Err(gst::FlowError::Error)
                    }
                }
            })
            .build(),
    );
}

/// A replay pipeline: as fast as the decoder goes, never dropping.
pub(crate) fn build_replay(
    name: &str,
    path: &Path,
) -> Result<(gst::Pipeline, gst_app::AppSink), SourceError> {
    check_file(path)?;
    let pipeline = gst::Pipeline::with_name(&format!("replay-{name}"));
    let src = make(name, "filesrc")?;
    src.set_property("location", path.to_string_lossy().as_ref());
    let decode = make(name, "decodebin")?;
    let convert = make(name, "videoconvert")?;
    let sink = appsink(&yuv_caps(None), false, false);
    pipeline
        .add_many([&src, &decode, &convert, sink.upcast_ref()])
        .map_err(|e| pipeline_error(name, "add", e))?;
    src.link(&decode)
        .map_err(|e| pipeline_error(name, "link", e))?;
    convert
        .link(&sink)
        .map_err(|e| pipeline_error(name, "link", e))?;
    link_decoded_video(&pipeline, &decode, &convert);
    Ok((pipeline, sink))
}

/// A GStreamer error or warning message as one line: element, message and
/// the last line of the debug text (where rtspsrc puts the useful part).
pub(crate) fn describe(
    src: Option<&gst::Object>,
    error: &glib::Error,
    debug: Option<&str>,
) -> String {
    let element = src.map(|s| s.name().to_string()).unwrap_or_default();
    let detail = debug
        .and_then(|d| d.lines().rev().find(|l| !l.trim().is_empty()))
        .map(|d| format!(" ({})", d.trim()))
        .unwrap_or_default();
    format!("{element}: {error}{detail}")
}
