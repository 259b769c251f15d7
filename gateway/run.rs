//! `facegate run`: the one place that builds the gateway from its parts and
//! stops it in order. The modules only provide parts ([`crate::pipeline`]
//! the recognition loop and the event sink, [`crate::source`] the cameras,
//! [`crate::publish`] the outbox publisher, [`crate::http`] the server,
//! [`crate::registry`] the gallery and retention, [`crate::systemd`] the
//! notify protocol); none of them starts another.
//!
//! Start, in this order:
//! 1. the face engine and the gallery the cameras and the API share;
//! 2. the HTTP API and console (bound first: a taken port fails at once);
//! 3. the MQTT publisher with its outbox, and the parts beside it;
//! 4. the event sink (SQLite, snapshots, outbox, live feed);
//! 5. the cameras: a source (GStreamer) and a recognition thread each;
//! 6. housekeeping: gallery reloads and retention, on the blocking pool;
//! 7. systemd: `READY=1`, the watchdog.
//!
//! Then it records camera health events until `cancel` (SIGINT/SIGTERM) or
//! until every camera has ended, and stops:
//! 1. **intake**: cameras and the HTTP accept loop stop, a reload in flight
//!    finishes, systemd is told `STOPPING=1`;
//! 2. **drain**: recognition threads decide their open tracks and commit
//!    the events, camera events that came in meanwhile are recorded;
//! 3. **flush**: the publisher sends what the outbox holds (within its
//!    grace period);
//! 4. **exit**: the HTTP requests in flight (within their grace period) and
//!    the housekeeping tasks end.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{CameraRole, Config};
use crate::events::{EventStore, Place, SnapshotWriter};
use crate::live::{Live, LiveCamera};
use crate::pipeline::{CameraContext, EventSink, MqttSink, PipelineError, Processor};
use crate::publish::PublisherHandle;
use crate::registry::Gallery;
use crate::source::{CameraEvent, CameraHandle};
use crate::vision::FaceEngine;

/// How often the gallery looks for enrolments made by another process (the
/// command line); only a changed database is reloaded.
const RELOAD_EVERY: Duration = Duration::from_secs(30);

/// Runs the gateway on `config` (its cameras and, unless `http.listen` is
/// empty, the API and console) until `cancel` or until every camera has
/// ended; see the module's documentation for the order of things.
pub async fn run(
    config: Config,
    db: &Path,
    data_dir: &Path,
    cancel: CancellationToken,
) -> Result<(), PipelineError> {
    if config.cameras.is_empty() && config.http.listen.is_empty() {
        return Err(PipelineError::Setup(
            "nothing to run: no cameras configured (add [[cameras]] or pass --camera NAME=URL) and HTTP is off (http.listen is empty)".into(),
        ));
    }
    if let Err(why) = crate::sched::check() {
        tracing::warn!("{why}");
    }
    let config = Arc::new(config);
    // Everything started below stops with `stop`: on `cancel`, and also
    // when every camera has ended.
    let stop = cancel.child_token();

    let engine = FaceEngine::new(&config).map_err(|source| PipelineError::Vision {
        camera: "*".into(),
        source,
    })?;
    let gallery = crate::pipeline::open_gallery_in(db, data_dir, &engine)?;
    let live = Arc::new(Live::new());

    let http = start_http(&config, db, data_dir, &gallery, &live, &stop).await?;
    // From here on a failure must also stop the server.
    let started = start_the_rest(&config, db, data_dir, engine, &gallery, &live, &stop);
    let parts = match started {
        Ok(p) => p,
        Err(e) => {
            stop.cancel();
            join_http(http).await;
            return Err(e);
        }
    };
    let Parts {
        publisher,
        beside_publisher,
        sink,
        mut cameras,
        housekeeping,
    } = parts;
    let systemd = tokio::spawn(crate::systemd::supervise(
        config.http.listen.clone(),
        stop.clone(),
    ));

    // Running: camera health events become events.
    let site = site_place(&config);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            ev = cameras.events.recv(), if !cameras.is_empty() => match ev {
                Some(ev) => sink.emit(&crate::pipeline::camera_event(&ev, &cameras.contexts, &site)),
                None => break,
            },
        }
    }

    // 1. Intake.
    tracing::info!("stopping: sources first, then in-flight tracks");
    stop.cancel();
    for h in &cameras.handles {
        h.stop();
    }
    let _ = housekeeping.reload.await;
    let _ = systemd.await;
    // 2. Drain.
    let workers = std::mem::take(&mut cameras.workers);
    let _ = tokio::task::spawn_blocking(move || {
        for w in workers {
            let _ = w.join();
        }
    })
    .await;
    while let Ok(ev) = cameras.events.try_recv() {
        sink.emit(&crate::pipeline::camera_event(
            &ev,
            &cameras.contexts,
            &site,
        ));
    }
    drop(cameras);
    // 3. Flush: the parts beside the publisher end (they saw `stop` at
    // intake), then the publisher sends what the outbox holds.
    for task in beside_publisher {
        let _ = task.await;
    }
    if let Some(p) = publisher {
        p.shutdown().await;
    }
    // 4. Exit.
    let _ = housekeeping.retention.await;
    join_http(http).await;
    Ok(())
}

