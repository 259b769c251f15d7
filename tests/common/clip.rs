//! Test clips made from still frames: a scene drawn frame by frame as
//! JPEGs, encoded to an H.264 MP4 by GStreamer.
#![allow(dead_code)]

use std::path::Path;

/// Encodes `frames/f0000.jpg` to `frames/f{count-1:04}.jpg` as a 10 fps
/// H.264 MP4 at `out` (`gst-launch-1.0` with x264enc at `bitrate` kbit/s
/// and a key frame at least every `key_int_max` frames).
pub fn encode_jpeg_frames(frames: &Path, count: usize, out: &Path, bitrate: u32, key_int_max: u32) {
    let status = std::process::Command::new("gst-launch-1.0")
        .arg("-q")
        .args(
            format!(
                "multifilesrc location={}/f%04d.jpg index=0 stop-index={} caps=image/jpeg,framerate=10/1 \
                 ! jpegdec ! videoconvert ! video/x-raw,format=I420 \
                 ! x264enc bitrate={bitrate} key-int-max={key_int_max} speed-preset=ultrafast ! h264parse ! mp4mux \
                 ! filesink location={}",
                frames.display(),
                count - 1,
                out.display()
            )
            .split_whitespace(),
        )
        .status()
        .expect("gst-launch-1.0 (gstreamer1.0-tools)");
    assert!(status.success(), "encoding {} failed", out.display());
}
