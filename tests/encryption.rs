//! Encryption at rest, end to end: the real `facegate` binary on a real
//! SQLite (SQLCipher) file with the real models, key files with real
//! permissions, and the gateway's HTTP server serving a sealed snapshot.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const PLAIN_HEADER: &[u8] = b"SQLite format 3\0";
const NAME: &str = "Qiao Encrypted-Owner";

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
        env.set_key_file(None);
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
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// Rewrites the config with (or without) `storage.key_file`.
    fn set_key_file(&self, key: Option<&Path>) {
        let key = key
            .map(|k| format!("key_file = \"{}\"\n", k.display()))
            .unwrap_or_default();
        std::fs::write(
            self.config(),
            format!(
                "[storage]\ndb = \"{}\"\ndata_dir = \"{}\"\n{key}",
                self.db().display(),
                self.data().display()
            ),
        )
        .unwrap();
    }
    /// Runs the binary; `env_key` is FACEGATE_DB_KEY (never inherited).
    fn run(&self, env_key: Option<&str>, args: &[&str]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_facegate"));
        c.current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("FACEGATE_DB_KEY")
            .arg("--config")
            .arg(self.config())
            .args(args);
        if let Some(k) = env_key {
            c.env("FACEGATE_DB_KEY", k);
        }
        c.output().unwrap()
    }
    fn ok(&self, env_key: Option<&str>, args: &[&str]) -> String {
        let o = self.run(env_key, args);
        assert!(
            o.status.success(),
            "facegate {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }
    /// Fails, and says so on stderr with `expected`.
    fn fails(&self, env_key: Option<&str>, args: &[&str], expected: &str) {
        let o = self.run(env_key, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "facegate {args:?} succeeded: {err}");
        assert!(err.contains(expected), "expected {expected:?} in: {err}");
    }
    fn enroll(&self, env_key: Option<&str>) {
        let photo = self.faces.join("identities/Barack_Obama/1.jpg");
        self.ok(
            env_key,
            &[
                "enroll",
                "--owner-id",
                "Q-1",
                "--name",
                NAME,
                "--consent-by",
                "test",
                photo.to_str().unwrap(),
            ],
        );
    }
    /// The database file and its companions, as bytes.
    fn db_bytes(&self) -> Vec<u8> {
        let mut all = std::fs::read(self.db()).unwrap();
        for c in ["-wal", "-shm"] {
            let mut p = self.db().into_os_string();
            p.push(c);
            if let Ok(b) = std::fs::read(PathBuf::from(p)) {
                all.extend(b);
            }
        }
        all
    }
    /// Every file name in the temporary folder, sorted.
    fn listing(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
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
    let Some(env) = Env::new() else {
        return;
    };
    let key = env.path("db.key");
    env.ok(None, &["db", "keygen", key.to_str().unwrap()]);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "keygen writes a private key file");
    env.set_key_file(Some(&key));
    env.enroll(None);

    // On disk: no SQLite header, no name.
    let bytes = env.db_bytes();
    assert_ne!(&bytes[..16], PLAIN_HEADER, "the file is encrypted");
    assert!(!contains(&bytes, NAME), "the owner's name is in the file");
    assert!(env.ok(None, &["owners", "list"]).contains(NAME));

    // Without the key, or with a wrong one: a clear error, and nothing made
    // or changed.
    let before = (env.listing(), std::fs::read(env.db()).unwrap());
    env.set_key_file(None);
    env.fails(
        None,
        &["owners", "list"],
        "is encrypted: set storage.key_file or FACEGATE_DB_KEY",
    );
    env.fails(
        Some(&hex_key(0x42)),
        &["owners", "list"],
        "does not open with this key",
    );
    // A configured key file wins over the variable.
    env.set_key_file(Some(&key));
    assert!(
        env.ok(Some(&hex_key(0x42)), &["owners", "list"])
            .contains(NAME)
    );
    env.set_key_file(None);
    env.fails(Some("not-hex"), &["owners", "list"], "FACEGATE_DB_KEY");
    assert_eq!((env.listing(), std::fs::read(env.db()).unwrap()), before);

    // A key file others can read is refused, saying why.
    env.set_key_file(Some(&key));
    chmod(&key, 0o644);
    env.fails(None, &["owners", "list"], "mode 0644");
    chmod(&key, 0o400);
    assert!(env.ok(None, &["owners", "list"]).contains(NAME));

    // Rekey: the old key no longer opens it, the new one does.
    let new_key = env.path("db2.key");
    env.ok(None, &["db", "keygen", new_key.to_str().unwrap()]);
    env.ok(
        None,
        &["db", "rekey", "--new-key-file", new_key.to_str().unwrap()],
    );
    env.fails(None, &["owners", "list"], "does not open with this key");
    env.set_key_file(Some(&new_key));
    assert!(env.ok(None, &["owners", "list"]).contains(NAME));
    assert!(!contains(&env.db_bytes(), NAME));
}

#[test]
fn db_encrypt_turns_a_plain_database_into_an_encrypted_one_with_its_owners() {
    let Some(env) = Env::new() else {
        return;
    };
    env.enroll(None);
    let bytes = env.db_bytes();
    assert_eq!(&bytes[..16], PLAIN_HEADER);
    assert!(contains(&bytes, NAME), "a plain file shows the name");

    let key = hex_key(0x17);
    // A key for a plain file: told to run `db encrypt`, file untouched.
    env.fails(Some(&key), &["owners", "list"], "facegate db encrypt");
    assert_eq!(&std::fs::read(env.db()).unwrap()[..16], PLAIN_HEADER);

    env.ok(Some(&key), &["db", "encrypt"]);
    let bytes = env.db_bytes();
    assert_ne!(&bytes[..16], PLAIN_HEADER);
    assert!(!contains(&bytes, NAME), "the name survived encryption");
    assert!(
        !env.listing().iter().any(|f| f.contains("encrypting")),
        "no temporary copy left: {:?}",
        env.listing()
    );
    let owners = env.ok(Some(&key), &["owners", "list"]);
    assert!(owners.contains(NAME) && owners.contains("Q-1"), "{owners}");
    env.fails(None, &["owners", "list"], "is encrypted");
    env.fails(Some(&key), &["db", "encrypt"], "already encrypted");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The gateway's HTTP server (`facegate run`'s code path) over a real
/// socket, with this process's key installed as `facegate run` does:
/// snapshots are sealed on disk and served as JPEG.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_sealed_on_disk_and_served_as_jpeg() {
    use facegate::config::CameraRole;
    use facegate::events::{Event, EventKind, EventStore, Place, SnapshotWriter};
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
    let mut e = Event::new(
        EventKind::OwnerPass,
        now,
        "gate-1",
        CameraRole::Gate,
        &Place::default(),
    );
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