/// What runs once the HTTP server is up.
struct Parts {
    publisher: Option<PublisherHandle>,
    /// Tasks that run beside the publisher; see [`start_the_rest`].
    beside_publisher: Vec<JoinHandle<()>>,
    sink: Arc<EventSink>,
    cameras: Cameras,
    housekeeping: Housekeeping,
}

fn start_the_rest(
    config: &Arc<Config>,
    db: &Path,
    data_dir: &Path,
    engine: FaceEngine,
    gallery: &Arc<Mutex<Gallery>>,
    live: &Arc<Live>,
    stop: &CancellationToken,
) -> Result<Parts, PipelineError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| PipelineError::Setup(format!("data directory {}: {e}", data_dir.display())))?;
    let publisher = start_publisher(config, db, gallery)?;
    // Parts that run beside the publisher (registry sync between boxes,
    // say) start here: a task that ends on `stop` (cancelled at intake),
    // pushed onto `beside_publisher`; `run` awaits them before the
    // publisher's last flush.
    let mut beside_publisher: Vec<JoinHandle<()>> = Vec::new();
    // Registry sync with the site's other boxes (`[sync]`, off by default).
    // It stops at intake; changes not yet published stay queued in the
    // database for the next start.
    if let Some(task) = crate::sync::start(
        &config.sync,
        &config.mqtt,
        crate::sync::SyncSetup {
            site: config.site.code.clone(),
            db: db.to_owned(),
            model_id: engine.model_id().to_owned(),
            gallery: gallery.clone(),
            live: live.clone(),
        },
        stop.clone(),
    )
    .map_err(|e| PipelineError::Setup(e.to_string()))?
    {
        beside_publisher.push(task);
    }
    let sink = Arc::new(event_sink(
        config,
        db,
        data_dir,
        engine.model_id(),
        live,
        publisher.as_ref(),
    )?);
    let cameras = start_cameras(config, engine, gallery, &sink, live, stop)?;
    let housekeeping = Housekeeping::start(config, db, data_dir, gallery, stop);
    Ok(Parts {
        publisher,
        beside_publisher,
        sink,
        cameras,
        housekeeping,
    })
}

/// The HTTP API and console, unless `http.listen` is empty.
async fn start_http(
    config: &Arc<Config>,
    db: &Path,
    data_dir: &Path,
    gallery: &Arc<Mutex<Gallery>>,
    live: &Arc<Live>,
    stop: &CancellationToken,
) -> Result<Option<JoinHandle<std::io::Result<()>>>, PipelineError> {
    if config.http.listen.is_empty() {
        return Ok(None);
    }
    let listener = crate::http::bind(&config.http.listen).await?;
    let addr = listener.local_addr().ok();
    let state =
        crate::http::AppState::new(config.clone(), db, data_dir, gallery.clone(), live.clone())?;
    tracing::info!(addr = ?addr, "HTTP API and console listening");
    eprintln!(
        "facegate: console and API on http://{}/",
        addr.map_or_else(|| config.http.listen.clone(), |a| a.to_string())
    );
    Ok(Some(tokio::spawn(crate::http::serve(
        Arc::new(state),
        listener,
        stop.clone(),
    ))))
}

async fn join_http(server: Option<JoinHandle<std::io::Result<()>>>) {
    let Some(s) = server else { return };
    match s.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "HTTP server failed"),
        Err(e) => tracing::error!(error = %e, "HTTP server task failed"),
    }
}

