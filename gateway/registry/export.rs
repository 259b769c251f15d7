//! An owner's copy of their data (PIPL Art. 45, right of access and
//! portability): their record, consents, template metadata, the audit rows
//! about them, the events naming them, and the photos they gave.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;

use super::{AuditEntry, Context, Millis, OwnerRecord, Registry, RegistryError, audit};

/// One owner's data, as written to `owner.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OwnerExport {
    #[serde(with = "time::serde::rfc3339")]
    pub exported_at: OffsetDateTime,
    /// Record, consents and templates (metadata only: an embedding is a
    /// model's numbers, useless outside this gateway).
    pub owner: OwnerRecord,
    /// Audit rows whose subject is this owner, oldest first.
    pub audit: Vec<AuditEntry>,
    /// Events naming the owner, oldest first, as stored.
    pub events: Vec<serde_json::Value>,
    /// Files written beside `owner.json` (relative to the export folder).
    pub files: Vec<String>,
}

/// An owner's data with the files that go beside `owner.json`, in memory.
#[derive(Debug, Clone)]
pub struct OwnerExportFiles {
    pub export: OwnerExport,
    /// (path relative to the export, bytes), in the order of `export.files`.
    pub files: Vec<(String, Vec<u8>)>,
}

impl Registry {
    /// Collects one owner's data and writes it under `out` (created, 0700;
    /// it must not exist yet, so nothing is overwritten): `owner.json`,
    /// `photos/template-<id>.<ext>` for each enrolment photo they gave, and
    /// `snapshots/<event>-face.jpg` for the face crops of their events when
    /// the data directory is known (scenes are left out: they show other
    /// people). The export is audited.
    pub fn export_owner(
        &mut self,
        id: &str,
        out: &Path,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<OwnerExport, RegistryError> {
        super::check_actor(actor)?;
        if out.exists() {
            return Err(RegistryError::Invalid(format!(
                "export folder {} already exists; name a new one",
                out.display()
            )));
        }
        let data = self.collect_export(id, now)?;
        let io = |what: String| {
            move |source| RegistryError::Io {
                context: what,
                source,
            }
        };
        private_dir(out).map_err(io(format!("create {}", out.display())))?;
        for (rel, bytes) in &data.files {
            if let Some(parent) = Path::new(rel).parent() {
                private_dir(&out.join(parent)).map_err(io(format!(
                    "create {}/{}",
                    out.display(),
                    parent.display()
                )))?;
            }
            write_private(&out.join(rel), bytes).map_err(io(format!("write {rel}")))?;
        }
        let text = serde_json::to_vec_pretty(&data.export)
            .map_err(|e| RegistryError::Invalid(format!("export: {e}")))?;
        write_private(&out.join("owner.json"), &text).map_err(io("write owner.json".into()))?;
        self.audit_export(id, actor, now, &data.export, "folder")?;
        Ok(data.export)
    }

    /// The same data as [`Registry::export_owner`], in memory (the HTTP
    /// API sends it as one JSON document). Audited.
    pub fn export_owner_files(
        &mut self,
        id: &str,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<OwnerExportFiles, RegistryError> {
        super::check_actor(actor)?;
        let data = self.collect_export(id, now)?;
        self.audit_export(id, actor, now, &data.export, "api")?;
        Ok(data)
    }

    fn audit_export(
        &self,
        id: &str,
        actor: &str,
        now: OffsetDateTime,
        export: &OwnerExport,
        via: &str,
    ) -> Result<(), RegistryError> {
        audit(
            &self.conn,
            now,
            actor,
            "owner.export",
            id,
            json!({ "events": export.events.len(), "files": export.files.len(), "via": via }),
        )
    }

    fn collect_export(
        &mut self,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<OwnerExportFiles, RegistryError> {
        let owner = self.owner(id)?;
        let audit_rows = self.audit_about(id)?;
        let events = self.events_naming(id)?;
        let photos = self.photos_of(id)?;
        let mut files = Vec::new();
        for (template, bytes) in photos {
            let rel = format!("photos/template-{template}.{}", image_type(&bytes).0);
            files.push((rel, bytes));
        }
        if let Some(dir) = self.snapshot_dir.clone() {
            for face in events
                .iter()
                .filter_map(|e| e["snapshot"]["face"].as_str())
                .filter_map(|rel| super::inside(&dir, rel))
            {
                // Sealed snapshots are decrypted: the export is for the person.
                let Ok(bytes) = crate::crypto::read_snapshot(&face) else {
                    continue;
                };
                let name = face
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default();
                let name = PathBuf::from(
                    name.strip_suffix(crate::crypto::SEALED_EXT)
                        .unwrap_or(&name),
                );
                let rel = Path::new("snapshots")
                    .join(name)
                    .to_string_lossy()
                    .into_owned();
                files.push((rel, bytes));
            }
        }
        let export = OwnerExport {
            exported_at: now,
            owner,
            audit: audit_rows,
            events,
            files: files.iter().map(|(rel, _)| rel.clone()).collect(),
        };
        Ok(OwnerExportFiles { export, files })
    }

    fn audit_about(&self, id: &str) -> Result<Vec<AuditEntry>, RegistryError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, ts, actor, action, subject, detail FROM audit WHERE subject = ?1 ORDER BY id")
            .context("prepare owner audit query")?;
        stmt.query_map([id], |row| {
            let detail: Option<String> = row.get(5)?;
            Ok(AuditEntry {
                id: row.get(0)?,
                ts: row.get::<_, Millis>(1)?.0,
                actor: row.get(2)?,
                action: row.get(3)?,
                subject: row.get(4)?,
                detail: detail.and_then(|t| serde_json::from_str(&t).ok()),
            })
        })
        .and_then(Iterator::collect)
        .context("read owner audit rows")
    }

    fn events_naming(&self, id: &str) -> Result<Vec<serde_json::Value>, RegistryError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT body FROM events WHERE {} ORDER BY ts, id",
                super::NAMES_OWNER
            ))
            .context("prepare owner event query")?;
        let bodies: Vec<String> = stmt
            .query_map(rusqlite::params![id, super::owner_needle(id)], |r| r.get(0))
            .and_then(Iterator::collect)
            .context("read owner events")?;
        Ok(bodies
            .iter()
            .filter_map(|b| serde_json::from_str(b).ok())
            .collect())
    }

    fn photos_of(&self, id: &str) -> Result<Vec<(i64, Vec<u8>)>, RegistryError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, photo FROM templates WHERE owner_id = ?1 AND photo IS NOT NULL ORDER BY id")
            .context("prepare photo query")?;
        stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(Iterator::collect)
            .context("read photos")
    }
}

/// The file extension and MIME type of an image's bytes (JPEG, PNG, WebP;
/// anything else is `bin`, `application/octet-stream`).
pub(crate) fn image_type(bytes: &[u8]) -> (&'static str, &'static str) {
    match bytes {
        [0xff, 0xd8, ..] => ("jpg", "image/jpeg"),
        [0x89, b'P', b'N', b'G', ..] => ("png", "image/png"),
        [
            b'R',
            b'I',
            b'F',
            b'F',
            _,
            _,
            _,
            _,
            b'W',
            b'E',
            b'B',
            b'P',
            ..,
        ] => ("webp", "image/webp"),
        _ => ("bin", "application/octet-stream"),
    }
}

fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    std::io::Write::write_all(&mut o.open(path)?, bytes)
}
