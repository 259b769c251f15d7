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
//! Encryption at rest (SQLCipher) will set its key pragma here, first, before
//! any other statement touches the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

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

/// Opens (creating if needed, 0600) the database at `path` with the
/// pragmas above. Migrations are the caller's next step
/// (`registry::schema::migrate`).
pub fn open(path: &Path) -> Result<Connection, DbError> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
        && !parent.is_dir()
    {
        return Err(DbError::MissingDirectory {
            path: path.to_owned(),
        });
    }
    create_private(path)?;
    let conn = Connection::open(path).map_err(sqlite(path, "open"))?;
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
    Ok(conn)
}

/// A throwaway database with the same pragmas (bar WAL), for tests and dry
/// runs.
pub fn open_in_memory() -> Result<Connection, DbError> {
    let path = Path::new(":memory:");
    let conn = Connection::open_in_memory().map_err(sqlite(path, "open"))?;
    configure(&conn, path)?;
    Ok(conn)
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
}
