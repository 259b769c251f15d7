//! Camera ingest through real GStreamer: an in-process RTSP server on
//! 127.0.0.1 serving a real clip, a looped file, a still image and replay.
//! Timings are printed (run with `--nocapture` to see them).

#[path = "common/rtsp.rs"]
mod rtsp;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use facegate::config::Transport;
use facegate::source::{
    BackoffPolicy, CameraEvent, CameraHandle, CameraSpec, CameraState, CameraUrl, Frame,
    OfflineCause, Replay, spawn_camera,
};
use rtsp::{Codec, RtspServer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const HAMILTON: &str = "frec_short_hamilton_clip.mp4"; // 640×360, 275 frames, 29.97 fps
const FACENET: &str = "facenet_pytorch_video.mp4"; // 1920×1080, 105 frames
const SHORT: &str = "faceapi_test_video.mp4"; // 820×460, a fraction of a second

/// A spec with short timeouts so failures show up quickly.
fn spec(name: &str, url: CameraUrl, stall_s: f32) -> CameraSpec {
    let mut s = CameraSpec::new(name, url);
    s.stall_timeout = Duration::from_secs_f32(stall_s);
    s.start_timeout = Duration::from_secs_f32(stall_s * 2.0);
    s.backoff = BackoffPolicy {
        initial: Duration::from_millis(250),
        max: Duration::from_secs(1),
        stable_after: Duration::from_secs(5),
    };
    s
}

fn rtsp_url(server: &RtspServer) -> CameraUrl {
    CameraUrl::parse(&server.url()).unwrap()
}

struct Cam {
    handle: CameraHandle,
    events: mpsc::Receiver<CameraEvent>,
    cancel: CancellationToken,
}

fn spawn(spec: CameraSpec) -> Cam {
    let (tx, events) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let handle = spawn_camera(spec, tx, cancel.clone()).expect("spawn camera");
    Cam {
        handle,
        events,
        cancel,
    }
}

impl Cam {
    /// The next event within `within`, or a panic naming what was awaited.
    async fn event(&mut self, within: Duration, what: &str) -> CameraEvent {
        match tokio::time::timeout(within, self.events.recv()).await {
            Ok(Some(e)) => e,
            Ok(None) => panic!("event channel closed while waiting for {what}"),
            Err(_) => panic!(
                "no event within {within:?} while waiting for {what}; status {:?}",
                self.handle.status()
            ),
        }
    }

    async fn online(&mut self, within: Duration) -> Duration {
        let t = Instant::now();
        match self.event(within, "Online").await {
            CameraEvent::Online { camera, .. } => assert_eq!(camera, self.handle.name()),
            other => panic!("expected Online, got {other:?}"),
        }
        t.elapsed()
    }

    async fn offline(&mut self, within: Duration) -> (OfflineCause, String, Duration) {
        let t = Instant::now();
        match self.event(within, "Offline").await {
            CameraEvent::Offline { cause, reason, .. } => (cause, reason, t.elapsed()),
            other => panic!("expected Offline, got {other:?}"),
        }
    }

    async fn frame(&self, within: Duration) -> Frame {
        tokio::time::timeout(within, self.handle.slot().next_frame())
            .await
            .unwrap_or_else(|_| panic!("no frame within {within:?}: {:?}", self.handle.status()))
    }

    /// Cancels and waits for the supervisor; returns how long that took.
    async fn shut_down(self) -> Duration {
        let t = Instant::now();
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.handle.stopped())
            .await
            .expect("camera did not stop within 5 s of cancel");
        assert_eq!(self.handle.status().state, CameraState::Stopped);
        t.elapsed()
    }
}

