//! Events: what the gateway decided (one per face track, or a camera's state
//! change), stored in SQLite and handed to a publish sink; snapshots on disk.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use image::RgbImage;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::CameraRole;
use crate::registry::{Priority, RegistryError, Subject};

/// Payload schema version; bump on incompatible changes.
pub const EVENT_SCHEMA: u32 = 1;

/// Whether an event of a kind is an alert (the MQTT `alerts` topic, the
/// payload's `alert` field, the live feed's `alerts_only`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alerting {
    /// A record only (an owner's pass, an undecided track).
    No,
    /// Something for security staff to act on: flagged in the console.
    Raises,
    /// The end of an earlier alert (a camera back online): sent with the
    /// alerts so the command centre can clear it, not flagged in the console.
    Clears,
}

/// Declares [`EventKind`] and everything that is said per kind, in one
/// table: a new kind is one line here, and the compiler points at every
/// `match` on the kind that must learn it. Lists of kinds elsewhere (the
/// API's schema, the console, the CLI help) come from [`EventKind::ALL`] or
/// are checked against it by a test.
macro_rules! event_kinds {
    ($(
        $(#[$doc:meta])*
        $kind:ident = $name:literal, alert: $alert:ident, priority: $priority:ident;
    )*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum EventKind {
            $(
                $(#[$doc])*
                #[serde(rename = $name)]
                $kind,
            )*
        }

        impl EventKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$kind),*];

            /// The wire name: JSON `kind`, SQLite, MQTT, the API, the CLI.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$kind => $name,)*
                }
            }

            /// Whether (and how) this kind is an alert.
            pub const fn alerting(self) -> Alerting {
                match self {
                    $(EventKind::$kind => Alerting::$alert,)*
                }
            }

            /// The priority an event of this kind has unless it carries its
            /// own (a watch-list entry's).
            pub const fn default_priority(self) -> Priority {
                match self {
                    $(EventKind::$kind => Priority::$priority,)*
                }
            }
        }
    };
}

event_kinds! {
    /// An owner at a gate: the gate opens.
    OwnerPass = "owner_pass", alert: No, priority: Low;
    /// An unknown face (one per track, with a stable stranger id).
    Stranger = "stranger", alert: Raises, priority: Normal;
    /// A watch-list hit (its priority is the entry's).
    Watchlist = "watchlist", alert: Raises, priority: High;
    /// A liveness failure at a gate (photo, screen): never an open.
    Spoof = "spoof", alert: Raises, priority: High;
    /// A stranger seen on several tracks within a short time: a second
    /// event on the stranger's track.
    Loitering = "loitering", alert: Raises, priority: High;
    /// A track with enough faces that could not be decided safely (faces
    /// too small, a match too near the threshold, liveness uncertain):
    /// recorded with its reason, never an alert and never an open.
    Undecided = "undecided", alert: No, priority: Low;
    /// A camera stopped delivering frames (error, end of stream, stall).
    CameraOffline = "camera_offline", alert: Raises, priority: High;
    /// A camera delivers frames again.
    CameraOnline = "camera_online", alert: Clears, priority: Normal;
}

impl EventKind {
    /// Alerts go to security staff (and the command centre's alert topic).
    pub fn is_alert(self) -> bool {
        self.alerting() != Alerting::No
    }

    /// A camera's state change (retained `cameras/<camera>/status`), not a
    /// decision about a face track.
    pub fn is_camera_state(self) -> bool {
        matches!(self, EventKind::CameraOffline | EventKind::CameraOnline)
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        Self::ALL.iter().copied().find(|k| k.as_str() == s)
    }

