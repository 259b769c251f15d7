//! An in-process RTSP server for the ingest tests, on 127.0.0.1 with an
//! OS-assigned port, serving a real clip in an endless loop.
//!
//! The clip is decoded once, in real time, by a *feeder* pipeline
//! (`filesrc ! qtdemux ! decodebin ! videoconvert ! appsink sync=true`) that
//! seeks back to the start at EOS. Each RTSP media is
//! `appsrc is-live do-timestamp ! videoconvert ! x264enc|x265enc ! rtph26Xpay`
//! and the feeder pushes every decoded frame into the live appsrcs. So
//! looping never disturbs RTP timestamps, and a *stall* is simply the feeder
//! not pushing: the RTSP session stays up (keep-alives answered, RTCP sent)
//! but no media flows, like a hung camera.
//!
//! `stop()` closes every client connection and session and removes the
//! listening socket (clients see EOS over TCP); `restart()` listens again on
//! the same port. The server's GLib main context runs on its own thread.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;

/// The folder of test clips: `video/` in `FACEGATE_FACES` (default
/// `../shared/faces`). `None`, after a loud message, when absent; a panic
/// instead when `FACEGATE_REQUIRE_FACES` is set (CI).
pub fn video_dir() -> Option<PathBuf> {
    let faces = std::env::var_os("FACEGATE_FACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/faces"));
    let dir = faces.join("video");
    if dir.join("frec_short_hamilton_clip.mp4").is_file() {
        return Some(dir);
    }
    if std::env::var_os("FACEGATE_REQUIRE_FACES").is_some() {
        panic!(
            "test clips not found in {} and FACEGATE_REQUIRE_FACES is set (CI): set FACEGATE_FACES",
            dir.display()
        );
    }
    eprintln!(
        "\n!!!!! SKIPPED: test clips not found in {} (set FACEGATE_FACES); this test did not run !!!!!\n",
        dir.display()
    );
    None
}

/// The codec the server encodes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
}

impl Codec {
    fn encoder(self) -> &'static str {
        match self {
            Codec::H264 => {
                "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 ! rtph264pay name=pay0 pt=96 config-interval=-1"
            }
            Codec::H265 => {
                "x265enc tune=zerolatency speed-preset=ultrafast key-int-max=25 ! rtph265pay name=pay0 pt=96 config-interval=-1"
            }
        }
    }
}

/// What the feeder and the media factories share.
#[derive(Default)]
struct Shared {
    stalled: AtomicBool,
    caps: Mutex<Option<gst::Caps>>,
    sources: Mutex<Vec<glib::WeakRef<gst_app::AppSrc>>>,
    frames_pushed: std::sync::atomic::AtomicU64,
}

/// The test server. Dropping it stops everything it started.
pub struct RtspServer {
    pub port: u16,
    codec: Codec,
    auth: Option<(String, String)>,
    ctx: glib::MainContext,
    main_loop: glib::MainLoop,
    loop_thread: Option<JoinHandle<()>>,
    server: Mutex<Option<(rtsp::RTSPServer, glib::SourceId)>>,
    shared: Arc<Shared>,
    feeder: gst::Pipeline,
    feeder_stop: Arc<AtomicBool>,
    feeder_thread: Option<JoinHandle<()>>,
}

pub const MOUNT: &str = "/cam";

impl RtspServer {
    /// Serves `clip` in a loop at `rtsp://127.0.0.1:PORT/cam`.
    pub fn start(clip: &Path, codec: Codec) -> Self {
        Self::start_with(clip, codec, None)
    }

