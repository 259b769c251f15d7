//! The one place that opens the SQLite database.
//!
//! The registry, the event store and the outbox each hold a connection of
//! their own on the same file; all of them come from [`open`], so they share
//! one set of pragmas and one error type:
//!
//! - `journal_mode = WAL`: cameras and the API read while the CLI writes;
//! - `busy_timeout` ([`BUSY_TIMEOUT`]): a writer waits for another process
//!   (the CLI beside the gateway) instead of failing at once with "busy";
//! - `foreign_keys = ON`: erasing a person cascades to their face data;
//! - `secure_delete = ON`: deleted rows are overwritten with zeros, so an
//!   erased face, name or gate open does not survive in free pages;
//! - `synchronous = NORMAL`: in WAL mode a power cut may undo the last
//!   commits but never corrupts the file.
//!
//! The file (and SQLite's `-wal`/`-shm` companions, which inherit its mode)
//! is created readable by the service user only (0600); an existing file
//! that others can read is tightened on open.
//!
//! Encryption at rest (SQLCipher): when the process has a key
//! ([`crate::crypto::installed`]), it is set as the first statement on every
//! connection and checked by reading the schema. A wrong key, a missing key
//! for an encrypted file, or a key for a plain file are start-up errors that
//! name the fix; none of them ever creates a new, empty database in place of
//! the real one. Without a key the database is plain, as before (`facegate
//! run` warns at start-up). [`encrypt_plain`] and [`rekey`] back `facegate db encrypt` and
//! `facegate db rekey`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use crate::crypto::MasterKey;

/// How long a statement waits for another connection's write lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// What can go wrong opening the database, phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The parent directory does not exist; we do not create it, because a
    /// typo in the configured path should not scatter databases.
    #[error(
        "database {path}: directory {} does not exist; create it or fix the storage path in the config",
        .path.parent().map(Path::display).map(|d| d.to_string()).unwrap_or_default()
    )]
    MissingDirectory { path: PathBuf },
    /// SQLite refused to open the file or to take a pragma.
    #[error("database {path}: {what}: {source}")]
    Sqlite {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// The file is encrypted and this process has no key.
    #[error(
        "database {path} is encrypted: set storage.key_file or {} to its key",
        crate::crypto::KEY_ENV
    )]
    KeyMissing { path: PathBuf },
    /// The key does not decrypt the file.
    #[error(
        "the database {path} does not open with this key (storage.key_file or {}): wrong key, or not a database",
        crate::crypto::KEY_ENV
    )]
    WrongKey { path: PathBuf },
    /// A key is configured but the file is a plain SQLite database.
    #[error(
        "database {path} is not encrypted but a key is configured: run `facegate db encrypt` to encrypt it (with the gateway stopped)"
    )]
    NotEncrypted { path: PathBuf },
    /// `db encrypt`/`db rekey` asked of a file in the wrong state.
    #[error("database {path}: {why}")]
    Refused { path: PathBuf, why: String },
    /// Creating the file or restricting its permissions failed.
    #[error("database {path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl DbError {
    /// Whether trying again later may succeed (another process held the
    /// lock for longer than the busy timeout).
    pub fn is_transient(&self) -> bool {
        matches!(self, DbError::Sqlite { source, .. } if is_busy(source))
    }
}

/// SQLite's "busy" and "locked": another connection holds the lock.
pub fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// What the first bytes of a database file say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// No file, or an empty one: a new database.
    New,
    /// A plain SQLite database ("SQLite format 3\0").
    Plain,
    /// Anything else: an encrypted (SQLCipher) database, or not a database.
    Encrypted,
}

/// The header every plain SQLite file starts with.
pub const PLAIN_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Looks at the first 16 bytes of `path`.
pub fn file_kind(path: &Path) -> Result<FileKind, DbError> {
    use std::io::Read;
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileKind::New),
        Err(source) => {
            return Err(DbError::Io {
                path: path.to_owned(),
                what: "read the header",
                source,
            });
        }
    };
    let mut head = Vec::with_capacity(16);
    f.by_ref()
        .take(16)
        .read_to_end(&mut head)
        .map_err(|source| DbError::Io {
            path: path.to_owned(),
            what: "read the header",
            source,
        })?;
    Ok(if head.is_empty() {
        FileKind::New
    } else if head == PLAIN_HEADER {
        FileKind::Plain
    } else {
        FileKind::Encrypted
    })
}

