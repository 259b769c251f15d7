//! [`Gallery`]: the registry and the in-memory index as one unit, so the
//! index cannot drift from what SQLite holds.
//!
//! Every mutation goes to SQLite first and touches the index only after the
//! commit succeeded; the affected subject is then reloaded from SQLite rather
//! than patched by hand, so the index shows exactly what a fresh start would.
//! The subject is dropped from the index *before* that reload: if the reload
//! fails, a just-suspended owner is missing rather than still opening doors.
//!
//! Changes made by another process (the CLI beside the gateway) arrive by
//! [`Gallery::reload_if_changed`]: it asks SQLite whether anything changed
//! (`PRAGMA data_version`), builds the new index on its own connection
//! *outside* the gallery lock, and takes the lock only to swap it in, so a
//! camera's match never waits behind a reload.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use time::OffsetDateTime;

use super::{
    Consent, FaceIndex, FaceTemplate, Match, NewOwner, NewWatchEntry, OwnerPatch, OwnerStatus,
    Registry, RegistryError, Subject, SubjectKey, check_id, invalid,
};

/// The matcher's view of who may enter and who is watched for.
#[derive(Debug)]
pub struct Gallery {
    registry: Registry,
    index: FaceIndex,
    model_id: String,
    /// Expiry of watch-list entries that have one. Search hides an entry
    /// whose time has come even before [`Gallery::prune_expired`] drops it.
    watch_expiry: HashMap<i64, OffsetDateTime>,
    /// `PRAGMA data_version` of the registry's connection when the index
    /// was last built from SQLite: it changes when another connection
    /// commits (this connection's own writes are in the index already).
    synced_version: i64,
    /// Bumped by every change made through this gallery, so that an index
    /// built meanwhile from an older read is not swapped in over it.
    generation: u64,
}

/// What a reload reads from SQLite: the new index and the watch-list expiry.
type Loaded = (FaceIndex, HashMap<i64, OffsetDateTime>);

/// Where a reload started: the version it will have caught up with and the
/// gallery's generation at the time.
#[derive(Debug, Clone)]
struct ReloadTicket {
    version: i64,
    generation: u64,
    model_id: String,
    dim: usize,
}

/// Reads the active templates and builds an index from them; touches no
/// gallery, so it runs outside the gallery lock.
fn load(
    registry: &Registry,
    model_id: &str,
    dim: usize,
    now: OffsetDateTime,
) -> Result<Loaded, RegistryError> {
    let found = registry.foreign_templates(model_id)?;
    if !found.is_empty() {
        return Err(RegistryError::ForeignTemplates {
            model_id: model_id.to_owned(),
            found,
        });
    }
    let templates = registry.active_templates(now)?;
    let index = FaceIndex::from_templates(dim, templates)?;
    let watch_expiry = registry
        .watchlist(now)?
        .into_iter()
        .filter_map(|entry| entry.expires_at.map(|at| (entry.id, at)))
        .collect();
    Ok((index, watch_expiry))
}

/// `PRAGMA data_version` of a registry's connection.
fn data_version(registry: &Registry) -> Result<i64, RegistryError> {
    registry
        .conn
        .query_row("PRAGMA data_version", [], |row| row.get(0))
        .map_err(|source| RegistryError::Sqlite {
            context: "reading PRAGMA data_version".into(),
            source,
        })
}

fn lock(shared: &Mutex<Gallery>) -> Result<std::sync::MutexGuard<'_, Gallery>, RegistryError> {
    shared
        .lock()
        .map_err(|_| invalid("the face gallery's lock is poisoned (a thread panicked holding it)"))
}

impl Gallery {
    /// Loads the active templates into a new index.
    ///
    /// Refuses to start when the registry holds templates made by another
    /// embedding model: their vectors mean nothing to `model_id`, and
    /// matching against them would silently fail every resident.
    pub fn open(
        registry: Registry,
        model_id: &str,
        dim: usize,
        now: OffsetDateTime,
    ) -> Result<Self, RegistryError> {
        check_id("embedding model id", model_id)?;
        if dim == 0 {
            return Err(invalid("the embedding dimension must be positive"));
        }
        let mut gallery = Self {
            registry,
            index: FaceIndex::new(dim),
            model_id: model_id.to_owned(),
            watch_expiry: HashMap::new(),
            synced_version: 0,
            generation: 0,
        };
        gallery.reload(now)?;
        Ok(gallery)
    }

