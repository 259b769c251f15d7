//! The registry's SQLite schema, as an ordered list of migrations.
//!
//! `PRAGMA user_version` records how many migrations a database has had. Each
//! migration runs in its own transaction together with the bump of
//! `user_version`, so a crash or a failing script leaves the database at the
//! last version that completed, never half-way through one.
//!
//! Append new migrations to [`MIGRATIONS`]; never edit one that has shipped,
//! because databases in the field have already applied it.

use rusqlite::{Connection, TransactionBehavior};

use super::{Context, RegistryError};

/// Migration 1: owners, their consents, the watch list, face templates, audit.
///
/// Every table is `STRICT` so a wrong type is refused at write time instead of
/// being stored silently. Times are unix milliseconds (UTC). Templates hang off
/// either an owner or a watch-list entry with `ON DELETE CASCADE`, so erasing a
/// person removes their face data in the same statement. The audit table has
/// no foreign key on purpose: its rows must outlive the people they mention.
const MIGRATION_1: &str = r#"
CREATE TABLE owners (
    id             TEXT    NOT NULL PRIMARY KEY,
    name           TEXT    NOT NULL CHECK (length(name) > 0),
    building       TEXT,
    unit           TEXT,
    grid_code      TEXT,
    status         TEXT    NOT NULL CHECK (status IN ('active', 'suspended')),
    minor_under_14 INTEGER NOT NULL DEFAULT 0 CHECK (minor_under_14 IN (0, 1)),
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
) STRICT;

CREATE TABLE consents (
    id                INTEGER PRIMARY KEY,
    owner_id          TEXT    NOT NULL REFERENCES owners (id) ON DELETE CASCADE,
    given_at          INTEGER NOT NULL,
    method            TEXT    NOT NULL
                      CHECK (method IN ('written', 'electronic', 'verbal_recorded')),
    taken_by          TEXT    NOT NULL,
    guardian_name     TEXT,
    guardian_relation TEXT,
    purpose           TEXT    NOT NULL DEFAULT 'estate access by face',
    withdrawn_at      INTEGER
) STRICT;
CREATE INDEX consents_by_owner ON consents (owner_id);

CREATE TABLE watchlist (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    priority   TEXT    NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'critical')),
    expires_at INTEGER,
    created_by TEXT    NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE templates (
    id         INTEGER PRIMARY KEY,
    owner_id   TEXT    REFERENCES owners (id) ON DELETE CASCADE,
    watch_id   INTEGER REFERENCES watchlist (id) ON DELETE CASCADE,
    model_id   TEXT    NOT NULL,
    dim        INTEGER NOT NULL CHECK (dim > 0),
    embedding  BLOB    NOT NULL CHECK (length(embedding) = 4 * dim),
    quality    REAL,
    photo      BLOB,
    created_at INTEGER NOT NULL,
    CHECK ((owner_id IS NULL) <> (watch_id IS NULL))
) STRICT;
CREATE INDEX templates_by_owner ON templates (owner_id) WHERE owner_id IS NOT NULL;
CREATE INDEX templates_by_watch ON templates (watch_id) WHERE watch_id IS NOT NULL;
CREATE INDEX templates_by_model ON templates (model_id);

CREATE TABLE audit (
    id      INTEGER PRIMARY KEY,
    ts      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    subject TEXT    NOT NULL,
    detail  TEXT
) STRICT;
CREATE INDEX audit_by_subject ON audit (subject);
"#;