/// Opens (creating if needed, 0600) the database at `path` with the
/// pragmas above, keyed with the process's key if it has one. Migrations are
/// the caller's next step (`registry::schema::migrate`).
pub fn open(path: &Path) -> Result<Connection, DbError> {
    open_with_key(path, crate::crypto::installed())
}

/// [`open`] with an explicit key (`None`: a plain database).
pub fn open_with_key(path: &Path, key: Option<&MasterKey>) -> Result<Connection, DbError> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
        && !parent.is_dir()
    {
        return Err(DbError::MissingDirectory {
            path: path.to_owned(),
        });
    }
    // Decide before anything is created or opened: a refused key must
    // leave the file (and the folder) as they were. Only the first time this
    // process opens the file, though: reading the header opens and closes a
    // descriptor of it, and closing any descriptor of a file drops every
    // POSIX lock the process holds on that file, SQLite's own included. With
    // a connection already open, another process (the CLI beside the
    // gateway) could then checkpoint and delete the WAL under it, and the
    // gateway's next writes would go to an unlinked file.
    if !verified(path, key) {
        match (file_kind(path)?, key) {
            (FileKind::Encrypted, None) => {
                return Err(DbError::KeyMissing {
                    path: path.to_owned(),
                });
            }
            (FileKind::Plain, Some(_)) => {
                return Err(DbError::NotEncrypted {
                    path: path.to_owned(),
                });
            }
            _ => {}
        }
    }
    create_private(path)?;
    let conn = Connection::open(path).map_err(sqlite(path, "open"))?;
    if let Some(key) = key {
        apply_key(&conn, path, key)?;
    }
    configure(&conn, path)?;
    // WAL lets the matcher read while the CLI or API writes. Some file
    // systems (network mounts) cannot do it; SQLite then keeps its rollback
    // journal, which is slower but correct, so warn, not fail.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(sqlite(path, "enable WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(
            path = %path.display(),
            mode,
            "database is not in WAL mode; the file system may not support it"
        );
    }
    for companion in companions(path) {
        if companion.exists() {
            restrict_permissions(&companion)?;
        }
    }
    mark_verified(path, key);
    Ok(conn)
}

/// Files this process has opened through [`open_with_key`] (canonical
/// paths), with a digest of the key they were opened with: opened again
/// with the same key, their header is not read again. A different key (a
/// test, `db encrypt`) checks it again.
type Verified = std::collections::BTreeMap<PathBuf, Option<[u8; 32]>>;
static VERIFIED: std::sync::Mutex<Verified> = std::sync::Mutex::new(Verified::new());

fn key_digest(key: Option<&MasterKey>) -> Option<[u8; 32]> {
    use sha2::Digest;
    key.map(|k| sha2::Sha256::digest(k.hex().as_bytes()).into())
}

fn verified(path: &Path, key: Option<&MasterKey>) -> bool {
    let Ok(p) = std::fs::canonicalize(path) else {
        return false;
    };
    let digest = key_digest(key);
    VERIFIED
        .lock()
        .is_ok_and(|s| s.get(&p).is_some_and(|d| *d == digest))
}

fn mark_verified(path: &Path, key: Option<&MasterKey>) {
    if let (Ok(p), Ok(mut s)) = (std::fs::canonicalize(path), VERIFIED.lock()) {
        s.insert(p, key_digest(key));
    }
}

/// A throwaway database with the same pragmas (bar WAL), for tests and dry
/// runs.
pub fn open_in_memory() -> Result<Connection, DbError> {
    let path = Path::new(":memory:");
    let conn = Connection::open_in_memory().map_err(sqlite(path, "open"))?;
    configure(&conn, path)?;
    Ok(conn)
}