    /// Rebuilds the index from SQLite in place (at start-up, and for a
    /// gallery nobody else shares). On error the old index stays. A shared
    /// gallery uses [`Gallery::reload_if_changed`] instead.
    pub fn reload(&mut self, now: OffsetDateTime) -> Result<(), RegistryError> {
        let version = data_version(&self.registry)?;
        let loaded = load(&self.registry, &self.model_id, self.index.dim(), now)?;
        drop(self.install(loaded, version));
        Ok(())
    }

    /// Brings a shared gallery up to date with changes other connections
    /// committed (the CLI beside the gateway), if there are any; returns
    /// whether it reloaded. Blocking (SQLite and the index build): call it
    /// from the blocking pool.
    ///
    /// The gallery lock is held only to compare versions and to swap the
    /// new index in; the read and the build run on a connection of their
    /// own to `db`. A change made through the gallery while the build ran
    /// wins: that build is dropped and the reload tried again (three
    /// times, then left to the next call). On error the old index stays.
    pub fn reload_if_changed(
        shared: &Mutex<Gallery>,
        db: &Path,
        now: OffsetDateTime,
    ) -> Result<bool, RegistryError> {
        for _ in 0..3 {
            let Some(ticket) = lock(shared)?.reload_ticket()? else {
                return Ok(false);
            };
            // The build yields to the cameras; the swap under the lock
            // does not (a camera would wait for a slowed lock holder).
            let loaded = {
                let _bg = crate::sched::background();
                let reader = Registry::open(db)?;
                load(&reader, &ticket.model_id, ticket.dim, now)?
            };
            let old = lock(shared)?.finish_reload(&ticket, loaded);
            // The old index (hundreds of MB at 100k) is freed out here,
            // not under the lock.
            if let Some(old) = old {
                let _bg = crate::sched::background();
                drop(old);
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether another connection committed since the index was built; if
    /// so, what a reload needs to know.
    fn reload_ticket(&self) -> Result<Option<ReloadTicket>, RegistryError> {
        let version = data_version(&self.registry)?;
        Ok((version != self.synced_version).then(|| ReloadTicket {
            version,
            generation: self.generation,
            model_id: self.model_id.clone(),
            dim: self.index.dim(),
        }))
    }

    /// Swaps in an index built for `ticket` unless the gallery changed
    /// since; returns the old one (for the caller to drop), or `None` when
    /// the build is stale.
    fn finish_reload(&mut self, ticket: &ReloadTicket, loaded: Loaded) -> Option<Loaded> {
        (self.generation == ticket.generation).then(|| self.install(loaded, ticket.version))
    }

    fn install(&mut self, (index, watch_expiry): Loaded, version: i64) -> Loaded {
        let old = (
            std::mem::replace(&mut self.index, index),
            std::mem::replace(&mut self.watch_expiry, watch_expiry),
        );
        self.synced_version = version;
        self.generation += 1;
        tracing::info!(
            templates = self.index.len(),
            subjects = self.index.subject_count(),
            "face gallery loaded"
        );
        old
    }

    /// Reads go straight to the registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Gives the registry back, dropping the index.
    pub fn into_registry(self) -> Registry {
        self.registry
    }

    /// The read-only index, for metrics and benches.
    pub fn index(&self) -> &FaceIndex {
        &self.index
    }

    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// The best `k` subjects for `query`; watch-list entries expired at `now`
    /// never appear.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        now: OffsetDateTime,
    ) -> Result<Vec<Match>, RegistryError> {
        let live = |subject: &Subject| match subject {
            Subject::Watch { id, .. } => self.watch_expiry.get(id).is_none_or(|at| *at > now),
            Subject::Owner { .. } => true,
        };
        Ok(self.index.search_filtered(query, k, live)?)
    }

    /// Drops expired watch-list entries from memory; returns how many. Search
    /// already hides them, so this only frees memory.
    pub fn prune_expired(&mut self, now: OffsetDateTime) -> usize {
        let expired: Vec<i64> = self
            .watch_expiry
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            self.index.remove_subject(&SubjectKey::Watch(*id));
            self.watch_expiry.remove(id);
        }
        self.generation += 1;
        expired.len()
    }

    /// [`Registry::enroll`], then the owner's templates enter the index.
    pub fn enroll(
        &mut self,
        owner: &NewOwner,
        consent: &Consent,
        faces: &[FaceTemplate],
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<i64>, RegistryError> {
        self.check_model(faces)?;
        let ids = self.registry.enroll(owner, consent, faces, actor, now)?;
        self.resync(&SubjectKey::Owner(owner.id.clone()), now)?;
        Ok(ids)
    }

    /// [`Registry::add_faces`]; the new faces match only if the owner is
    /// active.
    pub fn add_faces(
        &mut self,
        owner_id: &str,
        faces: &[FaceTemplate],
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<i64>, RegistryError> {
        self.check_model(faces)?;
        let ids = self.registry.add_faces(owner_id, faces, actor, now)?;
        self.resync(&SubjectKey::Owner(owner_id.to_owned()), now)?;
        Ok(ids)
    }

    /// [`Registry::remove_face`], then the template leaves the index.
    pub fn remove_face(
        &mut self,
        template_id: i64,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<SubjectKey, RegistryError> {
        let key = self.registry.remove_face(template_id, actor, now)?;
        self.generation += 1;
        self.index.remove_template(template_id);
        Ok(key)
    }

    /// [`Registry::set_status`]: a suspended owner leaves the index, a
    /// reactivated one comes back.
    pub fn set_status(
        &mut self,
        id: &str,
        status: OwnerStatus,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<(), RegistryError> {
        self.registry.set_status(id, status, actor, now)?;
        self.resync(&SubjectKey::Owner(id.to_owned()), now)
    }

    /// [`Registry::update_owner`]; matches report the new name at once.
    pub fn update_owner(
        &mut self,
        id: &str,
        patch: &OwnerPatch,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<(), RegistryError> {
        self.registry.update_owner(id, patch, actor, now)?;
        self.resync(&SubjectKey::Owner(id.to_owned()), now)
    }

    /// [`Registry::remove_owner`] (erasure), then the owner leaves the index.
    pub fn remove_owner(
        &mut self,
        id: &str,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<(), RegistryError> {
        self.erase_owner(id, super::ErasureReason::Request, actor, now)
            .map(drop)
    }

    /// [`Registry::erase_owner`] with its reason (a request, or a withdrawal
    /// of consent), then the owner leaves the index.
    /// See [`super::Registry::with_erase_similarity`].
    pub fn set_erase_similarity(&mut self, similarity: f32) {
        self.registry.set_erase_similarity(similarity);
    }

    pub fn erase_owner(
        &mut self,
        id: &str,
        reason: super::ErasureReason,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<super::Erasure, RegistryError> {
        let erased = self.registry.erase_owner(id, reason, actor, now)?;
        self.generation += 1;
        self.index.remove_subject(&SubjectKey::Owner(id.to_owned()));
        Ok(erased)
    }

    /// [`Registry::watchlist_add`], then the entry's faces enter the index.
    pub fn watchlist_add(
        &mut self,
        entry: &NewWatchEntry,
        faces: &[FaceTemplate],
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<i64, RegistryError> {
        self.check_model(faces)?;
        let id = self.registry.watchlist_add(entry, faces, actor, now)?;
        self.generation += 1;
        if let Some(at) = entry.expires_at {
            self.watch_expiry.insert(id, at);
        }
        self.resync(&SubjectKey::Watch(id), now)?;
        Ok(id)
    }

    /// [`Registry::watchlist_remove`], then the entry leaves the index.
    pub fn watchlist_remove(
        &mut self,
        id: i64,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<(), RegistryError> {
        self.registry.watchlist_remove(id, actor, now)?;
        self.generation += 1;
        self.index.remove_subject(&SubjectKey::Watch(id));
        self.watch_expiry.remove(&id);
        Ok(())
    }

    /// Faces for this gallery must come from its model at its dimension;
    /// anything else would be stored and then refused at the next start.
    fn check_model(&self, faces: &[FaceTemplate]) -> Result<(), RegistryError> {
        for (i, face) in faces.iter().enumerate() {
            if face.model_id != self.model_id {
                return Err(invalid(format!(
                    "face {}: made by model '{}', but this gateway embeds with '{}'",
                    i + 1,
                    face.model_id,
                    self.model_id
                )));
            }
            if face.embedding.len() != self.index.dim() {
                return Err(invalid(format!(
                    "face {}: embedding has {} values, but model '{}' produces {}",
                    i + 1,
                    face.embedding.len(),
                    self.model_id,
                    self.index.dim()
                )));
            }
        }
        Ok(())
    }

    /// Replaces a subject's rows with what SQLite says is active now.
    fn resync(&mut self, key: &SubjectKey, now: OffsetDateTime) -> Result<(), RegistryError> {
        self.generation += 1;
        self.index.remove_subject(key);
        for template in self.registry.subject_templates(key, now)? {
            if template.model_id != self.model_id {
                tracing::warn!(
                    template = template.template_id,
                    model = %template.model_id,
                    "face template from another model left out of the index"
                );
                continue;
            }
            self.index
                .insert(template.template_id, template.subject, &template.embedding)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use time::Duration;

    use super::super::tests::{adult, consent, face, file_registry, t0};
    use super::super::{IndexError, Priority};
    use super::*;

    const MODEL: &str = "arcface-r100";

    fn gallery() -> (tempfile::TempDir, Gallery) {
        let (dir, registry, _) = file_registry();
        let gallery = Gallery::open(registry, MODEL, 4, t0()).expect("open gallery");
        (dir, gallery)
    }

    fn top(gallery: &Gallery, query: &[f32], now: OffsetDateTime) -> Option<SubjectKey> {
        gallery
            .search(query, 1, now)
            .expect("search")
            .first()
            .map(|m| m.subject.key())
    }

    fn owner_key(id: &str) -> SubjectKey {
        SubjectKey::Owner(id.to_owned())
    }

    #[test]
    fn foreign_model_templates_refuse_to_start() {
        let (_dir, mut registry, _) = file_registry();
        let faces = [
            face("old-model", &[1.0, 0.0, 0.0, 0.0]),
            face("old-model", &[0.0, 1.0, 0.0, 0.0]),
        ];
        registry
            .enroll(&adult("A-101"), &consent(), &faces, "staff", t0())
            .expect("enrol");
        let err = Gallery::open(registry, MODEL, 4, t0()).expect_err("must refuse");
        assert_eq!(
            err.to_string(),
            "the registry holds 2 face templates made by model old-model, but this gateway embeds \
             with arcface-r100: re-enrol those owners (facegate owners list), or switch the config \
             back to old-model"
        );
    }

    #[test]
    fn enrolled_owner_is_found_and_suspension_hides_them() {
        let (_dir, mut gallery) = gallery();
        gallery
            .enroll(
                &adult("A-101"),
                &consent(),
                &[face(MODEL, &[1.0, 0.0, 0.0, 0.0])],
                "staff",
                t0(),
            )
            .expect("enrol a");
        gallery
            .enroll(
                &adult("B-202"),
                &consent(),
                &[face(MODEL, &[0.6, 0.8, 0.0, 0.0])],
                "staff",
                t0(),
            )
            .expect("enrol b");
        let query = [1.0, 0.1, 0.0, 0.0];
        assert_eq!(top(&gallery, &query, t0()), Some(owner_key("A-101")));

        gallery
            .set_status("A-101", OwnerStatus::Suspended, "staff", t0())
            .expect("suspend");
        let hits = gallery.search(&query, 10, t0()).expect("search");
        assert!(
            hits.iter().all(|m| m.subject.key() != owner_key("A-101")),
            "a suspended owner must not match: {hits:?}"
        );

        gallery
            .set_status("A-101", OwnerStatus::Active, "staff", t0())
            .expect("reactivate");
        assert_eq!(top(&gallery, &query, t0()), Some(owner_key("A-101")));
    }

    #[test]
    fn removed_owner_and_removed_face_leave_the_index() {
        let (_dir, mut gallery) = gallery();
        let ids = gallery
            .enroll(
                &adult("A-101"),
                &consent(),
                &[
                    face(MODEL, &[1.0, 0.0, 0.0, 0.0]),
                    face(MODEL, &[0.0, 1.0, 0.0, 0.0]),
                ],
                "staff",
                t0(),
            )
            .expect("enrol");
        assert_eq!(gallery.index().len(), 2);
        gallery
            .remove_face(ids[0], "staff", t0())
            .expect("remove face");
        assert_eq!(gallery.index().len(), 1);
        let hits = gallery
            .search(&[1.0, 0.0, 0.0, 0.0], 1, t0())
            .expect("search");
        assert_eq!(hits[0].template_id, ids[1]);

        gallery.remove_owner("A-101", "staff", t0()).expect("erase");
        assert!(gallery.index().is_empty());
        assert_eq!(top(&gallery, &[0.0, 1.0, 0.0, 0.0], t0()), None);
    }

    #[test]
    fn added_faces_match_and_renames_show_at_once() {
        let (_dir, mut gallery) = gallery();
        gallery
            .enroll(
                &adult("A-101"),
                &consent(),
                &[face(MODEL, &[1.0, 0.0, 0.0, 0.0])],
                "staff",
                t0(),
            )
            .expect("enrol");
        let ids = gallery
            .add_faces(
                "A-101",
                &[face(MODEL, &[0.0, 0.0, 1.0, 0.0])],
                "staff",
                t0(),
            )
            .expect("add face");
        let hits = gallery
            .search(&[0.0, 0.0, 1.0, 0.0], 1, t0())
            .expect("search");
        assert_eq!(hits[0].template_id, ids[0]);

        let patch = OwnerPatch {
            name: Some("王芳".into()),
            ..OwnerPatch::default()
        };
        gallery
            .update_owner("A-101", &patch, "staff", t0())
            .expect("rename");
        let hits = gallery
            .search(&[0.0, 0.0, 1.0, 0.0], 1, t0())
            .expect("search");
        assert_eq!(hits[0].subject.name(), "王芳");
    }

    #[test]
    fn expired_watch_entries_stop_matching() {
        let (_dir, mut gallery) = gallery();
        let entry = NewWatchEntry {
            name: "unknown visitor".into(),
            reason: "tailgating reported by guard".into(),
            priority: Priority::High,
            expires_at: Some(t0() + Duration::hours(1)),
        };
        let id = gallery
            .watchlist_add(&entry, &[face(MODEL, &[0.0, 0.0, 0.0, 1.0])], "staff", t0())
            .expect("watch");
        let query = [0.0, 0.0, 0.0, 1.0];
        assert_eq!(top(&gallery, &query, t0()), Some(SubjectKey::Watch(id)));
        let later = t0() + Duration::hours(2);
        assert_eq!(top(&gallery, &query, later), None);
        assert_eq!(gallery.prune_expired(later), 1);
        assert!(gallery.index().is_empty());

        let id = gallery
            .watchlist_add(&entry, &[face(MODEL, &[0.0, 0.0, 0.0, 1.0])], "staff", t0())
            .expect("watch again");
        gallery
            .watchlist_remove(id, "staff", t0())
            .expect("unwatch");
        assert_eq!(top(&gallery, &query, t0()), None);
    }

    #[test]
    fn faces_of_another_model_or_size_are_refused_before_writing() {
        let (_dir, mut gallery) = gallery();
        let err = gallery
            .enroll(
                &adult("A-101"),
                &consent(),
                &[face("other", &[1.0, 0.0, 0.0, 0.0])],
                "staff",
                t0(),
            )
            .expect_err("other model");
        assert!(err.to_string().contains("made by model 'other'"), "{err}");
        let err = gallery
            .enroll(
                &adult("A-101"),
                &consent(),
                &[face(MODEL, &[1.0, 0.0])],
                "staff",
                t0(),
            )
            .expect_err("wrong size");
        assert!(err.to_string().contains("has 2 values"), "{err}");
        assert!(matches!(
            gallery.registry().owner("A-101"),
            Err(RegistryError::UnknownOwner(_))
        ));
    }

    #[test]
    fn reopening_rebuilds_the_index_from_sqlite() {
        let (_dir, registry, path) = file_registry();
        let mut gallery = Gallery::open(registry, MODEL, 4, t0()).expect("open");
        gallery
            .enroll(
                &adult("A-101"),
                &consent(),
                &[face(MODEL, &[1.0, 0.0, 0.0, 0.0])],
                "staff",
                t0(),
            )
            .expect("enrol");
        gallery
            .enroll(
                &adult("B-202"),
                &consent(),
                &[face(MODEL, &[0.0, 1.0, 0.0, 0.0])],
                "staff",
                t0(),
            )
            .expect("enrol");
        gallery
            .set_status("B-202", OwnerStatus::Suspended, "staff", t0())
            .expect("suspend");
        drop(gallery);

        let registry = Registry::open(&path).expect("reopen");
        let gallery = Gallery::open(registry, MODEL, 4, t0()).expect("open again");
        assert_eq!(gallery.index().len(), 1);
        assert_eq!(
            top(&gallery, &[1.0, 0.0, 0.0, 0.0], t0()),
            Some(owner_key("A-101"))
        );
    }

    /// Another connection's enrolment reaches a shared gallery through
    /// `reload_if_changed`, once; with nothing new it does not rebuild.
    #[test]
    fn reload_if_changed_picks_up_other_connections_only_when_they_commit() {
        let (_dir, registry, path) = file_registry();
        let shared = Mutex::new(Gallery::open(registry, MODEL, 4, t0()).expect("open"));
        assert!(!Gallery::reload_if_changed(&shared, &path, t0()).expect("reload"));

        let mut cli = Registry::open(&path).expect("second connection");
        cli.enroll(
            &adult("A-101"),
            &consent(),
            &[face(MODEL, &[1.0, 0.0, 0.0, 0.0])],
            "cli",
            t0(),
        )
        .expect("enrol elsewhere");
        assert_eq!(
            top(&shared.lock().unwrap(), &[1.0, 0.0, 0.0, 0.0], t0()),
            None
        );
        assert!(Gallery::reload_if_changed(&shared, &path, t0()).expect("reload"));
        assert_eq!(
            top(&shared.lock().unwrap(), &[1.0, 0.0, 0.0, 0.0], t0()),
            Some(owner_key("A-101"))
        );
        assert!(
            !Gallery::reload_if_changed(&shared, &path, t0()).expect("reload"),
            "nothing changed since"
        );
    }

    /// An index built from a read older than a change made through the
    /// gallery is not swapped in over that change.
    #[test]
    fn a_reload_built_before_a_local_change_is_dropped() {
        let (_dir, registry, path) = file_registry();
        let mut gallery = Gallery::open(registry, MODEL, 4, t0()).expect("open");
        let mut cli = Registry::open(&path).expect("second connection");
        cli.enroll(
            &adult("A-101"),
            &consent(),
            &[face(MODEL, &[1.0, 0.0, 0.0, 0.0])],
            "cli",
            t0(),
        )
        .expect("enrol elsewhere");
        let ticket = gallery.reload_ticket().expect("version").expect("changed");
        let stale = load(&Registry::open(&path).unwrap(), MODEL, 4, t0()).expect("load");
        gallery
            .enroll(
                &adult("B-202"),
                &consent(),
                &[face(MODEL, &[0.0, 1.0, 0.0, 0.0])],
                "staff",
                t0(),
            )
            .expect("local enrolment");
        assert!(gallery.finish_reload(&ticket, stale).is_none());
        assert_eq!(
            top(&gallery, &[0.0, 1.0, 0.0, 0.0], t0()),
            Some(owner_key("B-202")),
            "the local enrolment must survive"
        );
        // The next attempt catches up with both.
        let ticket = gallery
            .reload_ticket()
            .expect("version")
            .expect("still behind");
        let fresh = load(&Registry::open(&path).unwrap(), MODEL, 4, t0()).expect("load");
        assert!(gallery.finish_reload(&ticket, fresh).is_some());
        assert_eq!(gallery.index().len(), 2);
    }

    #[test]
    fn a_stored_template_of_another_size_refuses_to_start() {
        let (_dir, mut registry, _) = file_registry();
        registry
            .enroll(
                &adult("A-101"),
                &consent(),
                &[face(MODEL, &[1.0, 0.0, 0.0])],
                "staff",
                t0(),
            )
            .expect("enrol");
        let err = Gallery::open(registry, MODEL, 4, t0()).expect_err("dim 3 vs 4");
        assert!(matches!(
            err,
            RegistryError::Index(IndexError::Dimension {
                found: 3,
                expected: 4,
                ..
            })
        ));
    }
}