    /// As [`RtspServer::start`], requiring basic authentication.
    pub fn start_with(clip: &Path, codec: Codec, auth: Option<(&str, &str)>) -> Self {
        gst::init().expect("GStreamer init");
        let shared = Arc::new(Shared::default());
        let (feeder, feeder_stop, feeder_thread) = start_feeder(clip, shared.clone());
        let ctx = glib::MainContext::new();
        let main_loop = glib::MainLoop::new(Some(&ctx), false);
        let loop_thread = {
            let (ctx, main_loop) = (ctx.clone(), main_loop.clone());
            std::thread::Builder::new()
                .name("rtsp-test-server".into())
                .spawn(move || {
                    ctx.with_thread_default(|| main_loop.run())
                        .expect("server main context");
                })
                .expect("server thread")
        };
        let mut s = Self {
            port: 0,
            codec,
            auth: auth.map(|(u, p)| (u.to_owned(), p.to_owned())),
            ctx,
            main_loop,
            loop_thread: Some(loop_thread),
            server: Mutex::new(None),
            shared,
            feeder,
            feeder_stop,
            feeder_thread: Some(feeder_thread),
        };
        s.port = s.listen(0);
        s
    }

    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}{MOUNT}", self.port)
    }

    /// Frames the feeder has pushed into RTSP media so far.
    pub fn frames_pushed(&self) -> u64 {
        self.shared.frames_pushed.load(Ordering::Relaxed)
    }

    /// Creates a server on `port` (0: any) and returns the bound port.
    fn listen(&self, port: u16) -> u16 {
        let server = rtsp::RTSPServer::new();
        server.set_address("127.0.0.1");
        server.set_service(&port.to_string());
        let factory = rtsp::RTSPMediaFactory::new();
        factory.set_launch(&format!(
            "( appsrc name=src is-live=true format=time do-timestamp=true max-buffers=4 leaky-type=downstream ! videoconvert ! {} )",
            self.codec.encoder()
        ));
        factory.set_shared(true);
        let shared = self.shared.clone();
        factory.connect_media_configure(move |_, media| {
            let Ok(bin) = media.element().downcast::<gst::Bin>() else {
                return;
            };
            let Some(src) = bin
                .by_name_recurse_up("src")
                .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            else {
                return;
            };
            if let Some(caps) = shared.caps.lock().unwrap().clone() {
                src.set_caps(Some(&caps));
            }
            let mut sources = shared.sources.lock().unwrap();
            sources.retain(|w| w.upgrade().is_some());
            sources.push(src.downgrade());
        });
        if let Some((user, pass)) = &self.auth {
            let auth = rtsp::RTSPAuth::new();
            let token = rtsp::RTSPToken::builder()
                .field(rtsp::RTSP_TOKEN_MEDIA_FACTORY_ROLE.as_str(), "viewer")
                .build();
            auth.add_basic(rtsp::RTSPAuth::make_basic(user, pass).as_str(), &token);
            server.set_auth(Some(&auth));
            factory.add_role_from_structure(
                &gst::Structure::builder("viewer")
                    .field(rtsp::RTSP_PERM_MEDIA_FACTORY_ACCESS.as_str(), true)
                    .field(rtsp::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT.as_str(), true)
                    .build(),
            );
        }
        server
            .mount_points()
            .expect("mount points")
            .add_factory(MOUNT, factory);
        let id = server.attach(Some(&self.ctx)).expect("RTSP server attach");
        let bound = u16::try_from(server.bound_port()).expect("bound port");
        *self.server.lock().unwrap() = Some((server, id));
        bound
    }

    /// Runs `f` on the server's main context thread and waits for it.
    fn on_ctx(&self, f: impl FnOnce() + Send + 'static) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.ctx.invoke(move || {
            f();
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("server main context did not answer");
    }

    /// The server goes away: client connections and sessions are closed and
    /// the port stops listening.
    pub fn stop(&self) {
        let Some((server, id)) = self.server.lock().unwrap().take() else {
            return;
        };
        let ctx = self.ctx.clone();
        self.on_ctx(move || {
            server.client_filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
            if let Some(pool) = server.session_pool() {
                pool.filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
            }
            // SourceId::remove() panics for a source on a private context:
            // find it on that context and destroy it.
            if let Some(source) = ctx.find_source_by_id(&id) {
                source.destroy();
            }
        });
        self.shared.sources.lock().unwrap().clear();
    }

    /// Listens again on the same port.
    pub fn restart(&self) {
        let port = self.listen(self.port);
        assert_eq!(port, self.port, "restarted on another port");
    }

    /// Stalled: sessions stay open, no media flows.
    pub fn set_stalled(&self, stalled: bool) {
        self.shared.stalled.store(stalled, Ordering::SeqCst);
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.stop();
        self.feeder_stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.feeder_thread.take() {
            let _ = t.join();
        }
        let _ = self.feeder.set_state(gst::State::Null);
        self.main_loop.quit();
        if let Some(t) = self.loop_thread.take() {
            let _ = t.join();
        }
    }
}