/// Logs of the library under test: `FACEGATE_LOG=debug cargo test --test ingest`.
fn init_log() {
    if let Ok(filter) = std::env::var("FACEGATE_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

fn clip(name: &str) -> Option<PathBuf> {
    init_log();
    rtsp::video_dir().map(|d| d.join(name))
}

/// Mean and standard deviation of all channel values.
fn mean_std(img: &image::RgbImage) -> (f64, f64) {
    let n = img.as_raw().len() as f64;
    let mean = img.as_raw().iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = img
        .as_raw()
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

/// Mean absolute difference between two images of the same size.
fn mean_abs_diff(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| u64::from(x.abs_diff(y)))
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

/// 3:1 box downscale of an RGB image (the reference for `to_rgb_scaled`).
fn box3(img: &image::RgbImage) -> image::RgbImage {
    let (w, h) = (img.width() / 3, img.height() / 3);
    image::RgbImage::from_fn(w, h, |x, y| {
        let mut s = [0u32; 3];
        for dy in 0..3 {
            for dx in 0..3 {
                let p = img.get_pixel(x * 3 + dx, y * 3 + dy);
                for k in 0..3 {
                    s[k] += u32::from(p[k]);
                }
            }
        }
        image::Rgb(s.map(|v| ((v + 4) / 9) as u8))
    })
}

#[tokio::test]
async fn rtsp_frames_arrive_at_the_clip_size_and_rate_and_convert_to_rgb() {
    let Some(clip) = clip(HAMILTON) else { return };
    let server = RtspServer::start(&clip, Codec::H264);
    let mut cam = spawn(spec("gate-1", rtsp_url(&server), 2.0));
    let t_online = cam.online(Duration::from_secs(10)).await;
    let frame = cam.frame(Duration::from_secs(2)).await;
    assert_eq!((frame.width, frame.height), (640, 360));
    assert_eq!(&*frame.camera, "gate-1");
    assert!(matches!(frame.pixel_format(), "I420" | "NV12"));
    assert!(frame.pts.is_some());
    let rgb = frame.to_rgb().unwrap();
    assert_eq!(rgb.dimensions(), (640, 360));
    let (mean, std) = mean_std(&rgb);
    // The clip is a dark stage (mean ≈ 17–36); black or flat would be a bug.
    assert!(
        mean > 10.0 && mean < 225.0 && std > 10.0,
        "implausible picture: mean {mean:.1}, std {std:.1}"
    );
    let (small, scale) = frame.to_rgb_scaled(320).unwrap();
    assert_eq!(small.dimensions(), (320, 180));
    assert!((scale - 0.5).abs() < 1e-6);
    let resized = image::imageops::resize(&rgb, 320, 180, image::imageops::FilterType::Triangle);
    let diff = mean_abs_diff(&small, &resized);
    assert!(
        diff < 6.0,
        "scaled copy differs from the full frame resized: {diff:.2}"
    );

    // Take everything for 3 s: the rate is the clip's (29.97 fps).
    let t = Instant::now();
    let first = cam.handle.status().frames_total;
    let mut last_seq = frame.seq;
    let mut last_pts = frame.pts;
    let mut taken = 0;
    while t.elapsed() < Duration::from_secs(3) {
        let f = cam.frame(Duration::from_secs(2)).await;
        assert!(f.seq > last_seq, "sequence went back");
        assert!(
            f.pts > last_pts,
            "PTS went back: {:?} after {:?}",
            f.pts,
            last_pts
        );
        last_seq = f.seq;
        last_pts = f.pts;
        taken += 1;
    }
    let status = cam.handle.status();
    let fps = (status.frames_total - first) as f64 / t.elapsed().as_secs_f64();
    eprintln!(
        "RTSP/TCP H.264 640x360: online after {t_online:?}, {fps:.1} fps in (status says {:.1}), \
         {taken} taken by a fast consumer, {} dropped",
        status.fps_in, status.drops_total
    );
    assert!((24.0..=34.0).contains(&fps), "frame rate {fps:.1}");
    assert!(
        (24.0..=34.0).contains(&status.fps_in),
        "status fps_in {:.1}",
        status.fps_in
    );
    assert_eq!(status.state, CameraState::Online);
    assert!(status.last_frame_at.is_some());
    assert!(
        taken as f64 >= fps * 3.0 * 0.8,
        "a fast consumer missed frames: {taken}"
    );
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["state"], "online");
    assert_eq!(json["url"], server.url());
    cam.shut_down().await;
}

#[tokio::test]
async fn a_slow_consumer_gets_the_newest_frames_and_drops_are_counted() {
    let Some(clip) = clip(HAMILTON) else { return };
    let server = RtspServer::start(&clip, Codec::H264);
    let mut cam = spawn(spec("slow", rtsp_url(&server), 2.0));
    cam.online(Duration::from_secs(10)).await;
    // Detection at 3 fps: one frame every 333 ms.
    let mut seqs = Vec::new();
    for _ in 0..9 {
        tokio::time::sleep(Duration::from_millis(333)).await;
        let f = cam.frame(Duration::from_secs(1)).await;
        // The frame taken is the newest: it arrived less than a frame ago
        // (plus scheduling slack), not 333 ms ago.
        let age = f.arrived.elapsed();
        assert!(age < Duration::from_millis(200), "stale frame: {age:?} old");
        seqs.push(f.seq);
    }
    let gaps: Vec<u64> = seqs.windows(2).map(|w| w[1] - w[0]).collect();
    let s = cam.handle.status();
    let pending = u64::from(cam.handle.slot().has_frame());
    eprintln!(
        "slow consumer at 3 fps: seq gaps {gaps:?}; in {} = taken {} + dropped {} + pending {pending}; fps taken {:.1}",
        s.frames_total, s.frames_taken, s.drops_total, s.fps_taken
    );
    assert!(gaps.iter().all(|&g| (5..=16).contains(&g)), "gaps {gaps:?}");
    assert_eq!(s.frames_total, s.frames_taken + s.drops_total + pending);
    assert!(
        s.drops_total > 5 * s.frames_taken,
        "drops not counted: {s:?}"
    );
    assert!(
        (2.0..=4.0).contains(&s.fps_taken),
        "fps taken {:.1}",
        s.fps_taken
    );
    cam.shut_down().await;
}

#[tokio::test]
async fn server_stop_gives_offline_and_restart_gives_online_and_frames_again() {
    let Some(clip) = clip(HAMILTON) else { return };
    let server = RtspServer::start(&clip, Codec::H264);
    let stall = 1.5;
    let mut cam = spawn(spec("gate-2", rtsp_url(&server), stall));
    cam.online(Duration::from_secs(10)).await;
    cam.frame(Duration::from_secs(2)).await;

    server.stop();
    let (cause, reason, took) = cam.offline(Duration::from_secs_f32(stall + 2.0)).await;
    eprintln!("server stopped: Offline after {took:?} ({cause:?}: {reason})");
    // Over TCP a closed server is an end of stream (or an error, depending
    // on where rtspsrc notices); a stall would mean the close went unseen.
    assert_ne!(cause, OfflineCause::Stalled, "{reason}");
    // While the server is away, retries fail without new events.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(cam.events.try_recv().is_err(), "events while retrying");
    let s = cam.handle.status();
    assert!(s.reconnects >= 1, "no retries: {s:?}");
    assert!(matches!(
        s.state,
        CameraState::Offline | CameraState::Reconnecting
    ));
    assert!(s.last_error.is_some());

    let before = cam.handle.status().frames_total;
    server.restart();
    let took = cam.online(Duration::from_secs(6)).await;
    eprintln!(
        "server restarted: Online after {took:?}, reconnects {}",
        cam.handle.status().reconnects
    );
    let f = cam.frame(Duration::from_secs(2)).await;
    assert_eq!((f.width, f.height), (640, 360));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        cam.handle.status().frames_total > before + 5,
        "frames do not flow again"
    );
    cam.shut_down().await;
}

#[tokio::test]
async fn a_stalled_stream_is_detected_by_the_watchdog_and_recovers() {
    let Some(clip) = clip(HAMILTON) else { return };
    let server = RtspServer::start(&clip, Codec::H264);
    let stall = 1.5;
    let mut cam = spawn(spec("patrol-1", rtsp_url(&server), stall));
    cam.online(Duration::from_secs(10)).await;

    server.set_stalled(true);
    let (cause, reason, took) = cam.offline(Duration::from_secs_f32(stall + 1.5)).await;
    eprintln!("stream stalled: Offline after {took:?} ({reason})");
    assert_eq!(cause, OfflineCause::Stalled);
    assert!(reason.contains("stalled"), "{reason}");
    assert!(
        took >= Duration::from_secs_f32(stall * 0.9),
        "stall declared too early: {took:?}"
    );
    // Still stalled: the rebuilt pipeline gets nothing, no Online.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        cam.events.try_recv().is_err(),
        "an event while still stalled"
    );
    assert_ne!(cam.handle.status().state, CameraState::Online);

    server.set_stalled(false);
    let took = cam.online(Duration::from_secs(8)).await;
    eprintln!("stream flowing again: Online after {took:?}");
    cam.frame(Duration::from_secs(2)).await;
    cam.shut_down().await;
}