/// Migration 2: the events the camera pipeline decides (one row per track
/// decision or camera state change). `id` is stable across updates and
/// redelivery, so consumers can drop duplicates. No face data in the row:
/// snapshots are files under the data directory, named here.
const MIGRATION_2: &str = r#"
CREATE TABLE events (
    id             TEXT    NOT NULL PRIMARY KEY,
    kind           TEXT    NOT NULL,
    ts             INTEGER NOT NULL,
    updated_ts     INTEGER NOT NULL,
    revision       INTEGER NOT NULL DEFAULT 0,
    camera         TEXT    NOT NULL,
    site           TEXT    NOT NULL,
    track_id       INTEGER,
    subject_kind   TEXT,
    subject_id     TEXT,
    score          REAL,
    priority       TEXT,
    body           TEXT    NOT NULL
) STRICT;
CREATE INDEX events_by_ts ON events (ts);
CREATE INDEX events_by_kind_ts ON events (kind, ts);
CREATE INDEX events_by_subject ON events (subject_id) WHERE subject_id IS NOT NULL;
"#;

/// Migration 3: the durable outbox. A message is written in the same
/// transaction as the event it announces and deleted (or marked delivered)
/// only when the broker acknowledged it, so a broker outage, a restart or a
/// power cut loses nothing. `expires_at`: never send after (gate opens).
const MIGRATION_3: &str = r#"
CREATE TABLE outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id   TEXT    NOT NULL,
    topic        TEXT    NOT NULL,
    payload      BLOB    NOT NULL,
    qos          INTEGER NOT NULL CHECK (qos IN (0, 1, 2)),
    retain       INTEGER NOT NULL CHECK (retain IN (0, 1)),
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    delivered_at INTEGER
) STRICT;
CREATE INDEX outbox_pending ON outbox (seq) WHERE delivered_at IS NULL;
"#;

/// Migration 4: API tokens and the faces of events.
///
/// `api_tokens`: only an argon2 hash of each token's secret is kept; the
/// token itself is shown once, when created. A revoked token keeps its row
/// (and name) so the audit log still reads.
///
/// `event_faces`: the embedding a track's decision rested on, so staff can
/// search "where has this person been seen" (以脸搜脸). It is face data:
/// deleted with its event, and expired with the snapshots
/// (`privacy.snapshot_retention_days`).
const MIGRATION_4: &str = r#"
CREATE TABLE api_tokens (
    id          TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE CHECK (length(name) > 0),
    role        TEXT    NOT NULL CHECK (role IN ('admin', 'enroller', 'viewer')),
    secret_hash TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  TEXT    NOT NULL,
    revoked_at  INTEGER,
    last_used_at INTEGER
) STRICT;

CREATE TABLE event_faces (
    event_id  TEXT    NOT NULL PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
    ts        INTEGER NOT NULL,
    model_id  TEXT    NOT NULL,
    embedding BLOB    NOT NULL
) STRICT;
CREATE INDEX event_faces_by_ts ON event_faces (ts);
"#;

/// Migration 5: files an erasure has removed from the database but not yet
/// from the disk (snapshots of an erased person's events). Written in the
/// erasure's transaction, deleted once the file is gone, so a crash between
/// the commit and the deletion cannot leave a snapshot behind: the retention
/// task finishes the job. Paths are relative to `storage.data_dir` and name
/// event ids only, never a person.
const MIGRATION_5: &str = r#"
CREATE TABLE erased_files (
    path      TEXT    NOT NULL PRIMARY KEY,
    queued_at INTEGER NOT NULL
) STRICT;
"#;

/// Migration 6: registry sync between the boxes of one site (`[sync]`,
/// `gateway/sync/`).
///
/// `sync_dirty`: owners whose record, consents or templates changed here,
/// filled by triggers, so that every writer (the gateway, the CLI in
/// another process while the gateway is down, the retention task) is seen
/// without a hook in each code path. The gateway drains it when `[sync]` is
/// on: it compares the owner's state with what was last published or
/// applied (`sync_owners.digest`) and publishes only a real change, so
/// applying a remote change (which fires the triggers too) is never sent
/// back as a new version. `stamp` is random per change: a row is deleted
/// only if no newer change came in while it was being published.
///
/// `sync_owners`: the newest version known per owner (Lamport counter and
/// the box that made it), and whether it is an erasure: the tombstone that
/// keeps an old replayed state from bringing an erased owner back. Holds the
/// owner id and a hash, no personal data. `sync_clock`: this box's Lamport
/// clock (one row).
///
/// Existing owners are marked changed, so a box that turns sync on
/// publishes what it already holds.
const MIGRATION_6: &str = r#"
CREATE TABLE sync_dirty (
    owner_id TEXT NOT NULL PRIMARY KEY,
    stamp    BLOB NOT NULL
) STRICT;