    /// The wire names, comma separated, for messages that list them.
    pub fn names() -> String {
        Self::ALL
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an event happened in the city's grid.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Place {
    pub site: String,
    pub street: String,
    pub community: String,
    pub grid: String,
    pub building: Option<String>,
}

/// Snapshot files, relative to the data directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub face: String,
    pub scene: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub schema: u32,
    /// Unique and stable across updates and redelivery.
    pub id: String,
    pub kind: EventKind,
    /// 0 when first decided; incremented when the identity got surer.
    pub revision: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub ts: OffsetDateTime,
    #[serde(flatten)]
    pub place: Place,
    pub camera: String,
    pub role: CameraRole,
    pub track_id: Option<u64>,
    pub subject: Option<Subject>,
    pub score: Option<f32>,
    pub liveness: Option<f32>,
    pub stranger_id: Option<String>,
    pub priority: Option<Priority>,
    /// The gate to open (owner_pass at a gate camera).
    pub gate: Option<String>,
    /// Faces of the track the decision rests on.
    pub faces: Option<u32>,
    /// Why (camera offline, spoof, undecided).
    pub reason: Option<String>,
    /// Seconds from the track's first sighting to this decision.
    #[serde(default)]
    pub seen_for_s: Option<f32>,
    /// The same decision for the same person at this camera within the
    /// repeat-alert cooldown: recorded (every track has its decision) but
    /// not alerted again and never an open.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repeat: bool,
    pub snapshot: Option<Snapshot>,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A new event id: time, camera, a process-wide counter and the process id,
/// unique without coordination.
pub fn new_event_id(ts: OffsetDateTime, camera: &str) -> String {
    let ms = ts.unix_timestamp_nanos() / 1_000_000;
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!(
        "ev-{ms:x}-{}-{n:x}{:x}",
        camera,
        std::process::id() & 0xffff
    )
}

impl Event {
    /// A fresh event with the camera's place and nothing else set.
    pub fn new(
        kind: EventKind,
        ts: OffsetDateTime,
        camera: &str,
        role: CameraRole,
        place: &Place,
    ) -> Self {
        Event {
            schema: EVENT_SCHEMA,
            id: new_event_id(ts, camera),
            kind,
            revision: 0,
            ts,
            place: place.clone(),
            camera: camera.to_owned(),
            role,
            track_id: None,
            subject: None,
            score: None,
            liveness: None,
            stranger_id: None,
            priority: None,
            gate: None,
            faces: None,
            reason: None,
            seen_for_s: None,
            repeat: false,
            snapshot: None,
        }
    }
}

/// A message for the broker, queued in the outbox table.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    /// The event id (or another stable id): consumers drop duplicates by it.
    pub message_id: String,
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    /// Never send after this (a gate that opens late is a security hole).
    pub expires_at: Option<OffsetDateTime>,
}

/// Events in SQLite, on the registry's database file.
pub struct EventStore {
    conn: Connection,
}

fn sql(context: &'static str) -> impl FnOnce(rusqlite::Error) -> RegistryError {
    move |source| RegistryError::Sqlite {
        context: context.into(),
        source,
    }
}

/// Filter for [`EventStore::list`].
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    pub kind: Option<EventKind>,
    pub camera: Option<String>,
    pub subject_id: Option<String>,
    pub limit: usize,
    /// Events to skip (paging).
    pub offset: usize,
}

/// The face a stored event rests on, for search by photo.
#[derive(Clone, Copy)]
pub struct EventFace<'a> {
    pub model_id: &'a str,
    pub embedding: &'a [f32],
}

/// One search hit: an event and how similar its face is to the query.
#[derive(Debug, Clone, Serialize)]
pub struct FaceHit {
    pub score: f32,
    pub event: Event,
}

impl EventStore {
    /// Opens (and migrates) the database, with a connection of its own.
    pub fn open(path: &Path) -> Result<Self, RegistryError> {
        Ok(Self {
            conn: crate::registry::schema::open(path)?,
        })
    }

    /// Inserts a new event or replaces the stored one with the same id (an update).
    pub fn save(&self, e: &Event) -> Result<(), RegistryError> {
        self.save_with_outbox(e, &[])
    }

    /// Saves an event and queues its messages in ONE transaction: either
    /// both are on disk or neither is.
    pub fn save_with_outbox(
        &self,
        e: &Event,
        messages: &[OutboxMessage],
    ) -> Result<(), RegistryError> {
        self.save_full(e, None, messages)
    }

