//! The sync's SQLite side: reading an owner's state, the change queue the
//! triggers fill (`sync_dirty`), the versions known per owner
//! (`sync_owners`), the Lamport clock, and applying a remote change through
//! the gallery (the registry's own enrol / update / status / erase paths,
//! so the index follows and an erasure removes events and snapshots too).
//!
//! Runs on the blocking pool, on its own connection (reads and the sync
//! tables); registry writes go through the shared [`Gallery`], locked one
//! call at a time.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;

use super::SyncError;
use super::message::{
    Body, ConsentState, OwnerFields, OwnerState, TemplateState, Verdict, Version, digest, judge,
};
use crate::registry::{
    Consent, ConsentMethod, ErasureReason, FaceTemplate, Gallery, NewOwner, OwnerPatch, OwnerStatus,
};

/// The newest version this box knows of an owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub version: Version,
    pub erased: bool,
    pub digest: Vec<u8>,
}

/// A local change ready to publish; [`SyncStore::published`] records it
/// once the broker acknowledged it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub owner_id: String,
    /// The `sync_dirty` stamp it came from (`None`: a re-publication).
    pub stamp: Option<Vec<u8>>,
    pub version: Version,
    pub body: Body,
    pub digest: Vec<u8>,
}

/// What applying an incoming message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Enrolled,
    Updated,
    /// Newer, but this box already held exactly that state.
    Unchanged,
    Erased,
    /// A tombstone for an owner this box never had (recorded anyway).
    TombstoneRecorded,
    /// The same version again: nothing done.
    Same,
    /// A state for an owner erased here whose tombstone is not published
    /// yet: the erasure wins; nothing done.
    KeptErased,
    /// Older than what this box has; `Some`: ours, to put back on the broker.
    Stale,
}

pub struct SyncStore {
    conn: Connection,
    box_id: String,
    model_id: String,
}

fn sql(context: &'static str) -> impl FnOnce(rusqlite::Error) -> SyncError {
    move |source| SyncError::Sqlite { context, source }
}

fn from_ms(ms: i64) -> Result<OffsetDateTime, SyncError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|_| SyncError::Invalid(format!("time {ms} ms is out of range")))
}

impl SyncStore {
    /// Opens the database (migrating it, so the sync tables exist).
    pub fn open(db: &Path, box_id: &str, model_id: &str) -> Result<Self, SyncError> {
        Ok(Self {
            conn: crate::registry::schema::open(db)?,
            box_id: box_id.to_owned(),
            model_id: model_id.to_owned(),
        })
    }

    pub fn box_id(&self) -> &str {
        &self.box_id
    }

