//! Retention: each kind of personal data is deleted once it is older than
//! the configured period (`[retention]`; PIPL Art. 19, shortest necessary
//! period). One call, [`Registry::enforce_retention`], takes `now` so tests
//! and replays control time; `facegate run` calls it on the blocking pool.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{Connection, params};
use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;

use super::{Context, Millis, Registry, RegistryError, audit, snapshot_paths};
use crate::config::Config;
use crate::events::EventKind;

/// The actor retention writes audit rows as.
const ACTOR: &str = "retention";

/// Periods in days, resolved from the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionPolicy {
    /// Every event kind, with its period.
    pub events: BTreeMap<String, u32>,
    pub stranger_faces: u32,
    pub event_faces: u32,
    pub snapshots: u32,
    pub audit: u32,
    pub expired_watchlist: u32,
    pub delivered_outbox: u32,
}

impl RetentionPolicy {
    pub fn from_config(config: &Config) -> Self {
        let r = &config.retention;
        Self {
            events: EventKind::ALL
                .iter()
                .map(|k| (k.as_str().to_owned(), r.event_days(k.as_str())))
                .collect(),
            stranger_faces: r.stranger_faces_days,
            event_faces: r.event_faces_days,
            snapshots: r.snapshot_days(&config.privacy),
            audit: r.audit_days,
            expired_watchlist: r.expired_watchlist_days,
            delivered_outbox: r.delivered_outbox_days,
        }
    }
}

/// What one run deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Purged {
    /// Events deleted, by kind (kinds with none left out).
    pub events: BTreeMap<String, usize>,
    pub stranger_faces: usize,
    pub event_faces: usize,
    /// Snapshot files deleted: expired day folders plus those of deleted
    /// events and of erasures.
    pub snapshot_files: usize,
    pub audit: usize,
    /// Expired watch-list entries deleted (with their templates).
    pub watchlist: usize,
    pub watchlist_templates: usize,
    pub delivered_outbox: usize,
}

impl Purged {
    pub fn is_empty(&self) -> bool {
        *self == Purged::default()
    }
}

/// `now` minus `days`, as stored (unix milliseconds).
pub(crate) fn cutoff(now: OffsetDateTime, days: u32) -> Millis {
    Millis(now - time::Duration::days(i64::from(days)))
}

impl Registry {
    /// Deletes everything older than `policy` allows at `now`, in one
    /// transaction; then the snapshot files (day folders past
    /// `policy.snapshots`, and the files of the events just deleted) if this
    /// registry knows the data directory; then checkpoints the WAL.
    pub fn enforce_retention(
        &mut self,
        policy: &RetentionPolicy,
        now: OffsetDateTime,
    ) -> Result<Purged, RegistryError> {
        let mut purged = Purged::default();
        let tx = self.write("begin retention")?;
        for (kind, days) in &policy.events {
            let n = delete_events(&tx, kind, cutoff(now, *days), now)?;
            if n > 0 {
                purged.events.insert(kind.clone(), n);
            }
        }
        purged.stranger_faces = tx
            .execute(
                "DELETE FROM event_faces WHERE ts < ?1 AND event_id IN
                   (SELECT id FROM events WHERE subject_kind IS NULL)",
                [cutoff(now, policy.stranger_faces)],
            )
            .context("expire stranger faces")?;
        purged.event_faces = tx
            .execute(
                "DELETE FROM event_faces WHERE ts < ?1",
                [cutoff(now, policy.event_faces)],
            )
            .context("expire event faces")?;
        purged.audit = tx
            .execute(
                "DELETE FROM audit WHERE ts < ?1",
                [cutoff(now, policy.audit)],
            )
            .context("expire audit rows")?;
        let expired = cutoff(now, policy.expired_watchlist);
        purged.watchlist_templates = tx
            .query_row(
                "SELECT count(*) FROM templates WHERE watch_id IN
                   (SELECT id FROM watchlist WHERE expires_at IS NOT NULL AND expires_at <= ?1)",
                [expired],
                |r| r.get(0),
            )
            .context("count expired watch-list templates")?;
        purged.watchlist = tx
            .execute(
                "DELETE FROM watchlist WHERE expires_at IS NOT NULL AND expires_at <= ?1",
                [expired],
            )
            .context("delete expired watch-list entries")?;
        purged.delivered_outbox = tx
            .execute(
                "DELETE FROM outbox WHERE delivered_at IS NOT NULL AND delivered_at < ?1",
                [cutoff(now, policy.delivered_outbox)],
            )
            .context("delete delivered outbox rows")?;
        if !purged.is_empty() {
            audit(
                &tx,
                now,
                ACTOR,
                "retention.purge",
                "*",
                json!({
                    "events": purged.events,
                    "stranger_faces": purged.stranger_faces,
                    "event_faces": purged.event_faces,
                    "audit": purged.audit,
                    "watchlist": purged.watchlist,
                    "watchlist_templates": purged.watchlist_templates,
                    "delivered_outbox": purged.delivered_outbox,
                }),
            )?;
        }
        tx.commit().context("commit retention")?;
        if let Some(dir) = self.snapshot_dir.clone() {
            purged.snapshot_files += self.delete_erased_files(&dir)?;
            purged.snapshot_files += crate::events::SnapshotWriter::new(&dir)
                .purge(now, policy.snapshots)
                .map_err(|source| RegistryError::Io {
                    context: format!("expire snapshots under {}", dir.display()),
                    source,
                })?;
        }
        if !purged.is_empty() {
            self.checkpoint();
        }
        Ok(purged)
    }

