//! The watch list: entries with faces, their expiry, and their removal
//! (which erases their sightings).

use super::*;

impl Registry {
    /// Adds a person to the watch list with at least one face. Returns the
    /// entry's id.
    pub fn watchlist_add(
        &mut self,
        entry: &NewWatchEntry,
        faces: &[FaceTemplate],
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<i64, RegistryError> {
        check_actor(actor)?;
        entry.validate()?;
        check_faces(faces)?;
        let tx = self.write("begin watch-list entry")?;
        tx.execute(
            "INSERT INTO watchlist (name, reason, priority, expires_at, created_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                entry.name,
                entry.reason,
                entry.priority,
                entry.expires_at.map(Millis),
                actor,
                Millis(now)
            ],
        )
        .context("insert watch-list entry")?;
        let id = tx.last_insert_rowid();
        let ids = insert_templates(&tx, Holder::Watch(id), faces, now)?;
        audit(
            &tx,
            now,
            actor,
            "watchlist.add",
            &SubjectKey::Watch(id).audit_name(),
            json!({
                "priority": entry.priority,
                "templates": ids,
                "photos_stored": faces.iter().filter(|f| f.photo.is_some()).count(),
                "expires": entry.expires_at.is_some(),
            }),
        )?;
        tx.commit().context("commit watch-list entry")?;
        Ok(id)
    }

    /// The whole watch list, each entry marked expired or not as of `now`.
    pub fn watchlist(&self, now: OffsetDateTime) -> Result<Vec<WatchEntry>, RegistryError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, name, reason, priority, expires_at, created_by, created_at,
                        (SELECT count(*) FROM templates t WHERE t.watch_id = watchlist.id),
                        expires_at IS NOT NULL AND expires_at <= ?1
                 FROM watchlist ORDER BY id",
            )
            .context("prepare watch-list query")?;
        stmt.query_map([Millis(now)], |row| {
            Ok(WatchEntry {
                id: row.get(0)?,
                name: row.get(1)?,
                reason: row.get(2)?,
                priority: row.get(3)?,
                expires_at: row.get::<_, Option<Millis>>(4)?.map(|m| m.0),
                created_by: row.get(5)?,
                created_at: row.get::<_, Millis>(6)?.0,
                template_count: row.get(7)?,
                expired: row.get(8)?,
            })
        })
        .and_then(Iterator::collect)
        .context("read watch list")
    }

    /// Deletes a watch-list entry and its faces.
    pub fn watchlist_remove(
        &mut self,
        id: i64,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<(), RegistryError> {
        check_actor(actor)?;
        let similarity = self.erase_similarity;
        let tx = self.write("begin watch-list removal")?;
        let templates: Option<i64> = tx
            .query_row(
                "SELECT (SELECT count(*) FROM templates WHERE watch_id = ?1)
                 FROM watchlist WHERE id = ?1",
                [id],
                |row| row.get(0),
            )
            .optional()
            .context("look up watch-list entry")?;
        let Some(templates) = templates else {
            return Err(RegistryError::UnknownWatchEntry(id));
        };
        // The person's sightings go with the entry (a missing person who
        // was found is not tracked after): the events naming the entry, and
        // unnamed events whose face matches it, as for an owner's erasure.
        let mut rows: Vec<(String, String)> = {
            let mut stmt = tx
                .prepare(
                    "SELECT id, body FROM events
                     WHERE subject_kind = 'watch' AND subject_id = ?1",
                )
                .context("prepare watch-list event query")?;
            stmt.query_map([id.to_string()], |row| Ok((row.get(0)?, row.get(1)?)))
                .and_then(Iterator::collect)
                .context("find watch-list entry's events")?
        };
        for event_id in unnamed_events_matching(&tx, &Holder::Watch(id), similarity)? {
            let body: String = tx
                .query_row("SELECT body FROM events WHERE id = ?1", [&event_id], |r| {
                    r.get(0)
                })
                .context("read matching event")?;
            rows.push((event_id, body));
        }
        let events = erase_events(&tx, rows, now)?;
        tx.execute("DELETE FROM watchlist WHERE id = ?1", [id])
            .context("delete watch-list entry")?;
        audit(
            &tx,
            now,
            actor,
            "watchlist.remove",
            &SubjectKey::Watch(id).audit_name(),
            json!({
                "templates_erased": templates,
                "events_erased": events.events,
                "event_faces_erased": events.faces,
                "outbox_erased": events.outbox,
                "snapshot_files": events.files.len(),
            }),
        )?;
        tx.commit().context("commit watch-list removal")?;
        if let Some(dir) = self.snapshot_dir.clone()
            && let Err(err) = self.delete_erased_files(&dir)
        {
            tracing::warn!(error = %err, "erased snapshots left for the retention task");
        }
        self.checkpoint();
        Ok(())
    }
}