    /// [`save_with_outbox`](Self::save_with_outbox), with the face the
    /// decision rests on (for search by photo), all in one transaction.
    pub fn save_full(
        &self,
        e: &Event,
        face: Option<EventFace<'_>>,
        messages: &[OutboxMessage],
    ) -> Result<(), RegistryError> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(sql("begin event transaction"))?;
        Self::write_event(&tx, e)?;
        if let Some(f) = face {
            let blob: Vec<u8> = f.embedding.iter().flat_map(|v| v.to_le_bytes()).collect();
            tx.execute(
                "INSERT INTO event_faces (event_id, ts, model_id, embedding) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (event_id) DO UPDATE SET model_id = ?3, embedding = ?4",
                params![e.id, (e.ts.unix_timestamp_nanos() / 1_000_000) as i64, f.model_id, blob],
            )
            .map_err(sql("store event face"))?;
        }
        let ms = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;
        let now = ms(OffsetDateTime::now_utc());
        for m in messages {
            tx.execute(
                "INSERT INTO outbox (message_id, topic, payload, qos, retain, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![m.message_id, m.topic, m.payload, m.qos, m.retain as i64, now, m.expires_at.map(ms)],
            )
            .map_err(sql("queue message in the outbox"))?;
        }
        tx.commit().map_err(sql("commit event"))
    }

    /// The connection, for the outbox publisher (same file, same WAL).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn write_event(conn: &Connection, e: &Event) -> Result<(), RegistryError> {
        let body =
            serde_json::to_string(e).map_err(|err| RegistryError::Invalid(err.to_string()))?;
        let (subject_kind, subject_id) = match &e.subject {
            Some(Subject::Owner { id, .. }) => (Some("owner"), Some(id.clone())),
            Some(Subject::Watch { id, .. }) => (Some("watch"), Some(id.to_string())),
            None => (None, e.stranger_id.clone()),
        };
        let ms = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;
        conn.execute(
            "INSERT INTO events (id, kind, ts, updated_ts, revision, camera, site, track_id,
                                     subject_kind, subject_id, score, priority, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT (id) DO UPDATE SET kind = ?2, updated_ts = ?4, revision = ?5,
                     subject_kind = ?9, subject_id = ?10, score = ?11, priority = ?12, body = ?13",
            params![
                e.id,
                e.kind.as_str(),
                ms(e.ts),
                ms(OffsetDateTime::now_utc()),
                e.revision,
                e.camera,
                e.place.site,
                e.track_id.map(|t| t as i64),
                subject_kind,
                subject_id,
                e.score.map(f64::from),
                e.priority.map(|p| p.as_str()),
                body
            ],
        )
        .map_err(sql("store event"))?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<Event>, RegistryError> {
        let body: Option<String> = self
            .conn
            .query_row("SELECT body FROM events WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .map_err(sql("read event"))?;
        body.map(|b| parse_body(id, &b)).transpose()
    }

    /// Events newest first.
    pub fn list(&self, f: &EventFilter) -> Result<Vec<Event>, RegistryError> {
        let ms = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, body FROM events
                 WHERE (?1 IS NULL OR ts >= ?1) AND (?2 IS NULL OR ts < ?2)
                   AND (?3 IS NULL OR kind = ?3) AND (?4 IS NULL OR camera = ?4)
                   AND (?5 IS NULL OR subject_id = ?5)
                 ORDER BY ts DESC, id DESC LIMIT ?6 OFFSET ?7",
            )
            .map_err(sql("query events"))?;
        let limit = if f.limit == 0 {
            100
        } else {
            f.limit.min(10_000)
        } as i64;
        let rows = stmt
            .query_map(
                params![
                    f.since.map(ms),
                    f.until.map(ms),
                    f.kind.map(EventKind::as_str),
                    f.camera,
                    f.subject_id,
                    limit,
                    f.offset.min(i64::MAX as usize) as i64
                ],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            )
            .map_err(sql("query events"))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, body) = row.map_err(sql("read event"))?;
            out.push(parse_body(&id, &body)?);
        }
        Ok(out)
    }
}

