//! What the running gateway shows to the outside while it works: the live
//! event feed (for the console's server-sent events), the cameras with their
//! newest frame (for status and "enrol the person at the gate"), and the
//! Prometheus metrics. One [`Live`] is shared by the camera pipeline, which
//! writes it, and the HTTP server, which reads it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::broadcast;

use crate::events::{Event, EventKind};
use crate::pipeline::CameraContext;
use crate::source::{CameraHandle, CameraState, Frame};

/// Events buffered for slow feed readers; one that falls further behind
/// misses the oldest and is told so.
const FEED_CAPACITY: usize = 256;

/// A running camera as the HTTP side sees it.
pub struct LiveCamera {
    pub ctx: CameraContext,
    pub handle: Arc<CameraHandle>,
    /// The newest frame the recogniser took (not copied: it is the frame
    /// the recogniser was done with).
    pub latest: Arc<Mutex<Option<Frame>>>,
}

/// The gateway's live state.
pub struct Live {
    feed: broadcast::Sender<Event>,
    cameras: RwLock<Vec<Arc<LiveCamera>>>,
    pub metrics: Metrics,
}

impl Default for Live {
    fn default() -> Self {
        Self::new()
    }
}

impl Live {
    pub fn new() -> Self {
        Self {
            feed: broadcast::channel(FEED_CAPACITY).0,
            cameras: RwLock::new(Vec::new()),
            metrics: Metrics::default(),
        }
    }

    /// Hands a decided (and stored) event to live readers and counts it.
    pub fn publish(&self, e: &Event) {
        self.metrics.count_event(e.kind);
        // No reader is not an error.
        let _ = self.feed.send(e.clone());
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.feed.subscribe()
    }

    pub fn add_camera(&self, cam: LiveCamera) {
        if let Ok(mut c) = self.cameras.write() {
            c.push(Arc::new(cam));
        }
    }

    pub fn cameras(&self) -> Vec<Arc<LiveCamera>> {
        self.cameras.read().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn camera(&self, name: &str) -> Option<Arc<LiveCamera>> {
        self.cameras().into_iter().find(|c| c.ctx.name == name)
    }
}

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }
}

/// Recognition stages timed per frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Frame to RGB (and the scaled copy for detection).
    Convert,
    Detect,
    /// Alignment, liveness, pose and embedding of the faces not yet settled.
    Analyze,
    /// Tracking, 1:N search and the decision.
    Decide,
    /// The whole frame.
    Frame,
    /// Frame arrival → an event decided on it.
    Decision,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Convert => "convert",
            Stage::Detect => "detect",
            Stage::Analyze => "analyze",
            Stage::Decide => "decide",
            Stage::Frame => "frame",
            Stage::Decision => "decision",
        }
    }
}

#[derive(Default)]
struct MetricsInner {
    stages: BTreeMap<(String, Stage), Histogram>,
    frames: BTreeMap<String, u64>,
    still: BTreeMap<String, u64>,
    faces: BTreeMap<String, u64>,
    events: BTreeMap<&'static str, u64>,
    http: BTreeMap<(String, u16), u64>,
    snapshots_not_saved: BTreeMap<&'static str, u64>,
    /// Registry sync (`[sync]`): None while it is off.
    sync: Option<SyncMetrics>,
}

/// What registry sync did, by [`SyncResult`], and whether its broker link
/// is up.
#[derive(Default)]
struct SyncMetrics {
    connected: bool,
    messages: BTreeMap<&'static str, u64>,
}

/// What became of one registry sync message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncResult {
    /// A local change the broker acknowledged.
    Published,
    /// Another box's change applied here.
    Applied,
    /// A state this box already has (a retained message read again).
    Unchanged,
    /// Lost to this box's version (older, or a state over an erasure made
    /// here and not yet published): ignored, ours goes out.
    Stale,
    /// Not readable under the site's secret (forged, altered, malformed).
    Refused,
    /// Readable but not applied (a model this box does not run, a database error).
    Failed,
}

impl SyncResult {
    const ALL: [SyncResult; 6] = [
        SyncResult::Published,
        SyncResult::Applied,
        SyncResult::Unchanged,
        SyncResult::Stale,
        SyncResult::Refused,
        SyncResult::Failed,
    ];

    fn as_str(self) -> &'static str {
        match self {
            SyncResult::Published => "published",
            SyncResult::Applied => "applied",
            SyncResult::Unchanged => "unchanged",
            SyncResult::Stale => "stale",
            SyncResult::Refused => "refused",
            SyncResult::Failed => "failed",
        }
    }
}

