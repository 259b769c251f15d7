//! The live pipeline of one camera: frame → detect (on a scaled copy) →
//! check + embed (crops from the full-resolution frame) → tracks → decisions
//! → events (SQLite, snapshots, publish sink).
//!
//! [`Processor`] is the camera-independent core, driven by a frame source:
//! live cameras ([`run_camera`], newest frame at the detection rate) and
//! replays of a video file (every frame sampled at the detection rate in
//! video time). It owns no threads; the caller owns the loop.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::RgbImage;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::config::{CameraConfig, CameraRole, Config};
use crate::decide::{Action, Decider, Verdict};
use crate::events::{Event, EventKind, EventStore, Place, SnapshotWriter};
use crate::registry::{Gallery, RegistryError};
use crate::source::{CameraEvent, CameraHandle, Frame, OfflineCause};
use crate::track::{Face, Tracker, TrackerConfig};
use crate::vision::detect::Detection;
use crate::vision::image::{RgbView, resize};
use crate::vision::{Checks, FaceEngine, VisionError};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("camera {camera}: {source}")]
    Vision {
        camera: String,
        #[source]
        source: VisionError,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    #[error(transparent)]
    Publish(#[from] crate::publish::PublishError),
    #[error("{0}")]
    Setup(String),
}

/// What a camera is, for its events.
#[derive(Debug, Clone)]
pub struct CameraContext {
    pub name: String,
    pub role: CameraRole,
    pub place: Place,
    pub gate: Option<String>,
    pub detect_fps: f32,
    /// `cameras.motion_skip`: no detection on frames where nothing moved.
    pub motion_skip: bool,
}

impl CameraContext {
    pub fn from_config(cam: &CameraConfig, config: &Config) -> Self {
        let s = &config.site;
        CameraContext {
            name: cam.name.clone(),
            role: cam.role,
            place: Place {
                site: s.code.clone(),
                street: s.street_code.clone(),
                community: s.community_code.clone(),
                grid: cam.grid_code.clone().unwrap_or_else(|| s.grid_code.clone()),
                building: cam.building_code.clone(),
            },
            gate: (cam.role == CameraRole::Gate)
                .then(|| cam.gate_id.clone().unwrap_or_else(|| cam.name.clone())),
            detect_fps: cam.detect_fps,
            motion_skip: cam.motion_skip,
        }
    }
}

/// Queueing events for MQTT: messages go into the outbox in the event's
/// own transaction, and the publisher is woken.
pub struct MqttSink {
    pub cfg: crate::publish::MqttConfig,
    pub site: String,
    pub wake: Arc<tokio::sync::Notify>,
}

/// Where decided events go: SQLite (with their outbox messages), snapshot
/// files, and a publish hook (a log line).
pub struct EventSink {
    store: Mutex<EventStore>,
    snapshots: SnapshotWriter,
    publish: Box<dyn Fn(&Event) + Send + Sync>,
    mqtt: Option<MqttSink>,
    live: Option<Arc<crate::live::Live>>,
    /// Store each event's face for search by photo, tagged with this model.
    face_model: Option<String>,
    /// Snapshots are failing because their disk is full (logged once per
    /// change, not once per event).
    snapshots_disk_full: std::sync::atomic::AtomicBool,
}

impl EventSink {
    pub fn new(
        store: EventStore,
        snapshots: SnapshotWriter,
        publish: Box<dyn Fn(&Event) + Send + Sync>,
    ) -> Self {
        Self {
            store: Mutex::new(store),
            snapshots,
            publish,
            mqtt: None,
            live: None,
            face_model: None,
            snapshots_disk_full: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Events also go to the live feed (console, metrics).
    pub fn with_live(mut self, live: Arc<crate::live::Live>) -> Self {
        self.live = Some(live);
        self
    }

    /// Events keep the face they rest on (model `model_id`), for search by
    /// photo; it expires with the snapshots.
    pub fn with_face_search(mut self, model_id: &str) -> Self {
        self.face_model = Some(model_id.to_owned());
        self
    }

    pub fn with_mqtt(mut self, m: MqttSink) -> Self {
        self.mqtt = Some(m);
        self
    }

    /// The log-line sink used until MQTT publishing lands.
    pub fn log_publisher() -> Box<dyn Fn(&Event) + Send + Sync> {
        Box::new(|e: &Event| {
            tracing::info!(
                id = %e.id,
                kind = e.kind.as_str(),
                camera = %e.camera,
                revision = e.revision,
                // Ids only: names stay out of the logs.
                subject = ?e.subject.as_ref().map(|s| s.key()),
                stranger = ?e.stranger_id,
                score = ?e.score,
                "event"
            );
        })
    }

    /// Stores (and on failure logs: recognition goes on) and publishes.
    pub fn emit(&self, event: &Event) {
        self.emit_with_face(event, None);
    }

    /// [`emit`](Self::emit), with the embedding the decision rests on.
    pub fn emit_with_face(&self, event: &Event, embedding: Option<&[f32]>) {
        let face = match (&self.face_model, embedding) {
            (Some(m), Some(e)) => Some(crate::events::EventFace {
                model_id: m,
                embedding: e,
            }),
            _ => None,
        };
        let messages = self.mqtt.as_ref().map_or_else(Vec::new, |m| {
            crate::publish::messages_with_snapshot(
                event,
                &m.cfg,
                &m.site,
                self.snapshots.data_dir(),
            )
        });
        match self.store.lock() {
            Ok(store) => {
                if let Err(e) = store.save_full(event, face, &messages) {
                    tracing::error!(id = %event.id, error = %e, "event not stored");
                }
            }
            Err(_) => {
                tracing::error!(id = %event.id, "event store lock poisoned; event not stored")
            }
        }
        if let Some(m) = &self.mqtt {
            m.wake.notify_one();
        }
        if let Some(l) = &self.live {
            l.publish(event);
        }
        (self.publish)(event);
    }

    /// The event store, for housekeeping (expiring event faces).
    pub fn store(&self) -> &Mutex<EventStore> {
        &self.store
    }

    pub fn snapshots(&self) -> &SnapshotWriter {
        &self.snapshots
    }

    /// A snapshot was written: if the disk had been full, say that
    /// snapshots are back.
    fn snapshot_saved(&self) {
        use std::sync::atomic::Ordering;
        if self.snapshots_disk_full.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                data_dir = %self.snapshots.data_dir().display(),
                "snapshots resumed: there is space again where snapshots go"
            );
        }
    }

    /// A snapshot could not be written; the event is still stored and
    /// published without it. A full disk is said once (an error line and
    /// `facegate_snapshots_not_saved_total{reason="disk_full"}`), then each
    /// event only at debug level, so the log does not fill the disk too.
    fn snapshot_failed(&self, event_id: &str, err: &std::io::Error) {
        use std::sync::atomic::Ordering;
        let full = is_disk_full(err);
        if let Some(l) = &self.live {
            l.metrics
                .count_snapshot_not_saved(if full { "disk_full" } else { "io" });
        }
        if !full {
            tracing::warn!(id = %event_id, error = %err, "snapshot not saved; event kept");
        } else if !self.snapshots_disk_full.swap(true, Ordering::Relaxed) {
            tracing::error!(
                data_dir = %self.snapshots.data_dir().display(),
                error = %err,
                "snapshots stopped: the disk holding the snapshot folder is full; events are still stored and published, without snapshots, until space is freed"
            );
        } else {
            tracing::debug!(id = %event_id, "snapshot not saved: disk full");
        }
    }
}

/// No space left (or over quota) where a file was being written, also when
/// the I/O error is wrapped (the JPEG encoder's write error comes back as
/// `io::Error::other(ImageError::IoError(..))`).
fn is_disk_full(err: &std::io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    let full = |e: &std::io::Error| {
        e.kind() == std::io::ErrorKind::StorageFull
            || matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT))
    };
    let mut cur: Option<&(dyn std::error::Error + 'static)> = err.get_ref().map(|e| e as _);
    if full(err) {
        return true;
    }
    while let Some(e) = cur {
        match e.downcast_ref::<std::io::Error>() {
            Some(io) if full(io) => return true,
            _ => {}
        }
        if let Some(image::ImageError::IoError(io)) = e.downcast_ref::<image::ImageError>()
            && full(io)
        {
            return true;
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod disk_full_tests {
    use super::is_disk_full;

    #[test]
    fn a_full_disk_is_recognised_also_inside_the_jpeg_encoders_error() {
        let enospc = || std::io::Error::from_raw_os_error(28);
        assert!(is_disk_full(&enospc()));
        let wrapped = std::io::Error::other(image::ImageError::IoError(enospc()));
        assert!(is_disk_full(&wrapped));
        assert!(!is_disk_full(&std::io::Error::from_raw_os_error(13)));
        let other = std::io::Error::other(image::ImageError::IoError(
            std::io::Error::from_raw_os_error(5),
        ));
        assert!(!is_disk_full(&other));
    }
}

/// The best view of a track so far, for its snapshot.
struct BestView {
    face: RgbImage,
    scene: RgbImage,
}

/// Per-camera recognition state.
pub struct Processor {
    cam: CameraContext,
    tracker: Tracker,
    decider: Decider,
    top_k: usize,
    /// Decided tracks' faces are re-verified at least this often (seconds).
    reverify_s: f64,
    /// Event of each live track that has one (updates reuse its id).
    events: HashMap<u64, Event>,
    best_view: HashMap<u64, BestView>,
    /// Views of tracks that ended in the last call, kept until their
    /// events' snapshots are written.
    ended_views: HashMap<u64, BestView>,
    /// The track embedding each pending event rests on (by event id), until
    /// the event is emitted.
    event_faces: HashMap<String, Vec<f32>>,
    /// Seconds spent per stage on the last processed frame.
    pub last_stages: StageTimes,
    /// Frame arrival → decision, for events emitted on a frame (seconds).
    pub latencies: Vec<f64>,
    pub frames: u64,
    pub faces: u64,
    pub work: RecognitionWork,
}

/// Where recognition work went: faces analysed (checked and embedded), of
/// them re-verifications of decided tracks, faces only followed by their
/// box, and the seconds spent in each part.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct RecognitionWork {
    pub analysed: u64,
    pub reverified: u64,
    pub followed: u64,
    pub detect_s: f64,
    pub analyse_s: f64,
    /// The share of `analyse_s` spent on re-verifications (by face count).
    pub reverify_s: f64,
    pub frame_s: f64,
    /// Frames converted to RGB at full resolution: those the detector ran
    /// on directly (no larger than its input), and those where it found a
    /// face on its scaled copy. A frame with no face never is.
    pub full_frames: u64,
}

/// A frame's pictures for [`Processor::process`].
pub enum FrameImages<'a> {
    /// Small enough for the detector: it runs on the full picture.
    Full(&'a RgbImage),
    /// The detector's scaled copy (`scale` < 1) and how to get the full
    /// resolution, which is converted only when a face is found (the face
    /// crops and the snapshot need it; on a 1080p frame the conversion
    /// costs about what the detector does).
    Scaled {
        scaled: &'a RgbImage,
        scale: f32,
        full: &'a dyn Fn() -> Result<RgbImage, PipelineError>,
    },
}

/// Seconds per recognition stage on one frame.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    pub convert: f64,
    pub detect: f64,
    pub analyze: f64,
    pub decide: f64,
}

/// Overlap with a decided track's last box that counts as the same face.
const SETTLED_IOU: f32 = 0.5;

/// Scenes in snapshots are scaled to this long side.
const SCENE_SIDE: u32 = 640;

impl Processor {
    pub fn new(cam: CameraContext, config: &Config, stranger_prefix: &str) -> Self {
        let d = &config.decide;
        Self {
            tracker: Tracker::new(TrackerConfig {
                iou: d.track_iou,
                similarity: d.track_similarity,
                change_similarity: d.change_similarity,
                timeout_s: d.track_timeout_s as f64,
                keep_best: 5,
            }),
            decider: Decider::new(
                d.clone(),
                cam.role,
                config.matching.threshold,
                stranger_prefix,
            )
            .with_liveness(cam.role == CameraRole::Gate && config.vision.liveness.enabled),
            top_k: config.matching.top_k,
            reverify_s: d.reverify_s as f64,
            cam,
            events: HashMap::new(),
            best_view: HashMap::new(),
            ended_views: HashMap::new(),
            event_faces: HashMap::new(),
            last_stages: StageTimes::default(),
            latencies: Vec::new(),
            frames: 0,
            faces: 0,
            work: RecognitionWork::default(),
        }
    }

    pub fn camera(&self) -> &CameraContext {
        &self.cam
    }

    /// One frame: `full` at full resolution; `scaled` a copy for detection
    /// with its scale (scaled pixels per full pixel), or `None` to detect on
    /// `full`. `now` is seconds on the caller's monotonic clock, `wall` the
    /// frame's time for events, `arrived` when the frame reached us.
    #[allow(clippy::too_many_arguments)]
    pub fn process(
        &mut self,
        engine: &mut FaceEngine,
        gallery: &Mutex<Gallery>,
        images: FrameImages<'_>,
        now: f64,
        wall: OffsetDateTime,
        arrived: Option<Instant>,
    ) -> Result<Vec<Event>, PipelineError> {
        self.frames += 1;
        let verr = |source| PipelineError::Vision {
            camera: self.cam.name.clone(),
            source,
        };
        let t0 = Instant::now();
        let mut convert_s = 0.0;
        let mut to_full = |get: &dyn Fn() -> Result<RgbImage, PipelineError>| {
            let c = Instant::now();
            let img = get();
            convert_s += c.elapsed().as_secs_f64();
            img.map(Cow::Owned)
        };
        // Detection, then the full resolution only where a face was found.
        let (dets, scaled, full): (Vec<Detection>, _, Option<Cow<'_, RgbImage>>) = match &images {
            FrameImages::Scaled {
                scaled,
                scale,
                full,
            } if *scale > 0.0 && *scale < 1.0 => {
                let dets: Vec<Detection> = engine
                    .detect(RgbView::from_image(scaled))
                    .map_err(verr)?
                    .into_iter()
                    .map(|d| d.transformed(1.0 / scale, 0.0, 0.0))
                    .collect();
                let full = if dets.is_empty() {
                    None
                } else {
                    Some(to_full(*full)?)
                };
                (dets, Some((*scaled, *scale)), full)
            }
            FrameImages::Scaled { full, .. } => {
                let full = to_full(*full)?;
                let dets = engine.detect(RgbView::from_image(&full)).map_err(verr)?;
                (dets, None, Some(full))
            }
            FrameImages::Full(full) => (
                engine.detect(RgbView::from_image(full)).map_err(verr)?,
                None,
                Some(Cow::Borrowed(*full)),
            ),
        };
        self.work.full_frames += u64::from(full.is_some());
        let checks = Checks {
            liveness: self.cam.role == CameraRole::Gate,
            pose: true,
        };
        // Faces of decided tracks are only followed by their box between
        // re-verifications (at least every `reverify_s`, and on a jump in
        // size or place); every other face is checked and embedded.
        let every = self.reverify_s;
        let mut reverify = 0u64;
        let (settled, fresh): (Vec<Detection>, Vec<Detection>) =
            dets.into_iter()
                .partition(|d| match self.tracker.by_box(&d.bbox, SETTLED_IOU) {
                    Some(t) if self.decider.is_decided(t.id) => {
                        let due = t.needs_check(&d.bbox, now, every);
                        reverify += u64::from(due);
                        !due
                    }
                    _ => false,
                });
        let t1 = Instant::now();
        let analysed = match &full {
            Some(full) => engine
                .analyze_faces(RgbView::from_image(full), fresh, checks)
                .map_err(verr)?,
            // No detection, so no fresh face either.
            None => Vec::new(),
        };
        let t2 = Instant::now();
        self.faces += (analysed.len() + settled.len()) as u64;
        let w = &mut self.work;
        w.analysed += analysed.len() as u64;
        w.reverified += reverify;
        w.followed += settled.len() as u64;
        let detect_s = (t1 - t0).as_secs_f64() - convert_s;
        w.detect_s += detect_s;
        w.analyse_s += (t2 - t1).as_secs_f64();
        if !analysed.is_empty() {
            w.reverify_s += (t2 - t1).as_secs_f64() * reverify as f64 / analysed.len() as f64;
        }
        let followed = settled.into_iter().map(Face::followed);
        let faces: Vec<Face> = analysed
            .into_iter()
            .map(|a| {
                let frontal = a.pose.map_or(1.0, |p| (1.0 - p.yaw.abs() / 90.0).max(0.05));
                let size = (a.size_px / 112.0).min(1.0);
                Face {
                    quality: a.detection.score * size * frontal,
                    det: a.detection,
                    embedding: a.embedding,
                    liveness: a.liveness,
                    rejection: a.rejection,
                    analysed: true,
                }
            })
            .chain(followed)
            .collect();
        let ids = self.tracker.update(now, &faces);
        if tracing::enabled!(tracing::Level::DEBUG) {
            for (id, f) in ids.iter().zip(&faces) {
                tracing::debug!(
                    camera = %self.cam.name,
                    t = now,
                    track = id,
                    bbox = ?f.det.bbox.map(|v| v.round()),
                    quality = f.quality,
                    liveness = ?f.liveness,
                    rejected = ?f.rejection.as_ref().map(ToString::to_string),
                    "face"
                );
            }
        }
        let mut out = Vec::new();
        for (id, face) in ids.iter().zip(&faces) {
            let Some(track) = self.tracker.get(*id).cloned() else {
                continue;
            };
            if let Some(full) = &full
                && (track.improved || !self.best_view.contains_key(id))
            {
                self.best_view
                    .insert(*id, best_view(full, scaled, &face.det));
            }
            let best = self.matches(gallery, &track, wall)?;
            let actions = self.decider.on_track(&track, &best, now, false);
            self.apply(actions, wall, track.embedding(), &mut out);
        }
        if let Some(at) = arrived
            && !out.is_empty()
        {
            let l = at.elapsed().as_secs_f64();
            self.latencies.extend(std::iter::repeat_n(l, out.len()));
        }
        out.extend(self.tick(gallery, now, wall)?);
        self.work.frame_s += t0.elapsed().as_secs_f64();
        self.last_stages = StageTimes {
            convert: convert_s,
            detect: detect_s,
            analyze: (t2 - t1).as_secs_f64(),
            decide: t2.elapsed().as_secs_f64(),
        };
        Ok(out)
    }

    /// Ends the tracks not seen for the timeout, deciding those still open.
    /// Whether faces are on live tracks (the motion gate never skips then).
    pub fn tracking(&self) -> bool {
        !self.tracker.tracks().is_empty()
    }

    pub fn tick(
        &mut self,
        gallery: &Mutex<Gallery>,
        now: f64,
        wall: OffsetDateTime,
    ) -> Result<Vec<Event>, PipelineError> {
        let ended = self.tracker.ended(now);
        self.end_tracks(gallery, ended, now, wall)
    }

    /// Ends every track (end of a replay, shutdown).
    pub fn finish(
        &mut self,
        gallery: &Mutex<Gallery>,
        now: f64,
        wall: OffsetDateTime,
    ) -> Result<Vec<Event>, PipelineError> {
        let all = self.tracker.drain();
        self.end_tracks(gallery, all, now, wall)
    }

    fn end_tracks(
        &mut self,
        gallery: &Mutex<Gallery>,
        tracks: Vec<crate::track::Track>,
        now: f64,
        wall: OffsetDateTime,
    ) -> Result<Vec<Event>, PipelineError> {
        let mut out = Vec::new();
        for t in tracks {
            let best = self.matches(gallery, &t, wall)?;
            let actions = self.decider.on_track(&t, &best, now, true);
            self.apply(actions, wall, t.embedding(), &mut out);
            self.decider.forget(t.id);
            self.events.remove(&t.id);
            if let Some(v) = self.best_view.remove(&t.id) {
                self.ended_views.insert(t.id, v);
            }
        }
        self.decider.expire(now);
        Ok(out)
    }

    /// The gallery's best subjects for a track, best first (the first two
    /// at least: the runner-up tells an ambiguous match).
    fn matches(
        &self,
        gallery: &Mutex<Gallery>,
        t: &crate::track::Track,
        wall: OffsetDateTime,
    ) -> Result<Vec<crate::registry::Match>, PipelineError> {
        let Some(e) = t.embedding() else {
            return Ok(Vec::new());
        };
        // Locked for the search only: cameras never wait on each other's inference.
        let g = gallery
            .lock()
            .map_err(|_| PipelineError::Setup("gallery lock poisoned".into()))?;
        Ok(g.search(&e, self.top_k.max(2), wall)?)
    }

    fn apply(
        &mut self,
        actions: Vec<Action>,
        wall: OffsetDateTime,
        embedding: Option<Vec<f32>>,
        out: &mut Vec<Event>,
    ) {
        let first = out.len();
        for a in actions {
            match a {
                Action::Emit(v) => {
                    let mut e =
                        Event::new(v.kind, wall, &self.cam.name, self.cam.role, &self.cam.place);
                    self.fill(&mut e, &v);
                    self.events.insert(v.track_id, e.clone());
                    out.push(e);
                }
                Action::Also(v) => {
                    let mut e =
                        Event::new(v.kind, wall, &self.cam.name, self.cam.role, &self.cam.place);
                    self.fill(&mut e, &v);
                    out.push(e);
                }
                Action::Update(v) => {
                    let mut e = match self.events.get(&v.track_id) {
                        Some(prev) => {
                            let mut e = prev.clone();
                            e.revision += 1;
                            e.kind = v.kind;
                            e
                        }
                        None => {
                            Event::new(v.kind, wall, &self.cam.name, self.cam.role, &self.cam.place)
                        }
                    };
                    self.fill(&mut e, &v);
                    self.events.insert(v.track_id, e.clone());
                    out.push(e);
                }
            }
        }
        if let Some(e) = embedding {
            for ev in &out[first..] {
                self.event_faces.insert(ev.id.clone(), e.clone());
            }
        }
    }

    /// The embedding an emitted event rests on (taken once).
    pub fn take_event_face(&mut self, event_id: &str) -> Option<Vec<f32>> {
        self.event_faces.remove(event_id)
    }

    fn fill(&self, e: &mut Event, v: &Verdict) {
        e.track_id = Some(v.track_id);
        e.subject = v.subject.clone();
        e.score = v.score;
        e.liveness = v.liveness;
        e.stranger_id = v.stranger_id.clone().or(e.stranger_id.take());
        e.priority = v.priority;
        e.gate = if v.open_gate {
            self.cam.gate.clone()
        } else {
            None
        };
        e.faces = Some(v.faces);
        e.reason = v.reason.clone();
        e.seen_for_s = Some((v.seen_for_s * 100.0).round() / 100.0);
        e.repeat = v.repeat;
        // A stranger who turned out to be a known person keeps no stranger id.
        if v.subject.is_some() {
            e.stranger_id = None;
        }
    }

    /// The best face crop and scene of a track, for the event's snapshot.
    pub fn snapshot_images(&self, track_id: u64) -> Option<(&RgbImage, &RgbImage)> {
        self.best_view
            .get(&track_id)
            .or_else(|| self.ended_views.get(&track_id))
            .map(|b| (&b.face, &b.scene))
    }
}

/// The face (box grown by half, from the full frame) and the scaled scene.
fn best_view(full: &RgbImage, scaled: Option<(&RgbImage, f32)>, det: &Detection) -> BestView {
    let (w, h) = (det.width(), det.height());
    let x0 = (det.bbox[0] - w / 4.0).max(0.0) as u32;
    let y0 = (det.bbox[1] - h / 4.0).max(0.0) as u32;
    let x1 = ((det.bbox[2] + w / 4.0).ceil() as u32).min(full.width());
    let y1 = ((det.bbox[3] + h / 4.0).ceil() as u32).min(full.height());
    let face = RgbView::from_image(full).crop(x0, y0, x1, y1).to_image();
    let scene = match scaled {
        Some((img, _)) if img.width().max(img.height()) <= SCENE_SIDE => img.clone(),
        _ => {
            let long = full.width().max(full.height()).max(1);
            let s = (SCENE_SIDE as f32 / long as f32).min(1.0);
            resize(
                RgbView::from_image(full),
                ((full.width() as f32 * s).round() as u32).max(1),
                ((full.height() as f32 * s).round() as u32).max(1),
            )
        }
    };
    BestView { face, scene }
}

/// Saves the snapshot of each event that has a track view, then emits it.
pub fn emit_all(sink: &EventSink, processor: &mut Processor, events: &mut [Event]) {
    for e in events.iter_mut() {
        if e.snapshot.is_none()
            && let Some(tid) = e.track_id
            && let Some((face, scene)) = processor.snapshot_images(tid)
        {
            match sink.snapshots().save(&e.id, e.ts, face, scene) {
                Ok(s) => {
                    e.snapshot = Some(s);
                    sink.snapshot_saved();
                }
                Err(err) => sink.snapshot_failed(&e.id, &err),
            }
        }
        let face = processor.take_event_face(&e.id);
        sink.emit_with_face(e, face.as_deref());
    }
    processor.ended_views.clear();
    processor.event_faces.clear();
}

/// An event for a camera going offline or coming back.
pub fn camera_event(
    ev: &CameraEvent,
    cams: &HashMap<String, CameraContext>,
    site: &Place,
) -> Event {
    let ctx = cams.get(ev.camera());
    let (role, place) = ctx.map_or((CameraRole::Patrol, site.clone()), |c| {
        (c.role, c.place.clone())
    });
    let (kind, reason) = match ev {
        CameraEvent::Offline { cause, reason, .. } => (
            EventKind::CameraOffline,
            Some(describe_cause(*cause, reason)),
        ),
        CameraEvent::Online { .. } => (EventKind::CameraOnline, None),
    };
    let mut e = Event::new(kind, OffsetDateTime::now_utc(), ev.camera(), role, &place);
    e.reason = reason;
    e.priority = Some(kind.default_priority());
    e
}

fn describe_cause(c: OfflineCause, reason: &str) -> String {
    let what = match c {
        OfflineCause::Error => "error",
        OfflineCause::Ended => "stream ended",
        OfflineCause::Stalled => "stalled (no frames)",
    };
    format!("{what}: {reason}")
}

/// Runs one live camera until cancelled: newest frame at the detection
/// rate, decisions to the sink. Frames that arrive between two detections
/// are dropped by the source's slot (and counted there).
#[allow(clippy::too_many_arguments)]
pub fn run_camera(
    handle: Arc<CameraHandle>,
    mut processor: Processor,
    mut engine: FaceEngine,
    gallery: Arc<Mutex<Gallery>>,
    sink: Arc<EventSink>,
    detect_max_side: u32,
    live: Option<Arc<crate::live::LiveCamera>>,
    metrics: Option<Arc<crate::live::Live>>,
    cancel: CancellationToken,
) {
    use crate::live::Stage;
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / processor.camera().detect_fps.max(0.1) as f64);
    let mut next_due = Instant::now();
    let mut motion = motion_gate(processor.camera());
    while !cancel.is_cancelled() {
        let now_inst = Instant::now();
        if now_inst < next_due {
            std::thread::sleep((next_due - now_inst).min(Duration::from_millis(100)));
            continue;
        }
        let frame: Option<Frame> = handle.wait_frame(Duration::from_millis(200));
        let now = start.elapsed().as_secs_f64();
        let wall = OffsetDateTime::now_utc();
        let result = match frame {
            None => processor.tick(&gallery, now, wall),
            Some(frame) => {
                next_due += period;
                if next_due < Instant::now() {
                    next_due = Instant::now() + period;
                }
                let still = is_still(motion.as_mut(), &processor, &frame);
                if still {
                    if let Some(m) = &metrics {
                        m.metrics.count_still(&processor.camera().name);
                    }
                    if let Some(l) = &live
                        && let Ok(mut slot) = l.latest.lock()
                    {
                        *slot = Some(frame);
                    }
                    match processor.tick(&gallery, now, wall) {
                        Ok(mut events) => emit_all(&sink, &mut processor, &mut events),
                        Err(e) => tracing::warn!(error = %e, "track timeouts failed"),
                    }
                    continue;
                }
                let faces_before = processor.faces;
                let t = Instant::now();
                let r = process_frame(
                    &mut processor,
                    &mut engine,
                    &gallery,
                    &frame,
                    detect_max_side,
                    now,
                );
                if let Some(m) = &metrics {
                    let cam = &processor.camera().name;
                    let s = processor.last_stages;
                    let m = &m.metrics;
                    m.count_frame(cam, processor.faces - faces_before);
                    m.observe(cam, Stage::Frame, t.elapsed().as_secs_f64());
                    m.observe(cam, Stage::Convert, s.convert);
                    m.observe(cam, Stage::Detect, s.detect);
                    m.observe(cam, Stage::Analyze, s.analyze);
                    m.observe(cam, Stage::Decide, s.decide);
                    if let Ok(events) = &r
                        && !events.is_empty()
                    {
                        m.observe(cam, Stage::Decision, frame.arrived.elapsed().as_secs_f64());
                    }
                }
                if let Some(l) = &live
                    && let Ok(mut slot) = l.latest.lock()
                {
                    *slot = Some(frame);
                }
                r
            }
        };
        match result {
            Ok(mut events) => emit_all(&sink, &mut processor, &mut events),
            Err(e) => {
                tracing::warn!(camera = %processor.camera().name, error = %e, "frame skipped")
            }
        }
    }
    // Shutdown: in-flight tracks are decided and committed.
    let now = start.elapsed().as_secs_f64();
    match processor.finish(&gallery, now, OffsetDateTime::now_utc()) {
        Ok(mut events) => emit_all(&sink, &mut processor, &mut events),
        Err(e) => tracing::warn!(error = %e, "final decisions failed"),
    }
}

