//! One supervisor per camera: build the pipeline, watch it, tear it down
//! and rebuild it with backoff when it errors, ends or stalls.
//!
//! The supervisor is a plain thread (GStreamer state changes can block for
//! a while, e.g. rtspsrc's TEARDOWN): it polls the pipeline's bus with a
//! short timeout, so cancellation, the stall watchdog and the `Online`
//! event all react within [`TICK`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use gstreamer as gst;
use gstreamer::prelude::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::backoff::Backoff;
use super::pipeline::{self, describe};
use super::status::{FpsMeter, StatusCell};
use super::{
    CameraEvent, CameraSpec, CameraState, CameraStatus, CameraUrl, FrameSlot, OfflineCause,
    SourceError,
};

/// How often the supervisor looks at its camera when the bus is quiet.
const TICK: Duration = Duration::from_millis(100);
/// The window of the fps figures in [`CameraStatus`].
const FPS_WINDOW: Duration = Duration::from_secs(5);
/// Events kept while the receiver is full; older ones are dropped (the
/// status snapshot stays authoritative).
const MAX_PENDING_EVENTS: usize = 64;

/// A running camera. Dropping the handle stops the camera (the library
/// spawns nothing it cannot stop); [`CameraHandle::stopped`] or
/// [`CameraHandle::join`] wait until its pipeline is gone.
#[derive(Debug)]
pub struct CameraHandle {
    name: Arc<str>,
    slot: Arc<FrameSlot>,
    status: Arc<StatusCell>,
    cancel: CancellationToken,
    done: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl CameraHandle {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the newest frame waits; consumers take from here at their own rate.
    pub fn slot(&self) -> &Arc<FrameSlot> {
        &self.slot
    }

    /// The newest frame, waiting up to `timeout` for one, detached from the
    /// decoder's buffer pool ([`Frame::detach`]): what a consumer that works
    /// on the frame for a while should take.
    pub fn wait_frame(&self, timeout: Duration) -> Option<super::Frame> {
        let frame = self.slot.wait_newest(timeout)?;
        match frame.detach() {
            Ok(f) => Some(f),
            Err(e) => {
                warn!(camera = %self.name, error = %e, "frame dropped");
                None
            }
        }
    }

    pub fn status(&self) -> CameraStatus {
        self.status
            .snapshot(self.slot.counters(), self.slot.last_arrival())
    }

    /// Asks this camera to stop (the token given to [`spawn_camera`] stops
    /// all cameras spawned with it). Does not wait.
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    /// Whether the supervisor has ended and its pipeline is in Null.
    pub fn is_stopped(&self) -> bool {
        self.done.is_cancelled()
    }

    /// Resolves once the supervisor has ended (after a cancel).
    pub async fn stopped(&self) {
        self.done.cancelled().await
    }

    /// Blocks until the supervisor thread has ended; stop it first.
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for CameraHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Starts a camera: a supervisor thread that keeps its pipeline running
/// until `cancel` is cancelled, sending [`CameraEvent`]s on `events` (never
/// blocking on it: if the receiver is full, events wait in a small queue).
pub fn spawn_camera(
    spec: CameraSpec,
    events: mpsc::Sender<CameraEvent>,
    cancel: CancellationToken,
) -> Result<CameraHandle, SourceError> {
    super::init()?;
    let name: Arc<str> = spec.name.as_str().into();
    let slot = Arc::new(FrameSlot::new());
    let status = Arc::new(StatusCell::new(spec.name.clone(), spec.url.to_string()));
    let cancel = cancel.child_token();
    let done = CancellationToken::new();
    let supervisor = Supervisor {
        spec,
        camera: name.clone(),
        slot: slot.clone(),
        status: status.clone(),
        cancel: cancel.clone(),
        events,
        pending: VecDeque::new(),
        fps_in: FpsMeter::new(FPS_WINDOW),
        fps_taken: FpsMeter::new(FPS_WINDOW),
        base_nice: crate::sched::current_nice().unwrap_or(0),
    };
    let done_guard = done.clone().drop_guard();
    let thread = std::thread::Builder::new()
        .name(format!("cam-{name}"))
        .spawn(move || {
            let _done = done_guard;
            supervisor.run();
        })
        .map_err(|e| SourceError::Pipeline {
            camera: name.to_string(),
            reason: format!("cannot start the supervisor thread: {e}"),
        })?;
    Ok(CameraHandle {
        name,
        slot,
        status,
        cancel,
        done,
        thread: Some(thread),
    })
}

/// How one pipeline's life ended.
enum Outcome {
    Cancelled,
    Down(Down),
}

struct Down {
    cause: OfflineCause,
    reason: String,
    /// Whether this pipeline delivered a frame (an `Online` was sent).
    was_online: bool,
    /// How long frames flowed before this (zero if none did).
    online_for: Duration,
}

/// Sets the pipeline to Null when it goes out of scope, whatever the path.
///
/// On a thread of its own. When an RTSP server vanishes abruptly (killed,
/// connection reset), GStreamer 1.22's rtspsrc can hang in teardown: our
/// `set_state(Null)` waits for rtspsrc's task, which (closing the session)
/// sets its rtpbin to Null and waits for the stream lock of a pad whose
/// streaming task sits waiting for data that never comes (seen with gdb in
/// tests/faults.rs: about one kill in three). So after [`UNSTICK_AFTER`]
/// a flush-start is sent into rtspsrc's RTP elements ([`unstick`]), which
/// wakes those tasks and lets the teardown finish. Before that fix each hung
/// pipeline was abandoned with its threads, 1.6 fds and 0.7 MB. A pipeline
/// still not stopped [`TEARDOWN_TIMEOUT`] later is abandoned (logged as an
/// error) and the camera reconnects with a new one.
struct NullOnDrop(gst::Pipeline);

/// How long a teardown may take before its RTP elements are flushed.
const UNSTICK_AFTER: Duration = Duration::from_secs(1);
/// How long it may take after that before the pipeline is abandoned.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(3);

impl Drop for NullOnDrop {
    fn drop(&mut self) {
        let pipeline = self.0.clone();
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name("cam-teardown".into())
            .spawn(move || {
                let r = pipeline.set_state(gst::State::Null);
                let _ = done_tx.send(r.map(|_| ()).map_err(|e| e.to_string()));
            });
        if let Err(e) = spawned {
            warn!(error = %e, "no thread for the teardown; stopping the pipeline here");
            if let Err(e) = self.0.set_state(gst::State::Null) {
                warn!(error = %e, "pipeline did not go to Null");
            }
            return;
        }
        let mut result = done_rx.recv_timeout(UNSTICK_AFTER);
        if result.is_err() {
            let kicked = unstick(&self.0);
            info!(
                after_s = UNSTICK_AFTER.as_secs(),
                kicked = %kicked,
                "pipeline teardown hung; flushing its jitter buffers"
            );
            result = done_rx.recv_timeout(TEARDOWN_TIMEOUT);
            if result.is_ok() {
                debug!("pipeline teardown finished after the flush");
            }
        }
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "pipeline did not go to Null"),
            Err(_) => error!(
                timeout_s = TEARDOWN_TIMEOUT.as_secs(),
                "pipeline did not stop in time (GStreamer teardown hung); abandoned, reconnecting with a new one"
            ),
        }
    }
}

