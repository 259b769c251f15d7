//! The gateway's own ingest bench (`facegate bench ingest`): CPU per stream
//! against a bare `gst-launch-1.0` decode of the same file in the same run,
//! detection slots missed at a detection rate, and frame → decision latency.
//!
//! Streams are files played in real time (the same decode work as a camera,
//! without a network in the measurement), or an RTSP URL (facegate's camera
//! source as in `facegate run`, over TCP; `benches/rtsp_serve.py` serves the
//! bench media from another process). The bare baseline runs the same
//! elements (`filesrc ! decodebin ! videoconvert`, I420/NV12, a sink with
//! `sync=true` like facegate's file source; for RTSP `rtspsrc protocols=tcp
//! latency=200 ! decodebin ! videoconvert`, `sync=false` like facegate's RTSP
//! source), once before and once after facegate, and the two are averaged so
//! a load change during the run shows.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use serde::Serialize;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::config::{CameraRole, Config};
use crate::pipeline::{CameraContext, Processor, is_still, motion_gate, process_frame};
use crate::registry::{Gallery, Registry};
use crate::source::{CameraHandle, CameraSpec, CameraUrl, spawn_camera};
use crate::vision::FaceEngine;

/// Start-up time left out of every CPU measurement (pipeline start, first
/// keyframe), for facegate and the baseline alike.
const WARM_UP: Duration = Duration::from_millis(1500);

/// A frame older than this when taken for a detection slot is stale: the
/// source did not deliver for 2.5 frame intervals of a 25 fps stream.
const STALE_AFTER: Duration = Duration::from_millis(100);

/// What the bench plays: a file (real time, looped by facegate) or an RTSP
/// stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestSource {
    File(PathBuf),
    Rtsp(String),
}

impl IngestSource {
    /// `rtsp://…` is a stream, anything else a file path.
    pub fn parse(arg: &str) -> Result<Self, String> {
        if arg.starts_with("rtsp://") || arg.starts_with("rtsps://") {
            // The same check as a camera's URL (no credentials inside).
            CameraUrl::parse(arg)?;
            Ok(Self::Rtsp(arg.to_owned()))
        } else {
            Ok(Self::File(PathBuf::from(arg)))
        }
    }

    fn camera_url(&self) -> CameraUrl {
        match self {
            Self::File(p) => CameraUrl::File(p.clone()),
            Self::Rtsp(u) => CameraUrl::Rtsp(u.clone()),
        }
    }

    fn display(&self) -> String {
        match self {
            Self::File(p) => p.display().to_string(),
            Self::Rtsp(u) => u.clone(),
        }
    }

    /// The bare pipeline's arguments to `gst-launch-1.0 -q`: the same
    /// elements and sink settings as facegate's source for this kind
    /// (`gateway/source/pipeline.rs`).
    fn baseline_args(&self) -> Vec<String> {
        let mut a: Vec<String> = match self {
            Self::File(p) => vec!["filesrc".into(), format!("location={}", p.display())],
            Self::Rtsp(u) => vec![
                "rtspsrc".into(),
                format!("location={u}"),
                "protocols=tcp".into(),
                format!("latency={RTSP_LATENCY_MS}"),
            ],
        };
        let sync = match self {
            Self::File(_) => "sync=true",
            Self::Rtsp(_) => "sync=false",
        };
        a.extend(
            [
                "!",
                "decodebin",
                "!",
                "videoconvert",
                "!",
                "video/x-raw,format={I420,NV12}",
                "!",
                "fakesink",
                sync,
            ]
            .map(String::from),
        );
        a
    }
}

/// facegate's RTSP jitter buffer (`RTSP_LATENCY_MS` in
/// `gateway/source/pipeline.rs`), for the bare baseline.
const RTSP_LATENCY_MS: u32 = 200;

#[derive(Debug, Clone)]
pub struct IngestBench {
    /// What the streams play: stream `i` plays `videos[i % len]` (several
    /// phases of one scene, so that not every camera sees a person at once).
    pub videos: Vec<IngestSource>,
    pub streams: usize,
    pub seconds: f64,
    /// Detection rate per stream; 0 = decode only (frames taken and scaled
    /// at 3 fps, no models).
    pub detect_fps: f32,
    /// Also time a bare gst-launch decode of the same file for comparison.
    pub baseline: bool,
    /// The streams' camera role (`gate` runs liveness too).
    pub role: CameraRole,
    /// `cameras.motion_skip` for every camera of the bench (the gateway's
    /// own motion gate, `pipeline::is_still`).
    pub motion_skip: bool,
    /// A gate camera run alongside the streams, reported on its own.
    pub gate: Option<GateCamera>,
    /// The streams' worker threads (detection and recognition) and their
    /// GStreamer streaming threads (network, decoding) run this much nicer
    /// than the gate camera's (Linux nice is per thread): does the gate
    /// keep its latency when the patrol cameras yield the CPU to it?
    pub stream_nice: i32,
}

/// The gate camera of BENCHMARKS.md §4 (c): role gate, its own detection
/// rate, the owners in the bench's database enrolled.
#[derive(Debug, Clone)]
pub struct GateCamera {
    pub video: IngestSource,
    pub detect_fps: f32,
}

/// One camera's (or one group of cameras') detection figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SlotReport {
    /// Detection slots (seconds × detect rate × cameras) and how many were
    /// missed; see [`SlotLedger`] for the definitions.
    pub slots: u64,
    pub missed: u64,
    pub missed_pct: f64,
    pub missed_busy: u64,
    pub missed_no_frame: u64,
    pub missed_stale: u64,
    /// Frames taken for a slot; of those, skipped by the motion gate
    /// (nothing moved, no live track) and run through detection.
    pub frames_taken: u64,
    pub frames_still: u64,
    pub frames_detected: u64,
    /// Faces the detector found on the detected frames.
    pub faces: u64,
    /// Mean time per detected frame of the conversions (YUV → RGB at full
    /// size for the face crops, and at the detector's size), the detector,
    /// and the per-face work (align, liveness, embed), ms.
    pub convert_ms_mean: Option<f64>,
    pub detect_ms_mean: Option<f64>,
    pub analyze_ms_mean: Option<f64>,
    /// Frame arrival → frame fully processed (detect, embed, track, decide;
    /// for a still frame the motion check and track timeouts), ms.
    pub frame_latency_p50_ms: Option<f64>,
    pub frame_latency_p99_ms: Option<f64>,
    /// Frame arrival → decision, for frames that produced a decision, ms.
    pub decision_latency_p50_ms: Option<f64>,
    pub decision_latency_p99_ms: Option<f64>,
    pub decisions: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    pub video: String,
    pub width: u32,
    pub height: u32,
    pub streams: usize,
    pub seconds: f64,
    pub detect_fps: f32,
    /// CPU seconds per wall second, per stream (1.0 = one core), facegate.
    pub cpu_per_stream: f64,
    /// Of which: converting taken frames to scaled RGB (wall time of the
    /// conversions, on otherwise idle worker threads ≈ their CPU). Decode-only
    /// runs; 0 with detection, where the conversion is part of the pipeline.
    pub rgb_cpu_per_stream: f64,
    /// The same for `gst-launch-1.0 filesrc ! decodebin ! videoconvert !
    /// video/x-raw,format={I420,NV12} ! fakesink sync=true` (RTSP:
    /// `rtspsrc protocols=tcp latency=200 ! … ! fakesink sync=false`): the
    /// mean of `baseline_runs` (one before facegate, one after).
    pub baseline_cpu_per_stream: Option<f64>,
    pub baseline_runs: Vec<f64>,
    pub ratio_to_baseline: Option<f64>,
    pub fps_in_per_stream: f64,
    pub motion_skip: bool,
    pub stream_nice: i32,
    /// The streams' figures, all streams together: detection slots
    /// (seconds × detect rate × streams) missed and why, frames taken /
    /// skipped as still / detected, faces, stage times and latencies (see
    /// [`SlotReport`] and [`SlotLedger`]).
    pub all_streams: SlotReport,
    /// CPU of the whole process (streams and gate camera), cores.
    pub cpu_total: f64,
    /// The gate camera's own figures, when one ran alongside.
    pub gate: Option<SlotReport>,
    /// `/proc/loadavg` (1, 5, 15 min) before and after the measurement:
    /// the box is shared.
    pub load_before: Option<[f64; 3]>,
    pub load_after: Option<[f64; 3]>,
}

