//! The data side of privacy, end to end: erasure that leaves nothing,
//! private files, retention, the privacy report and an owner's export.
//! Real models on real photos, the real `facegate` binary, a real SQLite
//! file, the event store and snapshot writer the pipeline uses.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use facegate::config::CameraRole;
use facegate::events::{Event, EventKind, EventStore, Place, SnapshotWriter};
use facegate::identify;
use facegate::pipeline::{EventSink, MqttSink};
use facegate::registry::Subject;
use facegate::vision::image::{PhotoLimits, RgbView, load_photo};
use time::OffsetDateTime;

struct Env {
    dir: tempfile::TempDir,
    faces: PathBuf,
}

impl Env {
    fn new() -> Option<Env> {
        let env = Env {
            dir: tempfile::tempdir().unwrap(),
            faces: common::faces_dir()?,
        };
        std::fs::create_dir(env.data()).unwrap();
        std::fs::write(
            env.config(),
            format!(
                "[storage]\ndb = \"{}\"\ndata_dir = \"{}\"\n",
                env.db().display(),
                env.data().display()
            ),
        )
        .unwrap();
        Some(env)
    }
    fn db(&self) -> PathBuf {
        self.dir.path().join("registry.db")
    }
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    fn config(&self) -> PathBuf {
        self.dir.path().join("facegate.toml")
    }
    fn photo(&self, who: &str, n: u32) -> PathBuf {
        self.faces
            .join("identities")
            .join(who)
            .join(format!("{n}.jpg"))
    }
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_facegate"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("--config")
            .arg(self.config())
            .args(args)
            .output()
            .unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "facegate {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }
    fn enroll(&self, id: &str, name: &str, photo: &Path) {
        self.ok(&[
            "enroll",
            "--owner-id",
            id,
            "--name",
            name,
            "--consent-by",
            "staff-wang",
            &photo.display().to_string(),
        ]);
    }
    /// The database file and its WAL, as raw bytes.
    fn db_bytes(&self) -> Vec<u8> {
        let mut bytes = std::fs::read(self.db()).unwrap();
        let mut wal = self.db().into_os_string();
        wal.push("-wal");
        if let Ok(more) = std::fs::read(PathBuf::from(wal)) {
            bytes.extend(more);
        }
        bytes
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The sink the gateway's cameras write through, with MQTT on (messages
/// queue in the outbox; no publisher runs, so they stay undelivered) and
/// search by photo on.
fn sink(env: &Env, model_id: &str) -> EventSink {
    let cfg: facegate::publish::MqttConfig =
        toml::from_str("url = \"mqtt://127.0.0.1:1\"").unwrap();
    EventSink::new(
        EventStore::open(&env.db()).unwrap(),
        SnapshotWriter::new(&env.data()),
        EventSink::log_publisher(),
    )
    .with_face_search(model_id)
    .with_mqtt(MqttSink {
        cfg,
        site: "demo-estate".into(),
        wake: Arc::new(tokio::sync::Notify::new()),
    })
}

/// A gate pass of `id`/`name` with the face and snapshot of `photo`, as the
/// pipeline records it (`emit_all`: snapshot first, then event, face and
/// outbox in one transaction). Returns the event and its face embedding.
fn record_pass(
    sink: &EventSink,
    engine: &mut facegate::vision::FaceEngine,
    id: &str,
    name: &str,
    photo: &Path,
    ts: OffsetDateTime,
) -> (Event, Vec<f32>) {
    let img = load_photo(photo, PhotoLimits::default()).unwrap();
    let (_, t) = identify::enrolment_template(engine, RgbView::from_image(&img), "gate").unwrap();
    let mut e = Event::new(
        EventKind::OwnerPass,
        ts,
        "gate-1",
        CameraRole::Gate,
        &Place::default(),
    );
    e.subject = Some(Subject::Owner {
        id: id.into(),
        name: name.into(),
    });
    e.score = Some(0.8);
    e.gate = Some("gate-1".into());
    e.track_id = Some(1);
    e.snapshot = Some(sink.snapshots().save(&e.id, e.ts, &img, &img).unwrap());
    sink.emit_with_face(&e, Some(&t.embedding));
    (e, t.embedding)
}

fn count(conn: &rusqlite::Connection, sql: &str, arg: &str) -> i64 {
    conn.query_row(sql, [arg], |r| r.get(0)).unwrap()
}

/// Finding 1, the bar: erasure of an owner who has passed a gate leaves no
/// event naming them, no event face embedding, no snapshot, no queued
/// message, and no byte of their name in the database file (or its WAL).
#[test]
fn erasing_an_owner_who_passed_a_gate_leaves_nothing() {
    let Some(env) = Env::new() else { return };
    const NAME: &str = "Erasable Zhou Xiaoming";
    const KEPT: &str = "Control Person Kept";
    let (erased_photo, kept_photo) = (env.photo("Angelina_Jolie", 1), env.photo("Ariel_Sharon", 1));
    env.enroll("A-1", NAME, &erased_photo);
    env.enroll("B-2", KEPT, &kept_photo);

    let mut engine = common::engine();
    let sink = sink(&env, engine.model_id());
    let now = OffsetDateTime::now_utc();
    let (gone, face) = record_pass(&sink, &mut engine, "A-1", NAME, &erased_photo, now);
    let (kept, _) = record_pass(&sink, &mut engine, "B-2", KEPT, &kept_photo, now);
    let snapshots = |e: &Event| {
        let s = e.snapshot.as_ref().unwrap();
        [env.data().join(&s.face), env.data().join(&s.scene)]
    };

    // Before: everything is there, and the byte check can see the name.
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM outbox WHERE message_id = ?1",
            &gone.id
        ),
        1
    );
    assert!(snapshots(&gone).iter().all(|p| p.is_file()));
    assert!(
        contains(&env.db_bytes(), NAME),
        "the check must see the name before"
    );
    let store = EventStore::open(&env.db()).unwrap();
    let (hits, _) = store
        .search_faces(
            engine.model_id(),
            &face,
            now - time::Duration::days(1),
            0.5,
            10,
        )
        .unwrap();
    assert!(hits.iter().any(|h| h.event.id == gone.id));
    drop(store);