#[tokio::test]
async fn udp_transport_delivers_frames() {
    let Some(clip) = clip(HAMILTON) else { return };
    let server = RtspServer::start(&clip, Codec::H264);
    let mut s = spec("udp-cam", rtsp_url(&server), 2.0);
    s.transport = Transport::Udp;
    let mut cam = spawn(s);
    let took = cam.online(Duration::from_secs(10)).await;
    let f = cam.frame(Duration::from_secs(2)).await;
    assert_eq!((f.width, f.height), (640, 360));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let st = cam.handle.status();
    eprintln!("RTSP/UDP: online after {took:?}, fps in {:.1}", st.fps_in);
    assert!(st.fps_in > 20.0, "{st:?}");
    // Server gone: over UDP no EOS arrives on the data path, but the camera
    // must still go offline (error or watchdog) and come back.
    server.stop();
    let (cause, reason, took) = cam.offline(Duration::from_secs(4)).await;
    eprintln!("RTSP/UDP server stopped: Offline after {took:?} ({cause:?}: {reason})");
    server.restart();
    let took = cam.online(Duration::from_secs(6)).await;
    eprintln!("RTSP/UDP server restarted: Online after {took:?}");
    cam.shut_down().await;
}

#[tokio::test]
async fn a_server_that_accepts_but_never_answers_is_offline_after_the_start_timeout() {
    init_log();
    // A camera that hangs mid-handshake: TCP accepted, RTSP never answered.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().take(16) {
            held.push(conn);
        }
    });
    let url = CameraUrl::parse(&format!("rtsp://127.0.0.1:{port}/silent")).unwrap();
    let s = spec("silent", url, 0.75); // start timeout 1.5 s
    let start_timeout = s.start_timeout;
    let mut cam = spawn(s);
    let (cause, reason, took) = cam.offline(start_timeout + Duration::from_secs(2)).await;
    eprintln!("silent server: Offline after {took:?} ({reason})");
    assert_eq!(cause, OfflineCause::Stalled, "{reason}");
    assert!(took >= start_timeout, "{took:?}");
    // Cancel while a connection attempt hangs: still prompt.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let took = cam.shut_down().await;
    eprintln!("silent server: stopped {took:?} after cancel");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn h265_streams_are_decoded_too() {
    let Some(clip) = clip(HAMILTON) else { return };
    let server = RtspServer::start(&clip, Codec::H265);
    let mut cam = spawn(spec("hevc", rtsp_url(&server), 3.0));
    let took = cam.online(Duration::from_secs(10)).await;
    let f = cam.frame(Duration::from_secs(2)).await;
    assert_eq!((f.width, f.height), (640, 360));
    let (mean, std) = mean_std(&f.to_rgb().unwrap());
    assert!(mean > 10.0 && std > 10.0, "mean {mean:.1} std {std:.1}");
    eprintln!("RTSP H.265: online after {took:?}");
    cam.shut_down().await;
}