/// `PRAGMA key` as the first statement, then a read of the schema: SQLCipher
/// only notices a wrong key when it first reads a page.
fn apply_key(conn: &Connection, path: &Path, key: &MasterKey) -> Result<(), DbError> {
    conn.execute_batch(&format!("PRAGMA key = {};", key.sqlcipher_pragma_value()))
        .map_err(sqlite(path, "set the key"))?;
    // SQLCipher logs a failed page check to stderr; the error below says
    // it better (the setting is process-wide; older builds lack it).
    let _ = conn.execute_batch("PRAGMA cipher_log_level = NONE;");
    match conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(_) => Ok(()),
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) => {
            Err(DbError::WrongKey {
                path: path.to_owned(),
            })
        }
        Err(e) => Err(sqlite(path, "read with the key")(e)),
    }
}

/// `facegate db encrypt`: replaces the plain database at `path` with an
/// encrypted copy under `key` (`sqlcipher_export` into a 0600 temporary file
/// beside it, then a rename over the original). The WAL is checkpointed
/// first so the copy is complete; the plain file is then gone (removed, not
/// overwritten: overwriting in place is no guarantee on flash storage).
/// Returns the number of tables copied.
pub fn encrypt_plain(path: &Path, key: &MasterKey) -> Result<usize, DbError> {
    match file_kind(path)? {
        FileKind::Plain => {}
        FileKind::New => {
            return Err(DbError::Refused {
                path: path.to_owned(),
                why: "no database here to encrypt".into(),
            });
        }
        FileKind::Encrypted => {
            return Err(DbError::Refused {
                path: path.to_owned(),
                why: "already encrypted (or not a database)".into(),
            });
        }
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".encrypting");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    create_private(&tmp)?;
    let result = (|| {
        let conn = Connection::open(path).map_err(sqlite(path, "open"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sqlite(path, "set busy timeout"))?;
        sole_user(&conn, path)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sqlite(path, "read user_version"))?;
        // SQLCipher reads a key of the form x'<64 hex>' as a raw key.
        conn.execute(
            "ATTACH DATABASE ?1 AS encrypted KEY ?2",
            [
                tmp.to_string_lossy().into_owned(),
                format!("x'{}'", key.hex()),
            ],
        )
        .map_err(sqlite(path, "attach the encrypted copy"))?;
        conn.query_row("SELECT sqlcipher_export('encrypted')", [], |_| Ok(()))
            .map_err(sqlite(path, "export (sqlcipher_export)"))?;
        conn.execute_batch(&format!("PRAGMA encrypted.user_version = {version};"))
            .map_err(sqlite(path, "copy user_version"))?;
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM encrypted.sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .map_err(sqlite(path, "count tables"))?;
        conn.execute_batch("DETACH DATABASE encrypted")
            .map_err(sqlite(path, "detach"))?;
        drop(conn);
        // The copy must open with the key before it replaces anything.
        drop(open_with_key(&tmp, Some(key))?);
        for c in companions(&tmp) {
            let _ = std::fs::remove_file(c);
        }
        Ok(tables.max(0) as usize)
    })();
    let tables = match result {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, path).map_err(|source| DbError::Io {
        path: path.to_owned(),
        what: "replace the plain file with the encrypted copy",
        source,
    })?;
    // The plain database's (checkpointed, empty) WAL and shared memory.
    for c in companions(path) {
        let _ = std::fs::remove_file(c);
    }
    Ok(tables)
}

/// Checkpoints the WAL into the file and leaves WAL mode, which SQLite
/// allows only to the one connection on the file: so no gateway (or other
/// CLI) is using it while the file is rewritten or replaced.
fn sole_user(conn: &Connection, path: &Path) -> Result<(), DbError> {
    let in_use = || DbError::Refused {
        path: path.to_owned(),
        why: "another process is using it: stop the gateway first".into(),
    };
    match checkpoint(conn) {
        Ok(true) => {}
        Ok(false) => return Err(in_use()),
        Err(e) if is_busy(&e) => return Err(in_use()),
        Err(e) => return Err(sqlite(path, "checkpoint the WAL")(e)),
    }
    match conn.pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get::<_, String>(0)) {
        Ok(mode) if mode.eq_ignore_ascii_case("delete") => Ok(()),
        Ok(_) => Err(in_use()),
        Err(e) if is_busy(&e) => Err(in_use()),
        Err(e) => Err(sqlite(path, "leave WAL mode")(e)),
    }
}

