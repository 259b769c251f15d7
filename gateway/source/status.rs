//! Camera health as others see it: events when a camera goes down or comes
//! back, and a snapshot of its state and rates for the console and metrics.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::{Serialize, Serializer};

use super::slot::SlotCounters;

/// Where a camera's supervisor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraState {
    /// First start, no frame yet.
    Starting,
    /// Frames are flowing.
    Online,
    /// Down, waiting before the next attempt.
    Offline,
    /// A new pipeline is up after a failure, no frame yet.
    Reconnecting,
    /// Cancelled: the pipeline is gone.
    Stopped,
}

/// Why a camera went down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OfflineCause {
    /// GStreamer reported an error (connection refused, decoder failure, …).
    Error,
    /// The stream ended (over RTSP/TCP: the server closed the session).
    Ended,
    /// No frame for longer than the stall timeout, no error either.
    Stalled,
}

/// A change in a camera's health. `Offline` comes once when a camera goes
/// down (also when its very first start fails), not once per failed retry;
/// `Online` comes with the first frame after each (re)start.
#[derive(Debug, Clone, PartialEq)]
pub enum CameraEvent {
    Online {
        camera: String,
        at: SystemTime,
    },
    Offline {
        camera: String,
        cause: OfflineCause,
        reason: String,
        at: SystemTime,
    },
}

impl CameraEvent {
    pub fn camera(&self) -> &str {
        match self {
            CameraEvent::Online { camera, .. } | CameraEvent::Offline { camera, .. } => camera,
        }
    }
}

/// A point-in-time view of one camera, for the console and metrics.
#[derive(Debug, Clone, Serialize)]
pub struct CameraStatus {
    pub camera: String,
    /// The address, without credentials (they are never in it).
    pub url: String,
    pub state: CameraState,
    /// Frames per second from GStreamer, over the last few seconds.
    pub fps_in: f32,
    /// Frames per second taken by consumers, over the last few seconds.
    pub fps_taken: f32,
    pub frames_total: u64,
    pub frames_taken: u64,
    /// Frames overwritten before a consumer took them.
    pub drops_total: u64,
    /// Pipelines rebuilt after a failure.
    pub reconnects: u64,
    #[serde(serialize_with = "rfc3339")]
    pub last_frame_at: Option<SystemTime>,
    pub last_error: Option<String>,
}

fn rfc3339<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        None => s.serialize_none(),
        Some(t) => {
            let text = time::OffsetDateTime::from(*t)
                .format(&time::format_description::well_known::Rfc3339)
                .map_err(serde::ser::Error::custom)?;
            s.serialize_str(&text)
        }
    }
}

/// A rate over a sliding window of (time, counter) samples.
#[derive(Debug, Clone)]
pub struct FpsMeter {
    window: Duration,
    samples: VecDeque<(Instant, u64)>,
}

impl FpsMeter {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            samples: VecDeque::new(),
        }
    }

    /// Records the counter's value at `now` and returns the rate over the
    /// window (0 until two samples span some time).
    pub fn sample(&mut self, now: Instant, count: u64) -> f32 {
        self.samples.push_back((now, count));
        while let Some(&(t, _)) = self.samples.front() {
            if now.duration_since(t) > self.window && self.samples.len() > 2 {
                self.samples.pop_front();
            } else {
                break;
            }
        }
        match (self.samples.front(), self.samples.back()) {
            (Some(&(t0, c0)), Some(&(t1, c1))) if t1 > t0 => {
                c1.saturating_sub(c0) as f32 / (t1 - t0).as_secs_f32()
            }
            _ => 0.0,
        }
    }
}

/// What the supervisor writes and `CameraHandle::status` reads.
#[derive(Debug)]
pub(crate) struct StatusCell {
    inner: Mutex<StatusInner>,
}

#[derive(Debug, Clone)]
pub(crate) struct StatusInner {
    pub camera: String,
    pub url: String,
    pub state: CameraState,
    pub fps_in: f32,
    pub fps_taken: f32,
    pub reconnects: u64,
    pub last_error: Option<String>,
}

impl StatusCell {
    pub fn new(camera: String, url: String) -> Self {
        Self {
            inner: Mutex::new(StatusInner {
                camera,
                url,
                state: CameraState::Starting,
                fps_in: 0.0,
                fps_taken: 0.0,
                reconnects: 0,
                last_error: None,
            }),
        }
    }

    pub fn update(&self, f: impl FnOnce(&mut StatusInner)) {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn snapshot(&self, counters: SlotCounters, last_arrival: Option<Instant>) -> CameraStatus {
        let s = self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // The slot keeps a monotonic instant; the wall time of that instant
        // is now minus its age.
        let last_frame_at = last_arrival.map(|t| SystemTime::now() - t.elapsed());
        CameraStatus {
            camera: s.camera,
            url: s.url,
            state: s.state,
            fps_in: s.fps_in,
            fps_taken: s.fps_taken,
            frames_total: counters.frames_in,
            frames_taken: counters.taken,
            drops_total: counters.dropped,
            reconnects: s.reconnects,
            last_frame_at,
            last_error: s.last_error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fps_is_measured_over_the_window_only() {
        let t0 = Instant::now();
        let mut m = FpsMeter::new(Duration::from_secs(2));
        assert_eq!(m.sample(t0, 0), 0.0);
        // 10 fps for 4 s…
        let mut fps = 0.0;
        for i in 1..=40u64 {
            fps = m.sample(t0 + Duration::from_millis(100 * i), i);
        }
        assert!((fps - 10.0).abs() < 0.01, "{fps}");
        // …then nothing for 3 s: the window forgets the old rate.
        for i in 1..=30u64 {
            fps = m.sample(t0 + Duration::from_millis(4000 + 100 * i), 40);
        }
        assert_eq!(fps, 0.0);
    }

    #[test]
    fn status_serializes_with_lowercase_state_and_rfc3339_time() {
        let cell = StatusCell::new("gate-1".into(), "rtsp://cam/1".into());
        cell.update(|s| s.state = CameraState::Online);
        let counters = SlotCounters {
            frames_in: 10,
            taken: 3,
            dropped: 7,
        };
        let json = serde_json::to_value(cell.snapshot(counters, Some(Instant::now()))).unwrap();
        assert_eq!(json["state"], "online");
        assert_eq!(json["drops_total"], 7);
        let at = json["last_frame_at"].as_str().unwrap();
        assert!(at.len() >= 20 && at.contains('T'), "{at}");
    }
}