#[tokio::test]
async fn credentials_are_sent_and_a_refused_login_is_an_offline_camera() {
    let Some(clip) = clip(HAMILTON) else { return };
    let server = RtspServer::start_with(&clip, Codec::H264, Some(("viewer", "s3cret:pw")));
    let mut good = spec("auth-ok", rtsp_url(&server), 2.0);
    good.credentials = Some(facegate::source::Credentials {
        user: "viewer".into(),
        password: "s3cret:pw".into(),
    });
    let mut cam = spawn(good);
    cam.online(Duration::from_secs(10)).await;
    cam.shut_down().await;

    let mut bad = spawn(spec("auth-none", rtsp_url(&server), 2.0));
    let (cause, reason, took) = bad.offline(Duration::from_secs(5)).await;
    eprintln!("no credentials: Offline after {took:?} ({reason})");
    assert_eq!(cause, OfflineCause::Error);
    assert!(!reason.contains("s3cret"));
    bad.shut_down().await;
}

#[tokio::test]
async fn a_dead_port_is_offline_at_once_and_retried_without_panicking() {
    // A port nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = CameraUrl::parse(&format!("rtsp://127.0.0.1:{port}/nothing")).unwrap();
    let mut cam = spawn(spec("dead", url, 1.0));
    let (cause, reason, took) = cam.offline(Duration::from_secs(3)).await;
    eprintln!("dead port: Offline after {took:?} ({reason})");
    assert_eq!(cause, OfflineCause::Error);
    assert!(
        took < Duration::from_secs(2),
        "connection refused should be immediate"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = cam.handle.status();
    assert!(s.reconnects >= 2, "not retrying: {s:?}");
    assert!(
        cam.events.try_recv().is_err(),
        "one Offline per outage, not per retry"
    );
    assert_eq!(s.frames_total, 0);
    cam.shut_down().await;
}

#[tokio::test]
async fn a_file_source_loops_past_its_end_without_going_offline() {
    let Some(clip) = clip(SHORT) else { return };
    let frames_in_clip = Replay::open(&clip).unwrap().count() as u64;
    assert!(frames_in_clip > 0);
    let mut cam = spawn(spec("demo-file", CameraUrl::File(clip), 2.0));
    cam.online(Duration::from_secs(5)).await;
    let t = Instant::now();
    let mut pts_wrapped = false;
    let mut last_pts = None;
    while cam.handle.status().frames_total < frames_in_clip * 3 {
        assert!(
            t.elapsed() < Duration::from_secs(8),
            "not looping: {:?}",
            cam.handle.status()
        );
        let f = cam.frame(Duration::from_secs(2)).await;
        assert_eq!((f.width, f.height), (820, 460));
        if f.pts < last_pts {
            pts_wrapped = true;
        }
        last_pts = f.pts;
    }
    let s = cam.handle.status();
    eprintln!(
        "file source: {frames_in_clip}-frame clip, {} frames in {:?} ({:.1} fps), reconnects {}",
        s.frames_total,
        t.elapsed(),
        s.fps_in,
        s.reconnects
    );
    assert!(pts_wrapped, "never saw the clip start again");
    assert_eq!(s.reconnects, 0, "the loop rebuilt the pipeline");
    assert!(
        cam.events.try_recv().is_err(),
        "a looping file sent an event"
    );
    cam.shut_down().await;
}

#[tokio::test]
async fn an_image_source_repeats_the_photo() {
    init_log();
    let Some(dir) = rtsp::video_dir() else { return };
    // 853×480: an odd width, so the chroma planes round up.
    let photo = dir.join("../identities/Barack_Obama/5.jpg");
    let mut cam = spawn(spec("still", CameraUrl::Image(photo.clone()), 2.0));
    cam.online(Duration::from_secs(5)).await;
    let f = cam.frame(Duration::from_secs(2)).await;
    assert_eq!((f.width, f.height), (853, 480));
    let rgb = f.to_rgb().unwrap();
    let reference =
        facegate::vision::image::load_photo(&photo, Default::default()).expect("photo decodes");
    let diff = mean_abs_diff(&rgb, &reference);
    eprintln!(
        "image source: {} vs the image crate's decode: mean abs diff {diff:.2}",
        f.pixel_format()
    );
    assert!(diff < 4.0, "the image source's picture is off: {diff:.2}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let s = cam.handle.status();
    let want = f64::from(facegate::source::IMAGE_FPS);
    assert!((f64::from(s.fps_in) - want).abs() < 2.5, "{s:?}");
    cam.shut_down().await;
}

#[tokio::test]
async fn cancellation_stops_every_camera_promptly() {
    let Some(clip) = clip(HAMILTON) else { return };
    let server = RtspServer::start(&clip, Codec::H264);
    let (tx, mut events) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let dead = CameraUrl::parse("rtsp://127.0.0.1:9/none").unwrap();
    let cams: Vec<CameraHandle> = [
        spec("live", rtsp_url(&server), 2.0),
        spec("file", CameraUrl::File(clip.clone()), 2.0),
        spec("dead", dead, 2.0),
    ]
    .into_iter()
    .map(|s| spawn_camera(s, tx.clone(), cancel.clone()).unwrap())
    .collect();
    drop(tx);
    // Both real cameras online, the dead one offline (in backoff).
    let mut online = 0;
    let mut offline = 0;
    while online < 2 || offline < 1 {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Some(CameraEvent::Online { .. })) => online += 1,
            Ok(Some(CameraEvent::Offline { .. })) => offline += 1,
            other => panic!("waiting for the cameras: {other:?}"),
        }
    }
    let t = Instant::now();
    cancel.cancel();
    for cam in &cams {
        tokio::time::timeout(Duration::from_secs(3), cam.stopped())
            .await
            .unwrap_or_else(|_| panic!("{} did not stop", cam.name()));
    }
    let took = t.elapsed();
    eprintln!("cancel: 3 cameras stopped in {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let totals: Vec<u64> = cams.iter().map(|c| c.status().frames_total).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (cam, before) in cams.iter().zip(totals) {
        assert_eq!(
            cam.status().frames_total,
            before,
            "{} still gets frames",
            cam.name()
        );
        assert_eq!(cam.status().state, CameraState::Stopped);
    }
    // Every sender is gone once the supervisors have ended.
    drop(cams);
    let closed = tokio::time::timeout(Duration::from_secs(2), async {
        while events.recv().await.is_some() {}
    })
    .await;
    assert!(closed.is_ok(), "a supervisor still holds the event sender");
}

