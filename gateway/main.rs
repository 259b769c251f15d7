//! The `facegate` command: argument parsing and wiring only.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use facegate::config::Config;
use facegate::identify::{self, FaceResult};
use facegate::registry::{
    Consent, ConsentMethod, FaceTemplate, Gallery, NewOwner, NewWatchEntry, OwnerFilter,
    OwnerStatus, Priority, Registry,
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
        /// One JSON object instead of a readable summary.
        #[arg(long)]
        json: bool,
    },
    /// Recent changes to the registry (who did what, when).
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: usize,
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
    /// Erase an owner: their record, consents and face data (audited).
    Remove {
        owner_id: String,
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
    if let Err(e) = run() {
        eprintln!("facegate: {e:#}");
        std::process::exit(1);
    }
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

fn open_registry(config: &Config, db: Option<&Path>) -> Result<Registry> {
    let path = match db {
        Some(p) => p.to_owned(),
        None => {
            let p = config.storage.db.clone();
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            p
        }
    };
    Ok(Registry::open(&path)?)
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
    let mut out = Vec::new();
    for p in photos {
        let img = load_photo(p, photo_limits(config))?;
        let name = p.display().to_string();
        let (_, mut t) = identify::enrolment_template(engine, RgbView::from_image(&img), &name)?;
        identify::check_not_enrolled_elsewhere(
            gallery,
            &t,
            owner_id,
            config.matching.threshold,
            &name,
            now,
        )?;
        if config.privacy.store_enrolment_photos {
            t.photo = Some(std::fs::read(p).with_context(|| format!("reading {name}"))?);
        }
        out.push(t);
    }
    Ok(out)
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
    let config = load_config(&cli.config)?;
    let now = OffsetDateTime::now_utc();
    let db = cli.db.as_deref();
    match cli.command {
        Command::Eval { dataset, json } => {
            let mut engine = FaceEngine::new(&config)?;
            let r = facegate::eval::run(&mut engine, &dataset)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{}: {} identities, {} images, {} not acquired\nTAR@FAR1e-2 {:.3}  TAR@FAR1e-3 {:.3}  DIR@FPIR1% {:.3}  ({:.1} ms/image, {})",
                    r.dataset,
                    r.identities,
                    r.images,
                    r.failed_to_acquire,
                    r.tar_at_far_1e2,
                    r.tar_at_far_1e3,
                    r.dir_at_fpir_1e2,
                    r.ms_per_image,
                    r.model
                );
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
        Command::Owners(cmd) => owners(cmd, &config, db, now)?,
        Command::Watchlist(cmd) => watchlist(cmd, &config, db, now)?,
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
    let mut reg = open_registry(config, db)?;
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
        OwnersCmd::Remove { owner_id, by } => {
            reg.remove_owner(&owner_id, &by, now)?;
            println!("owner {owner_id} erased (record, consents and face data)");
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
            let mut reg = open_registry(config, db)?;
            reg.watchlist_remove(id, &by, now)?;
            println!("watch-list entry {id} removed");
        }
    }
    Ok(())
}
