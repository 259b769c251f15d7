//! Face templates: validation, storage encoding, and the reads that feed
//! the in-memory index.

use super::*;

/// Templates of active owners with at least one unwithdrawn consent. The
/// consent condition is belt and braces: processing face data needs consent,
/// so a withdrawn consent must stop matching even before the data is erased.
pub(super) const ACTIVE_OWNER_TEMPLATES: &str = "
    SELECT t.id, t.model_id, t.dim, t.embedding, o.id, NULL, o.name, NULL
    FROM templates t JOIN owners o ON o.id = t.owner_id
    WHERE o.status = 'active'
      AND EXISTS (SELECT 1 FROM consents c WHERE c.owner_id = o.id AND c.withdrawn_at IS NULL)";

/// Templates of watch-list entries that have not expired at `:now`.
pub(super) const ACTIVE_WATCH_TEMPLATES: &str = "
    SELECT t.id, t.model_id, t.dim, t.embedding, NULL, w.id, w.name, w.priority
    FROM templates t JOIN watchlist w ON w.id = t.watch_id
    WHERE (w.expires_at IS NULL OR w.expires_at > :now)";

/// Reads columns 4..=7 of the template queries: owner id, watch id, name,
/// priority.
pub(super) fn subject_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Subject> {
    let name: String = row.get(6)?;
    match (
        row.get::<_, Option<String>>(4)?,
        row.get::<_, Option<i64>>(5)?,
    ) {
        (Some(id), _) => Ok(Subject::Owner { id, name }),
        (None, Some(id)) => Ok(Subject::Watch {
            id,
            name,
            priority: row.get(7)?,
        }),
        (None, None) => Err(rusqlite::Error::InvalidColumnType(
            4,
            "owner_id".into(),
            rusqlite::types::Type::Null,
        )),
    }
}

/// Inserts the faces for `holder`, checking each one's dimension against the
/// templates of the same model already stored (including those inserted a
/// moment earlier in this transaction), so one model never has two sizes.
pub(super) fn insert_templates(
    conn: &Connection,
    holder: Holder<'_>,
    faces: &[FaceTemplate],
    now: OffsetDateTime,
) -> Result<Vec<i64>, RegistryError> {
    let (owner_id, watch_id) = match holder {
        Holder::Owner(id) => (Some(id), None),
        Holder::Watch(id) => (None, Some(id)),
    };
    let mut ids = Vec::with_capacity(faces.len());
    for (i, face) in faces.iter().enumerate() {
        let dim = face.embedding.len();
        let stored: Option<usize> = conn
            .query_row(
                "SELECT dim FROM templates WHERE model_id = ?1 LIMIT 1",
                [&face.model_id],
                |row| row.get(0),
            )
            .optional()
            .context("look up model dimension")?;
        if let Some(stored) = stored
            && stored != dim
        {
            return Err(invalid(format!(
                "face {}: embedding has {dim} values, but templates of model '{}' have {stored}",
                i + 1,
                face.model_id
            )));
        }
        conn.execute(
            "INSERT INTO templates (owner_id, watch_id, model_id, dim, embedding, quality, photo, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                owner_id,
                watch_id,
                face.model_id,
                dim,
                encode_embedding(&face.embedding),
                face.quality,
                face.photo,
                Millis(now),
            ],
        )
        .context("insert face template")?;
        ids.push(conn.last_insert_rowid());
    }
    Ok(ids)
}

/// Checks each face on its own (1-based numbers in messages, as staff count).
/// Dimension agreement with stored templates is checked inside the write
/// transaction, where it cannot race another writer.
pub(super) fn check_faces(faces: &[FaceTemplate]) -> Result<(), RegistryError> {
    if faces.is_empty() {
        return Err(invalid("at least one face is needed"));
    }
    for (i, face) in faces.iter().enumerate() {
        let n = i + 1;
        check_id(&format!("face {n}: model id"), &face.model_id)?;
        let dim = face.embedding.len();
        if dim == 0 {
            return Err(invalid(format!("face {n}: embedding is empty")));
        }
        if dim > MAX_DIM {
            return Err(invalid(format!(
                "face {n}: embedding has {dim} values, more than the {MAX_DIM} any face model produces"
            )));
        }
        if face.embedding.iter().any(|v| !v.is_finite()) {
            return Err(invalid(format!(
                "face {n}: embedding holds NaN or infinite values"
            )));
        }
        if face.embedding.iter().all(|v| *v == 0.0) {
            return Err(invalid(format!("face {n}: embedding is all zeros")));
        }
        if !face.quality.is_finite() {
            return Err(invalid(format!("face {n}: quality is not a number")));
        }
        if face.photo.as_ref().is_some_and(Vec::is_empty) {
            return Err(invalid(format!(
                "face {n}: photo is empty; pass no photo instead"
            )));
        }
    }
    Ok(())
}