/// `facegate db rekey`: re-encrypts the database from `old` to `new`
/// (`PRAGMA rekey`, in rollback-journal mode, then WAL again).
pub fn rekey(path: &Path, old: &MasterKey, new: &MasterKey) -> Result<(), DbError> {
    if file_kind(path)? != FileKind::Encrypted {
        return Err(DbError::Refused {
            path: path.to_owned(),
            why: "not an encrypted database: run `facegate db encrypt` instead".into(),
        });
    }
    let conn = open_with_key(path, Some(old))?;
    sole_user(&conn, path)?;
    conn.execute_batch(&format!("PRAGMA rekey = {};", new.sqlcipher_pragma_value()))
        .map_err(sqlite(path, "rekey"))?;
    drop(conn);
    // Opening with the new key proves it and turns WAL back on.
    drop(open_with_key(path, Some(new))?);
    Ok(())
}

fn configure(conn: &Connection, path: &Path) -> Result<(), DbError> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(sqlite(path, "set busy timeout"))?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(sqlite(path, "enable foreign keys"))?;
    conn.pragma_update(None, "secure_delete", true)
        .map_err(sqlite(path, "enable secure_delete"))?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sqlite(path, "set synchronous"))?;
    Ok(())
}

/// Copies the WAL into the main file and truncates it, so deleted data does
/// not linger in old WAL frames. Returns false when a reader in another
/// connection kept it from completing (the next checkpoint finishes it).
pub fn checkpoint(conn: &Connection) -> Result<bool, rusqlite::Error> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
        row.get::<_, i64>(0)
    })
    .map(|busy| busy == 0)
}

/// The files SQLite keeps beside the database.
pub fn companions(path: &Path) -> [PathBuf; 2] {
    let with = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [with("-wal"), with("-shm")]
}

fn sqlite(path: &Path, what: &'static str) -> impl FnOnce(rusqlite::Error) -> DbError {
    let path = path.to_owned();
    move |source| DbError::Sqlite { path, what, source }
}

/// Creates the file with mode 0600 before SQLite sees it (no window in which
/// it is world-readable), or tightens an existing one.
#[cfg(unix)]
fn create_private(path: &Path) -> Result<(), DbError> {
    use std::os::unix::fs::OpenOptionsExt;
    if path.exists() {
        return restrict_permissions(path);
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(|source| DbError::Io {
            path: path.to_owned(),
            what: "create the file",
            source,
        })
}

#[cfg(not(unix))]
fn create_private(_path: &Path) -> Result<(), DbError> {
    Ok(())
}

/// Face data is readable by the service user only: a file with any group
/// or other bits is set to 0600.
#[cfg(unix)]
pub fn restrict_permissions(path: &Path) -> Result<(), DbError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |what: &'static str| {
        move |source| DbError::Io {
            path: path.to_owned(),
            what,
            source,
        }
    };
    let mode = std::fs::metadata(path)
        .map_err(io("read permissions"))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io("restrict permissions to 0600"))?;
    }
    Ok(())
}

