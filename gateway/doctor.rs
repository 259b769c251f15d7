//! `facegate doctor`: checks an installed gateway against its config, one
//! line per check with what to do when it fails.
//!
//! The checks touch the real parts (GStreamer's registry, the ONNX Runtime
//! library, the model files, the database, the broker, each camera) but
//! change nothing: the database is opened read-only and not created, the
//! broker sees a throw-away client with a clean session, and cameras are
//! opened only long enough to measure a few frames.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::vision::runtime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Works, but something is worth a look (shown, not a failure).
    Warn,
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One check's outcome: what was checked, what was found, and on failure
/// what to do about it.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<4}  {}: {}",
            self.status.label(),
            self.name,
            self.detail
        )?;
        if let Some(fix) = &self.fix {
            write!(f, " -> {fix}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// How long a camera may take to deliver its first frame.
    pub camera_timeout: Duration,
    /// How long frames are counted for the frame rate.
    pub fps_window: Duration,
    /// How long the broker may take to connect and echo a message.
    pub broker_timeout: Duration,
    pub cameras: bool,
    pub broker: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            camera_timeout: Duration::from_secs(10),
            fps_window: Duration::from_secs(3),
            broker_timeout: Duration::from_secs(5),
            cameras: true,
            broker: true,
        }
    }
}

/// Disk space below which snapshots are at risk (fail) / worth a warning.
const DISK_FAIL_MIB: u64 = 512;
const DISK_WARN_MIB: u64 = 2048;

/// Runs every check; `on_check` sees each as soon as it is done (cameras
/// and the broker take seconds).
pub fn run(config: &Config, opts: &Options, mut on_check: impl FnMut(&Check)) -> Vec<Check> {
    let mut out = Vec::new();
    let mut push = |c: Check| {
        on_check(&c);
        out.push(c);
    };
    for c in gstreamer_checks(config) {
        push(c);
    }
    push(onnxruntime_check(config));
    for c in model_checks(config) {
        push(c);
    }
    push(database_check(config));
    push(sync_check(config));
    push(priority_check());
    push(clock_check());
    push(disk_check(&config.storage.data_dir));
    if opts.broker {
        push(broker_check(config, opts.broker_timeout));
    }
    if opts.cameras {
        for cam in &config.cameras {
            push(camera_check(cam, opts));
        }
    }
    out
}

