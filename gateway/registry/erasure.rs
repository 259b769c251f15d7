//! Erasure: an owner and every trace of them (events, event faces, outbox
//! messages, snapshot files) in one transaction, files deleted after it.

use super::*;

/// Events naming owner `?1`: by column, or in the body (`?2`, see
/// [`owner_needle`]) of an event whose columns a later revision rewrote.
pub(super) const NAMES_OWNER: &str =
    "(subject_kind = 'owner' AND subject_id = ?1) OR instr(body, ?2) > 0";

/// How an event body names owner `id` (`Subject`'s JSON: tag, then id).
pub(super) fn owner_needle(id: &str) -> String {
    format!("\"kind\":\"owner\",\"id\":{}", serde_json::Value::from(id))
}

/// What [`erase_owner_events`] removed.
pub(super) struct ErasedEvents {
    pub(super) events: usize,
    pub(super) faces: usize,
    pub(super) outbox: usize,
    pub(super) files: Vec<String>,
}

/// Events naming owner `id` (by column, or in the body of an event whose
/// columns were rewritten by a later revision): deleted with their faces
/// and undelivered outbox messages (`<event id>`, `<event id>.r<n>`,
/// `<event id>.open`); their snapshot paths queued in `erased_files`.
pub(super) fn erase_owner_events(
    tx: &Connection,
    id: &str,
    similarity: f32,
    now: OffsetDateTime,
) -> Result<ErasedEvents, RegistryError> {
    let mut rows: Vec<(String, String)> = {
        let mut stmt = tx
            .prepare(&format!("SELECT id, body FROM events WHERE {NAMES_OWNER}"))
            .context("prepare owner event query")?;
        stmt.query_map(params![id, owner_needle(id)], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .and_then(Iterator::collect)
        .context("find owner's events")?
    };
    for event_id in unnamed_events_matching(tx, &Holder::Owner(id), similarity)? {
        if rows.iter().any(|(e, _)| *e == event_id) {
            continue;
        }
        let body: String = tx
            .query_row("SELECT body FROM events WHERE id = ?1", [&event_id], |r| {
                r.get(0)
            })
            .context("read matching event")?;
        rows.push((event_id, body));
    }
    erase_events(tx, rows, now)
}

/// Events with no subject (stranger, undecided) whose stored face matches
/// one of `holder`'s templates of the same model at `similarity` or more.
pub(super) fn unnamed_events_matching(
    tx: &Connection,
    holder: &Holder<'_>,
    similarity: f32,
) -> Result<Vec<String>, RegistryError> {
    let templates: Vec<(String, Vec<u8>)> = {
        let (sql, key): (&str, rusqlite::types::Value) = match holder {
            Holder::Owner(id) => (
                "SELECT model_id, embedding FROM templates WHERE owner_id = ?1",
                (*id).to_owned().into(),
            ),
            Holder::Watch(id) => (
                "SELECT model_id, embedding FROM templates WHERE watch_id = ?1",
                (*id).into(),
            ),
        };
        let mut stmt = tx.prepare(sql).context("prepare template query")?;
        stmt.query_map([key], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(Iterator::collect)
            .context("read templates for erasure")?
    };
    if templates.is_empty() {
        return Ok(Vec::new());
    }
    let mut stmt = tx
        .prepare(
            "SELECT f.event_id, f.model_id, f.embedding FROM event_faces f
             JOIN events e ON e.id = f.event_id WHERE e.subject_kind IS NULL",
        )
        .context("prepare event face query")?;
    let faces = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })
        .context("read event faces")?;
    let dot = |a: &[u8], b: &[u8]| -> f32 {
        a.chunks_exact(4)
            .zip(b.chunks_exact(4))
            .map(|(x, y)| {
                f32::from_le_bytes([x[0], x[1], x[2], x[3]])
                    * f32::from_le_bytes([y[0], y[1], y[2], y[3]])
            })
            .sum()
    };
    let mut hits = Vec::new();
    for face in faces {
        let (event_id, model, emb) = face.context("read event face")?;
        if templates
            .iter()
            .any(|(m, t)| *m == model && t.len() == emb.len() && dot(t, &emb) >= similarity)
        {
            hits.push(event_id);
        }
    }
    Ok(hits)
}

/// Deletes `rows` (event id, body) with their faces and undelivered outbox
/// messages; queues their snapshot files in `erased_files`.
pub(super) fn erase_events(
    tx: &Connection,
    rows: Vec<(String, String)>,
    now: OffsetDateTime,
) -> Result<ErasedEvents, RegistryError> {
    let mut erased = ErasedEvents {
        events: 0,
        faces: 0,
        outbox: 0,
        files: Vec::new(),
    };
    for (event_id, body) in rows {
        erased.files.extend(snapshot_paths(&body));
        erased.faces += tx
            .execute("DELETE FROM event_faces WHERE event_id = ?1", [&event_id])
            .context("delete event face")?;
        erased.outbox += tx
            .execute(
                "DELETE FROM outbox WHERE message_id = ?1
                    OR substr(message_id, 1, length(?1) + 1) = ?1 || '.'",
                [&event_id],
            )
            .context("delete event's outbox messages")?;
        erased.events += tx
            .execute("DELETE FROM events WHERE id = ?1", [&event_id])
            .context("delete event")?;
    }
    for path in &erased.files {
        tx.execute(
            "INSERT OR IGNORE INTO erased_files (path, queued_at) VALUES (?1, ?2)",
            params![path, Millis(now)],
        )
        .context("queue snapshot for deletion")?;
    }
    Ok(erased)
}