#[cfg(not(unix))]
pub fn restrict_permissions(_path: &Path) -> Result<(), DbError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pragma(conn: &Connection, name: &str) -> i64 {
        conn.pragma_query_value(None, name, |r| r.get(0)).unwrap()
    }

    #[test]
    fn every_connection_gets_the_same_pragmas() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.db");
        for conn in [open(&path).unwrap(), open(&path).unwrap()] {
            assert_eq!(pragma(&conn, "foreign_keys"), 1);
            assert_eq!(pragma(&conn, "secure_delete"), 1);
            assert_eq!(pragma(&conn, "synchronous"), 1, "NORMAL");
            assert_eq!(pragma(&conn, "busy_timeout"), 5000);
            let mode: String = conn
                .pragma_query_value(None, "journal_mode", |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
        }
        let mem = open_in_memory().unwrap();
        assert_eq!(pragma(&mem, "secure_delete"), 1);
    }

    #[cfg(unix)]
    #[test]
    fn files_are_private_and_loose_ones_are_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.db");
        let conn = open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        for c in companions(&path) {
            assert_eq!(mode(&c), 0o600, "{}", c.display());
        }
        drop(conn);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(open(&path).unwrap());
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn a_missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = open(&dir.path().join("nope/f.db")).unwrap_err();
        assert!(matches!(err, DbError::MissingDirectory { .. }));
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn a_second_writer_waits_for_the_first_instead_of_failing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.db");
        let a = open(&path).unwrap();
        a.execute_batch("CREATE TABLE t (x)").unwrap();
        a.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (1);")
            .unwrap();
        let p = path.clone();
        let writer = std::thread::spawn(move || {
            let b = open(&p).unwrap();
            b.execute("INSERT INTO t VALUES (2)", []).map(drop)
        });
        std::thread::sleep(Duration::from_millis(200));
        a.execute_batch("COMMIT").unwrap();
        writer.join().unwrap().expect("busy is retried");
        let n: i64 = a
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
    }

    fn key(b: u8) -> MasterKey {
        MasterKey::from_hex(&format!("{b:02x}").repeat(32), "t").unwrap()
    }

    #[test]
    fn a_key_is_needed_checked_and_never_replaced_by_an_empty_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.db");
        let conn = open_with_key(&path, Some(&key(1))).unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES ('Li Lei');")
            .unwrap();
        drop(conn);
        assert_eq!(file_kind(&path).unwrap(), FileKind::Encrypted);
        let before = std::fs::read(&path).unwrap();
        let e = open_with_key(&path, None).unwrap_err();
        assert!(matches!(e, DbError::KeyMissing { .. }), "{e}");
        let e = open_with_key(&path, Some(&key(2))).unwrap_err();
        assert!(matches!(e, DbError::WrongKey { .. }), "{e}");
        assert!(e.to_string().contains("does not open with this key"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        let n: i64 = open_with_key(&path, Some(&key(1)))
            .unwrap()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn encrypt_then_rekey_keeps_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.db");
        let conn = open_with_key(&path, None).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (x); INSERT INTO t VALUES ('Li Lei'); PRAGMA user_version = 7;",
        )
        .unwrap();
        drop(conn);
        let e = open_with_key(&path, Some(&key(1))).unwrap_err();
        assert!(matches!(e, DbError::NotEncrypted { .. }), "{e}");
        assert_eq!(encrypt_plain(&path, &key(1)).unwrap(), 1);
        assert_eq!(file_kind(&path).unwrap(), FileKind::Encrypted);
        rekey(&path, &key(1), &key(2)).unwrap();
        assert!(matches!(
            open_with_key(&path, Some(&key(1))),
            Err(DbError::WrongKey { .. })
        ));
        let conn = open_with_key(&path, Some(&key(2))).unwrap();
        let x: String = conn.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(x, "Li Lei");
        assert_eq!(pragma(&conn, "user_version"), 7);
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn encrypt_and_rekey_refuse_a_database_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.db");
        let gateway = open_with_key(&path, None).unwrap();
        gateway.execute_batch("CREATE TABLE t (x)").unwrap();
        let e = encrypt_plain(&path, &key(1)).unwrap_err();
        assert!(e.to_string().contains("stop the gateway"), "{e}");
        assert_eq!(file_kind(&path).unwrap(), FileKind::Plain);
        drop(gateway);
        encrypt_plain(&path, &key(1)).unwrap();
        let gateway = open_with_key(&path, Some(&key(1))).unwrap();
        let e = rekey(&path, &key(1), &key(2)).unwrap_err();
        assert!(e.to_string().contains("stop the gateway"), "{e}");
        drop(gateway);
        rekey(&path, &key(1), &key(2)).unwrap();
    }
}