impl EventStore {
    /// Events since `since` whose face (made by `model_id`) has cosine
    /// similarity ≥ `min_score` with `query` (unit length), best first, at
    /// most `limit`. Returns the hits and how many faces were compared. A
    /// linear scan: the faces of a retention window of one estate's events
    /// (tens of thousands) take milliseconds.
    pub fn search_faces(
        &self,
        model_id: &str,
        query: &[f32],
        since: OffsetDateTime,
        min_score: f32,
        limit: usize,
    ) -> Result<(Vec<FaceHit>, usize), RegistryError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT event_id, embedding FROM event_faces
                 WHERE model_id = ?1 AND ts >= ?2",
            )
            .map_err(sql("query event faces"))?;
        let rows = stmt
            .query_map(
                params![model_id, (since.unix_timestamp_nanos() / 1_000_000) as i64],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )
            .map_err(sql("query event faces"))?;
        let mut scored = Vec::new();
        let mut searched = 0;
        for row in rows {
            let (id, blob) = row.map_err(sql("read event face"))?;
            if blob.len() != query.len() * 4 {
                continue;
            }
            searched += 1;
            let score: f32 = blob
                .chunks_exact(4)
                .zip(query)
                .map(|(b, q)| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * q)
                .sum();
            if score >= min_score {
                scored.push((score, id));
            }
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.truncate(limit);
        let mut hits = Vec::with_capacity(scored.len());
        for (score, id) in scored {
            if let Some(event) = self.get(&id)? {
                hits.push(FaceHit { score, event });
            }
        }
        Ok((hits, searched))
    }

    /// Outbox messages not yet acknowledged by the broker.
    pub fn outbox_depth(&self) -> Result<u64, RegistryError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM outbox WHERE delivered_at IS NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as u64)
            .map_err(sql("count outbox"))
    }
}

fn parse_body(id: &str, body: &str) -> Result<Event, RegistryError> {
    serde_json::from_str(body)
        .map_err(|e| RegistryError::Invalid(format!("event {id}: stored body unreadable: {e}")))
}

/// Writes snapshot JPEGs under `<data_dir>/snapshots/<YYYY-MM-DD>/`;
/// with a key ([`crate::crypto::installed`]) each is sealed
/// (ChaCha20-Poly1305) as `<name>.jpg.enc`, and the event records that name.
pub struct SnapshotWriter {
    data_dir: PathBuf,
    key: Option<crate::crypto::SnapshotKey>,
}

impl SnapshotWriter {
    /// A writer that encrypts when the process has a key.
    pub fn new(data_dir: &Path) -> Self {
        Self::with_key(
            data_dir,
            crate::crypto::installed().map(|k| k.snapshot_key()),
        )
    }