/// The camera's motion gate when `cameras.motion_skip` is on. With
/// [`is_still`], what `run_camera` and `facegate bench ingest` both use.
pub fn motion_gate(camera: &CameraContext) -> Option<crate::source::motion::MotionGate> {
    camera
        .motion_skip
        .then(|| crate::source::motion::MotionGate::new(Default::default()))
}

/// Whether detection is skipped on this taken frame: nothing moved and no
/// face is on a live track (see `source::motion`). Without a gate, never.
pub fn is_still(
    gate: Option<&mut crate::source::motion::MotionGate>,
    processor: &Processor,
    frame: &Frame,
) -> bool {
    gate.is_some_and(|gate| {
        let tracking = processor.tracking();
        frame
            .with_yuv(|yuv| gate.check(yuv, Instant::now(), tracking))
            .is_ok_and(|v| !v.detect())
    })
}

/// Converts a frame (full resolution and a scaled copy for detection) and processes it.
pub fn process_frame(
    processor: &mut Processor,
    engine: &mut FaceEngine,
    gallery: &Mutex<Gallery>,
    frame: &Frame,
    detect_max_side: u32,
    now: f64,
) -> Result<Vec<Event>, PipelineError> {
    let conv = |e: crate::source::SourceError| PipelineError::Vision {
        camera: frame.camera.to_string(),
        source: VisionError::Inference(e.to_string()),
    };
    let t = Instant::now();
    let wall = OffsetDateTime::from(frame.wall);
    let to_full = || frame.to_rgb().map_err(conv);
    let (out, convert) = if frame.width.max(frame.height) > detect_max_side {
        // The detector's copy now; the full resolution only if it finds a face.
        let (scaled, scale) = frame.to_rgb_scaled(detect_max_side).map_err(conv)?;
        let convert = t.elapsed().as_secs_f64();
        let images = FrameImages::Scaled {
            scaled: &scaled,
            scale,
            full: &to_full,
        };
        let out = processor.process(engine, gallery, images, now, wall, Some(frame.arrived));
        (out, convert)
    } else {
        let full = to_full()?;
        let convert = t.elapsed().as_secs_f64();
        let images = FrameImages::Full(&full);
        let out = processor.process(engine, gallery, images, now, wall, Some(frame.arrived));
        (out, convert)
    };
    // The conversion done here, plus the full resolution's when `process` asked for it.
    processor.last_stages.convert += convert;
    out
}

