//! Owners: enrolment with consent, faces added and removed, reads and
//! searches, status and field changes.

use super::*;

/// Owner columns in the order [`owner_from_row`] reads them.
pub(super) const OWNER_COLUMNS: &str =
    "id, name, building, unit, grid_code, status, minor_under_14, created_at, updated_at";

pub(super) fn owner_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Owner> {
    Ok(Owner {
        id: row.get(0)?,
        name: row.get(1)?,
        building: row.get(2)?,
        unit: row.get(3)?,
        grid_code: row.get(4)?,
        status: row.get(5)?,
        minor_under_14: row.get(6)?,
        created_at: row.get::<_, Millis>(7)?.0,
        updated_at: row.get::<_, Millis>(8)?.0,
    })
}

pub(super) fn owner_exists(conn: &Connection, id: &str) -> Result<bool, RegistryError> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM owners WHERE id = ?1)",
        [id],
        |row| row.get(0),
    )
    .context("look up owner")
}

pub(super) fn touch_owner(
    conn: &Connection,
    id: &str,
    now: OffsetDateTime,
) -> Result<(), RegistryError> {
    conn.execute(
        "UPDATE owners SET updated_at = ?2 WHERE id = ?1",
        params![id, Millis(now)],
    )
    .context("update owner timestamp")
    .map(drop)
}

