//! `facegate privacy report`: what personal data the gateway holds, the
//! oldest item of each kind and when retention removes it; and how near the
//! estate is to the filing threshold for face data.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Context, Millis, Registry, RegistryError, RetentionPolicy};

/// People whose faces may be held before the 2025 Measures on face
/// recognition require filing with the provincial cyberspace office.
pub const FILING_THRESHOLD: usize = 100_000;

/// One kind of data: how much, the oldest item, and when retention removes
/// that oldest item (`None`: kept while the person consents, or nothing held).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Held {
    pub count: u64,
    #[serde(with = "time::serde::rfc3339::option")]
    pub oldest: Option<OffsetDateTime>,
    /// Days this kind is kept; `None` for data kept while consent holds.
    pub retention_days: Option<u32>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub oldest_removed_by: Option<OffsetDateTime>,
}

impl Held {
    fn new(count: u64, oldest: Option<OffsetDateTime>, days: Option<u32>) -> Self {
        let removed = match (oldest, days) {
            (Some(t), Some(d)) => Some(t + time::Duration::days(i64::from(d))),
            _ => None,
        };
        Self {
            count,
            oldest,
            retention_days: days,
            oldest_removed_by: removed,
        }
    }
}

/// Snapshot files on disk.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SnapshotsHeld {
    pub files: u64,
    pub bytes: u64,
    /// The oldest day folder (`YYYY-MM-DD`).
    pub oldest_day: Option<String>,
    pub retention_days: u32,
    /// Whether the data directory was known (else nothing was counted).
    pub counted: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrivacyReport {
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
    /// Owners plus watch-list entries: people whose faces are held.
    pub people_with_faces: usize,
    pub filing_threshold: usize,
    /// Set at 90% of the threshold and above.
    pub warning: Option<String>,
    pub owners: Held,
    pub templates: u64,
    pub photos: u64,
    pub consents: u64,
    pub watchlist: Held,
    pub watchlist_expired: u64,
    pub watchlist_templates: u64,
    /// By event kind.
    pub events: BTreeMap<String, Held>,
    /// Face embeddings of events about enrolled people.
    pub event_faces: Held,
    /// Face embeddings of events about strangers.
    pub stranger_faces: Held,
    pub snapshots: SnapshotsHeld,
    pub audit: Held,
    pub outbox_pending: u64,
    pub outbox_delivered: Held,
    /// Snapshot files of erased or expired events not yet deleted.
    pub erased_files_pending: u64,
}

/// The warning for `people` faces held, at 90% of the threshold and above.
pub fn filing_warning(people: usize) -> Option<String> {
    (people * 10 >= FILING_THRESHOLD * 9).then(|| {
        format!(
            "faces of {people} people are held ({}% of {FILING_THRESHOLD}): at {FILING_THRESHOLD} the 2025 Measures on face recognition require filing with the provincial cyberspace office",
            people * 100 / FILING_THRESHOLD
        )
    })
}

impl Registry {
    /// What is held at `now` under `policy`; snapshot files are counted
    /// under `data_dir` when given.
    pub fn privacy_report(
        &self,
        policy: &RetentionPolicy,
        data_dir: Option<&Path>,
        now: OffsetDateTime,
    ) -> Result<PrivacyReport, RegistryError> {
        let count = |sql: &str| -> Result<(u64, Option<OffsetDateTime>), RegistryError> {
            self.conn
                .query_row(sql, [], |r| {
                    Ok((
                        r.get::<_, i64>(0)?.max(0) as u64,
                        r.get::<_, Option<Millis>>(1)?.map(|m| m.0),
                    ))
                })
                .with_context(|| format!("privacy report: {sql}"))
        };
        let (owners, owners_oldest) = count("SELECT count(*), min(created_at) FROM owners")?;
        let (templates, _) =
            count("SELECT count(*), NULL FROM templates WHERE owner_id IS NOT NULL")?;
        let (photos, _) = count("SELECT count(photo), NULL FROM templates")?;
        let (consents, _) = count("SELECT count(*), NULL FROM consents")?;
        let (watch, watch_oldest) = count("SELECT count(*), min(created_at) FROM watchlist")?;
        let (watchlist_templates, _) =
            count("SELECT count(*), NULL FROM templates WHERE watch_id IS NOT NULL")?;
        let watchlist_expired: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM watchlist WHERE expires_at IS NOT NULL AND expires_at <= ?1",
                [Millis(now)],
                |r| r.get(0),
            )
            .context("privacy report: expired watch-list entries")?;
        let mut events = BTreeMap::new();
        for (kind, days) in &policy.events {
            let (n, oldest) = self
                .conn
                .query_row(
                    "SELECT count(*), min(ts) FROM events WHERE kind = ?1",
                    [kind],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?.max(0) as u64,
                            r.get::<_, Option<Millis>>(1)?.map(|m| m.0),
                        ))
                    },
                )
                .context("privacy report: events")?;
            events.insert(kind.clone(), Held::new(n, oldest, Some(*days)));
        }
        let (faces, faces_oldest) = count(
            "SELECT count(*), min(f.ts) FROM event_faces f JOIN events e ON e.id = f.event_id
             WHERE e.subject_kind IS NOT NULL",
        )?;
        let (strangers, strangers_oldest) = count(
            "SELECT count(*), min(f.ts) FROM event_faces f JOIN events e ON e.id = f.event_id
             WHERE e.subject_kind IS NULL",
        )?;
        let (audit, audit_oldest) = count("SELECT count(*), min(ts) FROM audit")?;
        let (pending, _) = count("SELECT count(*), NULL FROM outbox WHERE delivered_at IS NULL")?;
        let (delivered, delivered_oldest) =
            count("SELECT count(*), min(delivered_at) FROM outbox WHERE delivered_at IS NOT NULL")?;
        let (erased, _) = count("SELECT count(*), NULL FROM erased_files")?;
        let people = self.people_with_faces()?;
        Ok(PrivacyReport {
            generated_at: now,
            people_with_faces: people,
            filing_threshold: FILING_THRESHOLD,
            warning: filing_warning(people),
            owners: Held::new(owners, owners_oldest, None),
            templates,
            photos,
            consents,
            watchlist: Held::new(watch, watch_oldest, None),
            watchlist_expired: watchlist_expired.max(0) as u64,
            watchlist_templates,
            events,
            event_faces: Held::new(faces, faces_oldest, Some(policy.event_faces)),
            stranger_faces: Held::new(strangers, strangers_oldest, Some(policy.stranger_faces)),
            snapshots: count_snapshots(data_dir, policy.snapshots),
            audit: Held::new(audit, audit_oldest, Some(policy.audit)),
            outbox_pending: pending,
            outbox_delivered: Held::new(delivered, delivered_oldest, Some(policy.delivered_outbox)),
            erased_files_pending: erased,
        })
    }
}