/// Sends a flush-start into every element inside rtspsrc that runs its own
/// streaming task, so a task waiting for data lets go of its stream lock;
/// returns the names of the elements flushed.
fn unstick(pipeline: &gst::Pipeline) -> String {
    let mut kicked = Vec::new();
    for el in pipeline.iterate_recurse().into_iter().flatten() {
        let factory = el
            .factory()
            .map(|f| f.name().to_string())
            .unwrap_or_default();
        if !matches!(
            factory.as_str(),
            "rtpjitterbuffer" | "rtpsession" | "rtpssrcdemux" | "rtpptdemux" | "rtpstorage"
        ) {
            continue;
        }
        for pad in el.sink_pads() {
            pad.send_event(gst::event::FlushStart::new());
        }
        for pad in el.src_pads() {
            pad.send_event(gst::event::FlushStart::new());
        }
        kicked.push(format!("{}", el.name()));
    }
    kicked.join(",")
}

struct Supervisor {
    spec: CameraSpec,
    camera: Arc<str>,
    slot: Arc<FrameSlot>,
    status: Arc<StatusCell>,
    cancel: CancellationToken,
    events: mpsc::Sender<CameraEvent>,
    pending: VecDeque<CameraEvent>,
    fps_in: FpsMeter,
    fps_taken: FpsMeter,
    /// The nice value of the thread that started the camera (the process's).
    base_nice: i32,
}