#[test]
fn replay_gives_every_frame_in_order_with_its_pts_faster_than_real_time() {
    let Some(clip) = clip(HAMILTON) else { return };
    let t = Instant::now();
    let mut n = 0u64;
    let mut last: Option<Duration> = None;
    for frame in Replay::open(&clip).unwrap() {
        let frame = frame.unwrap();
        n += 1;
        assert_eq!(frame.seq, n);
        assert_eq!((frame.width, frame.height), (640, 360));
        let pts = frame.pts.expect("replay frames carry a PTS");
        assert!(
            last.is_none_or(|l| pts > l),
            "PTS not increasing at frame {n}"
        );
        last = Some(pts);
        if n == 1 {
            // A slow consumer: replay must wait, not drop.
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let took = t.elapsed();
    let video = last.unwrap();
    eprintln!("replay 640x360: {n} frames, {video:?} of video in {took:?}");
    assert_eq!(n, 275, "frames lost or invented");
    assert!(
        video > Duration::from_secs(9) && took < video,
        "not faster than real time"
    );
}

#[test]
fn replay_of_1080p_and_its_scaled_conversion() {
    let Some(clip) = clip(FACENET) else { return };
    let t = Instant::now();
    let frames: Vec<Frame> = Replay::open(&clip)
        .unwrap()
        .take(10)
        .map(|f| f.unwrap())
        .collect();
    let decode = t.elapsed();
    let f = &frames[9];
    assert_eq!((f.width, f.height), (1920, 1080));
    let t = Instant::now();
    let full = f.to_rgb().unwrap();
    let t_full = t.elapsed();
    let t = Instant::now();
    let (small, scale) = f.to_rgb_scaled(640).unwrap();
    let t_small = t.elapsed();
    assert_eq!(small.dimensions(), (640, 360));
    assert!((scale - 1.0 / 3.0).abs() < 1e-6);
    let diff = mean_abs_diff(&small, &box3(&full));
    eprintln!(
        "1080p ({}, {:?}): 10 frames decoded in {decode:?}; to_rgb {t_full:?}, to_rgb_scaled(640) {t_small:?}; \
         scaled vs full-then-box diff {diff:.2}",
        f.pixel_format(),
        f.matrix()
    );
    assert!(diff < 2.0, "{diff:.2}");
    let (mean, std) = mean_std(&small);
    assert!(mean > 30.0 && std > 20.0);
}

#[test]
fn replay_errors_name_the_file() {
    let e = Replay::open(Path::new("/nonexistent/clip.mp4"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/clip.mp4"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.mp4");
    std::fs::write(&junk, b"this is not a video").unwrap();
    let result: Result<Vec<Frame>, _> = match Replay::open(&junk) {
        Ok(replay) => replay.collect(),
        Err(e) => Err(e),
    };
    let e = result.expect_err("junk replayed").to_string();
    assert!(e.contains("junk.mp4"), "{e}");
}