/// The bookkeeping of detection slots, on a clock the caller passes in
/// (time since the start of the measurement), so it can be tested without
/// sleeping.
///
/// Slot `k` is the window `[k × period, (k + 1) × period)`. A slot is
/// *served* when the worker takes, within its window, a frame no older than
/// `stale_after`. Otherwise it is *missed*, for one of three causes:
/// - busy: the worker was processing an earlier frame for the whole window;
/// - no frame: the worker was free but no new frame came before the window
///   ended;
/// - stale: the frame it got had waited in the slot longer than
///   `stale_after` (the source stalled, or the frame sat there while the
///   worker was busy and nothing newer came).
///
/// A worker that becomes free part-way through a window still serves it
/// (late, which shows in the latency figures, not here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotLedger {
    period: Duration,
    stale_after: Duration,
    /// Start of the earliest slot not yet accounted for.
    next: Duration,
    pub served: u64,
    pub missed_busy: u64,
    pub missed_no_frame: u64,
    pub missed_stale: u64,
}

/// What a free worker does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotTurn {
    /// No slot is open: sleep this long.
    Wait(Duration),
    /// A slot is open until `ends`: take a frame, waiting no longer than that.
    Take { ends: Duration },
}

impl SlotLedger {
    pub fn new(period: Duration, stale_after: Duration) -> Self {
        assert!(!period.is_zero(), "a slot period must be positive");
        Self {
            period,
            stale_after,
            ..Self::default()
        }
    }

    /// The worker is free at `now`. Slots whose whole window has passed
    /// since the last one accounted for were missed while it was busy.
    pub fn turn(&mut self, now: Duration) -> SlotTurn {
        if now < self.next {
            return SlotTurn::Wait(self.next - now);
        }
        let passed = ((now - self.next).as_nanos() / self.period.as_nanos()) as u32;
        self.missed_busy += u64::from(passed);
        self.next += self.period * passed;
        SlotTurn::Take {
            ends: self.next + self.period,
        }
    }

    /// Closes the open slot: the worker tried to take a frame for it and got
    /// one aged `frame_age` at `taken` (or none). Returns whether the slot
    /// was served.
    pub fn close(&mut self, taken: Duration, frame_age: Option<Duration>) -> bool {
        let ends = self.next + self.period;
        self.next = ends;
        let in_time = taken < ends;
        match frame_age {
            Some(age) if in_time && age <= self.stale_after => {
                self.served += 1;
                return true;
            }
            Some(_) if in_time => self.missed_stale += 1,
            _ => self.missed_no_frame += 1,
        }
        false
    }

    /// Ends the measurement at `end`: slots that ended while the worker was
    /// busy are missed; a slot still open at `end` is not counted.
    pub fn finish(&mut self, end: Duration) {
        if end >= self.next {
            let passed = ((end - self.next).as_nanos() / self.period.as_nanos()) as u32;
            self.missed_busy += u64::from(passed);
            self.next += self.period * passed;
        }
    }

    pub fn slots(&self) -> u64 {
        self.served + self.missed()
    }

    pub fn missed(&self) -> u64 {
        self.missed_busy + self.missed_no_frame + self.missed_stale
    }

    fn add(&mut self, other: &SlotLedger) {
        self.served += other.served;
        self.missed_busy += other.missed_busy;
        self.missed_no_frame += other.missed_no_frame;
        self.missed_stale += other.missed_stale;
    }
}

/// CPU time (user + system) of this process so far.
fn own_cpu() -> Duration {
    cpu_of("/proc/self/stat").unwrap_or_default()
}

