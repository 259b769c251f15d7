//! Encryption at rest, end to end: the real `facegate` binary on a real
//! SQLite (SQLCipher) file with the real models, key files with real
//! permissions, and the gateway's HTTP server serving a sealed snapshot.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::broker::free_port;
use common::cli::{Workdir, contains, enroll_args, stdout_of_success};

const PLAIN_HEADER: &[u8] = b"SQLite format 3\0";
const NAME: &str = "Qiao Encrypted-Owner";

/// Rewrites the config with (or without) `storage.key_file`.
fn set_key_file(env: &Workdir, key: Option<&Path>) {
    let key = key
        .map(|k| format!("key_file = \"{}\"\n", k.display()))
        .unwrap_or_default();
    env.write_config(&key);
}

/// Runs the binary; `env_key` is FACEGATE_DB_KEY (never inherited).
fn run(env: &Workdir, env_key: Option<&str>, args: &[&str]) -> Output {
    let mut c = env.command();
    c.env_remove("FACEGATE_DB_KEY").args(args);
    if let Some(k) = env_key {
        c.env("FACEGATE_DB_KEY", k);
    }
    c.output().unwrap()
}

fn ok(env: &Workdir, env_key: Option<&str>, args: &[&str]) -> String {
    stdout_of_success(args, run(env, env_key, args))
}

/// Fails, and says so on stderr with `expected`.
fn fails(env: &Workdir, env_key: Option<&str>, args: &[&str], expected: &str) {
    let o = run(env, env_key, args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "facegate {args:?} succeeded: {err}");
    assert!(err.contains(expected), "expected {expected:?} in: {err}");
}

fn enroll(env: &Workdir, env_key: Option<&str>) {
    let photo = env.faces.join("identities/Barack_Obama/1.jpg");
    ok(
        env,
        env_key,
        &enroll_args("Q-1", NAME, "test", &[photo.to_str().unwrap()]),
    );
}

/// Every file name in the temporary folder, sorted.
fn listing(env: &Workdir) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn hex_key(byte: u8) -> String {
    format!("{byte:02x}").repeat(32)
}

#[cfg(unix)]
fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(unix)]
#[test]
fn the_database_is_unreadable_and_unopenable_without_its_key() {
    use std::os::unix::fs::PermissionsExt;
    let Some(env) = Workdir::with_config("") else {
        return;
    };
    let key = env.path("db.key");
    ok(&env, None, &["db", "keygen", key.to_str().unwrap()]);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "keygen writes a private key file");
    set_key_file(&env, Some(&key));
    enroll(&env, None);

    // On disk: no SQLite header, no name.
    let bytes = env.db_bytes();
    assert_ne!(&bytes[..16], PLAIN_HEADER, "the file is encrypted");
    assert!(!contains(&bytes, NAME), "the owner's name is in the file");
    assert!(ok(&env, None, &["owners", "list"]).contains(NAME));

    // Without the key, or with a wrong one: a clear error, and nothing made
    // or changed.
    let before = (listing(&env), std::fs::read(env.db()).unwrap());
    set_key_file(&env, None);
    fails(
        &env,
        None,
        &["owners", "list"],
        "is encrypted: set storage.key_file or FACEGATE_DB_KEY",
    );
    fails(
        &env,
        Some(&hex_key(0x42)),
        &["owners", "list"],
        "does not open with this key",
    );
    // A configured key file wins over the variable.
    set_key_file(&env, Some(&key));
    assert!(ok(&env, Some(&hex_key(0x42)), &["owners", "list"]).contains(NAME));
    set_key_file(&env, None);
    fails(
        &env,
        Some("not-hex"),
        &["owners", "list"],
        "FACEGATE_DB_KEY",
    );
    assert_eq!((listing(&env), std::fs::read(env.db()).unwrap()), before);

    // A key file others can read is refused, saying why.
    set_key_file(&env, Some(&key));
    chmod(&key, 0o644);
    fails(&env, None, &["owners", "list"], "mode 0644");
    chmod(&key, 0o400);
    assert!(ok(&env, None, &["owners", "list"]).contains(NAME));

    // Rekey: the old key no longer opens it, the new one does.
    let new_key = env.path("db2.key");
    ok(&env, None, &["db", "keygen", new_key.to_str().unwrap()]);
    ok(
        &env,
        None,
        &["db", "rekey", "--new-key-file", new_key.to_str().unwrap()],
    );
    fails(
        &env,
        None,
        &["owners", "list"],
        "does not open with this key",
    );
    set_key_file(&env, Some(&new_key));
    assert!(ok(&env, None, &["owners", "list"]).contains(NAME));
    assert!(!contains(&env.db_bytes(), NAME));
}