/// The gallery the cameras (and the HTTP API) share.
pub fn open_gallery(
    db: &std::path::Path,
    engine: &FaceEngine,
) -> Result<Arc<Mutex<Gallery>>, PipelineError> {
    open_gallery_with(crate::registry::Registry::open(db)?, engine)
}

/// [`open_gallery`], with the data directory, so that an erasure deletes
/// the erased person's snapshot files at once.
pub fn open_gallery_in(
    db: &std::path::Path,
    data_dir: &std::path::Path,
    engine: &FaceEngine,
) -> Result<Arc<Mutex<Gallery>>, PipelineError> {
    open_gallery_with(
        crate::registry::Registry::open(db)?.with_snapshot_dir(data_dir),
        engine,
    )
}

fn open_gallery_with(
    registry: crate::registry::Registry,
    engine: &FaceEngine,
) -> Result<Arc<Mutex<Gallery>>, PipelineError> {
    let gallery = Gallery::open(
        registry,
        engine.model_id(),
        engine.dim(),
        OffsetDateTime::now_utc(),
    )?;
    Ok(Arc::new(Mutex::new(gallery)))
}

/// What a replay did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReplayStats {
    pub frames: u64,
    pub processed: u64,
    pub faces: u64,
    pub events: u64,
    /// Video seconds covered.
    pub duration_s: f64,
    /// Wall-clock seconds the replay took.
    pub elapsed_s: f64,
    /// Frame decoded → decision, seconds, for each decision made on a frame.
    pub latencies_s: Vec<f64>,
    /// Where the recognition work went (re-verification share).
    pub work: RecognitionWork,
}

