//! The `facegate` command: argument parsing and wiring only.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use facegate::config::Config;
use facegate::identify::{self, FaceResult};
use facegate::registry::{
    Consent, ConsentMethod, ErasureReason, FaceTemplate, Gallery, NewOwner, NewWatchEntry,
    OwnerFilter, OwnerStatus, Priority, Registry,
};
use facegate::vision::image::{PhotoLimits, RgbView, load_photo};
use facegate::vision::{Checks, FaceEngine};

#[derive(Parser)]
#[command(
    name = "facegate",
    version,
    about = "Face recognition gateway for residential estates"
)]
struct Cli {
    /// Configuration file (built-in defaults when the default file is absent).
    #[arg(long, global = true, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Registry database (default: storage.db from the config).
    #[arg(long, global = true)]
    db: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

const DEFAULT_CONFIG: &str = "config/facegate.toml";

#[derive(Subcommand)]
enum Command {
    /// Enrol an owner from one or more photos (one face each), with their consent.
    Enroll(EnrollArgs),
    /// Detect, check and match every face of a photo; prints JSON.
    Identify {
        photo: PathBuf,
        /// Also apply the liveness check (as a gate camera would).
        #[arg(long)]
        liveness: bool,
    },
    /// Checks this box against its config, one line per check with what to do
    /// on failure: GStreamer, ONNX Runtime, model checksums, database, clock,
    /// disk, broker, cameras. Exit status 1 when any check fails.
    Doctor {
        /// Skip opening the cameras.
        #[arg(long)]
        no_cameras: bool,
        /// Skip the broker round trip.
        #[arg(long)]
        no_broker: bool,
        /// Seconds a camera may take to deliver its first frame.
        #[arg(long, default_value_t = 10.0)]
        camera_timeout_s: f64,
    },
    /// The configuration file.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// The database: backups, schema migrations (a package upgrade runs both),
    /// encryption at rest (encrypt, rekey, keygen).
    #[command(subcommand)]
    Db(DbCmd),
    /// Enrolled owners.
    #[command(subcommand)]
    Owners(OwnersCmd),
    /// The watch list (missing persons, people to look out for).
    #[command(subcommand)]
    Watchlist(WatchCmd),
    /// Accuracy on a folder DIR/<identity>/*.jpg.
    Eval {
        #[arg(long)]
        dataset: PathBuf,
        /// Only one half of the identities: `a` or `b` (ranked by a hash of
        /// the name; the reference's `--split` picks the same people).
        #[arg(long)]
        split: Option<facegate::eval::Split>,
        /// One JSON object instead of a readable summary.
        #[arg(long)]
        json: bool,
    },
    /// Liveness APCER/BPCER on DIR/{nuaa_live,nuaa_print,silentface_samples}, one photo at a time.
    EvalLiveness {
        #[arg(long)]
        dataset: PathBuf,
        /// One JSON object (with every photo's scores) instead of a table.
        #[arg(long)]
        json: bool,
        /// Image scales to emulate smaller faces, e.g. 1,0.6,0.4,0.25.
        #[arg(long, value_delimiter = ',', default_value = "1")]
        scale: Vec<f32>,
        /// Only these NUAA subjects, e.g. 1-4 (Silent-Face samples then left out).
        #[arg(long, conflicts_with = "split")]
        subjects: Option<String>,
        /// Leave these NUAA subjects out, e.g. 16.
        #[arg(long)]
        exclude: Option<String>,
        /// Half of the subjects: a = 1-4, b = 5-8 and 16.
        #[arg(long)]
        split: Option<String>,
        /// Threshold to apply instead of the configured one.
        #[arg(long)]
        threshold: Option<f32>,
    },
    /// Recent changes to the registry (who did what, when).
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Run the gateway on the configured cameras (and --camera ones) until SIGINT/SIGTERM.
    Run {
        /// NAME=URL[,role=gate|patrol][,fps=F]; rtsp://, file:// (looped) or image://.
        #[arg(long = "camera", value_name = "NAME=URL[,role=..]")]
        cameras: Vec<String>,
        /// Where snapshots go (default: storage.data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Broker URL (mqtt://host[:port] or mqtts://...), overrides mqtt.url.
        #[arg(long, value_name = "URL")]
        mqtt: Option<String>,
        /// HTTP API and console address (overrides http.listen; "" turns it off).
        #[arg(long, value_name = "ADDR")]
        http: Option<String>,
    },
    /// API tokens for the HTTP API and console.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Run the pipeline over a video file as fast as it can; prints events as JSON lines.
    Replay {
        /// Camera name the events carry (a configured camera's role and codes are used).
        #[arg(long)]
        camera: String,
        /// Role when the camera is not configured.
        #[arg(long, default_value = "gate")]
        role: String,
        /// Detection rate in video time (default: the camera's or 5).
        #[arg(long)]
        fps: Option<f32>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Print a summary (frames, faces, events, speed) to stderr at the end.
        #[arg(long)]
        stats: bool,
        video: PathBuf,
    },
    /// Decided events.
    #[command(subcommand)]
    Events(EventsCmd),
    /// Personal data held and its retention.
    #[command(subcommand)]
    Privacy(PrivacyCmd),
    /// The gateway's own benches.
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Subcommand)]
enum DbCmd {
    /// Writes a consistent copy of the database to DEST (VACUUM INTO: safe
    /// while the gateway runs; encrypted with the same key when the database
    /// is), readable by its owner only.
    Backup { dest: PathBuf },
    /// Brings the schema up to this version's, as every start does; prints
    /// the versions before and after.
    Migrate,
    /// Converts the plain database into one encrypted (SQLCipher) with the
    /// configured key (storage.key_file or FACEGATE_DB_KEY). Stop the
    /// gateway first. The events' snapshots are sealed too. The plain files
    /// are removed, not overwritten (flash storage gives no such guarantee).
    Encrypt,
    /// Re-encrypts the database, and the sealed snapshots, from the
    /// configured key to the key in NEW_KEY_FILE (0600). Stop the gateway
    /// first, then point storage.key_file at the new file.
    Rekey {
        #[arg(long)]
        new_key_file: PathBuf,
    },
    /// Writes a new random key (64 hex characters) to FILE, mode 0600; FILE
    /// must not exist.
    Keygen { file: PathBuf },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validates FILE (syntax, unknown keys, values, camera URLs, MQTT
    /// settings) without starting anything; exit status 1 when invalid.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Make a token; it is printed once, alone on stdout (only its hash is kept).
    Create {
        #[arg(long)]
        role: facegate::registry::Role,
        /// Who or what uses it (e.g. gate-desk-1); changes are audited under it.
        #[arg(long)]
        name: String,
    },
    /// Tokens, revoked ones included (never the secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Stop a token at once.
    Revoke {
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// 1:N search latency over N random templates at the configured
    /// template size, one thread; checked against a full f32 scan first.
    /// One JSON line: templates, dim, p50_ms, p99_ms, rss_mib, ….
    Search {
        #[arg(long, default_value_t = 100_000)]
        templates: usize,
        /// Template size (default: the config's embedder, plus fusion's).
        #[arg(long)]
        dim: Option<usize>,
        #[arg(long, default_value_t = 400)]
        queries: usize,
        /// Time the plain f32 scan of every row instead (the search as it
        /// was before the 4-bit pass).
        #[arg(long)]
        exhaustive: bool,
        /// Accepted for the command line; the output is always JSON.
        #[arg(long)]
        json: bool,
    },
    /// A camera's match latency (p50/p99) on a quiet gallery, during
    /// reloads and during four concurrent enrolments, each also with the
    /// old behaviour (work under the gallery lock); with --gate, a gate
    /// camera's frame → decision latency through the whole pipeline
    /// instead. One JSON line.
    Lock {
        #[arg(long, default_value_t = 100_000)]
        templates: usize,
        /// Seconds per phase.
        #[arg(long, default_value_t = 8.0)]
        seconds: f64,
        /// `<dir>/<person>/*.jpg` for the enrolment phases (real models);
        /// without it only the reload phases run.
        #[arg(long)]
        photos: Option<PathBuf>,
        /// A new SQLite file for the bench's gallery.
        #[arg(long)]
        bench_db: PathBuf,
        /// A gate camera (video file, looped, or rtsp:// URL) run through
        /// detection, liveness, embedding, match and decision in every phase
        /// (and a second quiet phase at the end), instead of the bare match.
        #[arg(long)]
        gate: Option<String>,
        /// The gate camera's detection rate.
        #[arg(long, default_value_t = 10.0)]
        gate_fps: f32,
        /// Photo(s) of the resident in the gate video, enrolled before the
        /// phases (repeat for several photos).
        #[arg(long)]
        gate_owner: Vec<PathBuf>,
    },
    /// CPU per stream (looped file in real time, or an RTSP stream) against
    /// a bare gst-launch decode, missed detection slots, frame → decision
    /// latency. One JSON line.
    Ingest {
        /// A video file, or an rtsp:// URL (camera source over TCP); repeat
        /// it and stream i plays the (i mod count)-th.
        #[arg(long)]
        video: Vec<String>,
        /// Streams playing --video; 0 with --gate measures the gate alone.
        #[arg(long, default_value_t = 1)]
        streams: usize,
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        /// Detection rate per stream; 0 = decode and scale only.
        #[arg(long, default_value_t = 0.0)]
        detect_fps: f32,
        /// Skip the gst-launch baseline.
        #[arg(long)]
        no_baseline: bool,
        /// The streams' camera role: gate (liveness too) or patrol.
        #[arg(long, default_value = "gate")]
        role: String,
        /// Run the cameras' motion gate as shipped (`cameras.motion_skip`).
        #[arg(long)]
        motion_skip: bool,
        /// A gate camera (file or rtsp:// URL) alongside the streams,
        /// reported on its own.
        #[arg(long)]
        gate: Option<String>,
        /// The gate camera's detection rate.
        #[arg(long, default_value_t = 10.0)]
        gate_fps: f32,
        /// Run the streams' detection threads this much nicer than the
        /// gate camera's (0-19; default: `ingest.patrol_nice` when the
        /// streams are patrol cameras, as `facegate run` does).
        #[arg(long)]
        stream_nice: Option<i32>,
    },
}

#[derive(Subcommand)]
enum EventsCmd {
    /// Newest first.
    List {
        /// RFC 3339 time, or a duration back from now: 30m, 2h, 7d.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, help = facegate::events::EventKind::names())]
        kind: Option<String>,
        #[arg(long)]
        camera: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct EnrollArgs {
    /// The estate's id for the owner.
    #[arg(long)]
    owner_id: String,
    #[arg(long)]
    name: String,
    #[arg(long)]
    building: Option<String>,
    #[arg(long)]
    unit: Option<String>,
    /// Community grid (网格) code.
    #[arg(long)]
    grid: Option<String>,
    /// The staff member who took the owner's separate consent to face recognition.
    #[arg(long)]
    consent_by: String,
    /// How consent was given: written, electronic, verbal_recorded.
    #[arg(long, default_value = "written")]
    consent_method: ConsentMethod,
    /// The owner is under 14: a guardian must consent.
    #[arg(long)]
    minor: bool,
    #[arg(long)]
    guardian: Option<String>,
    #[arg(long)]
    guardian_relation: Option<String>,
    /// Add the photos to an owner who is already enrolled.
    #[arg(long)]
    add: bool,
    #[arg(required = true)]
    photos: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum OwnersCmd {
    /// List owners (JSON lines with --json).
    List {
        #[arg(long)]
        search: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long, default_value_t = 0)]
        offset: usize,
        #[arg(long)]
        json: bool,
    },
    /// One owner with consents and templates, as JSON.
    Show { owner_id: String },
    /// Erase an owner: their record, consents, face data, the events naming
    /// them, their event faces, queued messages and snapshots (audited).
    Remove {
        owner_id: String,
        #[arg(long, default_value = "cli")]
        by: String,
        /// The owner withdrew their consent (recorded as the reason; the
        /// erasure is the same).
        #[arg(long)]
        consent_withdrawn: bool,
    },
    /// One owner's data (record, consents, audit rows, events naming them)
    /// as JSON, with the photos they gave, into a new folder (audited).
    Export {
        owner_id: String,
        /// The folder to create (must not exist).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "cli")]
        by: String,
    },
    /// Stop recognising an owner without erasing them.
    Suspend {
        owner_id: String,
        #[arg(long, default_value = "cli")]
        by: String,
    },
    /// Recognise a suspended owner again.
    Activate {
        owner_id: String,
        #[arg(long, default_value = "cli")]
        by: String,
    },
}

#[derive(Subcommand)]
enum PrivacyCmd {
    /// What is held (owners, faces, events by kind, snapshots, audit,
    /// outbox) and until when; warns near the filing threshold.
    Report {
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum WatchCmd {
    /// Add a person from one or more photos.
    Add {
        #[arg(long)]
        name: String,
        #[arg(long)]
        reason: String,
        /// low, normal, high, critical.
        #[arg(long, default_value = "normal")]
        priority: Priority,
        /// Expiry as RFC 3339 (e.g. 2026-12-31T00:00:00+08:00).
        #[arg(long, conflicts_with = "days")]
        expires: Option<String>,
        /// Expiry in days from now.
        #[arg(long)]
        days: Option<u32>,
        #[arg(long, default_value = "cli")]
        by: String,
        #[arg(required = true)]
        photos: Vec<PathBuf>,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Remove {
        id: i64,
        #[arg(long, default_value = "cli")]
        by: String,
    },
}

fn main() {
    limit_malloc_arenas();
    if let Err(e) = run() {
        eprintln!("facegate: {e:#}");
        std::process::exit(1);
    }
}

/// glibc gives each thread that allocates under contention its own malloc
/// arena (up to 8 per core); with GStreamer's, ONNX Runtime's and the
/// cameras' threads each churning through frame-sized buffers, freed memory
/// stays spread over many arenas and the resident size creeps up. The
/// 30-minute soak (`benches/soak.sh`, BENCHMARKS.md §10), RSS from minute 5
/// to 30: +13.7% with the default, +1.25% with two arenas. An explicit
/// `MALLOC_ARENA_MAX` in the environment wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator tunable; called before any
        // other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// `facegate config check FILE`: everything `run` would refuse at start-up
/// because of the file itself, and nothing that needs the box.
fn check_config(file: &Path) -> Result<()> {
    if !file.exists() {
        bail!("config {}: file not found", file.display());
    }
    let config = Config::load(file)?;
    for cam in &config.cameras {
        facegate::source::CameraSpec::from_config(cam)
            .with_context(|| format!("config {}: camera '{}'", file.display(), cam.name))?;
    }
    if config.mqtt.enabled() {
        config
            .mqtt
            .resolve_secrets()
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("config {}: [mqtt]", file.display()))?;
    }
    println!(
        "config {}: ok (site {}, {} cameras, MQTT {}, HTTP {})",
        file.display(),
        config.site.code,
        config.cameras.len(),
        if config.mqtt.enabled() { "on" } else { "off" },
        if config.http.listen.is_empty() {
            "off"
        } else {
            config.http.listen.as_str()
        }
    );
    Ok(())
}

fn load_config(path: &Path) -> Result<Config> {
    if path.exists() {
        Ok(Config::load(path)?)
    } else if path == Path::new(DEFAULT_CONFIG) {
        Ok(Config::default())
    } else {
        bail!("config {}: file not found", path.display())
    }
}

/// The registry database: --db, else storage.db (whose folder is created).
fn db_path(config: &Config, db: Option<&Path>) -> Result<PathBuf> {
    Ok(match db {
        Some(p) => p.to_owned(),
        None => {
            let p = config.storage.db.clone();
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            p
        }
    })
}

fn open_registry(config: &Config, db: Option<&Path>) -> Result<Registry> {
    Ok(Registry::open(&db_path(config, db)?)?.with_erase_similarity(config.matching.threshold))
}

/// `NAME=URL[,role=gate|patrol][,fps=F]` from the command line.
fn parse_camera_arg(arg: &str) -> Result<facegate::config::CameraConfig> {
    let (name, rest) = arg
        .split_once('=')
        .with_context(|| format!("--camera {arg}: expected NAME=URL[,role=gate|patrol][,fps=F]"))?;
    let mut parts = rest.split(',');
    let url = parts.next().unwrap_or_default().to_owned();
    let mut cam: facegate::config::CameraConfig =
        toml::from_str(&format!("name = {name:?}\nurl = {url:?}\n"))
            .with_context(|| format!("--camera {arg}"))?;
    for p in parts {
        match p.split_once('=') {
            Some(("role", "gate")) => cam.role = facegate::config::CameraRole::Gate,
            Some(("role", "patrol")) => cam.role = facegate::config::CameraRole::Patrol,
            Some(("fps", f)) => {
                cam.detect_fps = f
                    .parse()
                    .with_context(|| format!("--camera {arg}: fps={f} is not a number"))?
            }
            _ => bail!("--camera {arg}: unknown option '{p}' (role=gate|patrol, fps=F)"),
        }
    }
    Ok(cam)
}

/// An RFC 3339 time or a duration back from now (`30m`, `2h`, `7d`).
fn parse_since(s: &str, now: OffsetDateTime) -> Result<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let n: i64 = n.parse().with_context(|| {
        format!("--since {s}: not an RFC 3339 time or a duration like 30m, 2h, 7d")
    })?;
    let d = match unit {
        "s" => time::Duration::seconds(n),
        "m" => time::Duration::minutes(n),
        "h" => time::Duration::hours(n),
        "d" => time::Duration::days(n),
        _ => bail!("--since {s}: unit must be s, m, h or d"),
    };
    Ok(now - d)
}

/// SIGINT (Ctrl-C) or SIGTERM (systemd stop).
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

fn photo_limits(config: &Config) -> PhotoLimits {
    PhotoLimits {
        max_bytes: config.storage.max_photo_bytes,
        max_pixels: config.storage.max_photo_pixels,
    }
}

/// Templates for every photo, or the first photo's error (nothing is written then).
fn templates(
    engine: &mut FaceEngine,
    gallery: &Gallery,
    config: &Config,
    photos: &[PathBuf],
    owner_id: Option<&str>,
    now: OffsetDateTime,
) -> Result<Vec<FaceTemplate>> {
    let mut uploads = Vec::new();
    for p in photos {
        let name = p.display().to_string();
        // Size is checked before reading the whole file.
        let size = std::fs::metadata(p)
            .with_context(|| format!("{name}: cannot read"))?
            .len();
        if size > config.storage.max_photo_bytes {
            load_photo(p, photo_limits(config))?;
        }
        let bytes = std::fs::read(p).with_context(|| format!("{name}: cannot read"))?;
        uploads.push(identify::PhotoUpload { name, bytes });
    }
    let rules = identify::EnrolRules {
        limits: photo_limits(config),
        threshold: config.matching.threshold,
        keep_photo: config.privacy.store_enrolment_photos,
    };
    Ok(identify::enrolment_templates(
        engine, gallery, uploads, owner_id, rules, now,
    )?)
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FACEGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    if let Command::Config(ConfigCmd::Check { file }) = &cli.command {
        return check_config(file);
    }
    let config = load_config(&cli.config)?;
    // Before anything opens the database: db::open keys every connection.
    let key = facegate::crypto::load_key(config.storage.key_file.as_deref())?;
    facegate::crypto::install(key)?;
    let now = OffsetDateTime::now_utc();
    let db = cli.db.as_deref();
    match cli.command {
        Command::Config(_) => unreachable!("handled above"),
        Command::Db(DbCmd::Backup { dest }) => {
            let path = db.map(Path::to_owned).unwrap_or(config.storage.db.clone());
            if !path.is_file() {
                bail!("database {}: not found", path.display());
            }
            if dest.exists() {
                bail!(
                    "backup {}: already exists (not overwritten)",
                    dest.display()
                );
            }
            // The one opener: keyed when a key is configured, so the copy
            // is encrypted with the same key.
            let conn = facegate::db::open(&path)
                .with_context(|| format!("database {}", path.display()))?;
            let dest_s = dest
                .to_str()
                .with_context(|| format!("backup {}: not UTF-8", dest.display()))?;
            conn.execute("VACUUM INTO ?1", [dest_s])
                .with_context(|| format!("backup {} to {}", path.display(), dest.display()))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("backup {}", dest.display()))?;
            println!("backed up {} to {}", path.display(), dest.display());
        }
        Command::Db(DbCmd::Migrate) => {
            let path = db_path(&config, db)?;
            let before = if path.is_file() {
                let conn = facegate::db::open(&path)
                    .with_context(|| format!("database {}", path.display()))?;
                conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
                    .with_context(|| format!("database {}", path.display()))?
            } else {
                0
            };
            let after = Registry::open(&path)?.schema_version()?;
            if i64::from(after) == before {
                println!(
                    "database {}: schema {after}, nothing to migrate",
                    path.display()
                );
            } else {
                println!("database {}: schema {before} -> {after}", path.display());
            }
        }
        Command::Doctor {
            no_cameras,
            no_broker,
            camera_timeout_s,
        } => {
            let mut config = config;
            if let Some(db) = db {
                config.storage.db = db.to_owned();
            }
            let opts = facegate::doctor::Options {
                cameras: !no_cameras,
                broker: !no_broker,
                camera_timeout: std::time::Duration::from_secs_f64(camera_timeout_s.max(0.1)),
                ..Default::default()
            };
            let checks = facegate::doctor::run(&config, &opts, |c| println!("{c}"));
            let failed = checks
                .iter()
                .filter(|c| c.status == facegate::doctor::Status::Fail)
                .count();
            let warned = checks
                .iter()
                .filter(|c| c.status == facegate::doctor::Status::Warn)
                .count();
            println!(
                "doctor: {} checks, {failed} failed, {warned} warnings",
                checks.len()
            );
            if failed > 0 {
                std::process::exit(1);
            }
        }
        Command::Eval {
            dataset,
            split,
            json,
        } => {
            let mut engines = FaceEngine::pool(&config)?;
            let r = facegate::eval::run_on(&mut engines, &dataset, split)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{}{}: {} identities, {} images, {} not acquired {:?}\nTAR@FAR1e-2 {:.3}  TAR@FAR1e-3 {:.3}  DIR@FPIR1% {:.3}  ({:.1} ms/image, {})",
                    r.dataset,
                    r.split
                        .as_deref()
                        .map(|h| format!(" (half {h})"))
                        .unwrap_or_default(),
                    r.identities,
                    r.images,
                    r.failed_to_acquire,
                    r.failed_by_cause,
                    r.tar_at_far_1e2,
                    r.tar_at_far_1e3,
                    r.dir_at_fpir_1e2,
                    r.ms_per_image,
                    r.model
                );
            }
        }
        Command::EvalLiveness {
            dataset,
            json,
            scale,
            subjects,
            exclude,
            split,
            threshold,
        } => {
            use facegate::eval_liveness::{self, SubjectFilter};
            let mut filter = match split.as_deref() {
                Some(h) => SubjectFilter::split(h)
                    .with_context(|| format!("--split {h}: expected a or b"))?,
                None => SubjectFilter::default(),
            };
            if let Some(s) = subjects {
                filter.only = Some(SubjectFilter::parse_ids(&s).map_err(anyhow::Error::msg)?);
            }
            if let Some(s) = exclude {
                filter.exclude = SubjectFilter::parse_ids(&s).map_err(anyhow::Error::msg)?;
            }
            if scale.iter().any(|s| !(*s > 0.0 && *s <= 4.0)) {
                bail!("--scale: each scale must be in (0, 4]");
            }
            let mut engine = FaceEngine::new(&config)?;
            let r = eval_liveness::run(&mut engine, &dataset, &scale, &filter, threshold)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                print!("{}", eval_liveness::summary(&r));
            }
        }
        Command::Identify { photo, liveness } => {
            let img = load_photo(&photo, photo_limits(&config))?;
            let mut engine = FaceEngine::new(&config)?;
            let gallery = Gallery::open(
                open_registry(&config, db)?,
                engine.model_id(),
                engine.dim(),
                now,
            )?;
            let checks = Checks {
                liveness,
                pose: true,
            };
            let faces: Vec<FaceResult> = identify::identify(
                &mut engine,
                &gallery,
                RgbView::from_image(&img),
                checks,
                config.matching.threshold,
                now,
            )?;
            let out = serde_json::json!({
                "photo": photo.display().to_string(),
                "width": img.width(),
                "height": img.height(),
                "threshold": config.matching.threshold,
                "faces": faces,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Command::Enroll(a) => {
            let mut engine = FaceEngine::new(&config)?;
            let mut gallery = Gallery::open(
                open_registry(&config, db)?,
                engine.model_id(),
                engine.dim(),
                now,
            )?;
            let t = templates(
                &mut engine,
                &gallery,
                &config,
                &a.photos,
                Some(&a.owner_id),
                now,
            )?;
            if a.add {
                let ids = gallery.add_faces(&a.owner_id, &t, &a.consent_by, now)?;
                println!(
                    "added {} face(s) to owner {}: templates {ids:?}",
                    ids.len(),
                    a.owner_id
                );
            } else {
                let owner = NewOwner {
                    id: a.owner_id.clone(),
                    name: a.name,
                    building: a.building,
                    unit: a.unit,
                    grid_code: a
                        .grid
                        .or_else(|| Some(config.site.grid_code.clone()).filter(|g| !g.is_empty())),
                    minor_under_14: a.minor,
                };
                let mut consent = Consent::new(now, a.consent_method, &a.consent_by);
                consent.guardian_name = a.guardian;
                consent.guardian_relation = a.guardian_relation;
                let ids = gallery.enroll(&owner, &consent, &t, &a.consent_by, now)?;
                println!("enrolled owner {} with {} face(s)", a.owner_id, ids.len());
            }
        }
        Command::Run {
            cameras,
            data_dir,
            mqtt,
            http,
        } => {
            if facegate::crypto::installed().is_none() {
                tracing::warn!(
                    "face data is not encrypted at rest: set storage.key_file (or {}) and run `facegate db encrypt`",
                    facegate::crypto::KEY_ENV
                );
            }
            let mut config = config;
            for c in &cameras {
                config.cameras.push(parse_camera_arg(c)?);
            }
            if let Some(u) = mqtt {
                config.mqtt.url = u;
            }
            if let Some(h) = http {
                config.http.listen = h;
            }
            config.validate(&cli.config)?;
            let db_path = db_path(&config, db)?;
            let data_dir = data_dir.unwrap_or_else(|| config.storage.data_dir.clone());
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async {
                let cancel = tokio_util::sync::CancellationToken::new();
                let c = cancel.clone();
                tokio::spawn(async move {
                    shutdown_signal().await;
                    tracing::info!("shutdown requested");
                    c.cancel();
                });
                facegate::run::run(config, &db_path, &data_dir, cancel).await
            })?;
        }
        Command::Replay {
            camera,
            role,
            fps,
            data_dir,
            stats,
            video,
        } => {
            let db_path = db_path(&config, db)?;
            let data_dir = data_dir.unwrap_or_else(|| config.storage.data_dir.clone());
            let cam_cfg = match config.cameras.iter().find(|c| c.name == camera) {
                Some(c) => c.clone(),
                None => {
                    parse_camera_arg(&format!("{camera}=file://{},role={role}", video.display()))?
                }
            };
            let mut ctx = facegate::pipeline::CameraContext::from_config(&cam_cfg, &config);
            if let Some(f) = fps {
                if !(f > 0.0 && f <= 60.0) {
                    bail!("--fps {f}: must be in (0, 60]");
                }
                ctx.detect_fps = f;
            }
            let mut out = std::io::stdout().lock();
            let s = facegate::pipeline::replay_file(
                &config,
                ctx,
                &video,
                &db_path,
                &data_dir,
                |t, e| {
                    use std::io::Write;
                    // The event, plus `video_t`: seconds into the video of the decision.
                    if let Ok(serde_json::Value::Object(mut m)) = serde_json::to_value(e) {
                        m.insert(
                            "video_t".into(),
                            serde_json::json!((t * 1000.0).round() / 1000.0),
                        );
                        let _ = writeln!(out, "{}", serde_json::Value::Object(m));
                    }
                },
            )?;
            if stats {
                let mut lat = s.latencies_s.clone();
                lat.sort_by(f64::total_cmp);
                let pct = |p: f64| {
                    lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
                        .map_or("-".to_owned(), |v| format!("{:.0}", v * 1000.0))
                };
                eprintln!(
                    "replay: {} frames ({:.1} s of video) in {:.1} s, {} processed, {} faces, {} events; decision latency p50 {} ms, p99 {} ms",
                    s.frames,
                    s.duration_s,
                    s.elapsed_s,
                    s.processed,
                    s.faces,
                    s.events,
                    pct(0.5),
                    pct(0.99)
                );
                let w = s.work;
                let share = |x: f64| 100.0 * x / w.frame_s.max(1e-9);
                eprintln!(
                    "replay: faces analysed {} (re-verifications of decided tracks {}, {:.1}/s of video), followed by box {}; recognition time: detect {:.0}%, analyse {:.0}% (re-verification {:.1}%); frames converted at full resolution {} of {} processed",
                    w.analysed,
                    w.reverified,
                    w.reverified as f64 / s.duration_s.max(1e-9),
                    w.followed,
                    share(w.detect_s),
                    share(w.analyse_s),
                    share(w.reverify_s),
                    w.full_frames,
                    s.processed
                );
            }
        }
        Command::Events(EventsCmd::List {
            since,
            kind,
            camera,
            limit,
            json,
        }) => {
            let store = facegate::events::EventStore::open(&db_path(&config, db)?)?;
            let kind = match kind {
                Some(k) => Some(facegate::events::EventKind::parse(&k).with_context(|| {
                    format!(
                        "--kind {k}: unknown event kind (one of {})",
                        facegate::events::EventKind::names()
                    )
                })?),
                None => None,
            };
            let since = match since {
                Some(s) => Some(parse_since(&s, now)?),
                None => None,
            };
            let events = store.list(&facegate::events::EventFilter {
                since,
                kind,
                camera,
                limit,
                ..Default::default()
            })?;
            for e in events {
                if json {
                    println!("{}", serde_json::to_string(&e)?);
                } else {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        e.ts.format(&Rfc3339).unwrap_or_default(),
                        e.kind.as_str(),
                        e.camera,
                        e.subject
                            .as_ref()
                            .map(|s| s.name().to_owned())
                            .or(e.stranger_id.clone())
                            .unwrap_or_else(|| "-".into()),
                        e.score
                            .map(|s| format!("{s:.2}"))
                            .unwrap_or_else(|| "-".into()),
                        e.id
                    );
                }
            }
        }
        Command::Bench(BenchCmd::Search {
            templates,
            dim,
            queries,
            exhaustive,
            json: _,
        }) => {
            let b = facegate::bench::SearchBench {
                templates,
                dim: dim.unwrap_or_else(|| facegate::bench::template_dim(&config)),
                queries,
                k: 5,
                exhaustive,
            };
            let r = facegate::bench::search(&b).map_err(anyhow::Error::msg)?;
            println!("{}", serde_json::to_string(&r)?);
        }
        Command::Bench(BenchCmd::Lock {
            templates,
            seconds,
            photos,
            bench_db,
            gate,
            gate_fps,
            gate_owner,
        }) => {
            let b = facegate::bench::LockBench {
                templates,
                seconds,
                photos,
                gate: gate
                    .map(|v| -> Result<_> {
                        Ok(facegate::bench::GateCamera {
                            video: facegate::bench::IngestSource::parse(&v)
                                .map_err(|e| anyhow::anyhow!("bench lock: {v}: {e}"))?,
                            detect_fps: gate_fps,
                        })
                    })
                    .transpose()?,
                gate_owner,
            };
            let r = facegate::bench::lock_contention(&config, &b, &bench_db)
                .map_err(anyhow::Error::msg)?;
            println!("{}", serde_json::to_string(&r)?);
        }
        Command::Bench(BenchCmd::Ingest {
            video,
            streams,
            seconds,
            detect_fps,
            no_baseline,
            role,
            motion_skip,
            gate,
            gate_fps,
            stream_nice,
        }) => {
            let parse = |v: &str| {
                facegate::bench::IngestSource::parse(v)
                    .map_err(|e| anyhow::anyhow!("bench ingest: {v}: {e}"))
            };
            let role = match role.as_str() {
                "gate" => facegate::config::CameraRole::Gate,
                "patrol" => facegate::config::CameraRole::Patrol,
                other => anyhow::bail!("bench ingest: --role {other}: gate or patrol"),
            };
            // As `facegate run` does: cameras that are not gates yield.
            let stream_nice =
                stream_nice.unwrap_or(if role == facegate::config::CameraRole::Gate {
                    0
                } else {
                    config.ingest.patrol_nice
                });
            let b = facegate::bench::IngestBench {
                videos: video.iter().map(|v| parse(v)).collect::<Result<_>>()?,
                streams,
                seconds,
                detect_fps,
                baseline: !no_baseline,
                role,
                motion_skip,
                gate: gate
                    .map(|g| -> Result<_> {
                        Ok(facegate::bench::GateCamera {
                            video: parse(&g)?,
                            detect_fps: gate_fps,
                        })
                    })
                    .transpose()?,
                stream_nice,
            };
            let r = facegate::bench::ingest(&config, &b, &db_path(&config, db)?)
                .map_err(anyhow::Error::msg)?;
            println!("{}", serde_json::to_string(&r)?);
        }
        Command::Owners(cmd) => owners(cmd, &config, db, now)?,
        Command::Token(cmd) => {
            let reg = open_registry(&config, db)?;
            let actor = format!(
                "cli:{}",
                std::env::var("USER").unwrap_or_else(|_| "local".into())
            );
            match cmd {
                TokenCmd::Create { role, name } => {
                    let t = reg.token_create(&name, role, &actor, now)?;
                    println!("{t}");
                    eprintln!(
                        "token '{name}' ({}) created; it is shown only now: keep it safe",
                        role.as_str()
                    );
                }
                TokenCmd::List { json } => {
                    let list = reg.tokens()?;
                    if json {
                        println!("{}", serde_json::to_string(&list)?);
                    } else {
                        for t in list {
                            let state = match t.revoked_at {
                                Some(at) => format!("revoked {}", at.format(&Rfc3339)?),
                                None => "active".into(),
                            };
                            println!(
                                "{:<24} {:<9} {} (created {} by {})",
                                t.name,
                                t.role.as_str(),
                                state,
                                t.created_at.format(&Rfc3339)?,
                                t.created_by
                            );
                        }
                    }
                }
                TokenCmd::Revoke { name } => {
                    reg.token_revoke(&name, &actor, now)?;
                    println!("token '{name}' revoked");
                }
            }
        }
        Command::Watchlist(cmd) => watchlist(cmd, &config, db, now)?,
        Command::Db(cmd) => db_command(&config, db, cmd)?,
        Command::Privacy(PrivacyCmd::Report { json }) => {
            let reg = open_registry(&config, db)?;
            let policy = facegate::registry::RetentionPolicy::from_config(&config);
            let report = reg.privacy_report(&policy, Some(&config.storage.data_dir), now)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            if let Some(w) = &report.warning {
                eprintln!("facegate: warning: {w}");
            }
        }
        Command::Audit { limit } => {
            let reg = open_registry(&config, db)?;
            for e in reg.audit(limit)? {
                println!("{}", serde_json::to_string(&e)?);
            }
        }
    }
    Ok(())
}

fn owners(cmd: OwnersCmd, config: &Config, db: Option<&Path>, now: OffsetDateTime) -> Result<()> {
    let mut reg = open_registry(config, db)?.with_snapshot_dir(&config.storage.data_dir);
    match cmd {
        OwnersCmd::List {
            search,
            limit,
            offset,
            json,
        } => {
            let list = reg.owners(&OwnerFilter {
                search,
                limit,
                offset,
                ..OwnerFilter::default()
            })?;
            for o in list {
                if json {
                    println!("{}", serde_json::to_string(&o)?);
                } else {
                    let w = &o.owner;
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{} face(s)",
                        w.id,
                        w.name,
                        w.building.as_deref().unwrap_or("-"),
                        w.unit.as_deref().unwrap_or("-"),
                        w.status,
                        o.template_count
                    );
                }
            }
        }
        OwnersCmd::Show { owner_id } => {
            println!("{}", serde_json::to_string_pretty(&reg.owner(&owner_id)?)?);
        }
        OwnersCmd::Remove {
            owner_id,
            by,
            consent_withdrawn,
        } => {
            let reason = if consent_withdrawn {
                ErasureReason::ConsentWithdrawn
            } else {
                ErasureReason::Request
            };
            let e = reg.erase_owner(&owner_id, reason, &by, now)?;
            println!(
                "owner {owner_id} erased (record, consents, face data; {} event(s), {} event face(s), {} queued message(s), {} snapshot file(s))",
                e.events, e.event_faces, e.outbox_messages, e.snapshot_files_deleted
            );
            if e.snapshot_files_pending > 0 {
                eprintln!(
                    "{} snapshot file(s) could not be deleted yet; the retention task retries",
                    e.snapshot_files_pending
                );
            }
        }
        OwnersCmd::Export { owner_id, out, by } => {
            let e = reg.export_owner(&owner_id, &out, &by, now)?;
            println!(
                "owner {owner_id} exported to {}: owner.json ({} event(s), {} audit row(s)) and {} file(s)",
                out.display(),
                e.events.len(),
                e.audit.len(),
                e.files.len()
            );
        }
        OwnersCmd::Suspend { owner_id, by } => {
            reg.set_status(&owner_id, OwnerStatus::Suspended, &by, now)?;
            println!("owner {owner_id} suspended");
        }
        OwnersCmd::Activate { owner_id, by } => {
            reg.set_status(&owner_id, OwnerStatus::Active, &by, now)?;
            println!("owner {owner_id} active");
        }
    }
    Ok(())
}