CREATE TABLE sync_owners (
    owner_id TEXT    NOT NULL PRIMARY KEY,
    counter  INTEGER NOT NULL CHECK (counter > 0),
    origin   TEXT    NOT NULL,
    erased   INTEGER NOT NULL CHECK (erased IN (0, 1)),
    digest   BLOB    NOT NULL
) STRICT;

CREATE TABLE sync_clock (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    counter INTEGER NOT NULL
) STRICT;
INSERT INTO sync_clock (id, counter) VALUES (1, 0);

INSERT INTO sync_dirty (owner_id, stamp) SELECT id, randomblob(8) FROM owners;

CREATE TRIGGER sync_owner_insert AFTER INSERT ON owners BEGIN
    INSERT OR REPLACE INTO sync_dirty (owner_id, stamp) VALUES (NEW.id, randomblob(8));
END;
CREATE TRIGGER sync_owner_update AFTER UPDATE ON owners BEGIN
    INSERT OR REPLACE INTO sync_dirty (owner_id, stamp) VALUES (NEW.id, randomblob(8));
END;
CREATE TRIGGER sync_owner_delete AFTER DELETE ON owners BEGIN
    INSERT OR REPLACE INTO sync_dirty (owner_id, stamp) VALUES (OLD.id, randomblob(8));
END;
CREATE TRIGGER sync_consent_insert AFTER INSERT ON consents BEGIN
    INSERT OR REPLACE INTO sync_dirty (owner_id, stamp) VALUES (NEW.owner_id, randomblob(8));
END;
CREATE TRIGGER sync_consent_update AFTER UPDATE ON consents BEGIN
    INSERT OR REPLACE INTO sync_dirty (owner_id, stamp) VALUES (NEW.owner_id, randomblob(8));
END;
CREATE TRIGGER sync_template_insert AFTER INSERT ON templates WHEN NEW.owner_id IS NOT NULL BEGIN
    INSERT OR REPLACE INTO sync_dirty (owner_id, stamp) VALUES (NEW.owner_id, randomblob(8));
END;
CREATE TRIGGER sync_template_delete AFTER DELETE ON templates WHEN OLD.owner_id IS NOT NULL BEGIN
    INSERT OR REPLACE INTO sync_dirty (owner_id, stamp) VALUES (OLD.owner_id, randomblob(8));
END;
"#;

/// All migrations, in order; migration `n` (1-based) brings a database to
/// `user_version = n`.
pub const MIGRATIONS: &[&str] = &[
    MIGRATION_1,
    MIGRATION_2,
    MIGRATION_3,
    MIGRATION_4,
    MIGRATION_5,
    MIGRATION_6,
];

/// The schema version this code writes and understands.
pub fn known_version() -> u32 {
    // MIGRATIONS is a short literal list; it cannot exceed u32.
    MIGRATIONS.len() as u32
}

/// Opens the database through [`crate::db::open`] (the one set of pragmas)
/// and brings it up to date: what the registry, the event store and the
/// outbox each do for their own connection.
pub fn open(path: &std::path::Path) -> Result<Connection, RegistryError> {
    let mut conn = crate::db::open(path)?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Reads `PRAGMA user_version`.
pub fn current_version(conn: &Connection) -> Result<u32, RegistryError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .context("read schema version")?;
    u32::try_from(version).map_err(|_| {
        RegistryError::Invalid(format!(
            "database schema version {version} is not a valid facegate schema version"
        ))
    })
}

/// Brings the database up to [`known_version`], refusing one that is newer.
///
/// Returns the version the database is at afterwards.
pub fn migrate(conn: &mut Connection) -> Result<u32, RegistryError> {
    migrate_with(conn, MIGRATIONS)
}