/// Escapes `%`, `_` and `\` so a search for "10_1" does not match "1041".
pub(super) fn like_pattern(search: &str) -> String {
    let mut pattern = String::with_capacity(search.len() + 2);
    pattern.push('%');
    for c in search.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

impl Registry {
    /// Enrols a new owner with their consent and at least one face, in one
    /// transaction: on any error nothing is written. Returns the template ids.
    pub fn enroll(
        &mut self,
        owner: &NewOwner,
        consent: &Consent,
        faces: &[FaceTemplate],
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<i64>, RegistryError> {
        check_actor(actor)?;
        owner.validate()?;
        consent.validate(owner.minor_under_14)?;
        check_faces(faces)?;

        let tx = self.write("begin enrolment")?;
        if owner_exists(&tx, &owner.id)? {
            return Err(RegistryError::OwnerExists(owner.id.clone()));
        }
        tx.execute(
            "INSERT INTO owners (id, name, building, unit, grid_code, status, minor_under_14, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
            params![
                owner.id,
                owner.name,
                owner.building,
                owner.unit,
                owner.grid_code,
                OwnerStatus::Active,
                owner.minor_under_14,
                Millis(now),
            ],
        )
        .context("insert owner")?;
        tx.execute(
            "INSERT INTO consents (owner_id, given_at, method, taken_by, guardian_name, guardian_relation, purpose)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                owner.id,
                Millis(consent.given_at),
                consent.method,
                consent.taken_by,
                consent.guardian_name,
                consent.guardian_relation,
                consent.purpose,
            ],
        )
        .context("insert consent")?;
        let ids = insert_templates(&tx, Holder::Owner(&owner.id), faces, now)?;
        audit(
            &tx,
            now,
            actor,
            "owner.enroll",
            &owner.id,
            json!({
                "templates": ids,
                "model_id": faces[0].model_id,
                "photos_stored": faces.iter().filter(|f| f.photo.is_some()).count(),
                "consent_method": consent.method,
                "guardian_consent": consent.guardian_name.is_some(),
            }),
        )?;
        tx.commit().context("commit enrolment")?;
        tracing::info!(templates = ids.len(), "owner enrolled");
        Ok(ids)
    }

    /// Adds faces to an enrolled owner (more photos, or a new model). Returns
    /// the new template ids.
    pub fn add_faces(
        &mut self,
        owner_id: &str,
        faces: &[FaceTemplate],
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<i64>, RegistryError> {
        check_actor(actor)?;
        check_faces(faces)?;
        let tx = self.write("begin adding faces")?;
        if !owner_exists(&tx, owner_id)? {
            return Err(RegistryError::UnknownOwner(owner_id.to_owned()));
        }
        let ids = insert_templates(&tx, Holder::Owner(owner_id), faces, now)?;
        touch_owner(&tx, owner_id, now)?;
        audit(
            &tx,
            now,
            actor,
            "owner.add_face",
            owner_id,
            json!({
                "templates": ids,
                "photos_stored": faces.iter().filter(|f| f.photo.is_some()).count(),
            }),
        )?;
        tx.commit().context("commit added faces")?;
        Ok(ids)
    }

    /// Deletes one template (and its photo), whoever it belongs to. Returns
    /// whose it was.
    pub fn remove_face(
        &mut self,
        template_id: i64,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<SubjectKey, RegistryError> {
        check_actor(actor)?;
        let tx = self.write("begin removing a face")?;
        let holder: Option<(Option<String>, Option<i64>)> = tx
            .query_row(
                "SELECT owner_id, watch_id FROM templates WHERE id = ?1",
                [template_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .context("look up template")?;
        let key = match holder {
            Some((Some(owner), _)) => SubjectKey::Owner(owner),
            Some((None, Some(watch))) => SubjectKey::Watch(watch),
            _ => return Err(RegistryError::UnknownTemplate(template_id)),
        };
        tx.execute("DELETE FROM templates WHERE id = ?1", [template_id])
            .context("delete template")?;
        let action = match &key {
            SubjectKey::Owner(id) => {
                touch_owner(&tx, id, now)?;
                "owner.remove_face"
            }
            SubjectKey::Watch(_) => "watchlist.remove_face",
        };
        audit(
            &tx,
            now,
            actor,
            action,
            &key.audit_name(),
            json!({ "template": template_id }),
        )?;
        tx.commit().context("commit face removal")?;
        self.checkpoint();
        Ok(key)
    }

    /// One owner with consents and templates.
    pub fn owner(&self, id: &str) -> Result<OwnerRecord, RegistryError> {
        let owner = self
            .conn
            .query_row(
                &format!("SELECT {OWNER_COLUMNS} FROM owners WHERE id = ?1"),
                [id],
                owner_from_row,
            )
            .optional()
            .context("read owner")?
            .ok_or_else(|| RegistryError::UnknownOwner(id.to_owned()))?;

        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, given_at, method, taken_by, guardian_name, guardian_relation, purpose, withdrawn_at
                 FROM consents WHERE owner_id = ?1 ORDER BY given_at, id",
            )
            .context("prepare consent query")?;
        let consents = stmt
            .query_map([id], |row| {
                Ok(ConsentRecord {
                    id: row.get(0)?,
                    given_at: row.get::<_, Millis>(1)?.0,
                    method: row.get(2)?,
                    taken_by: row.get(3)?,
                    guardian_name: row.get(4)?,
                    guardian_relation: row.get(5)?,
                    purpose: row.get(6)?,
                    withdrawn_at: row.get::<_, Option<Millis>>(7)?.map(|m| m.0),
                })
            })
            .and_then(Iterator::collect)
            .context("read consents")?;

        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, model_id, dim, quality, photo IS NOT NULL, created_at
                 FROM templates WHERE owner_id = ?1 ORDER BY id",
            )
            .context("prepare template query")?;
        let templates = stmt
            .query_map([id], |row| {
                Ok(TemplateInfo {
                    id: row.get(0)?,
                    model_id: row.get(1)?,
                    dim: row.get(2)?,
                    quality: row.get(3)?,
                    has_photo: row.get(4)?,
                    created_at: row.get::<_, Millis>(5)?.0,
                })
            })
            .and_then(Iterator::collect)
            .context("read templates")?;

        Ok(OwnerRecord {
            owner,
            consents,
            templates,
        })
    }

    /// A page of owners, ordered by id.
    pub fn owners(&self, filter: &OwnerFilter) -> Result<Vec<OwnerSummary>, RegistryError> {
        let pattern = filter
            .search
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(like_pattern);
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {OWNER_COLUMNS},
                        (SELECT count(*) FROM templates t WHERE t.owner_id = owners.id)
                 FROM owners
                 WHERE (:status IS NULL OR status = :status)
                   AND (:pattern IS NULL
                        OR id LIKE :pattern ESCAPE '\\'
                        OR name LIKE :pattern ESCAPE '\\'
                        OR building LIKE :pattern ESCAPE '\\'
                        OR unit LIKE :pattern ESCAPE '\\')
                 ORDER BY id
                 LIMIT :limit OFFSET :offset"
            ))
            .context("prepare owner list")?;
        let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
        let offset = i64::try_from(filter.offset).unwrap_or(i64::MAX);
        stmt.query_map(
            rusqlite::named_params! {
                ":status": filter.status,
                ":pattern": pattern,
                ":limit": limit,
                ":offset": offset,
            },
            |row| {
                Ok(OwnerSummary {
                    owner: owner_from_row(row)?,
                    template_count: row.get(9)?,
                })
            },
        )
        .and_then(Iterator::collect)
        .context("list owners")
    }

    /// How many owners `filter` matches, ignoring its page.
    pub fn owners_count(&self, filter: &OwnerFilter) -> Result<usize, RegistryError> {
        let pattern = filter
            .search
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(like_pattern);
        self.conn
            .query_row(
                "SELECT count(*) FROM owners
                 WHERE (:status IS NULL OR status = :status)
                   AND (:pattern IS NULL
                        OR id LIKE :pattern ESCAPE '\\'
                        OR name LIKE :pattern ESCAPE '\\'
                        OR building LIKE :pattern ESCAPE '\\'
                        OR unit LIKE :pattern ESCAPE '\\')",
                rusqlite::named_params! { ":status": filter.status, ":pattern": pattern },
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as usize)
            .context("count owners")
    }

    /// Activates or suspends an owner. Setting the status an owner already
    /// has is a no-op and writes no audit row.
    pub fn set_status(
        &mut self,
        id: &str,
        status: OwnerStatus,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<(), RegistryError> {
        check_actor(actor)?;
        let tx = self.write("begin status change")?;
        let current: OwnerStatus = tx
            .query_row("SELECT status FROM owners WHERE id = ?1", [id], |row| {
                row.get(0)
            })
            .optional()
            .context("read owner status")?
            .ok_or_else(|| RegistryError::UnknownOwner(id.to_owned()))?;
        if current == status {
            return Ok(());
        }
        tx.execute(
            "UPDATE owners SET status = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, status, Millis(now)],
        )
        .context("update owner status")?;
        let action = match status {
            OwnerStatus::Active => "owner.activate",
            OwnerStatus::Suspended => "owner.suspend",
        };
        audit(&tx, now, actor, action, id, json!({ "from": current }))?;
        tx.commit().context("commit status change")
    }

    /// Changes an owner's descriptive fields.
    pub fn update_owner(
        &mut self,
        id: &str,
        patch: &OwnerPatch,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<(), RegistryError> {
        check_actor(actor)?;
        patch.validate()?;
        let tx = self.write("begin owner update")?;
        let mut owner = tx
            .query_row(
                &format!("SELECT {OWNER_COLUMNS} FROM owners WHERE id = ?1"),
                [id],
                owner_from_row,
            )
            .optional()
            .context("read owner")?
            .ok_or_else(|| RegistryError::UnknownOwner(id.to_owned()))?;
        if let Some(name) = &patch.name {
            owner.name = name.clone();
        }
        if let Some(building) = &patch.building {
            owner.building = building.clone();
        }
        if let Some(unit) = &patch.unit {
            owner.unit = unit.clone();
        }
        if let Some(grid_code) = &patch.grid_code {
            owner.grid_code = grid_code.clone();
        }
        tx.execute(
            "UPDATE owners SET name = ?2, building = ?3, unit = ?4, grid_code = ?5, updated_at = ?6
             WHERE id = ?1",
            params![
                id,
                owner.name,
                owner.building,
                owner.unit,
                owner.grid_code,
                Millis(now)
            ],
        )
        .context("update owner")?;
        audit(
            &tx,
            now,
            actor,
            "owner.update",
            id,
            json!({ "fields": patch.field_names() }),
        )?;
        tx.commit().context("commit owner update")
    }
}