/// Files and bytes under `<data_dir>/snapshots/<day>/`.
fn count_snapshots(data_dir: Option<&Path>, days: u32) -> SnapshotsHeld {
    let mut held = SnapshotsHeld {
        retention_days: days,
        ..Default::default()
    };
    let Some(dir) = data_dir else {
        return held;
    };
    held.counted = true;
    let Ok(entries) = std::fs::read_dir(dir.join("snapshots")) else {
        return held;
    };
    for day in entries.flatten() {
        let name = day.file_name().to_string_lossy().into_owned();
        let Ok(files) = std::fs::read_dir(day.path()) else {
            continue;
        };
        let mut any = false;
        for f in files.flatten() {
            if let Ok(m) = f.metadata()
                && m.is_file()
            {
                held.files += 1;
                held.bytes += m.len();
                any = true;
            }
        }
        if any && held.oldest_day.as_ref().is_none_or(|d| name < *d) {
            held.oldest_day = Some(name);
        }
    }
    held
}

fn when(t: Option<OffsetDateTime>) -> String {
    t.and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "-".into())
}

/// The human-readable report: one line per kind.
impl fmt::Display for PrivacyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = |f: &mut fmt::Formatter<'_>, what: &str, h: &Held| {
            let keep = match h.retention_days {
                Some(d) => format!(
                    "kept {d} days; oldest {}, removed by {}",
                    when(h.oldest),
                    when(h.oldest_removed_by)
                ),
                None => format!("kept while consent holds; oldest {}", when(h.oldest)),
            };
            writeln!(f, "{what:<28} {:>8}  {keep}", h.count)
        };
        writeln!(f, "privacy report at {}", when(Some(self.generated_at)))?;
        if let Some(w) = &self.warning {
            writeln!(f, "WARNING: {w}")?;
        }
        writeln!(
            f,
            "{:<28} {:>8}  (filing threshold {})",
            "people with faces held", self.people_with_faces, self.filing_threshold
        )?;
        line(f, "owners", &self.owners)?;
        writeln!(
            f,
            "{:<28} {:>8}  (photos {}, consents {})",
            "owner face templates", self.templates, self.photos, self.consents
        )?;
        line(f, "watch-list entries", &self.watchlist)?;
        writeln!(
            f,
            "{:<28} {:>8}  (expired, removed at the next retention run: {})",
            "watch-list templates", self.watchlist_templates, self.watchlist_expired
        )?;
        for (kind, h) in &self.events {
            line(f, &format!("events {kind}"), h)?;
        }
        line(f, "event faces (enrolled)", &self.event_faces)?;
        line(f, "event faces (strangers)", &self.stranger_faces)?;
        if self.snapshots.counted {
            writeln!(
                f,
                "{:<28} {:>8}  {} bytes; kept {} days; oldest day {}",
                "snapshot files",
                self.snapshots.files,
                self.snapshots.bytes,
                self.snapshots.retention_days,
                self.snapshots.oldest_day.as_deref().unwrap_or("-")
            )?;
        }
        line(f, "audit rows", &self.audit)?;
        writeln!(
            f,
            "{:<28} {:>8}  (waiting for the broker)",
            "outbox messages", self.outbox_pending
        )?;
        line(f, "outbox delivered", &self.outbox_delivered)?;
        writeln!(
            f,
            "{:<28} {:>8}",
            "erased files to delete", self.erased_files_pending
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warning_starts_at_ninety_percent() {
        assert_eq!(filing_warning(89_999), None);
        let w = filing_warning(90_000).unwrap();
        assert!(w.contains("90%") && w.contains("filing"), "{w}");
    }
}
