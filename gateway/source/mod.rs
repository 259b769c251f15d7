//! Camera sources: GStreamer pipelines for RTSP cameras, looped video files
//! and still images, delivering the newest frame without backlog.

mod url;

pub use url::CameraUrl;