    /// Marks every owner this box holds but never published or applied, so
    /// that turning sync on (or a database restored from before it)
    /// publishes them. Returns how many were marked.
    pub fn mark_unsynced(&self) -> Result<usize, SyncError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO sync_dirty (owner_id, stamp)
                 SELECT id, randomblob(8) FROM owners
                 WHERE id NOT IN (SELECT owner_id FROM sync_owners)",
                [],
            )
            .map_err(sql("mark unsynced owners"))
    }

    /// An owner's state as this box holds it (`None`: not enrolled here).
    /// Templates are read without their photo.
    pub fn read_state(&self, owner_id: &str) -> Result<Option<OwnerState>, SyncError> {
        let owner = self
            .conn
            .query_row(
                "SELECT name, building, unit, grid_code, status, minor_under_14
                 FROM owners WHERE id = ?1",
                [owner_id],
                |r| {
                    Ok(OwnerFields {
                        name: r.get(0)?,
                        building: r.get(1)?,
                        unit: r.get(2)?,
                        grid_code: r.get(3)?,
                        status: r.get(4)?,
                        minor_under_14: r.get(5)?,
                    })
                },
            )
            .optional()
            .map_err(sql("read owner"))?;
        let Some(owner) = owner else {
            return Ok(None);
        };
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT given_at, method, taken_by, guardian_name, guardian_relation, purpose, withdrawn_at
                 FROM consents WHERE owner_id = ?1 ORDER BY given_at, id",
            )
            .map_err(sql("prepare consents"))?;
        let consents = stmt
            .query_map([owner_id], |r| {
                Ok(ConsentState {
                    given_at_ms: r.get(0)?,
                    method: r.get(1)?,
                    taken_by: r.get(2)?,
                    guardian_name: r.get(3)?,
                    guardian_relation: r.get(4)?,
                    purpose: r.get(5)?,
                    withdrawn_at_ms: r.get(6)?,
                })
            })
            .and_then(Iterator::collect)
            .map_err(sql("read consents"))?;
        let templates = self
            .local_templates(owner_id)?
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        Ok(Some(OwnerState {
            owner,
            consents,
            templates,
        }))
    }

    /// An owner's templates with their row ids, in id order.
    fn local_templates(&self, owner_id: &str) -> Result<Vec<(i64, TemplateState)>, SyncError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, model_id, embedding, quality FROM templates
                 WHERE owner_id = ?1 ORDER BY id",
            )
            .map_err(sql("prepare templates"))?;
        let rows: Vec<(i64, String, Vec<u8>, Option<f64>)> = stmt
            .query_map([owner_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .and_then(Iterator::collect)
            .map_err(sql("read templates"))?;
        Ok(rows
            .into_iter()
            .map(|(id, model, blob, quality)| {
                let v: Vec<f32> = blob
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                (id, TemplateState::from_vector(&model, &v, quality))
            })
            .collect())
    }

    pub fn known(&self, owner_id: &str) -> Result<Option<Known>, SyncError> {
        self.conn
            .query_row(
                "SELECT counter, origin, erased, digest FROM sync_owners WHERE owner_id = ?1",
                [owner_id],
                |r| {
                    Ok(Known {
                        version: Version {
                            counter: r.get::<_, i64>(0)?.max(0) as u64,
                            origin: r.get(1)?,
                        },
                        erased: r.get(2)?,
                        digest: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(sql("read sync version"))
    }

    /// Records `version` as the newest known for an owner (never going
    /// back to an older one: a late PUBACK of a version already superseded
    /// changes nothing) and moves the clock past it.
    fn record(
        &self,
        owner_id: &str,
        version: &Version,
        erased: bool,
        digest: &[u8],
    ) -> Result<(), SyncError> {
        let counter = i64::try_from(version.counter)
            .map_err(|_| SyncError::Invalid("version counter too large".into()))?;
        self.conn
            .execute(
                "INSERT INTO sync_owners (owner_id, counter, origin, erased, digest)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (owner_id) DO UPDATE SET
                   counter = excluded.counter, origin = excluded.origin,
                   erased = excluded.erased, digest = excluded.digest
                 WHERE (excluded.counter, excluded.origin) > (counter, origin)",
                params![owner_id, counter, version.origin, erased, digest],
            )
            .map_err(sql("record sync version"))?;
        self.observe(version.counter)
    }

    /// Moves the clock to at least `counter`.
    fn observe(&self, counter: u64) -> Result<(), SyncError> {
        let counter = i64::try_from(counter)
            .map_err(|_| SyncError::Invalid("version counter too large".into()))?;
        self.conn
            .execute(
                "UPDATE sync_clock SET counter = max(counter, ?1) WHERE id = 1",
                [counter],
            )
            .map(drop)
            .map_err(sql("advance sync clock"))
    }

    /// The next Lamport counter of a local change (stored before use, so a
    /// crash never reuses one).
    fn tick(&self) -> Result<u64, SyncError> {
        let c: i64 = self
            .conn
            .query_row(
                "UPDATE sync_clock SET counter = counter + 1 WHERE id = 1 RETURNING counter",
                [],
                |r| r.get(0),
            )
            .map_err(sql("tick sync clock"))?;
        Ok(c.max(1) as u64)
    }

    fn clear_dirty(&self, owner_id: &str, stamp: &[u8]) -> Result<(), SyncError> {
        self.conn
            .execute(
                "DELETE FROM sync_dirty WHERE owner_id = ?1 AND stamp = ?2",
                params![owner_id, stamp],
            )
            .map(drop)
            .map_err(sql("clear sync change"))
    }

    /// How many owners have local changes not yet published.
    pub fn pending(&self) -> Result<u64, SyncError> {
        self.conn
            .query_row("SELECT count(*) FROM sync_dirty", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n.max(0) as u64)
            .map_err(sql("count sync changes"))
    }

    /// The next local change to publish, if any. Queue rows whose owner is
    /// exactly as last published or applied (a remote change applied here,
    /// or a write that changed nothing synced, like `updated_at`) are
    /// dropped on the way: that is what keeps applied changes from echoing.
    pub fn next_local_change(&self) -> Result<Option<Outgoing>, SyncError> {
        loop {
            let row: Option<(String, Vec<u8>)> = self
                .conn
                .query_row(
                    "SELECT owner_id, stamp FROM sync_dirty ORDER BY rowid LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(sql("read sync changes"))?;
            let Some((owner_id, stamp)) = row else {
                return Ok(None);
            };
            let state = self.read_state(&owner_id)?;
            let d = digest(state.as_ref());
            let known = self.known(&owner_id)?;
            let unchanged = match &known {
                Some(k) => k.digest == d,
                None => state.is_none(),
            };
            if unchanged {
                self.clear_dirty(&owner_id, &stamp)?;
                continue;
            }
            let version = Version {
                counter: self.tick()?,
                origin: self.box_id.clone(),
            };
            let erasure_reason = if state.is_none() {
                Some(self.last_erasure_reason(&owner_id)?)
            } else {
                None
            };
            return Ok(Some(Outgoing {
                body: Body {
                    owner_id: owner_id.clone(),
                    state,
                    erasure_reason,
                },
                owner_id,
                stamp: Some(stamp),
                version,
                digest: d,
            }));
        }
    }

    /// The reason of the owner's latest erasure here, from the audit trail
    /// (`request` if none is found).
    fn last_erasure_reason(&self, owner_id: &str) -> Result<String, SyncError> {
        let detail: Option<Option<String>> = self
            .conn
            .query_row(
                "SELECT detail FROM audit WHERE subject = ?1 AND action = 'owner.remove'
                 ORDER BY id DESC LIMIT 1",
                [owner_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql("read erasure reason"))?;
        let reason = detail
            .flatten()
            .and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok())
            .and_then(|v| v["reason"].as_str().map(str::to_owned))
            .unwrap_or_else(|| ErasureReason::Request.as_str().to_owned());
        Ok(reason)
    }

    /// Every owner this box has a version of (states and tombstones).
    pub fn known_owners(&self) -> Result<Vec<String>, SyncError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT owner_id FROM sync_owners ORDER BY owner_id")
            .map_err(sql("prepare sync owners"))?;
        stmt.query_map([], |r| r.get(0))
            .and_then(Iterator::collect)
            .map_err(sql("read sync owners"))
    }

    /// The owner whose topic key is `key`, among those this box has a
    /// version of (to repair a topic a forged message overwrote).
    pub fn owner_for_key(
        &self,
        keys: &super::message::SyncKeys,
        key: &str,
    ) -> Result<Option<String>, SyncError> {
        Ok(self
            .known_owners()?
            .into_iter()
            .find(|id| keys.owner_key(id) == key))
    }

    /// The broker acknowledged `out`: it is the newest version here now.
    pub fn published(&self, out: &Outgoing) -> Result<(), SyncError> {
        self.record(
            &out.owner_id,
            &out.version,
            out.body.state.is_none(),
            &out.digest,
        )?;
        if let Some(stamp) = &out.stamp {
            self.clear_dirty(&out.owner_id, stamp)?;
        }
        Ok(())
    }

    /// What this box holds as the newest version of an owner, to put back
    /// on the broker over a stale message; `None` when the local state has
    /// changed since (the change queue will publish a newer version).
    pub fn republication(&self, owner_id: &str) -> Result<Option<Outgoing>, SyncError> {
        let Some(known) = self.known(owner_id)? else {
            return Ok(None);
        };
        let state = self.read_state(owner_id)?;
        let d = digest(state.as_ref());
        if d != known.digest || known.erased != state.is_none() {
            return Ok(None);
        }
        let erasure_reason = if state.is_none() {
            Some(self.last_erasure_reason(owner_id)?)
        } else {
            None
        };
        Ok(Some(Outgoing {
            owner_id: owner_id.to_owned(),
            stamp: None,
            version: known.version,
            body: Body {
                owner_id: owner_id.to_owned(),
                state,
                erasure_reason,
            },
            digest: d,
        }))
    }

    /// Applies an opened message, if it is newer than what this box has.
    /// Every registry write is audited with the actor `sync from <box>`.
    pub fn apply(
        &self,
        gallery: &Mutex<Gallery>,
        version: &Version,
        body: &Body,
        now: OffsetDateTime,
    ) -> Result<Applied, SyncError> {
        let known = self.known(&body.owner_id)?;
        match judge(known.as_ref().map(|k| &k.version), version) {
            Verdict::Same => return Ok(Applied::Same),
            Verdict::Stale => return Ok(Applied::Stale),
            Verdict::Apply => {}
        }
        let actor = format!("sync from {}", version.origin);
        let id = body.owner_id.as_str();
        if body.state.is_some()
            && known.as_ref().is_some_and(|k| !k.erased)
            && self.read_state(id)?.is_none()
        {
            // Erased here and not yet published (the broker was away): an
            // erasure wins over any concurrent change, so the owner is not
            // enrolled again; the clock moves past this version so that our
            // tombstone, published next, is the newer one everywhere.
            self.observe(version.counter)?;
            return Ok(Applied::KeptErased);
        }
        let applied = match &body.state {
            None => {
                let exists = self.read_state(id)?.is_some();
                if exists {
                    let reason = body
                        .erasure_reason
                        .as_deref()
                        .unwrap_or("request")
                        .parse::<ErasureReason>()
                        .unwrap_or(ErasureReason::Request);
                    lock(gallery)?.erase_owner(id, reason, &actor, now)?;
                    Applied::Erased
                } else {
                    Applied::TombstoneRecorded
                }
            }
            Some(state) => self.apply_state(gallery, id, state, &actor, now)?,
        };
        // Read back what the registry now holds: the digest of *that* is
        // what the change queue compares with, so the triggers' rows from
        // the writes above are recognised as no change.
        let after = self.read_state(id)?;
        self.record(id, version, body.state.is_none(), &digest(after.as_ref()))?;
        Ok(applied)
    }

    fn apply_state(
        &self,
        gallery: &Mutex<Gallery>,
        id: &str,
        state: &OwnerState,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<Applied, SyncError> {
        // Refuse the whole message before any write if a template is of
        // another model: its vector would mean nothing here.
        let mut faces = Vec::with_capacity(state.templates.len());
        for t in &state.templates {
            if t.model_id != self.model_id {
                return Err(SyncError::ForeignModel {
                    found: t.model_id.clone(),
                    ours: self.model_id.clone(),
                });
            }
            faces.push(FaceTemplate {
                model_id: t.model_id.clone(),
                embedding: t.vector().map_err(SyncError::Invalid)?,
                quality: t.quality.unwrap_or(0.0) as f32,
                photo: None,
            });
        }
        let status: OwnerStatus = state.owner.status.parse()?;
        let local = self.read_state(id)?;
        let Some(local) = local else {
            let consent = state
                .consents
                .iter()
                .find(|c| c.withdrawn_at_ms.is_none())
                .or(state.consents.first())
                .ok_or_else(|| SyncError::Invalid("the owner's state has no consent".into()))?;
            let consent = Consent {
                given_at: from_ms(consent.given_at_ms)?,
                method: consent.method.parse::<ConsentMethod>()?,
                taken_by: consent.taken_by.clone(),
                guardian_name: consent.guardian_name.clone(),
                guardian_relation: consent.guardian_relation.clone(),
                purpose: consent.purpose.clone(),
            };
            let owner = NewOwner {
                id: id.to_owned(),
                name: state.owner.name.clone(),
                building: state.owner.building.clone(),
                unit: state.owner.unit.clone(),
                grid_code: state.owner.grid_code.clone(),
                minor_under_14: state.owner.minor_under_14,
            };
            lock(gallery)?.enroll(&owner, &consent, &faces, actor, now)?;
            if status != OwnerStatus::Active {
                lock(gallery)?.set_status(id, status, actor, now)?;
            }
            return Ok(Applied::Enrolled);
        };
        let (mine, theirs) = (&local.owner, &state.owner);
        let mut changed = false;
        let patch = OwnerPatch {
            name: (mine.name != theirs.name).then(|| theirs.name.clone()),
            building: (mine.building != theirs.building).then(|| theirs.building.clone()),
            unit: (mine.unit != theirs.unit).then(|| theirs.unit.clone()),
            grid_code: (mine.grid_code != theirs.grid_code).then(|| theirs.grid_code.clone()),
        };
        if patch != OwnerPatch::default() {
            lock(gallery)?.update_owner(id, &patch, actor, now)?;
            changed = true;
        }
        // Faces first added, then the old ones removed: the owner is never
        // without a face in between.
        let held = self.local_templates(id)?;
        let new: Vec<FaceTemplate> = state
            .templates
            .iter()
            .zip(faces)
            .filter(|(t, _)| !held.iter().any(|(_, h)| h == *t))
            .map(|(_, f)| f)
            .collect();
        if !new.is_empty() {
            lock(gallery)?.add_faces(id, &new, actor, now)?;
            changed = true;
        }
        for (template_id, h) in &held {
            if !state.templates.contains(h) {
                lock(gallery)?.remove_face(*template_id, actor, now)?;
                changed = true;
            }
        }
        if mine.status != theirs.status {
            lock(gallery)?.set_status(id, status, actor, now)?;
            changed = true;
        }
        Ok(if changed {
            Applied::Updated
        } else {
            Applied::Unchanged
        })
    }
}

fn lock(gallery: &Mutex<Gallery>) -> Result<std::sync::MutexGuard<'_, Gallery>, SyncError> {
    gallery
        .lock()
        .map_err(|_| SyncError::Invalid("the face gallery's lock is poisoned".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    const MODEL: &str = "test-model";

    fn face(seed: f32) -> FaceTemplate {
        FaceTemplate {
            model_id: MODEL.into(),
            embedding: vec![seed, 1.0, -0.5, 0.25],
            quality: 0.5,
            photo: None,
        }
    }

    fn owner(id: &str) -> NewOwner {
        NewOwner {
            id: id.into(),
            name: format!("Owner {id}"),
            building: Some("3".into()),
            unit: None,
            grid_code: None,
            minor_under_14: false,
        }
    }

    /// A box: a registry file, its gallery and its sync store.
    struct Box_ {
        _dir: tempfile::TempDir,
        gallery: Mutex<Gallery>,
        store: SyncStore,
    }

    fn a_box(name: &str) -> Box_ {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("fg.db");
        let now = OffsetDateTime::now_utc();
        let gallery = Gallery::open(Registry::open(&db).unwrap(), MODEL, 4, now).unwrap();
        let store = SyncStore::open(&db, name, MODEL).unwrap();
        Box_ {
            _dir: dir,
            gallery: Mutex::new(gallery),
            store,
        }
    }

    fn enrol(b: &Box_, id: &str, seed: f32) {
        let now = OffsetDateTime::now_utc();
        b.gallery
            .lock()
            .unwrap()
            .enroll(
                &owner(id),
                &Consent::new(now, ConsentMethod::Written, "staff"),
                &[face(seed)],
                "staff",
                now,
            )
            .unwrap();
    }

    /// Publishes every pending local change of `from` and applies it on
    /// `to`, as the broker would carry them.
    fn carry(from: &Box_, to: &Box_) -> Vec<Applied> {
        let mut done = Vec::new();
        while let Some(out) = from.store.next_local_change().unwrap() {
            from.store.published(&out).unwrap();
            done.push(
                to.store
                    .apply(
                        &to.gallery,
                        &out.version,
                        &out.body,
                        OffsetDateTime::now_utc(),
                    )
                    .unwrap(),
            );
        }
        done
    }

    fn gallery_has(b: &Box_, id: &str) -> bool {
        b.gallery.lock().unwrap().registry().owner(id).is_ok()
    }

    #[test]
    fn a_change_travels_once_and_applying_it_does_not_echo() {
        let (a, b) = (a_box("box-a"), a_box("box-b"));
        enrol(&a, "A-1", 0.5);
        assert_eq!(carry(&a, &b), vec![Applied::Enrolled]);
        assert!(gallery_has(&b, "A-1"));
        assert_eq!(
            b.store.read_state("A-1").unwrap(),
            a.store.read_state("A-1").unwrap()
        );
        // B's triggers fired on the enrolment; nothing goes back to A.
        assert!(b.store.next_local_change().unwrap().is_none());
        assert!(a.store.next_local_change().unwrap().is_none());
        let audit = b.gallery.lock().unwrap().registry().audit(5).unwrap();
        assert!(
            audit
                .iter()
                .any(|e| e.actor == "sync from box-a" && e.action == "owner.enroll")
        );
    }

    #[test]
    fn the_same_version_twice_is_a_no_op_and_an_older_one_is_stale() {
        let (a, b) = (a_box("box-a"), a_box("box-b"));
        enrol(&a, "A-1", 0.5);
        let first = a.store.next_local_change().unwrap().unwrap();
        a.store.published(&first).unwrap();
        let now = OffsetDateTime::now_utc();
        assert_eq!(
            b.store
                .apply(&b.gallery, &first.version, &first.body, now)
                .unwrap(),
            Applied::Enrolled
        );
        assert_eq!(
            b.store
                .apply(&b.gallery, &first.version, &first.body, now)
                .unwrap(),
            Applied::Same
        );
        // A suspends: a newer version.
        a.gallery
            .lock()
            .unwrap()
            .set_status("A-1", OwnerStatus::Suspended, "staff", now)
            .unwrap();
        assert_eq!(carry(&a, &b), vec![Applied::Updated]);
        assert_eq!(
            b.store.read_state("A-1").unwrap().unwrap().owner.status,
            "suspended"
        );
        // The first (active) state again: stale, changes nothing.
        assert_eq!(
            b.store
                .apply(&b.gallery, &first.version, &first.body, now)
                .unwrap(),
            Applied::Stale
        );
        assert_eq!(
            b.store.read_state("A-1").unwrap().unwrap().owner.status,
            "suspended"
        );
    }

    #[test]
    fn an_erasure_wins_over_a_replayed_older_state() {
        let (a, b) = (a_box("box-a"), a_box("box-b"));
        enrol(&a, "A-1", 0.5);
        let enrolled = a.store.next_local_change().unwrap().unwrap();
        a.store.published(&enrolled).unwrap();
        let now = OffsetDateTime::now_utc();
        b.store
            .apply(&b.gallery, &enrolled.version, &enrolled.body, now)
            .unwrap();
        a.gallery
            .lock()
            .unwrap()
            .erase_owner("A-1", ErasureReason::ConsentWithdrawn, "staff", now)
            .unwrap();
        assert_eq!(carry(&a, &b), vec![Applied::Erased]);
        assert!(!gallery_has(&b, "A-1"));
        assert_eq!(
            b.store
                .apply(&b.gallery, &enrolled.version, &enrolled.body, now)
                .unwrap(),
            Applied::Stale
        );
        assert!(!gallery_has(&b, "A-1"));
        // The box that has the tombstone can put it back on the broker.
        let again = b.store.republication("A-1").unwrap().unwrap();
        assert!(again.body.state.is_none());
        assert_eq!(
            again.body.erasure_reason.as_deref(),
            Some("consent_withdrawn")
        );
        // A box that never had the owner still keeps the tombstone.
        let c = a_box("box-c");
        let tomb = a.store.republication("A-1").unwrap().unwrap();
        assert_eq!(
            c.store
                .apply(&c.gallery, &tomb.version, &tomb.body, now)
                .unwrap(),
            Applied::TombstoneRecorded
        );
        assert_eq!(
            c.store
                .apply(&c.gallery, &enrolled.version, &enrolled.body, now)
                .unwrap(),
            Applied::Stale
        );
        assert!(!gallery_has(&c, "A-1"));
    }

    #[test]
    fn new_faces_and_fields_replace_the_old_ones() {
        let (a, b) = (a_box("box-a"), a_box("box-b"));
        enrol(&a, "A-1", 0.5);
        carry(&a, &b);
        let now = OffsetDateTime::now_utc();
        {
            let mut g = a.gallery.lock().unwrap();
            let old = g.registry().owner("A-1").unwrap().templates[0].id;
            g.add_faces("A-1", &[face(0.9)], "staff", now).unwrap();
            g.remove_face(old, "staff", now).unwrap();
            let patch = OwnerPatch {
                name: Some("New Name".into()),
                ..Default::default()
            };
            g.update_owner("A-1", &patch, "staff", now).unwrap();
        }
        // One change (the queue holds one row per owner).
        assert_eq!(carry(&a, &b), vec![Applied::Updated]);
        assert_eq!(
            b.store.read_state("A-1").unwrap(),
            a.store.read_state("A-1").unwrap()
        );
        assert!(b.store.next_local_change().unwrap().is_none());
    }

    #[test]
    fn an_erasure_made_while_cut_off_wins_over_a_newer_remote_change() {
        let (a, b) = (a_box("box-a"), a_box("box-b"));
        enrol(&a, "A-1", 0.5);
        carry(&a, &b);
        let now = OffsetDateTime::now_utc();
        // B erases (not yet published); A meanwhile renames, and that
        // newer version reaches B first.
        b.gallery
            .lock()
            .unwrap()
            .erase_owner("A-1", ErasureReason::Request, "staff", now)
            .unwrap();
        let patch = OwnerPatch {
            name: Some("Renamed".into()),
            ..Default::default()
        };
        a.gallery
            .lock()
            .unwrap()
            .update_owner("A-1", &patch, "staff", now)
            .unwrap();
        let rename = a.store.next_local_change().unwrap().unwrap();
        a.store.published(&rename).unwrap();
        assert_eq!(
            b.store
                .apply(&b.gallery, &rename.version, &rename.body, now)
                .unwrap(),
            Applied::KeptErased
        );
        assert!(!gallery_has(&b, "A-1"), "the rename enrolled them again");
        // B's tombstone is newer than the rename, so A erases too.
        assert_eq!(carry(&b, &a), vec![Applied::Erased]);
        assert!(!gallery_has(&a, "A-1"));
    }

    #[test]
    fn a_late_acknowledgement_never_moves_a_version_back() {
        let (a, b) = (a_box("box-a"), a_box("box-b"));
        enrol(&a, "A-1", 0.5);
        let first = a.store.next_local_change().unwrap().unwrap();
        a.store.published(&first).unwrap();
        let now = OffsetDateTime::now_utc();
        b.store
            .apply(&b.gallery, &first.version, &first.body, now)
            .unwrap();
        b.gallery
            .lock()
            .unwrap()
            .set_status("A-1", OwnerStatus::Suspended, "staff", now)
            .unwrap();
        let newer = b.store.next_local_change().unwrap().unwrap();
        b.store.published(&newer).unwrap();
        a.store.published(&first).unwrap();
        a.store
            .apply(&a.gallery, &newer.version, &newer.body, now)
            .unwrap();
        a.store.published(&first).unwrap();
        assert_eq!(
            a.store.known("A-1").unwrap().unwrap().version,
            newer.version
        );
    }

    #[test]
    fn a_foreign_model_is_refused_before_any_write() {
        let (a, b) = (a_box("box-a"), a_box("box-b"));
        enrol(&a, "A-1", 0.5);
        let mut out = a.store.next_local_change().unwrap().unwrap();
        out.body.state.as_mut().unwrap().templates[0].model_id = "other-model".into();
        let err = b
            .store
            .apply(
                &b.gallery,
                &out.version,
                &out.body,
                OffsetDateTime::now_utc(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("other-model"), "{err}");
        assert!(!gallery_has(&b, "A-1"));
        assert!(b.store.known("A-1").unwrap().is_none());
    }

    #[test]
    fn concurrent_changes_converge_on_the_greater_version() {
        let (a, b) = (a_box("box-a"), a_box("box-b"));
        enrol(&a, "A-1", 0.5);
        carry(&a, &b);
        let now = OffsetDateTime::now_utc();
        let rename = |bx: &Box_, name: &str| {
            let patch = OwnerPatch {
                name: Some(name.into()),
                ..Default::default()
            };
            bx.gallery
                .lock()
                .unwrap()
                .update_owner("A-1", &patch, "staff", now)
                .unwrap();
        };
        rename(&a, "From A");
        rename(&b, "From B");
        let from_a = a.store.next_local_change().unwrap().unwrap();
        let from_b = b.store.next_local_change().unwrap().unwrap();
        a.store.published(&from_a).unwrap();
        b.store.published(&from_b).unwrap();
        // Same counter: the box id breaks the tie, the same way on both.
        assert_eq!(from_a.version.counter, from_b.version.counter);
        b.store
            .apply(&b.gallery, &from_a.version, &from_a.body, now)
            .unwrap();
        a.store
            .apply(&a.gallery, &from_b.version, &from_b.body, now)
            .unwrap();
        let (sa, sb) = (
            a.store.read_state("A-1").unwrap().unwrap(),
            b.store.read_state("A-1").unwrap().unwrap(),
        );
        assert_eq!(sa, sb);
        assert_eq!(sa.owner.name, "From B");
    }
}