    /// A writer with an explicit snapshot key (`None`: plain JPEGs).
    pub fn with_key(data_dir: &Path, key: Option<crate::crypto::SnapshotKey>) -> Self {
        Self {
            data_dir: data_dir.to_owned(),
            key,
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Saves the face crop and the scaled scene of an event. A full disk or
    /// a read-only folder is an error for the caller to log; the event is
    /// still stored and published without its snapshot.
    pub fn save(
        &self,
        event_id: &str,
        ts: OffsetDateTime,
        face: &RgbImage,
        scene: &RgbImage,
    ) -> std::io::Result<Snapshot> {
        let day = format!(
            "{:04}-{:02}-{:02}",
            ts.year(),
            u8::from(ts.month()),
            ts.day()
        );
        let rel = Path::new("snapshots").join(day);
        private_dir(&self.data_dir.join("snapshots"))?;
        private_dir(&self.data_dir.join(&rel))?;
        let ext = if self.key.is_some() {
            ".jpg.enc"
        } else {
            ".jpg"
        };
        let face_rel = rel.join(format!("{event_id}-face{ext}"));
        let scene_rel = rel.join(format!("{event_id}-scene{ext}"));
        self.write(&face_rel, face)?;
        self.write(&scene_rel, scene)?;
        Ok(Snapshot {
            face: face_rel.to_string_lossy().into_owned(),
            scene: scene_rel.to_string_lossy().into_owned(),
        })
    }

    fn write(&self, rel: &Path, img: &RgbImage) -> std::io::Result<()> {
        let path = self.data_dir.join(rel);
        let Some(key) = &self.key else {
            return write_jpeg(&path, img);
        };
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
            .encode_image(img)
            .map_err(std::io::Error::other)?;
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let name = name
            .strip_suffix(crate::crypto::SEALED_EXT)
            .unwrap_or(&name);
        let sealed = key.seal(name, &jpeg).map_err(std::io::Error::other)?;
        jpeg.fill(0);
        crate::crypto::write_private_atomic(&path, &sealed).map_err(std::io::Error::other)
    }

    /// Deletes snapshot day folders older than `keep_days` (privacy: stranger
    /// captures expire). Returns how many files were removed.
    pub fn purge(&self, now: OffsetDateTime, keep_days: u32) -> std::io::Result<usize> {
        let dir = self.data_dir.join("snapshots");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(0);
        };
        let cutoff = now - time::Duration::days(i64::from(keep_days));
        let cutoff = format!(
            "{:04}-{:02}-{:02}",
            cutoff.year(),
            u8::from(cutoff.month()),
            cutoff.day()
        );
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.len() == 10 && name < cutoff {
                removed += std::fs::read_dir(e.path()).map(|d| d.count()).unwrap_or(0);
                std::fs::remove_dir_all(e.path())?;
            }
        }
        Ok(removed)
    }
}

/// `facegate db encrypt`'s second half: seals the plain snapshots that
/// events name (`x.jpg` → `x.jpg.enc`), points the events at the sealed
/// files in one transaction, then removes the plain files (removed, not
/// overwritten: flash storage gives no such guarantee). Files already gone
/// are skipped. Returns how many files were sealed.
pub fn seal_plain_snapshots(
    conn: &mut Connection,
    data_dir: &Path,
    key: &crate::crypto::SnapshotKey,
) -> Result<usize, RegistryError> {
    let io = |what: String| move |e: std::io::Error| RegistryError::Invalid(format!("{what}: {e}"));
    let rows: Vec<(String, String)> = {
        let mut st = conn
            .prepare("SELECT id, body FROM events WHERE body LIKE '%\"snapshot\":{%'")
            .map_err(sql("list events with snapshots"))?;
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(sql("list events with snapshots"))?
            .collect::<Result<_, _>>()
            .map_err(sql("list events with snapshots"))?
    };
    let (mut updates, mut plain) = (Vec::new(), Vec::new());
    for (id, body) in rows {
        let mut v: serde_json::Value = serde_json::from_str(&body).map_err(|e| {
            RegistryError::Invalid(format!("event {id}: stored body unreadable: {e}"))
        })?;
        let mut changed = false;
        for part in ["face", "scene"] {
            let Some(rel) = v["snapshot"][part].as_str().map(str::to_owned) else {
                continue;
            };
            let path = data_dir.join(&rel);
            let ok = Path::new(&rel)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !ok || rel.ends_with(crate::crypto::SEALED_EXT) || !path.is_file() {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(io(format!("read {}", path.display())))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let sealed = key
                .seal(&name, &bytes)
                .map_err(|e| RegistryError::Invalid(e.to_string()))?;
            let sealed_rel = format!("{rel}{}", crate::crypto::SEALED_EXT);
            crate::crypto::write_private_atomic(&data_dir.join(&sealed_rel), &sealed)
                .map_err(|e| RegistryError::Invalid(e.to_string()))?;
            v["snapshot"][part] = serde_json::Value::String(sealed_rel);
            plain.push(path);
            changed = true;
        }
        if changed {
            updates.push((id, v.to_string()));
        }
    }
    let tx = conn.transaction().map_err(sql("begin"))?;
    for (id, body) in &updates {
        tx.execute(
            "UPDATE events SET body = ?2 WHERE id = ?1",
            params![id, body],
        )
        .map_err(sql("point events at sealed snapshots"))?;
    }
    tx.commit().map_err(sql("commit"))?;
    for p in &plain {
        std::fs::remove_file(p).map_err(io(format!("remove {}", p.display())))?;
    }
    Ok(plain.len())
}

/// Creates `dir` (and missing parents) readable by the service user only
/// (0700), or tightens an existing one: snapshot folders list who passed
/// when, and hold their faces.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        match std::fs::metadata(dir) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            }
            Ok(_) => Ok(()),
            Err(_) => std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir),
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// A new file readable and writable by the service user only (0600): a
/// face JPEG is sensitive personal information.
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