#[test]
fn db_encrypt_turns_a_plain_database_into_an_encrypted_one_with_its_owners() {
    let Some(env) = Workdir::with_config("") else {
        return;
    };
    enroll(&env, None);
    let bytes = env.db_bytes();
    assert_eq!(&bytes[..16], PLAIN_HEADER);
    assert!(contains(&bytes, NAME), "a plain file shows the name");

    let key = hex_key(0x17);
    // A key for a plain file: told to run `db encrypt`, file untouched.
    fails(&env, Some(&key), &["owners", "list"], "facegate db encrypt");
    assert_eq!(&std::fs::read(env.db()).unwrap()[..16], PLAIN_HEADER);

    ok(&env, Some(&key), &["db", "encrypt"]);
    let bytes = env.db_bytes();
    assert_ne!(&bytes[..16], PLAIN_HEADER);
    assert!(!contains(&bytes, NAME), "the name survived encryption");
    assert!(
        !listing(&env).iter().any(|f| f.contains("encrypting")),
        "no temporary copy left: {:?}",
        listing(&env)
    );
    let owners = ok(&env, Some(&key), &["owners", "list"]);
    assert!(owners.contains(NAME) && owners.contains("Q-1"), "{owners}");
    fails(&env, None, &["owners", "list"], "is encrypted");
    fails(&env, Some(&key), &["db", "encrypt"], "already encrypted");
}

/// The gateway's HTTP server (`facegate run`'s code path) over a real
/// socket, with this process's key installed as `facegate run` does:
/// snapshots are sealed on disk and served as JPEG.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_sealed_on_disk_and_served_as_jpeg() {
    use facegate::events::{EventKind, EventStore, SnapshotWriter};
    use facegate::registry::{Registry, Role};
    use facegate::vision::image::{PhotoLimits, load_photo};

    let Some(faces) = common::faces_dir() else {
        return;
    };
    let key = facegate::crypto::MasterKey::from_hex(&hex_key(0x5a), "test").unwrap();
    facegate::crypto::install(Some(key)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (db, data) = (dir.path().join("fg.db"), dir.path().join("data"));
    std::fs::create_dir(&data).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let viewer = Registry::open(&db)
        .unwrap()
        .token_create("guard", Role::Viewer, "test", now)
        .unwrap();

    // An event with its snapshot, written as the pipeline writes them.
    let img = load_photo(
        &faces.join("identities/Barack_Obama/1.jpg"),
        PhotoLimits::default(),
    )
    .unwrap();
    let mut e = common::gate_event(EventKind::OwnerPass, now);
    let photo = faces.join("identities/Barack_Obama/1.jpg");
    common::enrol(&common::shipped_config(), &db, "Q-1", NAME, &photo);
    e.subject = Some(facegate::registry::Subject::Owner {
        id: "Q-1".into(),
        name: NAME.into(),
    });
    let snap = SnapshotWriter::new(&data)
        .save(&e.id, now, &img, &img)
        .unwrap();
    assert!(snap.face.ends_with(".jpg.enc"), "{}", snap.face);
    e.snapshot = Some(snap.clone());
    EventStore::open(&db).unwrap().save(&e).unwrap();
    for f in [&snap.face, &snap.scene] {
        let on_disk = std::fs::read(data.join(f)).unwrap();
        assert_ne!(&on_disk[..2], b"\xFF\xD8", "{f} is a plain JPEG on disk");
        assert!(image::load_from_memory(&on_disk).is_err());
    }
    assert_ne!(&std::fs::read(&db).unwrap()[..16], PLAIN_HEADER);
    // The owner's export (a right of the person) holds the face as JPEG.
    let out = dir.path().join("export");
    let export = Registry::open(&db)
        .unwrap()
        .with_snapshot_dir(&data)
        .export_owner("Q-1", &out, "test", now)
        .unwrap();
    let face = export
        .files
        .iter()
        .find(|f| f.starts_with("snapshots/"))
        .expect("the face crop is exported");
    assert!(face.ends_with("-face.jpg"), "{face}");
    image::load_from_memory(&std::fs::read(out.join(face)).unwrap()).expect("a JPEG");

    let mut config = common::shipped_config();
    let port = free_port();
    config.http.listen = format!("127.0.0.1:{port}");
    config.cameras.clear();
    let cancel = tokio_util::sync::CancellationToken::new();
    let gateway = {
        let (db, data, c) = (db.clone(), data.clone(), cancel.clone());
        tokio::spawn(async move { facegate::run::run(config, &db, &data, c).await })
    };
    let base = format!("http://127.0.0.1:{port}");
    let rel = snap.face.strip_prefix("snapshots/").unwrap().to_owned();
    let id = e.id.clone();
    let bodies = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        while ureq::get(&format!("{base}/healthz")).call().is_err() {
            assert!(start.elapsed() < Duration::from_secs(60), "no /healthz");
            std::thread::sleep(Duration::from_millis(200));
        }
        let get = |url: String| {
            let r = ureq::get(&url)
                .set("authorization", &format!("Bearer {viewer}"))
                .call()
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(r.content_type(), "image/jpeg");
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut r.into_reader(), &mut b).unwrap();
            b
        };
        vec![
            get(format!("{base}/api/v1/events/{id}/snapshot/face")),
            get(format!("{base}/api/v1/events/{id}/snapshot/scene")),
            get(format!("{base}/api/v1/snapshots/{rel}")),
            get(format!(
                "{base}/api/v1/snapshots/{}",
                rel.strip_suffix(".enc").unwrap()
            )),
        ]
    })
    .await
    .unwrap();
    cancel.cancel();
    gateway.await.unwrap().unwrap();
    for b in bodies {
        assert_eq!(&b[..2], b"\xFF\xD8");
        let decoded = image::load_from_memory(&b).expect("a valid JPEG");
        assert_eq!(decoded.width(), img.width());
    }
}