/// The snapshot files (`snapshot.face`, `snapshot.scene`) an event body names.
pub(crate) fn snapshot_paths(body: &str) -> Vec<String> {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(body) else {
        return Vec::new();
    };
    ["face", "scene"]
        .iter()
        .filter_map(|k| value["snapshot"][k].as_str().map(str::to_owned))
        .collect()
}

/// `rel` under `dir`, if it is a plain relative path (no `..`, not absolute).
pub(super) fn inside(dir: &Path, rel: &str) -> Option<PathBuf> {
    let rel = Path::new(rel);
    rel.components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
        .then(|| dir.join(rel))
}

impl Registry {
    /// Erases an owner on request; see [`Registry::erase_owner`].
    pub fn remove_owner(
        &mut self,
        id: &str,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<(), RegistryError> {
        self.erase_owner(id, ErasureReason::Request, actor, now)
            .map(drop)
    }

    /// Erases an owner and every trace of them, in one transaction: their
    /// row, consents, templates and photos (foreign keys cascade); every
    /// event naming them with its face embedding (search by photo no longer
    /// finds them); the outbox messages of those events still waiting for
    /// the broker; and the events' snapshot files, which are queued in
    /// `erased_files` inside the transaction and deleted right after the
    /// commit (or by the retention task, if this registry does not know the
    /// data directory or the deletion fails). Then the WAL is checkpointed,
    /// so with `secure_delete` no byte of them stays in the file.
    ///
    /// Events are deleted, not anonymised: a pass with the person's name
    /// taken out still ties a time and a gate to them, and its snapshot is
    /// their face. Undelivered outbox messages are deleted, not rewritten,
    /// for the same reason (and a gate open is void after seconds anyway).
    ///
    /// The audit trail keeps an `owner.remove` row with the id, the reason
    /// and counts only.
    pub fn erase_owner(
        &mut self,
        id: &str,
        reason: ErasureReason,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<Erasure, RegistryError> {
        check_actor(actor)?;
        let similarity = self.erase_similarity;
        let tx = self.write("begin owner erasure")?;
        if !owner_exists(&tx, id)? {
            return Err(RegistryError::UnknownOwner(id.to_owned()));
        }
        let (templates, photos): (i64, i64) = tx
            .query_row(
                "SELECT count(*), count(photo) FROM templates WHERE owner_id = ?1",
                [id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .context("count owner's templates")?;
        let consents: i64 = tx
            .query_row(
                "SELECT count(*) FROM consents WHERE owner_id = ?1",
                [id],
                |row| row.get(0),
            )
            .context("count owner's consents")?;
        let events = erase_owner_events(&tx, id, similarity, now)?;
        tx.execute("DELETE FROM owners WHERE id = ?1", [id])
            .context("delete owner")?;
        audit(
            &tx,
            now,
            actor,
            "owner.remove",
            id,
            json!({
                "reason": reason,
                "templates_erased": templates,
                "photos_erased": photos,
                "consents_erased": consents,
                "events_erased": events.events,
                "event_faces_erased": events.faces,
                "outbox_erased": events.outbox,
                "snapshot_files": events.files.len(),
            }),
        )?;
        tx.commit().context("commit owner erasure")?;
        let mut erasure = Erasure {
            events: events.events,
            event_faces: events.faces,
            outbox_messages: events.outbox,
            snapshot_files_deleted: 0,
            snapshot_files_pending: events.files.len(),
        };
        // The erasure is committed: a failure here leaves the files queued
        // for the retention task, it does not undo or fail the erasure.
        if let Some(dir) = self.snapshot_dir.clone() {
            match self.delete_erased_files(&dir) {
                Ok(deleted) => {
                    erasure.snapshot_files_deleted = deleted;
                    erasure.snapshot_files_pending =
                        erasure.snapshot_files_pending.saturating_sub(deleted);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "erased snapshots left for the retention task")
                }
            }
        }
        self.checkpoint();
        tracing::info!(
            reason = reason.as_str(),
            events = erasure.events,
            snapshot_files_pending = erasure.snapshot_files_pending,
            "owner erased"
        );
        Ok(erasure)
    }

    /// Deletes the files queued in `erased_files` (paths relative to
    /// `data_dir`) and their queue rows; a file already gone counts as
    /// deleted. Returns how many were deleted. A file that cannot be deleted
    /// stays queued (and is logged) for the next call.
    pub fn delete_erased_files(&mut self, data_dir: &Path) -> Result<usize, RegistryError> {
        let paths: Vec<String> = {
            let mut stmt = self
                .conn
                .prepare("SELECT path FROM erased_files ORDER BY path")
                .context("prepare erased file query")?;
            stmt.query_map([], |row| row.get(0))
                .and_then(Iterator::collect)
                .context("read erased files")?
        };
        let mut deleted = 0;
        for rel in paths {
            let Some(full) = inside(data_dir, &rel) else {
                tracing::warn!(path = %rel, "erased file path leaves the data directory; dropped");
                self.conn
                    .execute("DELETE FROM erased_files WHERE path = ?1", [&rel])
                    .context("drop erased file row")?;
                continue;
            };
            match std::fs::remove_file(&full) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    tracing::warn!(path = %full.display(), error = %err, "erased snapshot not deleted yet; will retry");
                    continue;
                }
            }
            self.conn
                .execute("DELETE FROM erased_files WHERE path = ?1", [&rel])
                .context("drop erased file row")?;
            deleted += 1;
        }
        Ok(deleted)
    }
}