/// The MQTT publisher (and the remote commands it receives) when `[mqtt]`
/// is set.
fn start_publisher(
    config: &Config,
    db: &Path,
    gallery: &Arc<Mutex<Gallery>>,
) -> Result<Option<PublisherHandle>, PipelineError> {
    if !config.mqtt.enabled() {
        return Ok(None);
    }
    let commands = match config.mqtt.command_secret {
        Some(_) => Some(crate::http::commands::CommandHandler::new(
            &config.mqtt,
            &config.site.code,
            gallery.clone(),
            crate::http::commands::lazy_engine_embedder(config.clone()),
        )?),
        None => None,
    };
    Ok(Some(crate::publish::start(
        &config.mqtt,
        crate::publish::PublisherSetup {
            site: config.site.code.clone(),
            cameras: config.cameras.iter().map(|c| c.name.clone()).collect(),
            db: db.to_owned(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        commands,
    )?))
}

/// Where decided events go: SQLite with their outbox rows, snapshots, the
/// live feed, the publisher's wake-up.
fn event_sink(
    config: &Config,
    db: &Path,
    data_dir: &Path,
    model_id: &str,
    live: &Arc<Live>,
    publisher: Option<&PublisherHandle>,
) -> Result<EventSink, PipelineError> {
    let mut sink = EventSink::new(
        EventStore::open(db)?,
        SnapshotWriter::new(data_dir),
        EventSink::log_publisher(),
    )
    .with_live(live.clone());
    if config.privacy.event_face_search {
        sink = sink.with_face_search(model_id);
    }
    if let Some(p) = publisher {
        sink = sink.with_mqtt(MqttSink {
            cfg: config.mqtt.clone(),
            site: config.site.code.clone(),
            wake: p.notifier(),
        });
    }
    Ok(sink)
}

/// The running cameras.
struct Cameras {
    /// Health events (offline, online) of every camera.
    events: tokio::sync::mpsc::Receiver<CameraEvent>,
    contexts: HashMap<String, CameraContext>,
    handles: Vec<Arc<CameraHandle>>,
    /// The recognition threads.
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Cameras {
    fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }
}

/// One source and one recognition thread per configured camera; the first
/// camera takes `engine`, each other one loads its own.
fn start_cameras(
    config: &Arc<Config>,
    engine: FaceEngine,
    gallery: &Arc<Mutex<Gallery>>,
    sink: &Arc<EventSink>,
    live: &Arc<Live>,
    stop: &CancellationToken,
) -> Result<Cameras, PipelineError> {
    let (tx, events) = tokio::sync::mpsc::channel::<CameraEvent>(64);
    let mut cameras = Cameras {
        events,
        contexts: HashMap::new(),
        handles: Vec::new(),
        workers: Vec::new(),
    };
    let mut engine = Some(engine);
    let prefix = format!("{:x}", OffsetDateTime::now_utc().unix_timestamp());
    let ingest = &config.ingest;
    let named = !(ingest.prefer_decoders.is_empty() && ingest.avoid_decoders.is_empty());
    if named && !config.cameras.is_empty() {
        let missing =
            crate::source::rank_decoders(&ingest.prefer_decoders, &ingest.avoid_decoders)?;
        if !missing.is_empty() {
            tracing::warn!(
                missing = %missing.join(", "),
                "decoders named in [ingest] are not installed; decoding with the others"
            );
        }
        let h264 = crate::source::decoder_for("video/x-h264")?;
        tracing::info!(h264 = h264.as_deref().unwrap_or("none"), "decoder choice");
    }
    for cam in &config.cameras {
        let mut spec = crate::source::CameraSpec::from_config(cam)?;
        if cam.role != CameraRole::Gate {
            spec.nice = config.ingest.patrol_nice;
        }
        let handle = Arc::new(crate::source::spawn_camera(spec, tx.clone(), stop.clone())?);
        // The handle is kept at once, so that a later camera's failure
        // still stops this one.
        cameras.handles.push(handle.clone());
        let ctx = CameraContext::from_config(cam, config);
        cameras.contexts.insert(cam.name.clone(), ctx.clone());
        let latest = Arc::new(Mutex::new(None));
        live.add_camera(LiveCamera {
            ctx: ctx.clone(),
            handle: handle.clone(),
            latest: latest.clone(),
        });
        let live_cam = Arc::new(LiveCamera {
            ctx: ctx.clone(),
            handle: handle.clone(),
            latest,
        });
        let processor = Processor::new(ctx, config, &format!("{}-{prefix}", cam.name));
        let eng = match engine.take() {
            Some(e) => e,
            None => FaceEngine::new(config).map_err(|source| PipelineError::Vision {
                camera: cam.name.clone(),
                source,
            })?,
        };
        let (g, s, c, l) = (gallery.clone(), sink.clone(), stop.clone(), live.clone());
        let max_side = config.detector().max_side;
        let nice = if cam.role == CameraRole::Gate {
            0
        } else {
            config.ingest.patrol_nice
        };
        let name = cam.name.clone();
        let worker = std::thread::Builder::new()
            .name(format!("recog-{}", cam.name))
            .spawn(move || {
                if let Err(e) = crate::sched::lower_for_life(nice) {
                    tracing::warn!(camera = %name, "{e}; this camera's recognition keeps normal priority");
                }
                crate::pipeline::run_camera(
                    handle,
                    processor,
                    eng,
                    g,
                    s,
                    max_side,
                    Some(live_cam),
                    Some(l),
                    c,
                )
            })
            .map_err(|e| {
                PipelineError::Setup(format!("camera {}: cannot start a thread: {e}", cam.name))
            })?;
        cameras.workers.push(worker);
        tracing::info!(camera = %cam.name, role = ?cam.role, "camera started");
    }
    Ok(cameras)
}

/// The site's own place, for events of a camera not in the config.
fn site_place(config: &Config) -> Place {
    Place {
        site: config.site.code.clone(),
        street: config.site.street_code.clone(),
        community: config.site.community_code.clone(),
        grid: config.site.grid_code.clone(),
        building: None,
    }
}

/// The periodic tasks: gallery reloads and retention.
struct Housekeeping {
    reload: JoinHandle<()>,
    retention: JoinHandle<()>,
}

impl Housekeeping {
    fn start(
        config: &Arc<Config>,
        db: &Path,
        data_dir: &Path,
        gallery: &Arc<Mutex<Gallery>>,
        stop: &CancellationToken,
    ) -> Self {
        Housekeeping {
            reload: tokio::spawn(reload_task(gallery.clone(), db.to_owned(), stop.clone())),
            retention: tokio::spawn(retention_task(
                config.clone(),
                db.to_owned(),
                data_dir.to_owned(),
                stop.clone(),
            )),
        }
    }
}

/// Every [`RELOAD_EVERY`] (and once at start), the gallery is reloaded if
/// the database changed (enrolments made by the command line in another
/// process): on the blocking pool, one at a time; the gallery is locked only
/// to swap the new index in. A reload in flight finishes before this ends.
async fn reload_task(gallery: Arc<Mutex<Gallery>>, db: PathBuf, stop: CancellationToken) {
    let mut tick = tokio::time::interval(RELOAD_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (g, db) = (gallery.clone(), db.clone());
        let reload = tokio::task::spawn_blocking(move || {
            if let Err(e) = Gallery::reload_if_changed(&g, &db, OffsetDateTime::now_utc()) {
                tracing::error!(error = %e, "gallery reload failed; keeping the previous one");
            }
        });
        let _ = reload.await;
    }
}

/// Retention (`[retention]`): every `interval_s`, and once at start, each
/// kind of personal data older than its period is deleted, with the
/// snapshot files of deleted events and of erasures. SQLite and file work
/// run on the blocking pool, never on the runtime's threads; a failure is
/// logged and retried at the next tick. Ends with `stop`.
async fn retention_task(
    config: Arc<Config>,
    db: PathBuf,
    data_dir: PathBuf,
    stop: CancellationToken,
) {
    let policy = crate::registry::RetentionPolicy::from_config(&config);
    let opened = tokio::task::spawn_blocking(move || {
        let registry = crate::registry::Registry::open(&db)?.with_snapshot_dir(&data_dir);
        let people = registry.people_with_faces()?;
        Ok::<_, crate::registry::RegistryError>((registry, people))
    })
    .await;
    let mut registry = match opened {
        Ok(Ok((registry, people))) => {
            if let Some(warning) = crate::registry::filing_warning(people) {
                tracing::warn!(people, "{warning}");
            }
            registry
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "retention disabled: cannot open the database");
            return;
        }
        Err(_) => return,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(config.retention.interval_s.max(1)));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let policy = policy.clone();
        let run = tokio::task::spawn_blocking(move || {
            let purged = registry.enforce_retention(&policy, OffsetDateTime::now_utc());
            (registry, purged)
        })
        .await;
        let Ok((back, purged)) = run else {
            tracing::error!("retention task panicked; retention stopped");
            return;
        };
        registry = back;
        match purged {
            Ok(p) if !p.is_empty() => tracing::info!(
                events = p.events.values().sum::<usize>(),
                event_faces = p.event_faces + p.stranger_faces,
                snapshot_files = p.snapshot_files,
                audit = p.audit,
                watchlist = p.watchlist,
                delivered_outbox = p.delivered_outbox,
                "retention: expired data deleted"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention run failed; retrying at the next tick"),
        }
    }
}