/// Decodes `clip` in real time, forever, pushing frames into the live media.
fn start_feeder(
    clip: &Path,
    shared: Arc<Shared>,
) -> (gst::Pipeline, Arc<AtomicBool>, JoinHandle<()>) {
    let launch = format!(
        "filesrc location=\"{}\" ! qtdemux name=d d.video_0 ! queue ! decodebin ! videoconvert \
         ! video/x-raw,format=I420 ! appsink name=sink sync=true max-buffers=2 drop=true",
        clip.display()
    );
    let pipeline = gst::parse::launch(&launch)
        .expect("feeder pipeline")
        .downcast::<gst::Pipeline>()
        .expect("a pipeline");
    let sink = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .expect("feeder appsink");
    let cb_shared = shared.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                {
                    let mut caps = cb_shared.caps.lock().unwrap();
                    if caps.is_none() {
                        *caps = sample.caps_owned();
                    }
                }
                if cb_shared.stalled.load(Ordering::SeqCst) {
                    return Ok(gst::FlowSuccess::Ok);
                }
                // The file's timestamps restart at every loop and mean nothing
                // to a media made later: strip them, so appsrc (do-timestamp)
                // stamps each frame with its own pipeline's running time.
                // (do-timestamp only fills in timestamps that are missing.)
                let Some(mut buffer) = sample.buffer_owned() else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                {
                    let b = buffer.make_mut();
                    b.set_pts(gst::ClockTime::NONE);
                    b.set_dts(gst::ClockTime::NONE);
                    b.set_duration(gst::ClockTime::NONE);
                }
                let caps = sample.caps_owned();
                let mut fresh = gst::Sample::builder().buffer(&buffer);
                if let Some(caps) = &caps {
                    fresh = fresh.caps(caps);
                }
                let sample = fresh.build();
                let sources: Vec<_> = cb_shared
                    .sources
                    .lock()
                    .unwrap()
                    .iter()
                    .filter_map(|w| w.upgrade())
                    .collect();
                for src in sources {
                    if src.push_sample(&sample).is_ok() {
                        cb_shared.frames_pushed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    pipeline
        .set_state(gst::State::Playing)
        .expect("feeder playing");
    // Wait for the clip's caps so media made from now on knows its format.
    let t = Instant::now();
    while shared.caps.lock().unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "feeder gave no frame"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let bus = pipeline.bus().expect("bus");
    let thread = {
        let (stop, pipeline) = (stop.clone(), pipeline.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let Some(msg) = bus.timed_pop_filtered(
                    gst::ClockTime::from_mseconds(50),
                    &[gst::MessageType::Eos, gst::MessageType::Error],
                ) else {
                    continue;
                };
                match msg.view() {
                    gst::MessageView::Eos(_) => {
                        let _ = pipeline.seek_simple(
                            gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT,
                            gst::ClockTime::ZERO,
                        );
                    }
                    gst::MessageView::Error(e) => {
                        eprintln!("test RTSP feeder error: {}", e.error());
                        return;
                    }
                    _ => {}
                }
            }
        })
    };
    (pipeline, stop, thread)
}