    /// People whose faces are held: enrolled owners and watch-list entries.
    pub fn people_with_faces(&self) -> Result<usize, RegistryError> {
        self.conn
            .query_row(
                "SELECT (SELECT count(*) FROM owners) + (SELECT count(*) FROM watchlist)",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as usize)
            .context("count people")
    }

    /// The data directory erasure and retention delete snapshot files in.
    pub fn snapshot_dir(&self) -> Option<&Path> {
        self.snapshot_dir.as_deref()
    }
}

/// Deletes the events of `kind` older than `before` (their faces cascade)
/// and queues their snapshot files for deletion. Returns how many.
fn delete_events(
    tx: &Connection,
    kind: &str,
    before: Millis,
    now: OffsetDateTime,
) -> Result<usize, RegistryError> {
    let bodies: Vec<String> = {
        let mut stmt = tx
            .prepare("SELECT body FROM events WHERE kind = ?1 AND ts < ?2")
            .context("prepare expired event query")?;
        stmt.query_map(params![kind, before], |r| r.get(0))
            .and_then(Iterator::collect)
            .context("read expired events")?
    };
    for path in bodies.iter().flat_map(|b| snapshot_paths(b)) {
        tx.execute(
            "INSERT OR IGNORE INTO erased_files (path, queued_at) VALUES (?1, ?2)",
            params![path, Millis(now)],
        )
        .context("queue expired snapshot")?;
    }
    tx.execute(
        "DELETE FROM events WHERE kind = ?1 AND ts < ?2",
        params![kind, before],
    )
    .context("delete expired events")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CameraRole;
    use crate::events::{Event, EventFace, EventStore, Place, SnapshotWriter};
    use crate::registry::{FaceTemplate, NewWatchEntry, Priority, Subject};
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-06-01 10:00 UTC);

    fn days(n: i64) -> time::Duration {
        time::Duration::days(n)
    }

    fn policy() -> RetentionPolicy {
        RetentionPolicy::from_config(&Config::default())
    }

    fn face() -> FaceTemplate {
        FaceTemplate {
            model_id: "m".into(),
            embedding: vec![1.0, 0.0],
            quality: 1.0,
            photo: None,
        }
    }

    fn event(
        store: &EventStore,
        dir: &Path,
        kind: EventKind,
        ts: OffsetDateTime,
        owner: bool,
    ) -> Event {
        let mut e = Event::new(kind, ts, "gate-1", CameraRole::Gate, &Place::default());
        if owner {
            e.subject = Some(Subject::Owner {
                id: "A-1".into(),
                name: "Li".into(),
            });
        } else {
            e.stranger_id = Some("S-1".into());
        }
        let img = image::RgbImage::new(4, 4);
        e.snapshot = Some(
            SnapshotWriter::new(dir)
                .save(&e.id, ts, &img, &img)
                .unwrap(),
        );
        let face = EventFace {
            model_id: "m",
            embedding: &[1.0, 0.0],
        };
        store.save_full(&e, Some(face), &[]).unwrap();
        e
    }

    #[test]
    fn each_kind_goes_after_its_own_period() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("r.db");
        let data = dir.path().join("data");
        let mut reg = Registry::open(&db).unwrap().with_snapshot_dir(&data);
        let store = EventStore::open(&db).unwrap();
        // Defaults: owner_pass 30 days, undecided 7, others 90; stranger
        // faces 7, other faces 30; snapshots 30; audit 3 years.
        let pass = event(&store, &data, EventKind::OwnerPass, T0, true);
        let undecided = event(&store, &data, EventKind::Undecided, T0, false);
        let stranger = event(&store, &data, EventKind::Stranger, T0, false);
        reg.watchlist_add(
            &NewWatchEntry {
                name: "W".into(),
                reason: "r".into(),
                priority: Priority::High,
                expires_at: Some(T0 + days(3)),
            },
            &[face()],
            "staff",
            T0,
        )
        .unwrap();

        // Day 2: nothing is old enough.
        assert!(
            reg.enforce_retention(&policy(), T0 + days(2))
                .unwrap()
                .is_empty()
        );

        // Day 8: the undecided event (with its face and snapshots), the
        // stranger's face (its event stays), the expired watch-list entry.
        let p = reg.enforce_retention(&policy(), T0 + days(8)).unwrap();
        assert_eq!(p.events, BTreeMap::from([("undecided".to_owned(), 1)]));
        assert_eq!((p.stranger_faces, p.event_faces), (1, 0));
        assert_eq!((p.watchlist, p.watchlist_templates), (1, 1));
        assert_eq!(p.snapshot_files, 2, "the undecided event's two files");
        assert!(store.get(&undecided.id).unwrap().is_none());
        assert!(store.get(&stranger.id).unwrap().is_some());
        assert!(!data.join(&undecided.snapshot.unwrap().face).exists());
        assert!(data.join(&pass.snapshot.clone().unwrap().face).exists());
        assert_eq!(reg.watchlist(T0 + days(8)).unwrap().len(), 0);

        // Day 31: the owner's pass and its face; the day's snapshot folder.
        let p = reg.enforce_retention(&policy(), T0 + days(31)).unwrap();
        assert_eq!(p.events, BTreeMap::from([("owner_pass".to_owned(), 1)]));
        assert_eq!(p.event_faces, 0, "its face went with the event");
        assert!(store.get(&pass.id).unwrap().is_none());
        assert!(!data.join(pass.snapshot.unwrap().face).exists());
        assert!(!data.join("snapshots/2026-06-01").exists());

        // Day 91: the stranger event; audit rows stay for three years.
        let p = reg.enforce_retention(&policy(), T0 + days(91)).unwrap();
        assert_eq!(p.events, BTreeMap::from([("stranger".to_owned(), 1)]));
        assert_eq!(p.audit, 0);
        let p = reg.enforce_retention(&policy(), T0 + days(1096)).unwrap();
        assert_eq!(p.audit, 1, "the watch-list add of day 0: {p:?}");
    }

    #[test]
    fn delivered_outbox_rows_go_and_pending_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("r.db");
        let mut reg = Registry::open(&db).unwrap();
        let conn = crate::db::open(&db).unwrap();
        for (id, delivered) in [("a", Some(T0)), ("b", None)] {
            conn.execute(
                "INSERT INTO outbox (message_id, topic, payload, qos, retain, created_at, delivered_at)
                 VALUES (?1, 't', x'00', 1, 0, ?2, ?3)",
                params![id, Millis(T0), delivered.map(Millis)],
            )
            .unwrap();
        }
        let p = reg.enforce_retention(&policy(), T0 + days(1)).unwrap();
        assert_eq!(p.delivered_outbox, 1);
        let left: String = conn
            .query_row("SELECT group_concat(message_id) FROM outbox", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(left, "b");
    }

    /// An erasure by a registry that does not know the data directory (the
    /// HTTP API's own connection, say) queues the snapshot files; the
    /// retention task deletes them.
    #[test]
    fn snapshots_of_an_erasure_are_finished_by_retention() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("r.db");
        let data = dir.path().join("data");
        let store = EventStore::open(&db).unwrap();
        let mut plain = Registry::open(&db).unwrap();
        plain
            .enroll(
                &crate::registry::NewOwner {
                    id: "A-1".into(),
                    name: "Li".into(),
                    building: None,
                    unit: None,
                    grid_code: None,
                    minor_under_14: false,
                },
                &crate::registry::Consent::new(T0, crate::registry::ConsentMethod::Written, "s"),
                &[face()],
                "staff",
                T0,
            )
            .unwrap();
        let now = OffsetDateTime::now_utc();
        let e = event(&store, &data, EventKind::OwnerPass, now, true);
        let erased = plain
            .erase_owner("A-1", crate::registry::ErasureReason::Request, "staff", now)
            .unwrap();
        assert_eq!((erased.events, erased.snapshot_files_pending), (1, 2));
        let face = data.join(e.snapshot.unwrap().face);
        assert!(face.exists(), "no data directory: queued, not deleted");
        let mut with_dir = Registry::open(&db).unwrap().with_snapshot_dir(&data);
        let p = with_dir.enforce_retention(&policy(), now).unwrap();
        assert_eq!(p.snapshot_files, 2);
        assert!(!face.exists());
    }
}