/// [`migrate`] over an explicit list, so tests can exercise failure paths with
/// scripts of their own.
fn migrate_with(conn: &mut Connection, migrations: &[&str]) -> Result<u32, RegistryError> {
    let known = migrations.len() as u32;
    let found = current_version(conn)?;
    if found > known {
        return Err(RegistryError::SchemaTooNew { found, known });
    }
    for (index, script) in migrations.iter().enumerate().skip(found as usize) {
        let version = index as u32 + 1;
        // IMMEDIATE: take the write lock up front, so two processes opening a
        // fresh database at once serialise instead of both starting to migrate.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .with_context(|| format!("begin migration {version}"))?;
        // Another process may have migrated while we waited for the lock.
        if current_version(&tx)? >= version {
            continue;
        }
        tx.execute_batch(script)
            .with_context(|| format!("apply migration {version}"))?;
        tx.pragma_update(None, "user_version", version)
            .with_context(|| format!("record schema version {version}"))?;
        tx.commit()
            .with_context(|| format!("commit migration {version}"))?;
        tracing::info!(version, "registry schema migrated");
    }
    current_version(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_exists(conn: &Connection, name: &str) -> bool {
        conn.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
            [name],
            |row| row.get::<_, i64>(0),
        )
        .expect("query sqlite_schema")
            == 1
    }

    #[test]
    fn fresh_database_gets_every_table() {
        let mut conn = Connection::open_in_memory().expect("open");
        assert_eq!(migrate(&mut conn).expect("migrate"), known_version());
        for table in ["owners", "consents", "watchlist", "templates", "audit"] {
            assert!(table_exists(&conn, table), "missing table {table}");
        }
    }

    #[test]
    fn migrating_twice_is_a_no_op() {
        let mut conn = Connection::open_in_memory().expect("open");
        migrate(&mut conn).expect("first migrate");
        // A re-run of migration 1 would fail on CREATE TABLE.
        assert_eq!(migrate(&mut conn).expect("second migrate"), known_version());
    }

    #[test]
    fn newer_database_is_refused_with_a_clear_message() {
        let mut conn = Connection::open_in_memory().expect("open");
        conn.pragma_update(None, "user_version", 7)
            .expect("set version");
        let err = migrate(&mut conn).expect_err("must refuse");
        assert!(matches!(
            err,
            RegistryError::SchemaTooNew { found: 7, known } if known == known_version()
        ));
        assert_eq!(
            err.to_string(),
            format!(
                "database schema version 7 is newer than this facegate (knows {}); upgrade facegate",
                known_version()
            )
        );
    }

    #[test]
    fn failing_migration_rolls_back_to_the_last_good_version() {
        let mut conn = Connection::open_in_memory().expect("open");
        let scripts = [
            "CREATE TABLE a (x INTEGER) STRICT;",
            "CREATE TABLE b (x INTEGER) STRICT; THIS IS NOT SQL;",
        ];
        let err = migrate_with(&mut conn, &scripts).expect_err("second script is broken");
        assert!(err.to_string().contains("apply migration 2"), "{err}");
        assert_eq!(current_version(&conn).expect("version"), 1);
        assert!(table_exists(&conn, "a"));
        assert!(!table_exists(&conn, "b"), "migration 2 must be rolled back");
    }

    #[test]
    fn later_migrations_apply_on_top_of_earlier_ones() {
        let mut conn = Connection::open_in_memory().expect("open");
        let first = ["CREATE TABLE a (x INTEGER) STRICT;"];
        assert_eq!(migrate_with(&mut conn, &first).expect("v1"), 1);
        let both = [first[0], "ALTER TABLE a ADD COLUMN y TEXT;"];
        assert_eq!(migrate_with(&mut conn, &both).expect("v2"), 2);
        conn.execute("INSERT INTO a (x, y) VALUES (1, 'one')", [])
            .expect("column y exists");
    }
}