fn write_jpeg(path: &Path, img: &RgbImage) -> std::io::Result<()> {
    let tmp = path.with_extension("jpg.tmp");
    // A leftover temp file keeps its old mode when reopened: start afresh.
    let _ = std::fs::remove_file(&tmp);
    {
        let file = create_private(&tmp)?;
        let mut w = std::io::BufWriter::new(file);
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut w, 85)
            .encode_image(img)
            .map_err(std::io::Error::other)?;
        std::io::Write::flush(&mut w)?;
    }
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_wire_name_used_by_serde_parse_and_as_str() {
        let mut seen = std::collections::HashSet::new();
        for &k in EventKind::ALL {
            assert!(seen.insert(k.as_str()), "{k:?}: name used twice");
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::json!(k.as_str())
            );
            assert_eq!(
                serde_json::from_value::<EventKind>(serde_json::json!(k.as_str())).unwrap(),
                k
            );
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert_eq!(k.to_string(), k.as_str());
        }
        assert_eq!(EventKind::parse("gate_open"), None);
        assert_eq!(
            EventKind::names(),
            "owner_pass, stranger, watchlist, spoof, loitering, undecided, camera_offline, camera_online"
        );
    }

    #[test]
    fn the_mqtt_doc_lists_the_declared_kinds_and_priorities() {
        let doc = include_str!("../docs/mqtt.md");
        let quoted = |ks: Vec<EventKind>| {
            ks.iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let kinds = format!("| `kind` | {} |", quoted(EventKind::ALL.to_vec()));
        assert!(doc.contains(&kinds), "docs/mqtt.md should have {kinds}");
        let by = |p: Priority| {
            let ks = EventKind::ALL
                .iter()
                .copied()
                .filter(|k| k.default_priority() == p)
                .collect();
            format!("{} {}", quoted(ks), p.as_str())
        };
        let priorities = format!(
            "else by kind: {}; {}; {} |",
            by(Priority::High),
            by(Priority::Normal),
            by(Priority::Low)
        );
        assert!(
            doc.contains(&priorities),
            "docs/mqtt.md should have {priorities}"
        );
    }

    #[test]
    fn the_declared_alerting_and_priorities_are_the_contract_with_the_command_centre() {
        // docs/mqtt.md documents these; the command centre relies on them.
        let table: Vec<(&str, bool, &str)> = EventKind::ALL
            .iter()
            .map(|k| (k.as_str(), k.is_alert(), k.default_priority().as_str()))
            .collect();
        assert_eq!(
            table,
            [
                ("owner_pass", false, "low"),
                ("stranger", true, "normal"),
                ("watchlist", true, "high"),
                ("spoof", true, "high"),
                ("loitering", true, "high"),
                ("undecided", false, "low"),
                ("camera_offline", true, "high"),
                ("camera_online", true, "normal"),
            ]
        );
        assert_eq!(EventKind::CameraOnline.alerting(), Alerting::Clears);
        let cameras: Vec<_> = EventKind::ALL
            .iter()
            .filter(|k| k.is_camera_state())
            .collect();
        assert_eq!(
            cameras,
            [&EventKind::CameraOffline, &EventKind::CameraOnline]
        );
    }

    fn place() -> Place {
        Place {
            site: "gy-001".into(),
            street: "s".into(),
            community: "c".into(),
            grid: "g-7".into(),
            building: Some("B3".into()),
        }
    }

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn event_faces_are_searchable_best_first_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = EventStore::open(&dir.path().join("r.db")).unwrap();
        let t0 = time::macros::datetime!(2026-11-01 10:00 UTC);
        let faces = [
            (t0, unit(&[1.0, 0.0, 0.0])),
            (t0 + time::Duration::days(20), unit(&[0.9, 0.1, 0.0])),
            (t0 + time::Duration::days(20), unit(&[0.0, 1.0, 0.0])),
        ];
        let mut ids = Vec::new();
        for (ts, f) in &faces {
            let e = Event::new(
                EventKind::Stranger,
                *ts,
                "gate-1",
                CameraRole::Gate,
                &place(),
            );
            let face = EventFace {
                model_id: "m1",
                embedding: f,
            };
            store.save_full(&e, Some(face), &[]).unwrap();
            ids.push(e.id);
        }
        let q = unit(&[1.0, 0.0, 0.0]);
        let (hits, searched) = store.search_faces("m1", &q, t0, 0.5, 10).unwrap();
        assert_eq!(searched, 3);
        let got: Vec<&str> = hits.iter().map(|h| h.event.id.as_str()).collect();
        assert_eq!(
            got,
            [ids[0].as_str(), ids[1].as_str()],
            "best first, orthogonal face left out"
        );
        assert!(hits[0].score > hits[1].score);
        // Another model's vectors are not comparable: not searched.
        assert_eq!(store.search_faces("m2", &q, t0, -1.0, 10).unwrap().1, 0);
        // Faces before `since` are not searched (retention deletes them:
        // registry::retention).
        let (hits, searched) = store
            .search_faces("m1", &q, t0 + time::Duration::days(10), 0.5, 10)
            .unwrap();
        assert_eq!((hits.len(), searched), (1, 2));
        store
            .connection()
            .execute("DELETE FROM event_faces WHERE event_id = ?1", [&ids[0]])
            .unwrap();
        let (hits, searched) = store.search_faces("m1", &q, t0, 0.5, 10).unwrap();
        assert_eq!((hits.len(), searched), (1, 2));
        assert!(store.get(&ids[0]).unwrap().is_some());
        // Deleting an event deletes its face (ON DELETE CASCADE).
        store
            .connection()
            .execute("DELETE FROM events WHERE id = ?1", [&ids[1]])
            .unwrap();
        assert_eq!(store.search_faces("m1", &q, t0, -1.0, 10).unwrap().1, 1);
    }

    #[test]
    fn events_round_trip_update_in_place_and_filter() {
        let dir = tempfile::tempdir().unwrap();
        let store = EventStore::open(&dir.path().join("r.db")).unwrap();
        let t0 = time::macros::datetime!(2026-11-27 10:00 UTC);
        let mut e = Event::new(
            EventKind::Stranger,
            t0,
            "gate-1",
            CameraRole::Gate,
            &place(),
        );
        e.stranger_id = Some("S-1".into());
        e.track_id = Some(4);
        store.save(&e).unwrap();
        let other = Event::new(
            EventKind::CameraOffline,
            t0 + time::Duration::minutes(1),
            "cam-2",
            CameraRole::Patrol,
            &place(),
        );
        store.save(&other).unwrap();
        // The same track turns out to be an owner: same id, new revision.
        e.kind = EventKind::OwnerPass;
        e.revision = 1;
        e.subject = Some(Subject::Owner {
            id: "A-1".into(),
            name: "Li".into(),
        });
        store.save(&e).unwrap();
        let all = store.list(&EventFilter::default()).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1], e);
        assert_eq!(all[1].place.grid, "g-7");
        let passes = store
            .list(&EventFilter {
                kind: Some(EventKind::OwnerPass),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(passes.len(), 1);
        let later = store
            .list(&EventFilter {
                since: Some(t0 + time::Duration::seconds(30)),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].kind, EventKind::CameraOffline);
        assert_eq!(store.get(&e.id).unwrap().unwrap().revision, 1);
    }

    #[test]
    fn an_event_and_its_outbox_rows_are_written_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = EventStore::open(&dir.path().join("r.db")).unwrap();
        let e = Event::new(
            EventKind::Stranger,
            OffsetDateTime::now_utc(),
            "cam",
            CameraRole::Patrol,
            &place(),
        );
        let m = OutboxMessage {
            message_id: e.id.clone(),
            topic: "facegate/gy-001/events/cam".into(),
            payload: b"{}".to_vec(),
            qos: 1,
            retain: false,
            expires_at: None,
        };
        store.save_with_outbox(&e, &[m.clone(), m]).unwrap();
        let n: i64 = store
            .connection()
            .query_row(
                "SELECT count(*) FROM outbox WHERE message_id = ?1",
                [&e.id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 2);
        // A message that cannot be written (qos 7 breaks a CHECK) rolls the event back too.
        let e2 = Event::new(
            EventKind::Stranger,
            OffsetDateTime::now_utc(),
            "cam",
            CameraRole::Patrol,
            &place(),
        );
        let bad = OutboxMessage {
            message_id: e2.id.clone(),
            topic: "t".into(),
            payload: vec![],
            qos: 7,
            retain: false,
            expires_at: None,
        };
        assert!(store.save_with_outbox(&e2, &[bad]).is_err());
        assert!(store.get(&e2.id).unwrap().is_none());
    }

    #[test]
    fn ids_are_unique() {
        let t = OffsetDateTime::now_utc();
        assert_ne!(new_event_id(t, "a"), new_event_id(t, "a"));
    }

    #[test]
    fn snapshots_are_written_and_purged_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let w = SnapshotWriter::new(dir.path());
        let t = time::macros::datetime!(2026-11-01 10:00 UTC);
        let img = RgbImage::new(8, 8);
        let s = w.save("ev-1", t, &img, &img).unwrap();
        assert!(dir.path().join(&s.face).is_file());
        assert!(s.scene.starts_with("snapshots/2026-11-01/"));
        assert_eq!(w.purge(t + time::Duration::days(3), 7).unwrap(), 0);
        assert_eq!(w.purge(t + time::Duration::days(8), 7).unwrap(), 2);
        assert!(!dir.path().join(&s.face).exists());
    }

    #[test]
    fn plain_snapshots_are_sealed_and_their_events_repointed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("e.db");
        let mut store = EventStore::open(&db).unwrap();
        let img = RgbImage::from_pixel(8, 8, image::Rgb([200, 10, 10]));
        let ts = time::macros::datetime!(2026-12-01 10:00 UTC);
        let mut e = Event::new(
            EventKind::OwnerPass,
            ts,
            "gate-1",
            CameraRole::Gate,
            &place(),
        );
        let plain = SnapshotWriter::with_key(dir.path(), None)
            .save(&e.id, ts, &img, &img)
            .unwrap();
        e.snapshot = Some(plain.clone());
        store.save(&e).unwrap();
        let key = crate::crypto::MasterKey::generate().unwrap().snapshot_key();
        let n = seal_plain_snapshots(&mut store.conn, dir.path(), &key).unwrap();
        assert_eq!(n, 2);
        assert!(!dir.path().join(&plain.face).exists(), "plain file removed");
        let snap = store.get(&e.id).unwrap().unwrap().snapshot.unwrap();
        assert_eq!(snap.face, format!("{}.enc", plain.face));
        let path = dir.path().join(&snap.scene);
        let sealed = std::fs::read(&path).unwrap();
        assert_ne!(&sealed[..2], b"\xFF\xD8");
        let jpeg = key.open(&path, &sealed).unwrap();
        assert_eq!(image::load_from_memory(&jpeg).unwrap().width(), 8);
        // Again: nothing left to seal.
        assert_eq!(
            seal_plain_snapshots(&mut store.conn, dir.path(), &key).unwrap(),
            0
        );
    }
}