fn watchlist(cmd: WatchCmd, config: &Config, db: Option<&Path>, now: OffsetDateTime) -> Result<()> {
    match cmd {
        WatchCmd::Add {
            name,
            reason,
            priority,
            expires,
            days,
            by,
            photos,
        } => {
            let expires_at = match (expires, days) {
                (Some(s), _) => Some(
                    OffsetDateTime::parse(&s, &Rfc3339)
                        .with_context(|| format!("--expires {s}: not an RFC 3339 time"))?,
                ),
                (None, Some(d)) => Some(now + time::Duration::days(i64::from(d))),
                (None, None) => None,
            };
            let mut engine = FaceEngine::new(config)?;
            let mut gallery = Gallery::open(
                open_registry(config, db)?,
                engine.model_id(),
                engine.dim(),
                now,
            )?;
            let mut faces = Vec::new();
            for p in &photos {
                let img = load_photo(p, photo_limits(config))?;
                let (_, t) = identify::enrolment_template(
                    &mut engine,
                    RgbView::from_image(&img),
                    &p.display().to_string(),
                )?;
                faces.push(t);
            }
            let entry = NewWatchEntry {
                name,
                reason,
                priority,
                expires_at,
            };
            let id = gallery.watchlist_add(&entry, &faces, &by, now)?;
            println!("watch-list entry {id} added with {} face(s)", faces.len());
        }
        WatchCmd::List { json } => {
            let reg = open_registry(config, db)?;
            for e in reg.watchlist(now)? {
                if json {
                    println!("{}", serde_json::to_string(&e)?);
                } else {
                    println!(
                        "{}\t{}\t{}\t{}\t{}{}",
                        e.id,
                        e.name,
                        e.priority,
                        e.reason,
                        e.expires_at
                            .and_then(|t| t.format(&Rfc3339).ok())
                            .map(|t| format!("until {t}"))
                            .unwrap_or_else(|| "no expiry".into()),
                        if e.expired { " (expired)" } else { "" }
                    );
                }
            }
        }
        WatchCmd::Remove { id, by } => {
            let mut reg = open_registry(config, db)?.with_snapshot_dir(&config.storage.data_dir);
            reg.watchlist_remove(id, &by, now)?;
            println!("watch-list entry {id} removed");
        }
    }
    Ok(())
}

