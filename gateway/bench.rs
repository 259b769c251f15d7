//! The gateway's own ingest bench (`facegate bench ingest`): CPU per stream
//! against a bare `gst-launch-1.0` decode of the same file in the same run,
//! frames dropped at a detection rate, and frame → decision latency.
//!
//! Streams are looped files played in real time (the same decode work as a
//! camera, without a network in the measurement).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::pipeline::{CameraContext, Processor, process_frame};
use crate::registry::{Gallery, Registry};
use crate::source::{CameraSpec, CameraUrl, spawn_camera};
use crate::vision::FaceEngine;

#[derive(Debug, Clone)]
pub struct IngestBench {
    pub video: PathBuf,
    pub streams: usize,
    pub seconds: f64,
    /// Detection rate per stream; 0 = decode only (frames taken and scaled
    /// at 3 fps, no models).
    pub detect_fps: f32,
    /// Also time a bare gst-launch decode of the same file for comparison.
    pub baseline: bool,
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
    /// The same for `gst-launch-1.0 … decodebin ! videoconvert ! fakesink sync=true`.
    pub baseline_cpu_per_stream: Option<f64>,
    pub ratio_to_baseline: Option<f64>,
    pub fps_in_per_stream: f64,
    /// Detection slots (seconds × detect rate × streams) and how many were missed
    /// because the box could not keep up.
    pub sampled_slots: u64,
    pub sampled_missed: u64,
    pub sampled_missed_pct: f64,
    /// Frame arrival → frame fully processed (detect, embed, track, decide), ms.
    pub frame_latency_p50_ms: Option<f64>,
    pub frame_latency_p99_ms: Option<f64>,
    /// Frame arrival → decision, for frames that produced a decision, ms.
    pub decision_latency_p50_ms: Option<f64>,
    pub decision_latency_p99_ms: Option<f64>,
    pub decisions: usize,
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

/// CPU of `gst-launch-1.0` decoding the file in real time, per wall second.
fn baseline_cpu(video: &Path, streams: usize, seconds: f64) -> Result<f64, String> {
    let mut children: Vec<Child> = Vec::new();
    for _ in 0..streams {
        let child = Command::new("gst-launch-1.0")
            .args([
                "-q",
                "filesrc",
                &format!("location={}", video.display()),
                "!",
                "decodebin",
                "!",
                "videoconvert",
                "!",
                "video/x-raw,format=I420",
                "!",
                "fakesink",
                "sync=true",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("gst-launch-1.0: {e} (package gstreamer1.0-tools)"))?;
        children.push(child);
    }
    let length = video_seconds(video).unwrap_or(0.0);
    if length + 0.5 < seconds + 1.0 {
        return Err(format!(
            "{} is {length:.1} s long; the baseline needs at least {:.0} s (gst-launch does not loop): benches/ingest.sh makes such files",
            video.display(),
            seconds + 1.0
        ));
    }
    // Skip the start-up, then measure over `seconds`.
    std::thread::sleep(Duration::from_millis(800));
    let cpu0: Duration = children
        .iter()
        .map(|c| cpu_of(&format!("/proc/{}/stat", c.id())).unwrap_or_default())
        .sum();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let wall = t0.elapsed().as_secs_f64();
    let mut cpu = Duration::ZERO;
    for c in &mut children {
        cpu += cpu_of(&format!("/proc/{}/stat", c.id())).unwrap_or_default();
        let _ = c.kill();
        let _ = c.wait();
    }
    Ok(cpu.saturating_sub(cpu0).as_secs_f64() / wall / streams as f64)
}

/// Length of a video from the replay source (frames × period), or None.
fn video_seconds(video: &Path) -> Option<f64> {
    let mut last = 0.0;
    for f in crate::source::Replay::open(video).ok()? {
        last = f.ok()?.pts?.as_secs_f64();
    }
    Some(last)
}

/// Runs the bench. The video must be at least `seconds` long for the
/// baseline (gst-launch does not loop); facegate's file source loops.
pub fn ingest(config: &Config, b: &IngestBench, db: &Path) -> Result<IngestReport, String> {
    let baseline = if b.baseline {
        Some(baseline_cpu(&b.video, b.streams, b.seconds)?)
    } else {
        None
    };
    let cancel = CancellationToken::new();
    let (tx, _rx) = tokio::sync::mpsc::channel(64);
    let url = CameraUrl::File(b.video.clone());
    let mut handles = Vec::new();
    for i in 0..b.streams {
        let spec = CameraSpec::new(format!("bench-{i}"), url.clone());
        handles.push(Arc::new(
            spawn_camera(spec, tx.clone(), cancel.clone()).map_err(|e| e.to_string())?,
        ));
    }
    let gallery = if b.detect_fps > 0.0 {
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
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    // Let the pipelines start before measuring.
    std::thread::sleep(Duration::from_millis(1500));
    let cpu0 = own_cpu();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(b.seconds);
    let frames0: u64 = handles.iter().map(|h| h.status().frames_total).sum();
    let mut workers = Vec::new();
    let max_side = config.detector().max_side;
    for h in &handles {
        let h = h.clone();
        let gallery = gallery.clone();
        let config = config.clone();
        workers.push(std::thread::spawn(
            move || -> Result<(u64, u64, Vec<f64>, Vec<f64>), String> {
                let mut engine_proc = match &gallery {
                    Some(_) => {
                        let cam: crate::config::CameraConfig = toml::from_str(&format!(
                            "name = \"{}\"\nurl = \"file:///bench\"\nrole = \"gate\"\n",
                            h.name()
                        ))
                        .map_err(|e| e.to_string())?;
                        let ctx = CameraContext::from_config(&cam, &config);
                        Some((
                            FaceEngine::new(&config).map_err(|e| e.to_string())?,
                            Processor::new(ctx, &config, "bench"),
                        ))
                    }
                    None => None,
                };
                let (mut slots, mut missed) = (0u64, 0u64);
                let (mut frame_lat, mut decision_lat) = (Vec::new(), Vec::new());
                let start = Instant::now();
                let mut due = Instant::now();
                while Instant::now() < deadline {
                    let now = Instant::now();
                    if now < due {
                        std::thread::sleep(due - now);
                        continue;
                    }
                    // Slots that passed while we were busy are missed samples.
                    let behind = ((now - due).as_secs_f64() / period.as_secs_f64()).floor() as u64;
                    missed += behind;
                    slots += behind + 1;
                    due += period * (behind as u32 + 1);
                    let Some(frame) = h.slot().wait_newest(Duration::from_millis(500)) else {
                        missed += 1;
                        continue;
                    };
                    match (&mut engine_proc, &gallery) {
                        (Some((engine, proc_)), Some(g)) => {
                            let t = start.elapsed().as_secs_f64();
                            let events = process_frame(proc_, engine, g, &frame, max_side, t)
                                .map_err(|e| e.to_string())?;
                            let l = frame.arrived.elapsed().as_secs_f64();
                            frame_lat.push(l);
                            if !events.is_empty() {
                                decision_lat.push(l);
                            }
                        }
                        _ => {
                            let _ = frame.to_rgb_scaled(max_side).map_err(|e| e.to_string())?;
                            frame_lat.push(frame.arrived.elapsed().as_secs_f64());
                        }
                    }
                }
                Ok((slots, missed, frame_lat, decision_lat))
            },
        ));
    }
    let (mut slots, mut missed, mut frame_lat, mut decision_lat) = (0, 0, Vec::new(), Vec::new());
    for w in workers {
        let (s, m, f, d) = w
            .join()
            .map_err(|_| "bench worker panicked".to_string())??;
        slots += s;
        missed += m;
        frame_lat.extend(f);
        decision_lat.extend(d);
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (own_cpu() - cpu0).as_secs_f64();
    let frames1: u64 = handles.iter().map(|h| h.status().frames_total).sum();
    let (width, height) = handles
        .first()
        .and_then(|h| h.slot().take_newest())
        .map_or((0, 0), |f| (f.width, f.height));
    cancel.cancel();
    for h in &handles {
        h.stop();
    }
    let per_stream = cpu / wall / b.streams as f64;
    Ok(IngestReport {
        video: b.video.display().to_string(),
        width,
        height,
        streams: b.streams,
        seconds: wall,
        detect_fps: b.detect_fps,
        cpu_per_stream: per_stream,
        baseline_cpu_per_stream: baseline,
        ratio_to_baseline: baseline.filter(|b| *b > 0.0).map(|b| per_stream / b),
        fps_in_per_stream: (frames1 - frames0) as f64 / wall / b.streams as f64,
        sampled_slots: slots,
        sampled_missed: missed,
        sampled_missed_pct: if slots == 0 {
            0.0
        } else {
            missed as f64 * 100.0 / slots as f64
        },
        frame_latency_p50_ms: percentile(&mut frame_lat, 0.5),
        frame_latency_p99_ms: percentile(&mut frame_lat, 0.99),
        decision_latency_p50_ms: percentile(&mut decision_lat, 0.5),
        decision_latency_p99_ms: percentile(&mut decision_lat, 0.99),
        decisions: decision_lat.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn percentiles_pick_the_right_rank() {
        let mut v: Vec<f64> = (1..=100).map(|i| i as f64 / 1000.0).collect();
        assert_eq!(percentile(&mut v, 0.5).map(|x| x.round()), Some(51.0));
        assert_eq!(percentile(&mut v, 0.99).map(|x| x.round()), Some(99.0));
        assert!(percentile(&mut [], 0.5).is_none());
    }
}