    let out = env.ok(&[
        "owners",
        "remove",
        "A-1",
        "--consent-withdrawn",
        "--by",
        "staff-li",
    ]);
    assert!(out.contains("1 event(s)"), "{out}");

    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM events WHERE subject_id = ?1 OR instr(body, ?1) > 0",
            "A-1"
        ),
        0,
        "an event still names the owner"
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM event_faces WHERE event_id = ?1",
            &gone.id
        ),
        0
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM outbox WHERE instr(payload, ?1) > 0",
            NAME
        ),
        0,
        "a queued message still names the owner"
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM erased_files WHERE path <> ?1",
            ""
        ),
        0
    );
    let store = EventStore::open(&env.db()).unwrap();
    let (hits, _) = store
        .search_faces(
            engine.model_id(),
            &face,
            now - time::Duration::days(1),
            -1.0,
            100,
        )
        .unwrap();
    assert!(
        hits.iter().all(|h| h.event.id != gone.id),
        "search by photo still finds the erased owner"
    );
    for p in snapshots(&gone) {
        assert!(!p.exists(), "snapshot {} survived the erasure", p.display());
    }
    // Only the erased owner went.
    assert!(store.get(&kept.id).unwrap().is_some());
    assert!(snapshots(&kept).iter().all(|p| p.is_file()));
    drop(store);
    drop(conn);
    let bytes = env.db_bytes();
    assert!(
        !contains(&bytes, NAME),
        "the name survives in the database file"
    );
    assert!(contains(&bytes, KEPT));

    // The withdrawal is on the audit trail, with counts and no name.
    let audit = env.ok(&["audit", "--limit", "1"]);
    let row: serde_json::Value = serde_json::from_str(audit.trim()).unwrap();
    assert_eq!(row["action"], "owner.remove");
    assert_eq!(row["detail"]["reason"], "consent_withdrawn");
    assert_eq!(row["detail"]["events_erased"], 1);
    assert_eq!(row["detail"]["snapshot_files"], 2);
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Finding 8: snapshot folders 0700, face JPEGs 0600, the database files
/// 0600, and looser ones left by an older version are tightened.
#[cfg(unix)]
#[test]
fn files_holding_faces_are_readable_by_the_service_user_only() {
    use std::os::unix::fs::PermissionsExt;
    let Some(env) = Env::new() else { return };
    let loose =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();

    env.ok(&["owners", "list"]);
    assert_eq!(mode(&env.db()), 0o600, "database file");
    loose(&env.db(), 0o644);
    env.ok(&["owners", "list"]);
    assert_eq!(mode(&env.db()), 0o600, "an old 0644 database is tightened");
    for suffix in ["-wal", "-shm"] {
        let mut p = env.db().into_os_string();
        p.push(suffix);
        let p = PathBuf::from(p);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }

    // The snapshot writer the pipeline uses; an old 0755 folder is tightened.
    std::fs::create_dir(env.data().join("snapshots")).unwrap();
    loose(&env.data().join("snapshots"), 0o755);
    let img = image::RgbImage::new(16, 16);
    let ts = time::macros::datetime!(2026-12-01 10:00 UTC);
    let s = SnapshotWriter::new(&env.data())
        .save("ev-perm", ts, &img, &img)
        .unwrap();
    assert_eq!(mode(&env.data().join("snapshots")), 0o700);
    assert_eq!(mode(&env.data().join("snapshots/2026-12-01")), 0o700);
    assert_eq!(mode(&env.data().join(&s.face)), 0o600);
    assert_eq!(mode(&env.data().join(&s.scene)), 0o600);
}