/// utime + stime from a /proc stat file (clock ticks of 1/100 s on Linux).
fn cpu_of(stat: &str) -> Option<Duration> {
    let text = std::fs::read_to_string(stat).ok()?;
    // Fields after the ")" of the command name; utime and stime are 14 and 15.
    let rest = text.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn percentile(v: &mut [f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    Some(v[i] * 1000.0)
}

/// CPU of `gst-launch-1.0` decoding the files in real time (or the RTSP
/// streams), one process per stream, per stream and wall second, measured
/// after the same warm-up as facegate.
fn baseline_cpu(videos: &[IngestSource], seconds: f64) -> Result<f64, String> {
    let mut children: Vec<Child> = Vec::new();
    for video in videos {
        let child = Command::new("gst-launch-1.0")
            .arg("-q")
            .args(video.baseline_args())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("gst-launch-1.0: {e} (package gstreamer1.0-tools)"))?;
        children.push(child);
    }
    std::thread::sleep(WARM_UP);
    let cpu_now = |children: &[Child]| -> Duration {
        children
            .iter()
            .map(|c| cpu_of(&format!("/proc/{}/stat", c.id())).unwrap_or_default())
            .sum()
    };
    let cpu0 = cpu_now(&children);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_now(&children);
    let mut ended_early = false;
    for c in &mut children {
        ended_early |= matches!(c.try_wait(), Ok(Some(_)));
        let _ = c.kill();
        let _ = c.wait();
    }
    if ended_early {
        return Err("a gst-launch-1.0 baseline ended before the measurement did".into());
    }
    Ok(cpu.saturating_sub(cpu0).as_secs_f64() / wall / videos.len().max(1) as f64)
}

/// Length of a media file, from GStreamer's duration query.
fn media_seconds(video: &Path) -> Result<f64, String> {
    crate::source::init().map_err(|e| e.to_string())?;
    let uri = gst::glib::filename_to_uri(
        std::fs::canonicalize(video).map_err(|e| format!("{}: {e}", video.display()))?,
        None,
    )
    .map_err(|e| e.to_string())?;
    let sink = || gst::ElementFactory::make("fakesink").build().ok();
    let playbin = gst::ElementFactory::make("playbin")
        .property("uri", uri.as_str())
        .property("video-sink", sink())
        .property("audio-sink", sink())
        .build()
        .map_err(|e| format!("playbin: {e}"))?;
    let _ = playbin.set_state(gst::State::Paused);
    let _ = playbin.state(gst::ClockTime::from_seconds(10));
    let duration = playbin.query_duration::<gst::ClockTime>();
    let _ = playbin.set_state(gst::State::Null);
    duration
        .map(|d| d.nseconds() as f64 / 1e9)
        .ok_or_else(|| format!("{}: length unknown", video.display()))
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut f = text.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some([f.next()??, f.next()??, f.next()??])
}

/// What one worker measured.
#[derive(Default)]
struct WorkerResult {
    ledger: SlotLedger,
    rgb_time: Duration,
    frame_lat: Vec<f64>,
    decision_lat: Vec<f64>,
    taken: u64,
    still: u64,
    detected: u64,
    faces: u64,
    /// Sums over detected frames: convert, detect, analyse (seconds).
    stages: [f64; 3],
}

impl WorkerResult {
    fn add(&mut self, r: WorkerResult) {
        self.ledger.add(&r.ledger);
        self.rgb_time += r.rgb_time;
        self.frame_lat.extend(r.frame_lat);
        self.decision_lat.extend(r.decision_lat);
        self.taken += r.taken;
        self.still += r.still;
        self.detected += r.detected;
        self.faces += r.faces;
        for (a, b) in self.stages.iter_mut().zip(r.stages) {
            *a += b;
        }
    }

    fn report(mut self) -> SlotReport {
        let n = self.detected;
        let mean_ms = |sum: f64| (n > 0).then(|| sum * 1000.0 / n as f64);
        let l = &self.ledger;
        let (slots, missed) = (l.slots(), l.missed());
        SlotReport {
            slots,
            missed,
            missed_pct: if slots == 0 {
                0.0
            } else {
                missed as f64 * 100.0 / slots as f64
            },
            missed_busy: l.missed_busy,
            missed_no_frame: l.missed_no_frame,
            missed_stale: l.missed_stale,
            frames_taken: self.taken,
            frames_still: self.still,
            frames_detected: self.detected,
            faces: self.faces,
            convert_ms_mean: mean_ms(self.stages[0]),
            detect_ms_mean: mean_ms(self.stages[1]),
            analyze_ms_mean: mean_ms(self.stages[2]),
            frame_latency_p50_ms: percentile(&mut self.frame_lat, 0.5),
            frame_latency_p99_ms: percentile(&mut self.frame_lat, 0.99),
            decision_latency_p50_ms: percentile(&mut self.decision_lat, 0.5),
            decision_latency_p99_ms: percentile(&mut self.decision_lat, 0.99),
            decisions: self.decision_lat.len(),
        }
    }
}

/// What a worker runs on its frames.
#[derive(Debug, Clone, Copy)]
struct WorkerPlan {
    period: Duration,
    role: CameraRole,
    motion_skip: bool,
    /// Added to this thread's nice value before the models are loaded.
    nice: i32,
}

impl IngestBench {
    /// What each stream plays: `videos` in turn.
    fn stream_sources(&self) -> Vec<IngestSource> {
        (0..self.streams)
            .filter_map(|i| self.videos.get(i % self.videos.len().max(1)).cloned())
            .collect()
    }
}

/// Runs the bench. The videos must be at least `seconds` + the warm-up long
/// for the baseline (gst-launch does not loop); facegate's file source loops.
pub fn ingest(config: &Config, b: &IngestBench, db: &Path) -> Result<IngestReport, String> {
    if b.streams > 0 && b.videos.is_empty() {
        return Err("bench ingest: --streams needs at least one --video".into());
    }
    if b.streams == 0 && b.gate.is_none() {
        return Err(
            "bench ingest: --streams 0 measures only a --gate camera, and none was given".into(),
        );
    }
    let sources = b.stream_sources();
    // A missing file would only show as a camera that never delivers.
    for v in b.videos.iter().chain(b.gate.iter().map(|g| &g.video)) {
        if let IngestSource::File(p) = v
            && !p.is_file()
        {
            return Err(format!("bench ingest: {}: no such file", p.display()));
        }
    }
    let detecting = b.detect_fps > 0.0 || b.gate.is_some();
    let mut baseline_runs = Vec::new();
    // The file's length bounds a gst-launch run; an RTSP stream's length is
    // the server's business (benches/rtsp_serve.py plays the file once per
    // client, from the start).
    if b.baseline && !sources.is_empty() {
        for v in &b.videos {
            let IngestSource::File(video) = v else {
                continue;
            };
            let length = media_seconds(video)?;
            let needed = b.seconds + WARM_UP.as_secs_f64() + 0.5;
            if length < needed {
                return Err(format!(
                    "{} is {length:.1} s long; the baseline needs at least {needed:.0} s (gst-launch does not loop): benches/ingest.sh makes such files",
                    video.display(),
                ));
            }
        }
        baseline_runs.push(baseline_cpu(&sources, b.seconds)?);
    }
    let load_before = load_average();
    let cancel = CancellationToken::new();
    let (tx, _rx) = tokio::sync::mpsc::channel(64);
    // The same camera source as `facegate run` (RTSP over TCP by default).
    let mut handles = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        let mut spec = CameraSpec::new(format!("bench-{i}"), source.camera_url());
        spec.nice = b.stream_nice;
        handles.push(Arc::new(
            spawn_camera(spec, tx.clone(), cancel.clone()).map_err(|e| e.to_string())?,
        ));
    }
    let gate_handle = match &b.gate {
        Some(g) => {
            let spec = CameraSpec::new("bench-gate".to_owned(), g.video.camera_url());
            Some(Arc::new(
                spawn_camera(spec, tx.clone(), cancel.clone()).map_err(|e| e.to_string())?,
            ))
        }
        None => None,
    };
    let gallery = if detecting {
        let e = FaceEngine::new(config).map_err(|e| e.to_string())?;
        let g = Gallery::open(
            Registry::open(db).map_err(|e| e.to_string())?,
            e.model_id(),
            e.dim(),
            OffsetDateTime::now_utc(),
        )
        .map_err(|e| e.to_string())?;
        Some(Arc::new(Mutex::new(g)))
    } else {
        None
    };
    let rate = if b.detect_fps > 0.0 {
        b.detect_fps
    } else {
        3.0
    };
    let stream_plan = WorkerPlan {
        period: Duration::from_secs_f64(1.0 / rate as f64),
        role: b.role,
        motion_skip: b.motion_skip,
        nice: b.stream_nice,
    };
    let seconds = Duration::from_secs_f64(b.seconds);
    // Let the pipelines start before measuring.
    std::thread::sleep(WARM_UP);
    let cpu0 = own_cpu();
    let t0 = Instant::now();
    let frames0: u64 = handles.iter().map(|h| h.status().frames_total).sum();
    let spawn = |h: &Arc<CameraHandle>, plan: WorkerPlan, models: bool| {
        let h = h.clone();
        let gallery = gallery.clone().filter(|_| models);
        let config = config.clone();
        std::thread::spawn(move || worker(&h, gallery, &config, plan, t0, seconds))
    };
    let workers: Vec<_> = handles
        .iter()
        .map(|h| spawn(h, stream_plan, b.detect_fps > 0.0))
        .collect();
    let gate_worker = gate_handle.as_ref().zip(b.gate.as_ref()).map(|(h, g)| {
        let plan = WorkerPlan {
            period: Duration::from_secs_f64(1.0 / g.detect_fps.max(0.1) as f64),
            role: CameraRole::Gate,
            motion_skip: b.motion_skip,
            nice: 0,
        };
        spawn(h, plan, true)
    });
    let join = |w: std::thread::JoinHandle<Result<WorkerResult, String>>| {
        w.join().map_err(|_| "bench worker panicked".to_string())?
    };
    let mut total = WorkerResult::default();
    for w in workers {
        total.add(join(w)?);
    }
    let gate = gate_worker.map(join).transpose()?.map(WorkerResult::report);
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (own_cpu() - cpu0).as_secs_f64();
    let load_after = load_average();
    let frames1: u64 = handles.iter().map(|h| h.status().frames_total).sum();
    let (width, height) = handles
        .first()
        .and_then(|h| h.slot().take_newest())
        .map_or((0, 0), |f| (f.width, f.height));
    cancel.cancel();
    for h in handles.iter().chain(gate_handle.iter()) {
        h.stop();
    }
    // Wait for the pipelines to go, so the second baseline has the CPUs.
    for h in handles.into_iter().chain(gate_handle) {
        if let Ok(h) = Arc::try_unwrap(h) {
            h.join();
        }
    }
    if b.baseline && !sources.is_empty() {
        baseline_runs.push(baseline_cpu(&sources, b.seconds)?);
    }
    let baseline = (!baseline_runs.is_empty())
        .then(|| baseline_runs.iter().sum::<f64>() / baseline_runs.len() as f64);
    let n = b.streams.max(1) as f64;
    let per_stream = cpu / wall / n;
    let rgb_cpu_per_stream = total.rgb_time.as_secs_f64() / wall / n;
    Ok(IngestReport {
        video: b
            .videos
            .iter()
            .map(IngestSource::display)
            .collect::<Vec<_>>()
            .join(","),
        width,
        height,
        streams: b.streams,
        seconds: wall,
        detect_fps: b.detect_fps,
        cpu_per_stream: per_stream,
        rgb_cpu_per_stream,
        baseline_cpu_per_stream: baseline,
        baseline_runs,
        ratio_to_baseline: baseline.filter(|b| *b > 0.0).map(|b| per_stream / b),
        fps_in_per_stream: (frames1 - frames0) as f64 / wall / n,
        motion_skip: b.motion_skip,
        stream_nice: b.stream_nice,
        all_streams: total.report(),
        cpu_total: cpu / wall,
        gate,
        load_before,
        load_after,
    })
}