fn gstreamer_checks(config: &Config) -> Vec<Check> {
    use gstreamer::prelude::*;
    let mut out = Vec::new();
    if let Err(e) = crate::source::init() {
        out.push(Check::fail(
            "gstreamer",
            format!("cannot start: {e}"),
            "install GStreamer 1.22+ (apt install gstreamer1.0-plugins-base gstreamer1.0-plugins-good)",
        ));
        return out;
    }
    out.push(Check::ok(
        "gstreamer",
        gstreamer::version_string().to_string(),
    ));
    let missing: Vec<&str> = crate::source::REQUIRED_ELEMENTS
        .iter()
        .copied()
        .filter(|e| gstreamer::ElementFactory::find(e).is_none())
        .collect();
    if missing.is_empty() {
        out.push(Check::ok(
            "gstreamer elements",
            crate::source::REQUIRED_ELEMENTS.join(", "),
        ));
    } else {
        out.push(Check::fail(
            "gstreamer elements",
            format!("missing {}", missing.join(", ")),
            "apt install gstreamer1.0-plugins-base gstreamer1.0-plugins-good",
        ));
    }
    // Cameras send H.264 or H.265; decodebin picks the highest-ranked
    // decoder, which on an ARM box should be the hardware one.
    if !config.cameras.is_empty() {
        let ingest = &config.ingest;
        match crate::source::rank_decoders(&ingest.prefer_decoders, &ingest.avoid_decoders) {
            Ok(missing) if missing.is_empty() => {}
            Ok(missing) => out.push(Check::warn(
                "[ingest] decoders",
                format!("not installed: {}", missing.join(", ")),
                "install the board's GStreamer plugin (gstreamer-rockchip for mppvideodec, the v4l2codecs plugin for v4l2sl*), or take the name out of [ingest]",
            )),
            Err(e) => out.push(Check::fail(
                "[ingest] decoders",
                e.to_string(),
                "check the GStreamer installation",
            )),
        }
        for (codec, caps) in [("H.264", "video/x-h264"), ("H.265", "video/x-h265")] {
            let caps = gstreamer::Caps::builder(caps).build();
            let mut decoders: Vec<(gstreamer::Rank, String)> =
                gstreamer::ElementFactory::factories_with_type(
                    gstreamer::ElementFactoryType::DECODER
                        | gstreamer::ElementFactoryType::MEDIA_VIDEO,
                    gstreamer::Rank::MARGINAL,
                )
                .into_iter()
                .filter(|f| f.can_sink_any_caps(&caps))
                .map(|f| (f.rank(), f.name().to_string()))
                .collect();
            decoders.sort_by(|a, b| b.cmp(a));
            let name = format!("{codec} decoder");
            match decoders.first() {
                Some((_, best)) => out.push(Check::ok(
                    name,
                    format!(
                        "{best} (decodebin's choice; also {})",
                        decoders
                            .iter()
                            .skip(1)
                            .map(|d| d.1.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
                None if codec == "H.264" => out.push(Check::fail(
                    name,
                    "none installed",
                    "apt install gstreamer1.0-libav (or the board's hardware decoder plugin)",
                )),
                None => out.push(Check::warn(
                    name,
                    "none installed: H.265 cameras will not decode",
                    "apt install gstreamer1.0-libav",
                )),
            }
        }
    }
    out
}

fn onnxruntime_check(config: &Config) -> Check {
    let v = &config.vision;
    let candidates = runtime::library_candidates(v.onnxruntime.as_deref(), &v.models_dir);
    let Some(found) = candidates.iter().find(|p| p.is_file()).cloned() else {
        return Check::fail(
            "onnxruntime",
            format!(
                "library not found (looked at {})",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "run `python3 deploy/fetch-models.py` or set vision.onnxruntime",
        );
    };
    // The file the symlinks end at is named with the version
    // (libonnxruntime.so.1.31.1).
    let real = std::fs::canonicalize(&found).unwrap_or_else(|_| found.clone());
    let version = real
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("libonnxruntime.so."))
        .unwrap_or("unknown version")
        .to_owned();
    match runtime::init(v.onnxruntime.as_deref(), &v.models_dir) {
        Ok(_) => Check::ok(
            "onnxruntime",
            format!("{version}, loaded from {}", found.display()),
        ),
        Err(e) => Check::fail(
            "onnxruntime",
            e.to_string(),
            "the library must match this machine (x86_64 / aarch64): `python3 deploy/fetch-models.py`",
        ),
    }
}

/// Every model file the config will load, with its checksum and whether a
/// missing file is allowed.
fn configured_models(config: &Config) -> Vec<(String, PathBuf, String, bool)> {
    let v = &config.vision;
    let dir = &v.models_dir;
    let mut out = Vec::new();
    if let Some(d) = v.detectors.get(&v.detector) {
        out.push((
            format!("detector {}", v.detector),
            dir.join(&d.file),
            d.sha256.clone(),
            false,
        ));
    }
    let lm = &v.quality.landmark_detector;
    if !lm.is_empty()
        && lm != &v.detector
        && let Some(d) = v.detectors.get(lm)
    {
        out.push((
            format!("landmark detector {lm}"),
            dir.join(&d.file),
            d.sha256.clone(),
            false,
        ));
    }
    if let Some(e) = v.embedders.get(&v.embedder) {
        out.push((
            format!("embedder {}", v.embedder),
            dir.join(&e.file),
            e.sha256.clone(),
            false,
        ));
    }
    if let Some(f) = v.fusion.as_ref().filter(|f| f.enabled)
        && let Some(e) = v.embedders.get(&f.embedder)
    {
        out.push((
            format!("fusion embedder {}", f.embedder),
            dir.join(&e.file),
            e.sha256.clone(),
            f.optional,
        ));
    }
    if v.liveness.enabled {
        for m in &v.liveness.models {
            out.push((
                format!("liveness {}", m.name),
                dir.join(&m.file),
                m.sha256.clone(),
                m.optional,
            ));
        }
    }
    if v.pose.enabled {
        out.push((
            "pose".to_owned(),
            dir.join(&v.pose.file),
            v.pose.sha256.clone(),
            false,
        ));
    }
    out
}

fn model_checks(config: &Config) -> Vec<Check> {
    configured_models(config)
        .into_iter()
        .map(|(name, path, want, optional)| {
            let name = format!("model {name}");
            if !path.is_file() {
                let fix = "run `python3 deploy/fetch-models.py` (with --mirror DIR on an air-gapped box)";
                return if optional {
                    Check::warn(
                        name,
                        format!("{} missing (optional: running without it)", path.display()),
                        fix,
                    )
                } else {
                    Check::fail(name, format!("{} missing", path.display()), fix)
                };
            }
            match runtime::sha256_file(&path) {
                Ok(got) if got.eq_ignore_ascii_case(&want) => {
                    Check::ok(name, format!("{} sha256 ok", path.display()))
                }
                Ok(got) => Check::fail(
                    name,
                    format!(
                        "{}: sha256 {got}, the config expects {want}",
                        path.display()
                    ),
                    "the file is damaged or another model: fetch it again with `python3 deploy/fetch-models.py`",
                ),
                Err(e) => Check::fail(
                    name,
                    format!("{}: {e}", path.display()),
                    "check the file's permissions",
                ),
            }
        })
        .collect()
}

fn database_check(config: &Config) -> Check {
    let path = &config.storage.db;
    if !path.exists() {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        return match parent {
            Some(p) if !p.is_dir() => Check::fail(
                "database",
                format!(
                    "{} does not exist, nor its folder {}",
                    path.display(),
                    p.display()
                ),
                "create the folder (writable by the gateway) or fix storage.db",
            ),
            _ => Check::warn(
                "database",
                format!("{} does not exist yet", path.display()),
                "it is created at the first start or enrolment",
            ),
        };
    }
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let result = rusqlite::Connection::open_with_flags(path, flags).and_then(|c| {
        if let Some(key) = crate::crypto::installed() {
            c.execute_batch(&format!("PRAGMA key = {};", key.sqlcipher_pragma_value()))?;
        }
        let check: String = c.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let owners: i64 = c
            .query_row("SELECT count(*) FROM owners", [], |r| r.get(0))
            .unwrap_or(-1);
        Ok((check, version, owners))
    });
    match result {
        Ok((check, version, owners)) if check == "ok" => Check::ok(
            "database",
            format!(
                "{} schema {version}, {} owners, integrity ok",
                path.display(),
                if owners < 0 {
                    "no".to_owned()
                } else {
                    owners.to_string()
                }
            ),
        ),
        Ok((check, ..)) => Check::fail(
            "database",
            format!("{}: integrity check says {check}", path.display()),
            "restore the latest backup; keep the damaged file for inspection",
        ),
        Err(e) => Check::fail(
            "database",
            format!("{}: {e}", path.display()),
            "not a facegate database, or unreadable by this user (or encrypted with another key)",
        ),
    }
}

/// Signed commands carry timestamps: a clock off by more than their
/// allowed skew refuses every command (or accepts stale ones).
/// Registry sync between the boxes of one site: the settings hang
/// together and the shared secret can be read and is long enough (a box
/// with a wrong secret refuses every other box's message with a WARN, and
/// theirs refuse its: nothing would be shared).
fn sync_check(config: &Config) -> Check {
    let sync = &config.sync;
    if !sync.enabled() {
        return Check::ok(
            "sync",
            "off (sync.box_id empty): this box shares owners with no other",
        );
    }
    if let Err((key, why)) = sync.validate(&config.mqtt) {
        return Check::fail(
            "sync",
            format!("{key}: {why}"),
            format!("fix {key} in the config"),
        );
    }
    match sync.resolve_secret() {
        Ok(_) => Check::ok(
            "sync",
            format!(
                "box {} shares owners on {}/{}/registry/# (secret readable)",
                sync.box_id, config.mqtt.prefix, config.site.code
            ),
        ),
        Err(e) => Check::fail(
            "sync",
            e.to_string(),
            "give sync.secret the site's shared secret (env:NAME or file:PATH readable by the service user, the same on every box, at least 16 bytes)",
        ),
    }
}

/// Whether background work (enrolment models, index rebuilds) can yield
/// the CPU to the cameras ([`crate::sched`]).
fn priority_check() -> Check {
    match crate::sched::check() {
        Ok(()) => Check::ok(
            "priority",
            format!(
                "enrolment models and index rebuilds run at nice {} and yield to the cameras",
                crate::sched::NICE
            ),
        ),
        Err(why) => Check::warn(
            "priority",
            why,
            "run under the packaged systemd unit (LimitNICE=+0) or raise the nice limit (ulimit -e 20)",
        ),
    }
}

fn clock_check() -> Check {
    let ntp = std::process::Command::new("timedatectl")
        .args(["show", "-p", "NTPSynchronized", "--value"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    match ntp.as_deref() {
        Some("yes") => Check::ok("clock", "synchronised (systemd-timesyncd/NTP)"),
        Some("no") => Check::fail(
            "clock",
            "not synchronised: signed commands and gate opens depend on the time",
            "enable NTP: `timedatectl set-ntp true`, or configure chrony with the district's time server",
        ),
        _ => {
            let chrony = std::process::Command::new("chronyc")
                .args(["-n", "tracking"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            match chrony {
                Some(t) if t.contains("Leap status     : Normal") => {
                    Check::ok("clock", "synchronised (chrony)")
                }
                Some(_) => Check::fail(
                    "clock",
                    "chrony is not synchronised",
                    "check `chronyc sources`: the time server must be reachable",
                ),
                None => Check::warn(
                    "clock",
                    "cannot tell whether the clock is synchronised (no timedatectl or chronyc answer)",
                    "run NTP (systemd-timesyncd or chrony); signed commands depend on the time",
                ),
            }
        }
    }
}

/// Free space where snapshots go (the nearest existing folder of it).
fn disk_check(data_dir: &Path) -> Check {
    let mut dir = data_dir.to_path_buf();
    while !dir.exists() {
        match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => dir = p.to_path_buf(),
            _ => {
                dir = PathBuf::from(".");
                break;
            }
        }
    }
    let out = std::process::Command::new("df")
        .args(["-Pk", "--"])
        .arg(&dir)
        .output();
    let avail_kib = out.ok().filter(|o| o.status.success()).and_then(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
            .and_then(|v| v.parse::<u64>().ok())
    });
    let Some(kib) = avail_kib else {
        return Check::warn(
            "disk",
            format!("cannot read the free space of {}", dir.display()),
            "check `df -h` by hand",
        );
    };
    let mib = kib / 1024;
    let detail = format!("{mib} MiB free at {} (storage.data_dir)", dir.display());
    if mib < DISK_FAIL_MIB {
        Check::fail(
            "disk",
            detail,
            "free space or move storage.data_dir: snapshots stop when the disk is full",
        )
    } else if mib < DISK_WARN_MIB {
        Check::warn(
            "disk",
            detail,
            "less than 2 GiB left: lower privacy.snapshot_retention_days or free space",
        )
    } else {
        Check::ok("disk", detail)
    }
}

/// Connects with a throw-away client (its own id and a clean session, so the
/// running gateway's session is untouched), subscribes to a private topic,
/// publishes to it and waits for the message to come back.
fn broker_check(config: &Config, timeout: Duration) -> Check {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{LastWill, Packet};
    use rumqttc::v5::{AsyncClient, Event};

    let cfg = &config.mqtt;
    if !cfg.enabled() {
        return Check::ok("broker", "MQTT off (mqtt.url empty): events stay in SQLite");
    }
    let url = match crate::publish::config::BrokerUrl::parse(&cfg.url) {
        Ok(u) => u,
        Err(e) => return Check::fail("broker", format!("mqtt.url {e}"), "fix mqtt.url"),
    };
    let nonce = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let topic = format!("{}/{}/doctor/{nonce}", cfg.prefix, config.site.code);
    let will = LastWill::new(topic.clone(), "gone", QoS::AtMostOnce, false, None);
    let mut options = match crate::publish::connection::options(cfg, &config.site.code, &url, will)
    {
        Ok(o) => o,
        Err(e) => {
            return Check::fail(
                "broker",
                e.to_string(),
                "fix the mqtt section (credentials, TLS files)",
            );
        }
    };
    options
        .set_client_id(format!(
            "{}-doctor-{nonce}",
            cfg.client_id_for(&config.site.code)
        ))
        .set_clean_start(true)
        .set_session_expiry_interval(None);
    let where_ = format!("{}:{}", url.host, url.port);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Check::fail("broker", e.to_string(), "out of resources?"),
    };
    let result: Result<Duration, String> = rt.block_on(async {
        let started = Instant::now();
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut subscribed = false;
        loop {
            let ev = tokio::time::timeout_at(deadline, eventloop.poll()).await;
            let ev = match ev {
                Err(_) => {
                    return Err(if subscribed {
                        format!("connected, but our message did not come back within {timeout:?}")
                    } else {
                        format!("no connection within {timeout:?}")
                    });
                }
                Ok(Err(e)) => return Err(crate::publish::connection::describe(&e, &url.host)),
                Ok(Ok(ev)) => ev,
            };
            match ev {
                Event::Incoming(Packet::ConnAck(_)) => {
                    client
                        .subscribe(topic.clone(), QoS::AtLeastOnce)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Event::Incoming(Packet::SubAck(_)) => {
                    subscribed = true;
                    client
                        .publish(topic.clone(), QoS::AtLeastOnce, false, "doctor")
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Event::Incoming(Packet::Publish(p)) if p.topic == topic.as_bytes() => {
                    let _ = client.disconnect().await;
                    let _ =
                        tokio::time::timeout(Duration::from_millis(300), eventloop.poll()).await;
                    return Ok(started.elapsed());
                }
                _ => {}
            }
        }
    });
    match result {
        Ok(t) => Check::ok(
            "broker",
            format!(
                "{}{where_}: connect, subscribe, publish ok ({} ms){}",
                if url.tls { "mqtts://" } else { "mqtt://" },
                t.as_millis(),
                if url.tls || is_loopback(&url.host) {
                    ""
                } else {
                    "; WARNING: not TLS, credentials and commands cross the network in clear text"
                }
            ),
        ),
        Err(e) => Check::fail(
            "broker",
            format!("{where_}: {e}"),
            "is the broker running and reachable, are mqtt.url, credentials and TLS files right?",
        ),
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Opens the camera like the gateway would, waits for the first frame and
/// counts frames for a few seconds.
fn camera_check(cam: &crate::config::CameraConfig, opts: &Options) -> Check {
    let name = format!("camera {}", cam.name);
    let spec = match crate::source::CameraSpec::from_config(cam) {
        Ok(s) => s,
        Err(e) => {
            return Check::fail(
                name,
                e.to_string(),
                "fix the camera's entry in the config (url, credentials' environment variables)",
            );
        }
    };
    let shown = spec.url.to_string();
    let (tx, _rx) = tokio::sync::mpsc::channel(16);
    let cancel = tokio_util::sync::CancellationToken::new();
    let handle = match crate::source::spawn_camera(spec, tx, cancel.clone()) {
        Ok(h) => h,
        Err(e) => return Check::fail(name, e.to_string(), "check the GStreamer installation"),
    };
    let started = Instant::now();
    let first = handle.wait_frame(opts.camera_timeout);
    let Some(first) = first else {
        let why = handle
            .status()
            .last_error
            .unwrap_or_else(|| "no error reported".to_owned());
        cancel.cancel();
        handle.join();
        return Check::fail(
            name,
            format!("{shown}: no frame within {:?} ({why})", opts.camera_timeout),
            "is the camera on and reachable from this box, are the URL, transport and credentials right?",
        );
    };
    let to_first = started.elapsed();
    let (w, h) = (first.width, first.height);
    let t0 = Instant::now();
    let mut last = first.seq;
    let mut frames = 0u64;
    while t0.elapsed() < opts.fps_window {
        if let Some(f) = handle.wait_frame(Duration::from_millis(500)) {
            frames += f.seq.saturating_sub(last);
            last = f.seq;
        }
    }
    let fps = frames as f64 / t0.elapsed().as_secs_f64();
    cancel.cancel();
    handle.join();
    let detail = format!(
        "{shown}: first frame after {:.1} s, {w}x{h}, {fps:.1} fps",
        to_first.as_secs_f64()
    );
    if fps < 1.0 {
        Check::warn(
            name,
            detail,
            "fewer than 1 frame/s: check the camera's encoder settings and the network",
        )
    } else {
        Check::ok(name, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_the_check_and_the_fix() {
        let c = Check::fail("disk", "10 MiB free at /var/lib/facegate", "free space");
        assert_eq!(
            c.to_string(),
            "FAIL  disk: 10 MiB free at /var/lib/facegate -> free space"
        );
        assert_eq!(
            Check::ok("clock", "synchronised").to_string(),
            "ok    clock: synchronised"
        );
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("127.0.0.1"));
        assert!(is_loopback("[::1]"));
        assert!(is_loopback("localhost"));
        assert!(!is_loopback("10.0.0.2"));
    }

    #[test]
    fn a_missing_required_model_fails_and_a_missing_optional_one_warns() {
        let mut config = Config::default();
        config.vision.models_dir = PathBuf::from("/nonexistent-models");
        let checks = model_checks(&config);
        assert!(
            checks
                .iter()
                .any(|c| c.name == "model detector yunet" && c.status == Status::Fail)
        );
        assert!(
            checks.iter().any(
                |c| c.name == "model fusion embedder mobilefacenet" && c.status == Status::Warn
            )
        );
    }

    #[test]
    fn sync_off_is_ok_and_an_unreadable_or_short_secret_fails() {
        let mut config = Config::default();
        assert_eq!(sync_check(&config).status, Status::Ok);
        let dir = tempfile::tempdir().unwrap();
        config.mqtt.url = "mqtt://127.0.0.1:1883".into();
        config.mqtt.client_id = Some("box-a".into());
        config.sync.box_id = "box-a".into();
        let secret = dir.path().join("sync.secret");
        config.sync.secret = Some(format!("file:{}", secret.display()));
        let absent = sync_check(&config);
        assert_eq!(absent.status, Status::Fail, "{absent}");
        assert!(absent.detail.contains("sync.secret"), "{absent}");
        std::fs::write(&secret, "short").unwrap();
        let short = sync_check(&config);
        assert_eq!(short.status, Status::Fail, "{short}");
        assert!(short.detail.contains("shorter"), "{short}");
        std::fs::write(&secret, "a-site-secret-of-enough-bytes").unwrap();
        let good = sync_check(&config);
        assert_eq!(good.status, Status::Ok, "{good}");
        config.sync.secret = None;
        assert_eq!(sync_check(&config).status, Status::Fail);
    }

    #[test]
    fn an_absent_database_in_an_absent_folder_fails() {
        let mut config = Config::default();
        config.storage.db = PathBuf::from("/nonexistent-dir/facegate.db");
        assert_eq!(database_check(&config).status, Status::Fail);
        config.storage.db = std::env::temp_dir().join("facegate-doctor-absent.db");
        assert_eq!(database_check(&config).status, Status::Warn);
    }
}