/// Counters and latency histograms, rendered in Prometheus' text format.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<MetricsInner>,
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut MetricsInner)) {
        if let Ok(mut m) = self.inner.lock() {
            f(&mut m);
        }
    }

    pub fn observe(&self, camera: &str, stage: Stage, seconds: f64) {
        self.with(|m| {
            m.stages
                .entry((camera.to_owned(), stage))
                .or_default()
                .observe(seconds)
        });
    }

    pub fn count_frame(&self, camera: &str, faces: u64) {
        self.with(|m| {
            *m.frames.entry(camera.to_owned()).or_default() += 1;
            *m.faces.entry(camera.to_owned()).or_default() += faces;
        });
    }

    /// A taken frame not detected on because nothing moved.
    pub fn count_still(&self, camera: &str) {
        self.with(|m| *m.still.entry(camera.to_owned()).or_default() += 1);
    }

    pub fn count_event(&self, kind: EventKind) {
        self.with(|m| *m.events.entry(kind.as_str()).or_default() += 1);
    }

    /// One HTTP response, by route template (never the raw path: ids are
    /// personal data) and status.
    /// A snapshot that could not be written; `reason` is `disk_full` or `io`.
    pub fn count_snapshot_not_saved(&self, reason: &'static str) {
        self.with(|m| *m.snapshots_not_saved.entry(reason).or_default() += 1);
    }

    /// Registry sync's broker link went up or down (sync is on from the
    /// first call).
    pub fn sync_connected(&self, up: bool) {
        self.with(|m| m.sync.get_or_insert_with(Default::default).connected = up);
    }

    /// One registry sync message and what became of it.
    pub fn count_sync(&self, result: SyncResult) {
        self.with(|m| {
            *m.sync
                .get_or_insert_with(Default::default)
                .messages
                .entry(result.as_str())
                .or_default() += 1
        });
    }

    pub fn count_http(&self, route: &str, status: u16) {
        self.with(|m| *m.http.entry((route.to_owned(), status)).or_default() += 1);
    }

    /// The text exposition: these metrics, the cameras' state and the
    /// outbox depth (read by the caller).
    pub fn render(&self, cameras: &[Arc<LiveCamera>], outbox_depth: Option<u64>) -> String {
        let mut out = String::new();
        let Ok(m) = self.inner.lock() else {
            return out;
        };
        let esc = |s: &str| {
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        let _ = writeln!(
            out,
            "# HELP facegate_stage_seconds Recognition time per frame by stage; stage=\"decision\" is frame arrival to an event.\n# TYPE facegate_stage_seconds histogram"
        );
        for ((cam, stage), h) in &m.stages {
            let labels = format!("camera=\"{}\",stage=\"{}\"", esc(cam), stage.as_str());
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "facegate_stage_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "facegate_stage_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "facegate_stage_seconds_sum{{{labels}}} {}", h.sum);
            let _ = writeln!(out, "facegate_stage_seconds_count{{{labels}}} {}", h.count);
        }
        let counter = |out: &mut String, name: &str, help: &str, rows: Vec<(String, u64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, v) in rows {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        };
        counter(
            &mut out,
            "facegate_frames_processed_total",
            "Frames the recogniser processed.",
            m.frames
                .iter()
                .map(|(c, v)| (format!("camera=\"{}\"", esc(c)), *v))
                .collect(),
        );
        counter(
            &mut out,
            "facegate_frames_still_total",
            "Frames not run through detection because nothing moved (cameras.motion_skip).",
            m.still
                .iter()
                .map(|(c, v)| (format!("camera=\"{}\"", esc(c)), *v))
                .collect(),
        );
        counter(
            &mut out,
            "facegate_faces_total",
            "Faces detected on processed frames.",
            m.faces
                .iter()
                .map(|(c, v)| (format!("camera=\"{}\"", esc(c)), *v))
                .collect(),
        );
        counter(
            &mut out,
            "facegate_events_total",
            "Events decided (each revision counts).",
            m.events
                .iter()
                .map(|(k, v)| (format!("kind=\"{k}\""), *v))
                .collect(),
        );
        counter(
            &mut out,
            "facegate_http_responses_total",
            "HTTP responses by route and status.",
            m.http
                .iter()
                .map(|((r, s), v)| (format!("route=\"{}\",status=\"{s}\"", esc(r)), *v))
                .collect(),
        );
        counter(
            &mut out,
            "facegate_snapshots_not_saved_total",
            "Events stored and published without their snapshot, by reason (disk_full: no space left where snapshots go).",
            m.snapshots_not_saved
                .iter()
                .map(|(r, v)| (format!("reason=\"{r}\""), *v))
                .collect(),
        );
        if let Some(sync) = &m.sync {
            counter(
                &mut out,
                "facegate_sync_messages_total",
                "Registry sync messages between this site's boxes, by result (published: a local change the broker took; applied: another box's change; unchanged: a state already here; stale: lost to this box's version, ours goes out; refused: not sealed with the site's secret; failed: not applied).",
                SyncResult::ALL
                    .iter()
                    .map(|r| {
                        let r = r.as_str();
                        (
                            format!("result=\"{r}\""),
                            sync.messages.get(r).copied().unwrap_or(0),
                        )
                    })
                    .collect(),
            );
            let _ = writeln!(
                out,
                "# HELP facegate_sync_connected 1 when registry sync's broker link is up.\n# TYPE facegate_sync_connected gauge\nfacegate_sync_connected {}",
                u8::from(sync.connected)
            );
        }
        let mut gauge_rows = Vec::new();
        for c in cameras {
            let s = c.handle.status();
            gauge_rows.push((esc(&c.ctx.name), s));
        }
        let _ = writeln!(
            out,
            "# HELP facegate_camera_up 1 when frames are flowing.\n# TYPE facegate_camera_up gauge"
        );
        for (name, s) in &gauge_rows {
            let up = u8::from(s.state == CameraState::Online);
            let _ = writeln!(out, "facegate_camera_up{{camera=\"{name}\"}} {up}");
        }
        let _ = writeln!(
            out,
            "# HELP facegate_camera_fps_in Frames per second from the decoder.\n# TYPE facegate_camera_fps_in gauge"
        );
        for (name, s) in &gauge_rows {
            let _ = writeln!(
                out,
                "facegate_camera_fps_in{{camera=\"{name}\"}} {}",
                s.fps_in
            );
        }
        let cam_counter =
            |out: &mut String,
             n: &str,
             help: &str,
             f: &dyn Fn(&crate::source::CameraStatus) -> u64| {
                let _ = writeln!(out, "# HELP {n} {help}\n# TYPE {n} counter");
                for (name, s) in &gauge_rows {
                    let _ = writeln!(out, "{n}{{camera=\"{name}\"}} {}", f(s));
                }
            };
        cam_counter(
            &mut out,
            "facegate_camera_frames_total",
            "Frames decoded.",
            &|s| s.frames_total,
        );
        cam_counter(
            &mut out,
            "facegate_camera_drops_total",
            "Frames dropped (newer frame won) before the recogniser took them.",
            &|s| s.drops_total,
        );
        cam_counter(
            &mut out,
            "facegate_camera_reconnects_total",
            "Pipelines rebuilt after a failure.",
            &|s| s.reconnects,
        );
        if let Some(d) = outbox_depth {
            let _ = writeln!(
                out,
                "# HELP facegate_outbox_depth MQTT messages not yet acknowledged by the broker.\n# TYPE facegate_outbox_depth gauge\nfacegate_outbox_depth {d}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_render_as_prometheus_text() {
        let m = Metrics::default();
        m.observe("gate-1", Stage::Detect, 0.02);
        m.observe("gate-1", Stage::Detect, 0.2);
        m.count_event(EventKind::Stranger);
        m.count_http("/api/v1/owners", 201);
        let text = m.render(&[], Some(3));
        assert!(text.contains(
            "facegate_stage_seconds_bucket{camera=\"gate-1\",stage=\"detect\",le=\"0.025\"} 1"
        ));
        assert!(text.contains(
            "facegate_stage_seconds_bucket{camera=\"gate-1\",stage=\"detect\",le=\"0.25\"} 2"
        ));
        assert!(
            text.contains("facegate_stage_seconds_count{camera=\"gate-1\",stage=\"detect\"} 2")
        );
        assert!(text.contains("facegate_events_total{kind=\"stranger\"} 1"));
        assert!(
            text.contains(
                "facegate_http_responses_total{route=\"/api/v1/owners\",status=\"201\"} 1"
            )
        );
        assert!(text.contains("facegate_outbox_depth 3"));
    }
}