impl Supervisor {
    fn run(mut self) {
        let span = tracing::info_span!("camera", camera = %self.camera);
        let _entered = span.enter();
        info!(url = %self.spec.url, transport = ?self.spec.transport, "camera starting");
        let mut backoff = Backoff::new(self.spec.backoff);
        let mut first = true;
        loop {
            let state = if first {
                CameraState::Starting
            } else {
                CameraState::Reconnecting
            };
            self.status.update(|s| s.state = state);
            let down = match self.run_pipeline() {
                Outcome::Cancelled => break,
                Outcome::Down(down) => down,
            };
            // The pipeline is gone; its last frame is old news.
            self.slot.clear();
            // One Offline per outage: when an online camera goes down, or
            // when the very first start fails; not for every failed retry.
            if first || down.was_online {
                info!(cause = ?down.cause, reason = %down.reason, "camera offline");
                self.emit(CameraEvent::Offline {
                    camera: self.camera.to_string(),
                    cause: down.cause,
                    reason: down.reason.clone(),
                    at: SystemTime::now(),
                });
            } else {
                debug!(reason = %down.reason, "reconnect failed");
            }
            let delay = backoff.after_failure(down.online_for);
            self.status.update(|s| {
                s.state = CameraState::Offline;
                s.last_error = Some(down.reason);
            });
            debug!(delay_s = delay.as_secs_f32(), "retrying");
            if self.sleep(delay) {
                break;
            }
            self.status.update(|s| s.reconnects += 1);
            first = false;
        }
        self.status.update(|s| {
            s.state = CameraState::Stopped;
            s.fps_in = 0.0;
            s.fps_taken = 0.0;
        });
        self.flush_events();
        info!("camera stopped");
    }