/// Little-endian f32s, the stored form of an embedding.
pub(super) fn encode_embedding(embedding: &[f32]) -> Vec<u8> {
    embedding.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Decodes a stored embedding, refusing a length that disagrees with `dim`
/// or a value that is not finite: either would poison matching silently.
pub(super) fn decode_embedding(id: i64, dim: i64, blob: &[u8]) -> Result<Vec<f32>, RegistryError> {
    let corrupt = |reason: String| RegistryError::CorruptTemplate { id, reason };
    let expected = usize::try_from(dim)
        .ok()
        .filter(|d| *d > 0)
        .and_then(|d| d.checked_mul(4))
        .ok_or_else(|| corrupt(format!("dimension {dim} is not positive")))?;
    if blob.len() != expected {
        return Err(corrupt(format!(
            "embedding is {} bytes, expected {expected} for dimension {dim}",
            blob.len()
        )));
    }
    let embedding: Vec<f32> = blob
        .chunks_exact(4)
        .map(|chunk| {
            let mut bytes = [0u8; 4];
            bytes.copy_from_slice(chunk);
            f32::from_le_bytes(bytes)
        })
        .collect();
    if embedding.iter().any(|v| !v.is_finite()) {
        return Err(corrupt("embedding holds NaN or infinite values".into()));
    }
    Ok(embedding)
}

impl Registry {
    /// Every template that should match right now: those of active owners
    /// holding an unwithdrawn consent, and of watch-list entries not expired
    /// at `now`. Ordered by template id.
    pub fn active_templates(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<StoredTemplate>, RegistryError> {
        self.read_templates(
            &format!("{ACTIVE_OWNER_TEMPLATES} UNION ALL {ACTIVE_WATCH_TEMPLATES} ORDER BY 1"),
            rusqlite::named_params! { ":now": Millis(now) },
        )
    }

    /// The active templates of one subject (empty if it is suspended,
    /// expired or gone): what the gallery reloads after a change.
    pub fn subject_templates(
        &self,
        key: &SubjectKey,
        now: OffsetDateTime,
    ) -> Result<Vec<StoredTemplate>, RegistryError> {
        match key {
            SubjectKey::Owner(id) => self.read_templates(
                &format!("{ACTIVE_OWNER_TEMPLATES} AND o.id = :owner ORDER BY 1"),
                rusqlite::named_params! { ":owner": id },
            ),
            SubjectKey::Watch(id) => self.read_templates(
                &format!("{ACTIVE_WATCH_TEMPLATES} AND w.id = :watch ORDER BY 1"),
                rusqlite::named_params! { ":now": Millis(now), ":watch": id },
            ),
        }
    }

    pub(super) fn read_templates(
        &self,
        sql: &str,
        params: &[(&str, &dyn ToSql)],
    ) -> Result<Vec<StoredTemplate>, RegistryError> {
        let mut stmt = self.conn.prepare(sql).context("prepare template query")?;
        let mut rows = stmt.query(params).context("query templates")?;
        let mut templates = Vec::new();
        while let Some(row) = rows.next().context("read template")? {
            let template_id: i64 = row.get(0).context("read template id")?;
            let dim: i64 = row.get(2).context("read template dim")?;
            let blob = row
                .get_ref(3)
                .and_then(|v| v.as_blob().map_err(rusqlite::Error::from))
                .context("read embedding")?;
            let embedding = decode_embedding(template_id, dim, blob)?;
            let subject = subject_from_row(row).context("read template subject")?;
            templates.push(StoredTemplate {
                template_id,
                subject,
                model_id: row.get(1).context("read template model")?,
                embedding,
            });
        }
        Ok(templates)
    }

    /// Templates made by any model other than `model_id`, counted per model.
    pub fn foreign_templates(&self, model_id: &str) -> Result<Vec<(String, usize)>, RegistryError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT model_id, count(*) FROM templates WHERE model_id <> ?1
                 GROUP BY model_id ORDER BY model_id",
            )
            .context("prepare foreign template query")?;
        stmt.query_map([model_id], |row| Ok((row.get(0)?, row.get(1)?)))
            .and_then(Iterator::collect)
            .context("count foreign templates")
    }
}