/// One stream's consumer: takes a frame per detection slot and processes
/// it (the whole recognition pipeline behind the camera's motion gate, as
/// `pipeline::run_camera` does, or only the RGB conversion).
fn worker(
    h: &CameraHandle,
    gallery: Option<Arc<Mutex<Gallery>>>,
    config: &Config,
    plan: WorkerPlan,
    t0: Instant,
    seconds: Duration,
) -> Result<WorkerResult, String> {
    crate::sched::lower_for_life(plan.nice)
        .map_err(|e| format!("bench ingest: --stream-nice: {e}"))?;
    Consumer::new(h.name(), gallery, config, plan)?.run(h, t0, seconds)
}

/// A camera's consumer with its models loaded once; each [`Consumer::run`]
/// starts a fresh tracker (`bench lock --gate` runs it over several phases,
/// each on a camera restarted from the start of its clip).
struct Consumer {
    gallery: Option<Arc<Mutex<Gallery>>>,
    engine: Option<(FaceEngine, CameraContext)>,
    config: Config,
    period: Duration,
    max_side: u32,
}

impl Consumer {
    fn new(
        name: &str,
        gallery: Option<Arc<Mutex<Gallery>>>,
        config: &Config,
        plan: WorkerPlan,
    ) -> Result<Self, String> {
        let role = match plan.role {
            CameraRole::Gate => "gate",
            CameraRole::Patrol => "patrol",
        };
        let engine = match &gallery {
            Some(_) => {
                let cam: crate::config::CameraConfig = toml::from_str(&format!(
                    "name = \"{name}\"\nurl = \"file:///bench\"\nrole = \"{role}\"\nmotion_skip = {}\n",
                    plan.motion_skip,
                ))
                .map_err(|e| e.to_string())?;
                Some((
                    FaceEngine::new(config).map_err(|e| e.to_string())?,
                    CameraContext::from_config(&cam, config),
                ))
            }
            None => None,
        };
        Ok(Consumer {
            gallery,
            engine,
            config: config.clone(),
            period: plan.period,
            max_side: config.detector().max_side,
        })
    }

    /// Serves detection slots from `t0` for `seconds`.
    fn run(
        &mut self,
        h: &CameraHandle,
        t0: Instant,
        seconds: Duration,
    ) -> Result<WorkerResult, String> {
        let max_side = self.max_side;
        let mut engine_proc = self
            .engine
            .as_mut()
            .map(|(e, ctx)| (e, Processor::new(ctx.clone(), &self.config, "bench")));
        let mut motion = engine_proc
            .as_ref()
            .and_then(|(_, p)| motion_gate(p.camera()));
        let mut r = WorkerResult {
            ledger: SlotLedger::new(self.period, STALE_AFTER),
            ..WorkerResult::default()
        };
        loop {
            let now = t0.elapsed();
            if now >= seconds {
                break;
            }
            let ends = match r.ledger.turn(now) {
                SlotTurn::Wait(d) => {
                    std::thread::sleep(d.min(seconds - now));
                    continue;
                }
                SlotTurn::Take { ends } => ends,
            };
            let frame = h.wait_frame(ends.saturating_sub(now));
            let taken = Instant::now();
            let age = frame
                .as_ref()
                .map(|f| taken.saturating_duration_since(f.arrived));
            r.ledger.close(taken - t0, age);
            // A frame taken late or stale is still processed, as the gateway would.
            let Some(frame) = frame else { continue };
            r.taken += 1;
            match (&mut engine_proc, &self.gallery) {
                (Some((engine, proc_)), Some(g)) => {
                    let t = t0.elapsed().as_secs_f64();
                    let events = if is_still(motion.as_mut(), proc_, &frame) {
                        // As `run_camera` does: no detection, track timeouts only.
                        r.still += 1;
                        proc_
                            .tick(g, t, OffsetDateTime::now_utc())
                            .map_err(|e| e.to_string())?
                    } else {
                        r.detected += 1;
                        let faces_before = proc_.faces;
                        let events = process_frame(proc_, engine, g, &frame, max_side, t)
                            .map_err(|e| e.to_string())?;
                        r.faces += proc_.faces - faces_before;
                        let st = proc_.last_stages;
                        r.stages[0] += st.convert;
                        r.stages[1] += st.detect;
                        r.stages[2] += st.analyze;
                        events
                    };
                    let l = frame.arrived.elapsed().as_secs_f64();
                    r.frame_lat.push(l);
                    if !events.is_empty() {
                        r.decision_lat.push(l);
                    }
                }
                _ => {
                    let c = Instant::now();
                    let _ = frame.to_rgb_scaled(max_side).map_err(|e| e.to_string())?;
                    r.rgb_time += c.elapsed();
                    r.frame_lat.push(frame.arrived.elapsed().as_secs_f64());
                }
            }
        }
        r.ledger.finish(t0.elapsed().min(seconds));
        Ok(r)
    }
}

/// The template size `facegate run` would match at: the embedder's
/// dimension plus the fusion embedder's when fusion is enabled (as shipped).
pub fn template_dim(config: &Config) -> usize {
    let v = &config.vision;
    let fused = v
        .fusion
        .as_ref()
        .filter(|f| f.enabled)
        .and_then(|f| v.embedders.get(&f.embedder))
        .map_or(0, |e| e.dim);
    config.embedder().dim + fused
}

