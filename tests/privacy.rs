//! The data side of privacy, end to end: erasure that leaves nothing,
//! private files, retention, the privacy report and an owner's export.
//! Real models on real photos, the real `facegate` binary, a real SQLite
//! file, the event store and snapshot writer the pipeline uses.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use facegate::events::{Event, EventKind, EventStore, SnapshotWriter};
use facegate::identify;
use facegate::pipeline::{EventSink, MqttSink};
use facegate::registry::Subject;
use facegate::vision::image::{PhotoLimits, RgbView, load_photo};
use time::OffsetDateTime;

use common::cli::{Workdir, contains, enroll_args, facegate};

/// A temporary folder with a config naming its database and data folder,
/// enrolment photos kept.
fn privacy_workdir() -> Option<Workdir> {
    Workdir::with_config("\n[privacy]\nstore_enrolment_photos = true\n")
}

fn enroll(env: &Workdir, id: &str, name: &str, photo: &Path) {
    let photo = photo.display().to_string();
    env.ok(&enroll_args(id, name, "staff-wang", &[&photo]));
}

/// The sink the gateway's cameras write through, with MQTT on (messages
/// queue in the outbox; no publisher runs, so they stay undelivered) and
/// search by photo on.
fn sink(env: &Workdir, model_id: &str) -> EventSink {
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

/// An event of `kind` at the gate with the face and snapshot of `photo`,
/// as the pipeline records it (`emit_all`: snapshot first, then event,
/// face and outbox in one transaction); `fill` sets what the kind needs.
/// Returns the event and its face embedding.
fn record_with_face(
    sink: &EventSink,
    engine: &mut facegate::vision::FaceEngine,
    kind: EventKind,
    photo: &Path,
    ts: OffsetDateTime,
    fill: impl FnOnce(&mut Event),
) -> (Event, Vec<f32>) {
    let img = load_photo(photo, PhotoLimits::default()).unwrap();
    let (_, t) = identify::enrolment_template(engine, RgbView::from_image(&img), "gate").unwrap();
    let mut e = common::gate_event(kind, ts);
    fill(&mut e);
    e.snapshot = Some(sink.snapshots().save(&e.id, e.ts, &img, &img).unwrap());
    sink.emit_with_face(&e, Some(&t.embedding));
    (e, t.embedding)
}

/// A gate pass of `id`/`name` with the face and snapshot of `photo`.
fn record_pass(
    sink: &EventSink,
    engine: &mut facegate::vision::FaceEngine,
    id: &str,
    name: &str,
    photo: &Path,
    ts: OffsetDateTime,
) -> (Event, Vec<f32>) {
    record_with_face(sink, engine, EventKind::OwnerPass, photo, ts, |e| {
        e.subject = Some(Subject::Owner {
            id: id.into(),
            name: name.into(),
        });
        e.score = Some(0.8);
        e.gate = Some("gate-1".into());
        e.track_id = Some(1);
    })
}

fn count(conn: &rusqlite::Connection, sql: &str, arg: &str) -> i64 {
    conn.query_row(sql, [arg], |r| r.get(0)).unwrap()
}

/// Finding 1, the bar: erasure of an owner who has passed a gate leaves no
/// event naming them, no event face embedding, no snapshot, no queued
/// message, and no byte of their name in the database file (or its WAL).
#[test]
fn erasing_an_owner_who_passed_a_gate_leaves_nothing() {
    let Some(env) = privacy_workdir() else { return };
    const NAME: &str = "Erasable Zhou Xiaoming";
    const KEPT: &str = "Control Person Kept";
    let (erased_photo, kept_photo) = (env.photo("Angelina_Jolie", 1), env.photo("Ariel_Sharon", 1));
    enroll(&env, "A-1", NAME, &erased_photo);
    enroll(&env, "B-2", KEPT, &kept_photo);

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

/// A stranger alert (no subject) with the face and snapshot of `photo`, as
/// the pipeline records one for someone not enrolled (yet).
fn record_stranger_seen(
    sink: &EventSink,
    engine: &mut facegate::vision::FaceEngine,
    stranger: &str,
    photo: &Path,
    ts: OffsetDateTime,
) -> Event {
    record_with_face(sink, engine, EventKind::Stranger, photo, ts, |e| {
        e.stranger_id = Some(stranger.into());
        e.track_id = Some(7);
    })
    .0
}

/// An owner who was a stranger at the gate before they enrolled: erasing
/// them also erases those captures (found by their face, not their name:
/// the events name no one), and nothing of anyone else. Removing a
/// watch-list entry erases its sightings the same way.
#[test]
fn erasure_also_removes_captures_from_before_enrolment_and_watch_list_sightings() {
    let Some(env) = privacy_workdir() else { return };
    let mut engine = common::engine();
    let sink = sink(&env, engine.model_id());
    let now = OffsetDateTime::now_utc();
    // Seen as strangers: her (another photo than the enrolment one), and
    // someone who never enrols.
    let before = record_stranger_seen(
        &sink,
        &mut engine,
        "S-1",
        &env.photo("Angelina_Jolie", 2),
        now,
    );
    let other = record_stranger_seen(
        &sink,
        &mut engine,
        "S-2",
        &env.photo("Ariel_Sharon", 2),
        now,
    );
    enroll(
        &env,
        "A-1",
        "Later Enrolled",
        &env.photo("Angelina_Jolie", 1),
    );
    let files = |e: &Event| {
        let s = e.snapshot.as_ref().unwrap();
        [env.data().join(&s.face), env.data().join(&s.scene)]
    };
    assert!(files(&before).iter().all(|p| p.is_file()));

    env.ok(&["owners", "remove", "A-1", "--by", "staff-li"]);
    let store = EventStore::open(&env.db()).unwrap();
    assert!(
        store.get(&before.id).unwrap().is_none(),
        "her stranger capture from before she enrolled survived the erasure"
    );
    for p in files(&before) {
        assert!(!p.exists(), "snapshot {} survived the erasure", p.display());
    }
    assert!(
        store.get(&other.id).unwrap().is_some(),
        "someone else's capture went too"
    );
    assert!(files(&other).iter().all(|p| p.is_file()));
    drop(store);
    let audit = env.ok(&["audit", "--limit", "1"]);
    let row: serde_json::Value = serde_json::from_str(audit.trim()).unwrap();
    assert_eq!(row["action"], "owner.remove");
    assert_eq!(row["detail"]["events_erased"], 1);

    // The watch list: a sighting naming the entry, and a stranger capture
    // of the same man from before he was listed.
    let early = record_stranger_seen(
        &sink,
        &mut engine,
        "S-3",
        &env.photo("Colin_Powell", 2),
        now,
    );
    env.ok(&[
        "watchlist",
        "add",
        "--name",
        "Missing Grandfather",
        "--reason",
        "family report",
        "--by",
        "centre",
        env.photo("Colin_Powell", 1).to_str().unwrap(),
    ]);
    let list = env.ok(&["watchlist", "list", "--json"]);
    let entry: serde_json::Value = serde_json::from_str(list.lines().next().unwrap()).unwrap();
    let wid = entry["id"].as_i64().unwrap();
    let img = load_photo(&env.photo("Colin_Powell", 3), PhotoLimits::default()).unwrap();
    let mut hit = common::gate_event(EventKind::Watchlist, now);
    hit.subject = Some(Subject::Watch {
        id: wid,
        name: "Missing Grandfather".into(),
        priority: facegate::registry::Priority::High,
    });
    hit.snapshot = Some(sink.snapshots().save(&hit.id, hit.ts, &img, &img).unwrap());
    sink.emit_with_face(&hit, None);
    env.ok(&["watchlist", "remove", &wid.to_string(), "--by", "centre"]);
    let store = EventStore::open(&env.db()).unwrap();
    assert!(
        store.get(&hit.id).unwrap().is_none(),
        "the sighting survived"
    );
    assert!(
        store.get(&early.id).unwrap().is_none(),
        "the early capture survived"
    );
    for p in files(&hit).iter().chain(files(&early).iter()) {
        assert!(!p.exists(), "snapshot {} survived", p.display());
    }
    assert!(store.get(&other.id).unwrap().is_some());
    let audit = env.ok(&["audit", "--limit", "1"]);
    let row: serde_json::Value = serde_json::from_str(audit.trim()).unwrap();
    assert_eq!(row["action"], "watchlist.remove");
    assert_eq!(row["detail"]["events_erased"], 2, "{row}");
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
    let Some(env) = privacy_workdir() else { return };
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

/// A stranger event at `ts` with its face and snapshots, as the pipeline
/// records it.
fn record_stranger(sink: &EventSink, ts: OffsetDateTime) -> Event {
    let mut e = common::gate_event(EventKind::Stranger, ts);
    e.stranger_id = Some("S-old".into());
    let img = image::RgbImage::new(16, 16);
    e.snapshot = Some(sink.snapshots().save(&e.id, e.ts, &img, &img).unwrap());
    sink.emit_with_face(&e, Some(&[1.0, 0.0]));
    e
}

/// 90% of the filing threshold, straight into the owners table.
fn add_people(db: &Path, n: usize) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
         INSERT INTO owners (id, name, status, created_at, updated_at)
         SELECT 'P-' || i, 'Person ' || i, 'active', 0, 0 FROM n",
        [n as i64],
    )
    .unwrap();
}

fn report(env: &Workdir) -> serde_json::Value {
    serde_json::from_str(&env.ok(&["privacy", "report", "--json"])).unwrap()
}

/// Item 3: `privacy report` says what is held, the oldest of each kind and
/// when retention removes it; it warns at 90% of the filing threshold.
#[test]
fn privacy_report_says_what_is_held_and_until_when() {
    let Some(env) = privacy_workdir() else { return };
    let photo = env.photo("Angelina_Jolie", 1);
    enroll(&env, "A-1", "Report Person", &photo);
    let mut engine = common::engine();
    let sink = sink(&env, engine.model_id());
    let t = OffsetDateTime::now_utc() - time::Duration::days(3);
    let t = t.replace_nanosecond(0).unwrap();
    record_pass(&sink, &mut engine, "A-1", "Report Person", &photo, t);
    record_stranger(&sink, t);

    let r = report(&env);
    assert_eq!(r["owners"]["count"], 1);
    assert_eq!(r["templates"], 1);
    assert_eq!(
        r["photos"], 1,
        "store_enrolment_photos is on in this config"
    );
    let pass = &r["events"]["owner_pass"];
    assert_eq!(pass["count"], 1);
    assert_eq!(pass["retention_days"], 30);
    let oldest = OffsetDateTime::parse(
        pass["oldest"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let removed = OffsetDateTime::parse(
        pass["oldest_removed_by"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(oldest, t);
    assert_eq!(removed - oldest, time::Duration::days(30));
    assert_eq!(r["events"]["stranger"]["retention_days"], 90);
    assert_eq!(r["event_faces"]["count"], 1);
    assert_eq!(r["stranger_faces"]["count"], 1);
    assert_eq!(r["stranger_faces"]["retention_days"], 7);
    assert_eq!(r["snapshots"]["files"], 4);
    assert!(r["snapshots"]["bytes"].as_u64().unwrap() > 0);
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    let queued: u64 = conn
        .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert!(queued >= 2);
    assert_eq!(r["outbox_pending"], queued);
    assert!(r["audit"]["count"].as_u64().unwrap() >= 1);
    assert!(r["warning"].is_null());
    let text = env.ok(&["privacy", "report"]);
    assert!(text.contains("events owner_pass"), "{text}");

    add_people(&env.db(), 89_999);
    let r = report(&env);
    assert_eq!(r["people_with_faces"], 90_000);
    assert!(r["warning"].as_str().unwrap().contains("filing"), "{r}");
    let o = env.run(&["privacy", "report"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("warning: faces of 90000 people"));
}

/// Item 3 in `facegate run`: the retention task deletes what is past its
/// period at start (then hourly), with its snapshot files, and the start-up
/// log warns near the filing threshold.
#[test]
fn facegate_run_expires_old_data_and_warns_near_the_filing_threshold() {
    let Some(env) = privacy_workdir() else { return };
    let engine = common::engine();
    let sink = sink(&env, engine.model_id());
    let old = record_stranger(&sink, OffsetDateTime::now_utc() - time::Duration::days(100));
    let fresh = record_stranger(&sink, OffsetDateTime::now_utc());
    drop(sink);
    add_people(&env.db(), 90_000);
    let old_face = env.data().join(&old.snapshot.as_ref().unwrap().face);
    assert!(old_face.is_file());

    let mut child = facegate()
        .env("FACEGATE_LOG", "warn,facegate=info")
        .args(["--config"])
        .arg(env.config())
        .args(["run", "--http", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(env.dir.path().join("run.log")).unwrap())
        .spawn()
        .unwrap();
    let store = EventStore::open(&env.db()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    // The task logs its deletion after it commits: wait for both, or the
    // kill below can come between them.
    let logged = || {
        std::fs::read_to_string(env.dir.path().join("run.log"))
            .unwrap_or_default()
            .contains("retention: expired data deleted")
    };
    while store.get(&old.id).unwrap().is_some() || old_face.exists() || !logged() {
        if std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the retention task did not expire (and log) the 100-day-old event: {}",
                std::fs::read_to_string(env.dir.path().join("run.log")).unwrap()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let log = std::fs::read_to_string(env.dir.path().join("run.log")).unwrap();
    assert!(
        store.get(&fresh.id).unwrap().is_some(),
        "a fresh event was deleted"
    );
    assert!(env.data().join(&fresh.snapshot.unwrap().face).is_file());
    assert!(log.contains("faces of 90000 people"), "{log}");
    assert!(log.contains("retention: expired data deleted"), "{log}");
}

/// Item 4: an owner's data on request: record, consents, audit rows, the
/// events naming them, the photos they gave and their face snapshots, and
/// nothing of anyone else.
#[test]
fn owners_export_writes_one_owners_data_and_photos() {
    let Some(env) = privacy_workdir() else { return };
    let photo = env.photo("Angelina_Jolie", 1);
    enroll(&env, "A-1", "Export Person", &photo);
    enroll(&env, "B-2", "Someone Else", &env.photo("Ariel_Sharon", 1));
    let mut engine = common::engine();
    let sink = sink(&env, engine.model_id());
    let now = OffsetDateTime::now_utc();
    let (mine, _) = record_pass(&sink, &mut engine, "A-1", "Export Person", &photo, now);
    record_pass(
        &sink,
        &mut engine,
        "B-2",
        "Someone Else",
        &env.photo("Ariel_Sharon", 1),
        now,
    );

    let out = env.dir.path().join("export-A-1");
    let msg = env.ok(&[
        "owners",
        "export",
        "A-1",
        "--out",
        &out.display().to_string(),
    ]);
    assert!(msg.contains("1 event(s)"), "{msg}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("owner.json")).unwrap()).unwrap();
    assert_eq!(json["owner"]["id"], "A-1");
    assert_eq!(json["owner"]["name"], "Export Person");
    assert_eq!(json["owner"]["consents"][0]["taken_by"], "staff-wang");
    assert_eq!(json["audit"][0]["action"], "owner.enroll");
    assert_eq!(json["events"].as_array().unwrap().len(), 1);
    assert_eq!(json["events"][0]["id"], mine.id.as_str());
    let text = std::fs::read_to_string(out.join("owner.json")).unwrap();
    assert!(!text.contains("Someone Else") && !text.contains("B-2"));
    // The photo they gave, byte for byte, and their face snapshot.
    let template = json["owner"]["templates"][0]["id"].as_i64().unwrap();
    let given = std::fs::read(out.join(format!("photos/template-{template}.jpg"))).unwrap();
    assert_eq!(given, std::fs::read(&photo).unwrap());
    let face = out.join("snapshots").join(format!("{}-face.jpg", mine.id));
    assert!(face.is_file());
    assert_eq!(json["files"].as_array().unwrap().len(), 2);
    #[cfg(unix)]
    {
        assert_eq!(mode(&out), 0o700);
        assert_eq!(mode(&out.join("owner.json")), 0o600);
    }
    // Audited; an existing folder or an unknown owner is a clear error.
    let audit = env.ok(&["audit", "--limit", "1"]);
    assert!(audit.contains("owner.export"), "{audit}");
    let o = env.run(&[
        "owners",
        "export",
        "A-1",
        "--out",
        &out.display().to_string(),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    let o = env.run(&["owners", "export", "Z-9", "--out", "/tmp/never-written"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no owner with id 'Z-9'"));
    assert!(!Path::new("/tmp/never-written").exists());
}