/// Runs the pipeline over a video file as fast as it can: every frame is
/// decoded, frames are sampled at the camera's detection rate in video
/// time, decisions go to the database and to `on_event(video_seconds,
/// event)` in order.
pub fn replay_file(
    config: &Config,
    cam: CameraContext,
    video: &std::path::Path,
    db: &std::path::Path,
    data_dir: &std::path::Path,
    mut on_event: impl FnMut(f64, &Event),
) -> Result<ReplayStats, PipelineError> {
    let started = Instant::now();
    let mut engine = FaceEngine::new(config).map_err(|source| PipelineError::Vision {
        camera: cam.name.clone(),
        source,
    })?;
    let wall0 = OffsetDateTime::now_utc();
    let gallery = Mutex::new(Gallery::open(
        crate::registry::Registry::open(db)?,
        engine.model_id(),
        engine.dim(),
        wall0,
    )?);
    let mut sink = EventSink::new(
        EventStore::open(db)?,
        SnapshotWriter::new(data_dir),
        Box::new(|_: &Event| {}),
    );
    if config.privacy.event_face_search {
        sink = sink.with_face_search(engine.model_id());
    }
    let period = 1.0 / cam.detect_fps.max(0.1) as f64;
    let max_side = config.detector().max_side;
    let prefix = format!("{}-{:x}", cam.name, wall0.unix_timestamp());
    let mut processor = Processor::new(cam, config, &prefix);
    let mut stats = ReplayStats::default();
    let mut next_t = 0.0;
    let mut last_t = 0.0f64;
    for frame in crate::source::Replay::open(video)? {
        let frame = frame?;
        stats.frames += 1;
        let t = frame
            .pts
            .map_or(stats.frames as f64 * period, |p| p.as_secs_f64());
        last_t = last_t.max(t);
        if t + 1e-6 < next_t {
            continue;
        }
        next_t = t + period;
        stats.processed += 1;
        let mut events = process_frame(&mut processor, &mut engine, &gallery, &frame, max_side, t)?;
        // Events take the video's time so a replay reads like the day it shows.
        for e in &mut events {
            e.ts = wall0 + time::Duration::seconds_f64(t);
        }
        emit_all(&sink, &mut processor, &mut events);
        events.iter().for_each(|e| on_event(t, e));
        stats.events += events.len() as u64;
    }
    let end = last_t + config.decide.track_timeout_s as f64 + 1.0;
    let mut events =
        processor.finish(&gallery, end, wall0 + time::Duration::seconds_f64(last_t))?;
    emit_all(&sink, &mut processor, &mut events);
    events.iter().for_each(|e| on_event(end, e));
    stats.events += events.len() as u64;
    stats.faces = processor.faces;
    stats.duration_s = last_t;
    stats.elapsed_s = started.elapsed().as_secs_f64();
    stats.latencies_s = std::mem::take(&mut processor.latencies);
    stats.work = processor.work;
    Ok(stats)
}