/// `facegate bench search`: 1:N search latency over a synthetic index.
#[derive(Debug, Clone)]
pub struct SearchBench {
    pub templates: usize,
    pub dim: usize,
    /// Timed searches (half returning owners, half strangers).
    pub queries: usize,
    /// Matches asked for, as the pipeline asks.
    pub k: usize,
    /// Time the plain f32 scan of every row (the search before the 4-bit
    /// pass), for before/after figures in one build.
    pub exhaustive: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchReport {
    pub templates: usize,
    pub dim: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// CPU time (user + system) of the timed searches over their count, ms:
    /// less sensitive than the wall-clock percentiles to other processes
    /// taking the core (10 ms tick resolution over the whole run).
    pub cpu_ms_per_query: f64,
    /// Resident memory of the whole process with the index built, MiB.
    pub rss_mib: f64,
    /// The index's rows (f32 for rescoring plus the 4-bit scan codes), MiB.
    pub index_mib: f64,
    pub queries: usize,
    pub k: usize,
    /// "coarse+exact" (the gateway's search) or "exhaustive-f32".
    pub scan: &'static str,
    /// Searches also run as a full f32 scan and found identical (ids and
    /// scores), before the timing.
    pub checked_exact: usize,
}

/// Builds an index of `templates` random unit vectors (one owner each, a
/// fixed seed), checks the search against a full f32 scan, then times
/// `queries` searches one after another on this thread.
pub fn search(b: &SearchBench) -> Result<SearchReport, String> {
    use crate::registry::{FaceIndex, Subject};
    if b.templates == 0 || b.dim == 0 || b.queries == 0 {
        return Err(
            "bench search: --templates, the dimension and --queries must be positive".into(),
        );
    }
    let mut index = FaceIndex::new(b.dim);
    for i in 0..b.templates {
        let subject = Subject::Owner {
            id: format!("owner-{i:06}"),
            name: format!("Owner {i}"),
        };
        index
            .insert(i as i64, subject, &template_of(i, b.dim))
            .map_err(|e| e.to_string())?;
    }
    let rss_mib = resident_mib().unwrap_or(f64::NAN);
    let mut rng = SplitMix64(0x5eed_face_0002);
    // Owner probes: an enrolled template seen again (cosine ≈ 0.7 to it,
    // as a genuine match scores); stranger probes: fresh random vectors.
    let probes: Vec<(Option<i64>, Vec<f32>)> = (0..b.queries)
        .map(|q| {
            if q % 2 == 0 {
                let id = (rng.next_u64() % b.templates as u64) as usize;
                let noise = random_unit(&mut rng, b.dim);
                let probe = template_of(id, b.dim)
                    .iter()
                    .zip(&noise)
                    .map(|(t, e)| 0.7 * t + 0.714 * e)
                    .collect();
                (Some(id as i64), probe)
            } else {
                (None, random_unit(&mut rng, b.dim))
            }
        })
        .collect();
    let checked_exact = probes.len().min(20);
    for (owner, probe) in &probes[..checked_exact] {
        let fast = index.search(probe, b.k).map_err(|e| e.to_string())?;
        let full = index
            .search_exhaustive(probe, b.k)
            .map_err(|e| e.to_string())?;
        if fast != full {
            return Err(format!(
                "bench search: the scan disagrees with a full f32 scan: {fast:?} vs {full:?}"
            ));
        }
        if let Some(id) = owner
            && fast.first().map(|m| m.template_id) != Some(*id)
        {
            return Err(format!("bench search: owner probe {id} found {fast:?}"));
        }
    }
    let mut times = Vec::with_capacity(probes.len());
    let cpu0 = own_cpu();
    for (_, probe) in &probes {
        let t = Instant::now();
        let hits = if b.exhaustive {
            index.search_exhaustive(std::hint::black_box(probe), b.k)
        } else {
            index.search(std::hint::black_box(probe), b.k)
        };
        times.push(t.elapsed().as_secs_f64());
        hits.map_err(|e| e.to_string())?;
    }
    let cpu = own_cpu().saturating_sub(cpu0);
    Ok(SearchReport {
        templates: b.templates,
        dim: b.dim,
        p50_ms: percentile(&mut times, 0.5).unwrap_or(f64::NAN),
        p99_ms: percentile(&mut times, 0.99).unwrap_or(f64::NAN),
        cpu_ms_per_query: cpu.as_secs_f64() * 1000.0 / probes.len() as f64,
        rss_mib,
        index_mib: index.embedding_bytes() as f64 / (1024.0 * 1024.0),
        queries: probes.len(),
        k: b.k,
        scan: if b.exhaustive {
            "exhaustive-f32"
        } else {
            "coarse+exact"
        },
        checked_exact,
    })
}

/// `facegate bench lock`: how long a camera's match waits while the gallery
/// is reloaded or owners are enrolled, against a quiet gallery, and the same
/// with the old behaviour (reload and model work under the gallery lock) in
/// the same run.
#[derive(Debug, Clone)]
pub struct LockBench {
    pub templates: usize,
    /// Seconds per phase.
    pub seconds: f64,
    /// A folder of identity folders (`<dir>/<person>/*.jpg`): four people
    /// are enrolled concurrently, up to 10 photos each (2× enlarged in
    /// memory), with the real models. None: reload phases only.
    pub photos: Option<PathBuf>,
    /// A gate camera run through the whole pipeline (detection, liveness,
    /// embedding, match, track, decision) in every phase instead of the
    /// bare match thread: its frame → decision latency is what a resident
    /// at the gate waits for.
    pub gate: Option<GateCamera>,
    /// Photos of the gate video's resident, enrolled (real models) before
    /// the phases, so that the gate decides owner passes.
    pub gate_owner: Vec<PathBuf>,
}

/// Match latency (lock wait + search) of a camera thread matching every
/// 10 ms, per phase.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub matches: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LockReport {
    pub templates: usize,
    pub dim: usize,
    /// The bare match thread's phases (without `--gate`).
    #[serde(flatten)]
    pub matcher: Option<MatcherPhases>,
    /// The gate camera's phases (with `--gate`).
    pub gate: Option<GatePhases>,
    pub enrolments_done: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct MatcherPhases {
    pub quiet: Latency,
    /// Reloads as the gateway does them now (built off the lock, swapped).
    pub reload: Latency,
    /// Reloads rebuilt under the gallery lock (before this change).
    pub reload_under_lock: Latency,
    /// Four concurrent enrolments as the API does them now.
    pub enrol: Option<Latency>,
    /// The same with decoding and the models under the gallery lock.
    pub enrol_under_lock: Option<Latency>,
    /// p99 during the phase / p99 quiet.
    pub ratio_reload_p99: f64,
    pub ratio_reload_under_lock_p99: f64,
    pub ratio_enrol_p99: Option<f64>,
    pub ratio_enrol_under_lock_p99: Option<f64>,
}

/// The gate camera's figures per phase (see [`SlotReport`]): frame →
/// processed for every frame taken, frame → decision for the frames that
/// decided (owner pass, stranger, …). The ratios are a phase's p99 over the
/// mean of the two quiet phases' (one first, one last: the spread between
/// them is the noise).
#[derive(Debug, Clone, Serialize)]
pub struct GatePhases {
    pub video: String,
    pub detect_fps: f32,
    pub owner_enrolled: bool,
    pub quiet: SlotReport,
    pub reload: SlotReport,
    pub reload_under_lock: SlotReport,
    pub enrol: Option<SlotReport>,
    pub enrol_under_lock: Option<SlotReport>,
    pub quiet_after: SlotReport,
    pub ratio_reload_frame_p99: Option<f64>,
    pub ratio_reload_decision_p99: Option<f64>,
    pub ratio_enrol_frame_p99: Option<f64>,
    pub ratio_enrol_decision_p99: Option<f64>,
    pub ratio_reload_under_lock_frame_p99: Option<f64>,
    pub ratio_enrol_under_lock_frame_p99: Option<f64>,
}

fn latency(mut v: Vec<f64>) -> Latency {
    Latency {
        matches: v.len(),
        p50_ms: percentile(&mut v, 0.5).unwrap_or(f64::NAN),
        p99_ms: percentile(&mut v, 0.99).unwrap_or(f64::NAN),
        max_ms: v.last().map_or(f64::NAN, |x| x * 1000.0),
    }
}

/// What a phase measures: a bare match every 10 ms, or a gate camera
/// through the whole pipeline.
enum Probe {
    Matcher {
        dim: usize,
    },
    Gate {
        consumer: Box<Consumer>,
        video: IngestSource,
    },
}

/// What a phase measured.
enum Sample {
    /// Match latencies, seconds.
    Matches(Vec<f64>),
    Gate(Box<WorkerResult>),
}

impl Sample {
    fn matches(self) -> Vec<f64> {
        match self {
            Sample::Matches(v) => v,
            Sample::Gate(_) => Vec::new(),
        }
    }