/// `facegate db …`: encryption at rest.
fn db_command(config: &Config, db: Option<&Path>, cmd: DbCmd) -> Result<()> {
    use facegate::crypto;
    let path = db.map(Path::to_owned).unwrap_or(config.storage.db.clone());
    let need_key = || {
        crypto::installed().with_context(|| {
            format!(
                "no key configured: set storage.key_file or {} (make one with `facegate db keygen FILE`)",
                crypto::KEY_ENV
            )
        })
    };
    match cmd {
        DbCmd::Backup { .. } | DbCmd::Migrate => unreachable!("handled in run()"),
        DbCmd::Keygen { file } => {
            crypto::write_key_file(&file, &crypto::MasterKey::generate()?)?;
            eprintln!("wrote a new key to {} (mode 0600)", file.display());
        }
        DbCmd::Encrypt => {
            let key = need_key()?;
            let tables = facegate::db::encrypt_plain(&path, key)?;
            let mut conn = facegate::db::open_with_key(&path, Some(key))?;
            let sealed = facegate::events::seal_plain_snapshots(
                &mut conn,
                &config.storage.data_dir,
                &key.snapshot_key(),
            )?;
            eprintln!(
                "{}: encrypted ({tables} tables), {sealed} snapshot files sealed; the plain files \
                 were removed, not overwritten (flash storage may keep old blocks)",
                path.display()
            );
        }
        DbCmd::Rekey { new_key_file } => {
            let old = need_key()?;
            let new = crypto::read_key_file(&new_key_file)?;
            if &new == old {
                bail!("{}: holds the current key", new_key_file.display());
            }
            facegate::db::rekey(&path, old, &new)?;
            let n = crypto::rekey_snapshots(&config.storage.data_dir.join("snapshots"), old, &new)?;
            eprintln!(
                "{}: re-encrypted, and {n} snapshot files; set storage.key_file to {} now",
                path.display(),
                new_key_file.display()
            );
        }
    }
    Ok(())
}