    /// Runs one pipeline until it fails or the camera is cancelled.
    fn run_pipeline(&mut self) -> Outcome {
        let error = |reason: String| {
            Outcome::Down(Down {
                cause: OfflineCause::Error,
                reason,
                was_online: false,
                online_for: Duration::ZERO,
            })
        };
        let pipeline = match pipeline::build_live(&self.spec, &self.camera, &self.slot) {
            Ok(p) => NullOnDrop(p),
            Err(e) => return error(e.to_string()),
        };
        let Some(bus) = pipeline.0.bus() else {
            return error("pipeline without a bus".into());
        };
        // Each streaming thread announces itself (stream-status ENTER, from
        // the thread itself) when a task starts on it: set its priority
        // there. GStreamer reuses pool threads across pipelines, so every
        // camera sets it, gates included (to the process's own).
        let target = self.base_nice + self.spec.nice;
        bus.set_sync_handler(move |_, msg| {
            if let gst::MessageView::StreamStatus(s) = msg.view()
                && s.get().0 == gst::StreamStatusType::Enter
            {
                crate::sched::set_this_thread(target);
            }
            gst::BusSyncReply::Pass
        });
        // Counted before starting: a file can deliver frames at once.
        let frames_at_start = self.slot.counters().frames_in;
        if let Err(e) = pipeline.0.set_state(gst::State::Playing) {
            // The bus usually says why (connection refused, file unreadable).
            let reason = bus
                .pop_filtered(&[gst::MessageType::Error])
                .and_then(|m| match m.view() {
                    gst::MessageView::Error(err) => {
                        Some(describe(err.src(), &err.error(), err.debug().as_deref()))
                    }
                    _ => None,
                })
                .unwrap_or_else(|| format!("cannot start the pipeline: {e}"));
            return error(reason);
        }
        let loops = matches!(self.spec.url, CameraUrl::File(_));
        let started = Instant::now();
        let mut online_since: Option<Instant> = None;
        let mut frames_at_loop = frames_at_start;
        loop {
            if self.cancel.is_cancelled() {
                return Outcome::Cancelled;
            }
            let msg = bus.timed_pop_filtered(
                gst::ClockTime::from_mseconds(TICK.as_millis() as u64),
                &[
                    gst::MessageType::Error,
                    gst::MessageType::Eos,
                    gst::MessageType::Warning,
                ],
            );
            let now = Instant::now();
            let frames_in = self.tick_status(now);
            if online_since.is_none() && frames_in > frames_at_start {
                online_since = Some(now);
                info!(
                    after_ms = now.duration_since(started).as_millis() as u64,
                    "camera online"
                );
                self.status.update(|s| s.state = CameraState::Online);
                self.emit(CameraEvent::Online {
                    camera: self.camera.to_string(),
                    at: SystemTime::now(),
                });
            }
            self.flush_events();
            let online_for = online_since.map_or(Duration::ZERO, |t| now.duration_since(t));
            let down = |cause, reason| {
                Outcome::Down(Down {
                    cause,
                    reason,
                    was_online: online_since.is_some(),
                    online_for,
                })
            };
            if let Some(msg) = msg {
                match msg.view() {
                    gst::MessageView::Error(err) => {
                        let reason = describe(err.src(), &err.error(), err.debug().as_deref());
                        return down(OfflineCause::Error, reason);
                    }
                    gst::MessageView::Eos(_) if loops => {
                        // A file that ends without giving a frame would loop
                        // as fast as the CPU goes.
                        if frames_in == frames_at_loop {
                            return down(
                                OfflineCause::Error,
                                "the file ended without a decodable frame".into(),
                            );
                        }
                        frames_at_loop = frames_in;
                        debug!("end of file: looping");
                        if let Err(e) = pipeline.0.seek_simple(
                            gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT,
                            gst::ClockTime::ZERO,
                        ) {
                            return down(OfflineCause::Error, format!("cannot loop the file: {e}"));
                        }
                    }
                    gst::MessageView::Eos(_) => {
                        return down(
                            OfflineCause::Ended,
                            "stream ended (the server closed it)".into(),
                        );
                    }
                    gst::MessageView::Warning(w) => {
                        let text = describe(w.src(), &w.error(), w.debug().as_deref());
                        warn!(warning = %text, "GStreamer warning");
                    }
                    _ => {}
                }
            }
            // The watchdog: a stalled RTSP session sends neither error nor EOS.
            let last = self
                .slot
                .last_arrival()
                .filter(|&t| t >= started)
                .unwrap_or(started);
            let quiet = now.duration_since(last);
            if online_since.is_some() && quiet > self.spec.stall_timeout {
                let reason = format!("stalled: no frame for {:.1} s", quiet.as_secs_f32());
                return down(OfflineCause::Stalled, reason);
            }
            if online_since.is_none() && quiet > self.spec.start_timeout {
                let reason = format!(
                    "stalled: no frame within {:.1} s of starting",
                    quiet.as_secs_f32()
                );
                return down(OfflineCause::Stalled, reason);
            }
        }
    }

    /// Samples the counters into the fps meters; returns frames in so far.
    fn tick_status(&mut self, now: Instant) -> u64 {
        let c = self.slot.counters();
        let fps_in = self.fps_in.sample(now, c.frames_in);
        let fps_taken = self.fps_taken.sample(now, c.taken);
        self.status.update(|s| {
            s.fps_in = fps_in;
            s.fps_taken = fps_taken;
        });
        c.frames_in
    }

    /// Waits `delay` unless cancelled first (then returns true).
    fn sleep(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            if self.cancel.is_cancelled() {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            self.tick_status(now);
            self.flush_events();
            std::thread::sleep(TICK.min(until - now));
        }
    }

    fn emit(&mut self, event: CameraEvent) {
        if self.pending.len() >= MAX_PENDING_EVENTS {
            warn!("event receiver is not keeping up: dropping the oldest camera event");
            self.pending.pop_front();
        }
        self.pending.push_back(event);
        self.flush_events();
    }

    fn flush_events(&mut self) {
        while let Some(event) = self.pending.pop_front() {
            match self.events.try_send(event) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(event)) => {
                    self.pending.push_front(event);
                    return;
                }
                // Nobody listens any more: nothing to keep.
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.pending.clear();
                    return;
                }
            }
        }
    }
}