    fn gate(self) -> SlotReport {
        match self {
            Sample::Gate(r) => r.report(),
            Sample::Matches(_) => SlotReport::default(),
        }
    }
}

/// Runs the probe on this thread for `seconds` while `load` runs on another.
fn camera_while(
    shared: &Mutex<Gallery>,
    probe: &mut Probe,
    seconds: f64,
    load: impl Fn(&std::sync::atomic::AtomicBool) + Sync,
) -> Result<Sample, String> {
    use crate::identify::Matcher;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| load(&stop));
        let out = match probe {
            Probe::Matcher { dim } => {
                let mut rng = SplitMix64(0x5eed_face_0003);
                let mut lat = Vec::new();
                let t0 = Instant::now();
                while t0.elapsed().as_secs_f64() < seconds {
                    let probe = random_unit(&mut rng, *dim);
                    let t = Instant::now();
                    let _ = std::hint::black_box(shared.best(&probe, 5, OffsetDateTime::now_utc()));
                    lat.push(t.elapsed().as_secs_f64());
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(Sample::Matches(lat))
            }
            Probe::Gate { consumer, video } => {
                // The camera from the start of its clip in every phase, so
                // that each phase sees the same faces.
                let cancel = CancellationToken::new();
                let (tx, _rx) = tokio::sync::mpsc::channel(64);
                let spec = CameraSpec::new("bench-gate".to_owned(), video.camera_url());
                match spawn_camera(spec, tx, cancel.clone()) {
                    Ok(h) => {
                        std::thread::sleep(WARM_UP);
                        let r = consumer.run(&h, Instant::now(), Duration::from_secs_f64(seconds));
                        cancel.cancel();
                        h.stop();
                        h.join();
                        r.map(|r| Sample::Gate(Box::new(r)))
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        stop.store(true, Ordering::SeqCst);
        out
    })
}

pub fn lock_contention(config: &Config, b: &LockBench, db: &Path) -> Result<LockReport, String> {
    use crate::identify::{EnrolRules, PhotoUpload, enrolment_templates};
    use crate::registry::{Consent, ConsentMethod, NewOwner};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let now = OffsetDateTime::now_utc();
    if b.gate.is_none() && !b.gate_owner.is_empty() {
        return Err("bench lock: --gate-owner needs --gate".into());
    }
    if let Some(IngestSource::File(p)) = b.gate.as_ref().map(|g| &g.video)
        && !p.is_file()
    {
        return Err(format!("bench lock: {}: no such file", p.display()));
    }
    let engine = match (&b.photos, &b.gate) {
        (None, None) => None,
        _ => Some(Mutex::new(FaceEngine::new(config).map_err(|e| err(&e))?)),
    };
    let (model_id, dim) = match &engine {
        Some(e) => {
            let e = e.lock().map_err(|_| "engine lock".to_string())?;
            (e.model_id().to_owned(), e.dim())
        }
        None => ("bench".to_owned(), template_dim(config)),
    };
    // The gallery: 1000 owners × (templates / 1000) random templates, in a
    // fresh file.
    if db.exists() {
        return Err(format!(
            "bench lock: {} exists; give a new path (the bench fills it)",
            db.display()
        ));
    }
    let mut reg = Registry::open(db).map_err(|e| err(&e))?;
    let per = b.templates.div_ceil(1000).max(1);
    let consent = Consent::new(now, ConsentMethod::Written, "bench");
    let owner = |i: usize| NewOwner {
        id: format!("bench-{i:05}"),
        name: format!("Bench {i}"),
        building: None,
        unit: None,
        grid_code: None,
        minor_under_14: false,
    };
    let (mut made, mut owners) = (0, 0);
    while made < b.templates {
        let n = per.min(b.templates - made);
        let faces: Vec<crate::registry::FaceTemplate> = (0..n)
            .map(|j| crate::registry::FaceTemplate {
                model_id: model_id.clone(),
                embedding: template_of(made + j, dim),
                quality: 0.9,
                photo: None,
            })
            .collect();
        reg.enroll(&owner(owners), &consent, &faces, "bench", now)
            .map_err(|e| err(&e))?;
        made += n;
        owners += 1;
    }
    let gallery = Gallery::open(reg, &model_id, dim, now).map_err(|e| err(&e))?;
    let shared = Arc::new(Mutex::new(gallery));
    let rules = EnrolRules {
        limits: crate::vision::image::PhotoLimits {
            max_bytes: config.storage.max_photo_bytes,
            max_pixels: config.storage.max_photo_pixels,
        },
        threshold: config.matching.threshold,
        keep_photo: false,
    };
    // The gate video's resident, enrolled as the API would.
    let owner_enrolled = match (&engine, b.gate_owner.is_empty()) {
        (Some(engine), false) => {
            let mut uploads = Vec::new();
            for p in &b.gate_owner {
                uploads.push(PhotoUpload {
                    name: p.display().to_string(),
                    bytes: std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?,
                });
            }
            let mut engine = engine.lock().map_err(|_| "engine lock".to_string())?;
            let t = enrolment_templates(
                &mut engine,
                &*shared,
                uploads,
                Some("gate-owner"),
                rules,
                now,
            )
            .map_err(|e| format!("bench lock: --gate-owner: {e}"))?;
            shared
                .lock()
                .map_err(|_| "gallery lock".to_string())?
                .enroll(&owner_named("gate-owner"), &consent, &t, "bench", now)
                .map_err(|e| err(&e))?;
            true
        }
        _ => false,
    };
    let mut probe = match &b.gate {
        Some(g) => {
            let plan = WorkerPlan {
                period: Duration::from_secs_f64(1.0 / g.detect_fps.max(0.1) as f64),
                role: CameraRole::Gate,
                // `motion_skip` as shipped (on by default).
                motion_skip: true,
                nice: 0,
            };
            Probe::Gate {
                consumer: Box::new(Consumer::new(
                    "bench-gate",
                    Some(shared.clone()),
                    config,
                    plan,
                )?),
                video: g.video.clone(),
            }
        }
        None => Probe::Matcher { dim },
    };
    let shared = &*shared;
    let mut other = Registry::open(db).map_err(|e| err(&e))?;
    let quiet = camera_while(shared, &mut probe, b.seconds, |_| {})?;
    // A change by another connection (the CLI), then a reload, in a loop.
    let touch = |other: &mut Registry, k: usize| {
        let patch = crate::registry::OwnerPatch {
            name: Some(format!("Bench renamed {k}")),
            ..Default::default()
        };
        let _ = other.update_owner("bench-00000", &patch, "bench", OffsetDateTime::now_utc());
    };
    let other = Mutex::new(&mut other);
    let reloads = AtomicUsize::new(0);
    let reload = camera_while(shared, &mut probe, b.seconds, |stop| {
        while !stop.load(Ordering::SeqCst) {
            let k = reloads.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut o) = other.lock() {
                touch(&mut o, k);
            }
            let _ = Gallery::reload_if_changed(shared, db, OffsetDateTime::now_utc());
        }
    })?;
    let reload_under_lock = camera_while(shared, &mut probe, b.seconds, |stop| {
        while !stop.load(Ordering::SeqCst) {
            if let Ok(mut g) = shared.lock() {
                let _ = g.reload(OffsetDateTime::now_utc());
            }
            // Let the camera thread at the lock between reloads: std's
            // mutex is not fair, and without a pause this loop can take it
            // back for minutes (the old gateway reloaded every 30 s).
            std::thread::sleep(Duration::from_millis(5));
        }
    })?;
    let done = AtomicUsize::new(0);
    let (enrol, enrol_under_lock) = match (&engine, &b.photos) {
        (Some(engine), Some(dir)) => {
            let people = enrolment_people(dir)?;
            let mut run = |under_lock: bool, round: usize| {
                camera_while(shared, &mut probe, b.seconds, |stop| {
                    std::thread::scope(|s| {
                        for (p, photos) in people.iter().enumerate() {
                            let done = &done;
                            let consent = &consent;
                            s.spawn(move || {
                                let mut k = 0;
                                while !stop.load(Ordering::SeqCst) {
                                    let uploads: Vec<PhotoUpload> = photos
                                        .iter()
                                        .enumerate()
                                        .map(|(i, bytes)| PhotoUpload {
                                            name: format!("{p}-{i}.jpg"),
                                            bytes: bytes.clone(),
                                        })
                                        .collect();
                                    let id = format!("enrol-{round}-{p}-{k}");
                                    k += 1;
                                    let now = OffsetDateTime::now_utc();
                                    let Ok(mut engine) = engine.lock() else {
                                        return;
                                    };
                                    let ok = if under_lock {
                                        // Before: the gallery locked through decoding and models.
                                        let Ok(mut g) = shared.lock() else { return };
                                        enrolment_templates(
                                            &mut engine,
                                            &*g,
                                            uploads,
                                            Some(&id),
                                            rules,
                                            now,
                                        )
                                        .ok()
                                        .and_then(|t| {
                                            g.enroll(&owner_named(&id), consent, &t, "bench", now)
                                                .ok()
                                        })
                                    } else {
                                        let t = enrolment_templates(
                                            &mut engine,
                                            shared,
                                            uploads,
                                            Some(&id),
                                            rules,
                                            now,
                                        );
                                        drop(engine);
                                        t.ok().and_then(|t| {
                                            shared
                                                .lock()
                                                .ok()?
                                                .enroll(
                                                    &owner_named(&id),
                                                    consent,
                                                    &t,
                                                    "bench",
                                                    now,
                                                )
                                                .ok()
                                        })
                                    };
                                    if ok.is_some() {
                                        done.fetch_add(1, Ordering::SeqCst);
                                    }
                                }
                            });
                        }
                    });
                })
            };
            (Some(run(false, 0)?), Some(run(true, 1)?))
        }
        _ => (None, None),
    };
    let gate_mode = matches!(probe, Probe::Gate { .. });
    let quiet_after = if gate_mode {
        Some(camera_while(shared, &mut probe, b.seconds, |_| {})?)
    } else {
        None
    };
    drop(probe);
    let enrolments_done = done.load(Ordering::SeqCst);
    let (matcher, gate) = match (&b.gate, quiet_after) {
        (Some(g), Some(quiet_after)) => {
            let quiet = quiet.gate();
            let quiet_after = quiet_after.gate();
            let base = |f: fn(&SlotReport) -> Option<f64>| match (f(&quiet), f(&quiet_after)) {
                (Some(a), Some(b)) => Some((a + b) / 2.0),
                (a, b) => a.or(b),
            };
            let frame = |r: &SlotReport| r.frame_latency_p99_ms;
            let decision = |r: &SlotReport| r.decision_latency_p99_ms;
            let ratio = |r: Option<&SlotReport>, f: fn(&SlotReport) -> Option<f64>| {
                Some(f(r?)? / base(f).filter(|b| *b > 0.0)?)
            };
            let reload = reload.gate();
            let reload_under_lock = reload_under_lock.gate();
            let enrol = enrol.map(Sample::gate);
            let enrol_under_lock = enrol_under_lock.map(Sample::gate);
            let phases = GatePhases {
                video: g.video.display(),
                detect_fps: g.detect_fps,
                owner_enrolled,
                ratio_reload_frame_p99: ratio(Some(&reload), frame),
                ratio_reload_decision_p99: ratio(Some(&reload), decision),
                ratio_enrol_frame_p99: ratio(enrol.as_ref(), frame),
                ratio_enrol_decision_p99: ratio(enrol.as_ref(), decision),
                ratio_reload_under_lock_frame_p99: ratio(Some(&reload_under_lock), frame),
                ratio_enrol_under_lock_frame_p99: ratio(enrol_under_lock.as_ref(), frame),
                quiet,
                reload,
                reload_under_lock,
                enrol,
                enrol_under_lock,
                quiet_after,
            };
            (None, Some(phases))
        }
        _ => {
            let quiet = latency(quiet.matches());
            let ratio = |l: &Latency| l.p99_ms / quiet.p99_ms;
            let reload = latency(reload.matches());
            let reload_under_lock = latency(reload_under_lock.matches());
            let enrol = enrol.map(|s| latency(s.matches()));
            let enrol_under_lock = enrol_under_lock.map(|s| latency(s.matches()));
            let phases = MatcherPhases {
                ratio_reload_p99: ratio(&reload),
                ratio_reload_under_lock_p99: ratio(&reload_under_lock),
                ratio_enrol_p99: enrol.as_ref().map(ratio),
                ratio_enrol_under_lock_p99: enrol_under_lock.as_ref().map(ratio),
                quiet,
                reload,
                reload_under_lock,
                enrol,
                enrol_under_lock,
            };
            (Some(phases), None)
        }
    };
    Ok(LockReport {
        templates: b.templates,
        dim,
        matcher,
        gate,
        enrolments_done,
    })
}

fn owner_named(id: &str) -> crate::registry::NewOwner {
    crate::registry::NewOwner {
        id: id.to_owned(),
        name: id.to_owned(),
        building: None,
        unit: None,
        grid_code: None,
        minor_under_14: false,
    }
}

/// Four people's photos (up to 10 each, enlarged 2× in memory, never
/// written anywhere) from `<dir>/<person>/*.jpg`.
fn enrolment_people(dir: &Path) -> Result<Vec<Vec<Vec<u8>>>, String> {
    let mut people: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    people.sort();
    let mut out = Vec::new();
    for person in people.into_iter().take(4) {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&person)
            .map_err(|e| format!("{}: {e}", person.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
            .collect();
        files.sort();
        let mut photos = Vec::new();
        for i in 0..10 {
            let Some(f) = files.get(i % files.len().max(1)) else {
                break;
            };
            let img = image::open(f)
                .map_err(|e| format!("{}: {e}", f.display()))?
                .to_rgb8();
            let big = image::imageops::resize(
                &img,
                img.width() * 2,
                img.height() * 2,
                image::imageops::FilterType::Triangle,
            );
            let mut bytes = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95)
                .encode_image(&big)
                .map_err(|e| e.to_string())?;
            photos.push(bytes);
        }
        out.push(photos);
    }
    if out.len() < 4 {
        return Err(format!("{}: four people's folders needed", dir.display()));
    }
    Ok(out)
}

/// VmRSS of this process, MiB.
fn resident_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// A small fixed-seed PRNG (SplitMix64): the same synthetic templates every
/// run (`facegate bench`, `benches/search.rs`), no extra crate.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Standard normal (Box–Muller): normal coordinates give directions
    /// uniform on the sphere.
    pub fn next_normal(&mut self) -> f32 {
        let mut unit = || ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
        let (u, v) = (unit(), unit());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

/// A direction uniform on the unit sphere of `dim` dimensions.
pub fn random_unit(rng: &mut SplitMix64, dim: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dim).map(|_| rng.next_normal()).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// Template `i`, seeded by its position so a probe can be made from it
/// again without keeping every template around.
fn template_of(i: usize, dim: usize) -> Vec<f32> {
    random_unit(&mut SplitMix64(0x7e3a_0000_0000_0000 ^ i as u64), dim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_source_and_its_baseline_match_facegates_pipelines() {
        let f = IngestSource::parse("target/bench-media/a.mp4").unwrap();
        assert_eq!(f, IngestSource::File("target/bench-media/a.mp4".into()));
        assert_eq!(
            f.baseline_args().join(" "),
            "filesrc location=target/bench-media/a.mp4 ! decodebin ! videoconvert ! video/x-raw,format={I420,NV12} ! fakesink sync=true"
        );
        let r = IngestSource::parse("rtsp://127.0.0.1:8554/faces").unwrap();
        assert_eq!(
            r.camera_url(),
            CameraUrl::Rtsp("rtsp://127.0.0.1:8554/faces".into())
        );
        assert_eq!(
            r.baseline_args().join(" "),
            "rtspsrc location=rtsp://127.0.0.1:8554/faces protocols=tcp latency=200 ! decodebin ! videoconvert ! video/x-raw,format={I420,NV12} ! fakesink sync=false"
        );
        assert!(IngestSource::parse("rtsp://u:p@127.0.0.1/x").is_err());
    }

    #[test]
    fn own_cpu_time_is_read_and_grows() {
        let a = own_cpu();
        let mut x = 0u64;
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(own_cpu() > a, "CPU time did not grow");
    }

    #[test]
    fn search_bench_reports_the_shipped_template_size() {
        let config = Config::default();
        assert_eq!(
            template_dim(&config),
            704,
            "arcface 512 + mobilefacenet 192"
        );
        let r = search(&SearchBench {
            templates: 3000,
            dim: 704,
            queries: 40,
            k: 5,
            exhaustive: false,
        })
        .expect("bench search");
        assert_eq!(
            (r.templates, r.dim, r.queries, r.checked_exact),
            (3000, 704, 40, 20)
        );
        assert!(r.p50_ms > 0.0 && r.p99_ms >= r.p50_ms, "{r:?}");
        assert!(r.rss_mib > r.index_mib && r.index_mib > 0.0, "{r:?}");
        let json = serde_json::to_value(&r).expect("json");
        for key in ["templates", "dim", "p50_ms", "p99_ms", "rss_mib"] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
    }

    #[test]
    fn percentiles_pick_the_right_rank() {
        let mut v: Vec<f64> = (1..=100).map(|i| i as f64 / 1000.0).collect();
        assert_eq!(percentile(&mut v, 0.5).map(|x| x.round()), Some(51.0));
        assert_eq!(percentile(&mut v, 0.99).map(|x| x.round()), Some(99.0));
        assert!(percentile(&mut [], 0.5).is_none());
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// Drives a ledger like the bench's worker, on a fake clock: a source
    /// delivering a frame every `frame_ms` (the newest one is taken, aged
    /// since it arrived), a worker needing `work_ms(k)` for its k-th frame.
    fn simulate(
        period_ms: u64,
        frame_ms: u64,
        run_ms: u64,
        work_ms: impl Fn(u64) -> u64,
    ) -> SlotLedger {
        let mut ledger = SlotLedger::new(ms(period_ms), STALE_AFTER);
        let (mut now, mut k) = (0u64, 0u64);
        while now < run_ms {
            match ledger.turn(ms(now)) {
                SlotTurn::Wait(d) => now += d.as_millis() as u64,
                SlotTurn::Take { .. } => {
                    let age = now % frame_ms;
                    ledger.close(ms(now), Some(ms(age)));
                    now += work_ms(k);
                    k += 1;
                }
            }
        }
        ledger.finish(ms(now.min(run_ms)));
        ledger
    }

    #[test]
    fn a_quick_worker_on_a_steady_source_misses_nothing() {
        // 3 fps for 20 s, 15 ms per frame (decode-only RGB scaling).
        let l = simulate(333, 40, 20_000, |_| 15);
        assert_eq!(l.missed(), 0, "{l:?}");
        assert_eq!(l.slots(), 61, "20 s at 3 fps: slots 0..=60 opened");
    }

    #[test]
    fn sleeping_past_the_slot_start_is_not_a_miss() {
        // The thread wakes a little late for every slot (scheduler jitter).
        let mut l = SlotLedger::new(ms(100), STALE_AFTER);
        for k in 0..10u64 {
            assert_eq!(
                l.turn(ms(k * 100 + 7)),
                SlotTurn::Take {
                    ends: ms(k * 100 + 100)
                }
            );
            assert!(l.close(ms(k * 100 + 8), Some(ms(20))));
            assert_eq!(l.turn(ms(k * 100 + 30)), SlotTurn::Wait(ms(70)));
        }
        assert_eq!((l.slots(), l.missed()), (10, 0));
    }

    #[test]
    fn a_worker_busy_for_one_and_a_half_periods_misses_every_other_slot() {
        // 500 ms of work at 3 fps: take at 0, free at 500 (slot 1 open, take),
        // free at 1000 (slot 2 ended at 999: missed; slot 3 open, take), …
        let l = simulate(333, 40, 10_000, |_| 500);
        let pct = l.missed() as f64 / l.slots() as f64;
        assert!((0.3..0.37).contains(&pct), "{pct} {l:?}");
        assert_eq!(l.missed_no_frame + l.missed_stale, 0);
    }

    #[test]
    fn one_slow_frame_costs_the_slots_it_covers() {
        // Frame 3 (taken at 300 ms) takes 1.1 s: the ten slots that open and
        // close meanwhile are missed; the one it ends in is served.
        let l = simulate(100, 40, 3_000, |k| if k == 3 { 1_100 } else { 10 });
        assert_eq!(l.missed_busy, 10, "{l:?}");
        assert_eq!(l.slots(), 30);
    }

    #[test]
    fn no_frame_or_a_late_or_stale_one_is_a_miss() {
        let mut l = SlotLedger::new(ms(100), STALE_AFTER);
        assert_eq!(l.turn(ms(0)), SlotTurn::Take { ends: ms(100) });
        assert!(
            !l.close(ms(100), None),
            "waited the whole slot, nothing came"
        );
        assert_eq!(l.turn(ms(100)), SlotTurn::Take { ends: ms(200) });
        assert!(
            !l.close(ms(200), Some(ms(0))),
            "came just as the slot ended"
        );
        assert_eq!(l.turn(ms(200)), SlotTurn::Take { ends: ms(300) });
        assert!(
            !l.close(ms(201), Some(ms(150))),
            "waited 150 ms in the slot"
        );
        assert_eq!(l.turn(ms(300)), SlotTurn::Take { ends: ms(400) });
        assert!(l.close(ms(301), Some(ms(100))), "100 ms is not yet stale");
        assert_eq!(
            (l.missed_no_frame, l.missed_stale, l.served, l.missed_busy),
            (2, 1, 1, 0)
        );
    }

    #[test]
    fn busy_past_the_end_counts_only_slots_that_ended_in_the_run() {
        let mut l = SlotLedger::new(ms(100), STALE_AFTER);
        assert!(matches!(l.turn(ms(0)), SlotTurn::Take { .. }));
        assert!(l.close(ms(1), Some(ms(1))));
        // Busy from 1 ms to 5 s; the run ended at 1.05 s.
        l.finish(ms(1_050));
        assert_eq!((l.served, l.missed_busy, l.slots()), (1, 9, 10));
    }
}
