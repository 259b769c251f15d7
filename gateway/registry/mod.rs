//! The registry: who may enter (owners, with their consent), who to watch for
//! (the watch list), their face templates, and an audit trail of every change.
//!
//! Layout:
//! - `mod.rs`: the domain types, [`RegistryError`], and [`Registry`], the
//!   SQLite store (one file, WAL, foreign keys on).
//! - [`schema`]: the versioned migrations.
//! - `retention.rs`: [`Registry::enforce_retention`], each kind of data
//!   deleted after its period; `report.rs`: [`Registry::privacy_report`],
//!   what is held and until when.
//! - [`index`]: [`FaceIndex`], the in-memory exact 1:N cosine index.
//! - `gallery.rs`: [`Gallery`], which owns a registry and an index and keeps
//!   the index in step with every committed change.
//!
//! Privacy (PIPL treats face data as sensitive personal information):
//! - enrolment takes a [`Consent`], not an `Option`, so there is no code path
//!   that stores a face without one; a child under 14 needs a guardian on it;
//! - photos are stored only when the caller passes one; templates alone are
//!   enough to recognise;
//! - erasing a person deletes their row, consents, templates and photos in one
//!   transaction, with `secure_delete` on (freed pages are zeroed) and the WAL
//!   checkpointed and truncated afterwards, so the bytes do not linger in the
//!   file; the audit trail keeps only ids, actions and counts, never a face,
//!   a photo or a name;
//! - new database files are created readable by their owner only (unix).
//!
//! Every mutating call takes `now` and the acting staff member: there is no
//! hidden clock, so tests and replays control time.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, ToSql, Transaction, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

mod export;
mod gallery;
pub mod index;
mod report;
mod retention;
pub mod schema;
mod tokens;

pub use export::{OwnerExport, OwnerExportFiles};
pub use gallery::Gallery;
pub use index::{FaceIndex, IndexError, Match};
pub use report::{FILING_THRESHOLD, Held, PrivacyReport, SnapshotsHeld, filing_warning};
pub use retention::{Purged, RetentionPolicy};
pub use tokens::{Principal, Role, StoredToken, TokenInfo, TokenRefusal, split_token};

use crate::db::DbError;

/// Longest owner id, model id or similar key.
const MAX_ID_CHARS: usize = 64;
/// Longest name, staff name, unit and the like.
const MAX_NAME_CHARS: usize = 128;
/// Longest free text (a watch-list reason, a consent purpose).
const MAX_TEXT_CHARS: usize = 1000;
/// Largest embedding accepted; real face models use 128 to 1024.
const MAX_DIM: usize = 8192;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Everything the registry can refuse or fail at, phrased for the person who
/// has to act on it.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// SQLite failed; `context` says what we were doing.
    #[error("registry database: {context}")]
    Sqlite {
        context: Cow<'static, str>,
        #[source]
        source: rusqlite::Error,
    },
    /// Opening the database file failed (see [`crate::db`]).
    #[error(transparent)]
    Db(#[from] DbError),
    /// A file-system operation on the database file failed.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no owner with id '{0}'")]
    UnknownOwner(String),
    #[error("owner '{0}' is already enrolled; use add-face to add photos to an existing owner")]
    OwnerExists(String),
    #[error("no watch-list entry with id {0}")]
    UnknownWatchEntry(i64),
    #[error("no face template with id {0}")]
    UnknownTemplate(i64),
    /// Input that breaks a rule: the message names the field and the rule.
    #[error("{0}")]
    Invalid(String),
    #[error(
        "database schema version {found} is newer than this facegate (knows {known}); upgrade facegate"
    )]
    SchemaTooNew { found: u32, known: u32 },
    /// A stored template cannot be decoded; re-enrol that face.
    #[error("face template {id} is corrupt ({reason}); remove it and enrol the face again")]
    CorruptTemplate { id: i64, reason: String },
    /// The registry holds templates from an embedding model other than the
    /// configured one; their vectors are meaningless to the current model.
    #[error("{}", foreign_message(.found, .model_id))]
    ForeignTemplates {
        model_id: String,
        found: Vec<(String, usize)>,
    },
    #[error(transparent)]
    Index(#[from] IndexError),
}

impl RegistryError {
    /// Whether retrying the same call later may succeed (another process held
    /// the database lock for longer than the busy timeout).
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Sqlite { source, .. } => crate::db::is_busy(source),
            RegistryError::Db(err) => err.is_transient(),
            _ => false,
        }
    }
}

fn foreign_message(found: &[(String, usize)], model_id: &str) -> String {
    let count: usize = found.iter().map(|(_, n)| n).sum();
    let models: Vec<&str> = found.iter().map(|(m, _)| m.as_str()).collect();
    format!(
        "the registry holds {count} face templates made by model {}, but this gateway embeds with \
         {model_id}: re-enrol those owners (facegate owners list), or switch the config back to {}",
        models.join(", "),
        models.join(" or "),
    )
}

/// Attaches what we were doing to a SQLite error, so call sites read as
/// `.context("insert owner")?` instead of a `map_err` each.
trait Context<T> {
    fn context(self, what: &'static str) -> Result<T, RegistryError>;
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T, RegistryError>;
}

impl<T> Context<T> for Result<T, rusqlite::Error> {
    fn context(self, what: &'static str) -> Result<T, RegistryError> {
        self.map_err(|source| RegistryError::Sqlite {
            context: Cow::Borrowed(what),
            source,
        })
    }

    fn with_context(self, what: impl FnOnce() -> String) -> Result<T, RegistryError> {
        self.map_err(|source| RegistryError::Sqlite {
            context: Cow::Owned(what()),
            source,
        })
    }
}

// ---------------------------------------------------------------------------
// Closed sets stored as text
// ---------------------------------------------------------------------------

/// A string that is not one of an enum's spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} '{value}' (expected one of: {expected})")]
pub struct ParseEnumError {
    what: &'static str,
    value: String,
    expected: String,
}

impl From<ParseEnumError> for RegistryError {
    fn from(err: ParseEnumError) -> Self {
        RegistryError::Invalid(err.to_string())
    }
}

/// Defines a closed set stored as TEXT: the spelling used in SQL, JSON and the
/// CLI is the same, in one place.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseEnumError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ParseEnumError {
                        what: $what,
                        value: s.to_owned(),
                        expected: [$($text),+].join(", "),
                    }),
                }
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                value
                    .as_str()?
                    .parse()
                    .map_err(|err: ParseEnumError| FromSqlError::Other(Box::new(err)))
            }
        }
    };
}

text_enum! {
    /// Whether an owner's face opens doors. Suspension keeps the data (for a
    /// tenant away for months, say) but takes the owner out of matching.
    OwnerStatus, "owner status" {
        Active => "active",
        Suspended => "suspended",
    }
}

text_enum! {
    /// How consent was recorded; PIPL requires separate, explicit consent for
    /// sensitive personal information, and the method is evidence of it.
    ConsentMethod, "consent method" {
        Written => "written",
        Electronic => "electronic",
        VerbalRecorded => "verbal_recorded",
    }
}

text_enum! {
    /// How urgently a watch-list match is escalated. Ordered: `Low < Critical`.
    #[derive(PartialOrd, Ord)]
    Priority, "priority" {
        Low => "low",
        Normal => "normal",
        High => "high",
        Critical => "critical",
    }
}

// ---------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------

/// A point in time as stored: INTEGER unix milliseconds, UTC.
#[derive(Debug, Clone, Copy)]
struct Millis(OffsetDateTime);

impl ToSql for Millis {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        // time's range (±9999 years) is ±3.2e14 ms, far inside i64.
        let ms = (self.0.unix_timestamp_nanos() / 1_000_000) as i64;
        Ok(ToSqlOutput::from(ms))
    }
}

impl FromSql for Millis {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let ms = value.as_i64()?;
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .map(Millis)
            .map_err(|err| FromSqlError::Other(Box::new(err)))
    }
}

/// RFC 3339 for JSON, without needing time's `serde` feature.
mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer, de, ser};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.format(&Rfc3339).map_err(ser::Error::custom)?)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(d)?;
        OffsetDateTime::parse(&text, &Rfc3339).map_err(de::Error::custom)
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(
            t: &Option<OffsetDateTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<OffsetDateTime>, D::Error> {
            match Option::<String>::deserialize(d)? {
                Some(text) => OffsetDateTime::parse(&text, &Rfc3339)
                    .map(Some)
                    .map_err(de::Error::custom),
                None => Ok(None),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Domain types
// ---------------------------------------------------------------------------

/// A face embedding to store, as produced by the embedding model.
#[derive(Clone, PartialEq)]
pub struct FaceTemplate {
    /// Which model made the embedding; vectors of different models are not
    /// comparable, so this is checked at gallery start.
    pub model_id: String,
    pub embedding: Vec<f32>,
    /// The quality score of the crop it came from.
    pub quality: f32,
    /// The enrolment photo. `None` by default: templates are enough to
    /// recognise, and every stored photo is more sensitive data to protect.
    pub photo: Option<Vec<u8>>,
}

/// Never prints the embedding or the photo: logs are not a place for face data.
impl fmt::Debug for FaceTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaceTemplate")
            .field("model_id", &self.model_id)
            .field("dim", &self.embedding.len())
            .field("quality", &self.quality)
            .field("photo_bytes", &self.photo.as_ref().map(Vec::len))
            .finish()
    }
}

/// A new owner as entered by estate staff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOwner {
    /// The estate's own owner id (as staff know it), not a generated one.
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub building: Option<String>,
    #[serde(default)]
    pub unit: Option<String>,
    /// The community grid (网格) code used by the local authority.
    #[serde(default)]
    pub grid_code: Option<String>,
    /// Under 14, PIPL treats all of the child's data as sensitive and needs a
    /// guardian's consent.
    #[serde(default)]
    pub minor_under_14: bool,
}

/// A consent record given at enrolment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    #[serde(with = "rfc3339")]
    pub given_at: OffsetDateTime,
    pub method: ConsentMethod,
    /// The staff member who took the consent.
    pub taken_by: String,
    #[serde(default)]
    pub guardian_name: Option<String>,
    #[serde(default)]
    pub guardian_relation: Option<String>,
    #[serde(default = "default_purpose")]
    pub purpose: String,
}

impl Consent {
    /// The purpose named to the owner unless staff wrote another.
    pub const DEFAULT_PURPOSE: &'static str = "estate access by face";

    /// A consent for an adult with the default purpose.
    pub fn new(given_at: OffsetDateTime, method: ConsentMethod, taken_by: &str) -> Self {
        Self {
            given_at,
            method,
            taken_by: taken_by.to_owned(),
            guardian_name: None,
            guardian_relation: None,
            purpose: Self::DEFAULT_PURPOSE.to_owned(),
        }
    }
}

fn default_purpose() -> String {
    Consent::DEFAULT_PURPOSE.to_owned()
}

/// A stored consent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsentRecord {
    pub id: i64,
    #[serde(with = "rfc3339")]
    pub given_at: OffsetDateTime,
    pub method: ConsentMethod,
    pub taken_by: String,
    pub guardian_name: Option<String>,
    pub guardian_relation: Option<String>,
    pub purpose: String,
    #[serde(with = "rfc3339::option")]
    pub withdrawn_at: Option<OffsetDateTime>,
}

/// An owner's own fields, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub id: String,
    pub name: String,
    pub building: Option<String>,
    pub unit: Option<String>,
    pub grid_code: Option<String>,
    pub status: OwnerStatus,
    pub minor_under_14: bool,
    #[serde(with = "rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// What is known about one stored template, without its vector or photo.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemplateInfo {
    pub id: i64,
    pub model_id: String,
    pub dim: usize,
    pub quality: Option<f32>,
    pub has_photo: bool,
    #[serde(with = "rfc3339")]
    pub created_at: OffsetDateTime,
}

/// An owner with their consents and templates, for `owners show`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OwnerRecord {
    #[serde(flatten)]
    pub owner: Owner,
    pub consents: Vec<ConsentRecord>,
    pub templates: Vec<TemplateInfo>,
}

impl OwnerRecord {
    pub fn template_count(&self) -> usize {
        self.templates.len()
    }
}

/// One line of `owners list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OwnerSummary {
    #[serde(flatten)]
    pub owner: Owner,
    pub template_count: usize,
}

/// Which owners `owners` lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerFilter {
    /// Substring (case-insensitive for ASCII) of id, name, building or unit.
    pub search: Option<String>,
    pub status: Option<OwnerStatus>,
    pub limit: usize,
    pub offset: usize,
}

impl Default for OwnerFilter {
    /// The first 100 owners by id: a page, not the whole estate.
    fn default() -> Self {
        Self {
            search: None,
            status: None,
            limit: 100,
            offset: 0,
        }
    }
}

/// Changes to an owner's descriptive fields. `None` leaves a field alone;
/// `Some(None)` clears an optional one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerPatch {
    pub name: Option<String>,
    pub building: Option<Option<String>>,
    pub unit: Option<Option<String>>,
    pub grid_code: Option<Option<String>>,
}

impl OwnerPatch {
    fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.building.is_none()
            && self.unit.is_none()
            && self.grid_code.is_none()
    }

    /// Names of the fields this patch sets, for the audit trail (values are
    /// personal data and stay out of it).
    fn field_names(&self) -> Vec<&'static str> {
        [
            ("name", self.name.is_some()),
            ("building", self.building.is_some()),
            ("unit", self.unit.is_some()),
            ("grid_code", self.grid_code.is_some()),
        ]
        .into_iter()
        .filter_map(|(field, set)| set.then_some(field))
        .collect()
    }
}

/// A new watch-list entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewWatchEntry {
    pub name: String,
    /// Why this person is watched for; shown to the guard with the alert.
    pub reason: String,
    pub priority: Priority,
    /// After this instant the entry stops matching; `None` never expires.
    #[serde(default, with = "rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// A stored watch-list entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchEntry {
    pub id: i64,
    pub name: String,
    pub reason: String,
    pub priority: Priority,
    #[serde(with = "rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    pub created_by: String,
    #[serde(with = "rfc3339")]
    pub created_at: OffsetDateTime,
    pub template_count: usize,
    /// Whether `expires_at` had passed at the `now` the list was read with.
    pub expired: bool,
}

/// Who a template belongs to, as a match reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Subject {
    Owner {
        id: String,
        name: String,
    },
    Watch {
        id: i64,
        name: String,
        priority: Priority,
    },
}

impl Subject {
    pub fn key(&self) -> SubjectKey {
        match self {
            Subject::Owner { id, .. } => SubjectKey::Owner(id.clone()),
            Subject::Watch { id, .. } => SubjectKey::Watch(*id),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Subject::Owner { name, .. } | Subject::Watch { name, .. } => name,
        }
    }
}

/// A subject's identity without its display fields.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum SubjectKey {
    Owner(String),
    Watch(i64),
}

impl SubjectKey {
    /// How the audit trail names the subject: the owner id, or `watch:<id>`.
    fn audit_name(&self) -> String {
        match self {
            SubjectKey::Owner(id) => id.clone(),
            SubjectKey::Watch(id) => format!("watch:{id}"),
        }
    }
}

/// A template ready for matching: whose it is and its decoded vector.
#[derive(Clone, PartialEq)]
pub struct StoredTemplate {
    pub template_id: i64,
    pub subject: Subject,
    pub model_id: String,
    pub embedding: Vec<f32>,
}

/// Never prints the embedding.
impl fmt::Debug for StoredTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredTemplate")
            .field("template_id", &self.template_id)
            .field("subject", &self.subject.key())
            .field("model_id", &self.model_id)
            .field("dim", &self.embedding.len())
            .finish()
    }
}

/// One audit row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    #[serde(with = "rfc3339")]
    pub ts: OffsetDateTime,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: Option<serde_json::Value>,
}

text_enum! {
    /// Why a person is erased; recorded in the audit trail. A withdrawal of
    /// consent is an erasure (PIPL Art. 15, 47): same path, same result.
    ErasureReason, "erasure reason" {
        Request => "request",
        ConsentWithdrawn => "consent_withdrawn",
    }
}

/// What an erasure removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Erasure {
    /// Events that named the person (with their face embeddings).
    pub events: usize,
    pub event_faces: usize,
    /// Messages of those events still waiting for the broker.
    pub outbox_messages: usize,
    /// Snapshot files deleted after the commit...
    pub snapshot_files_deleted: usize,
    /// ...and those left for the retention task (data directory unknown to
    /// this registry, or the deletion failed).
    pub snapshot_files_pending: usize,
}

// ---------------------------------------------------------------------------
// Validation (pure)
// ---------------------------------------------------------------------------

fn invalid(message: impl Into<String>) -> RegistryError {
    RegistryError::Invalid(message.into())
}

/// A key: non-empty, at most 64 characters, no control characters and no
/// surrounding spaces (so "A-101" and "A-101 " cannot be two owners).
fn check_id(what: &str, value: &str) -> Result<(), RegistryError> {
    if value.is_empty() {
        return Err(invalid(format!("{what} is empty")));
    }
    if value.chars().count() > MAX_ID_CHARS {
        return Err(invalid(format!(
            "{what} is longer than {MAX_ID_CHARS} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(format!("{what} contains control characters")));
    }
    if value.trim() != value {
        return Err(invalid(format!(
            "{what} '{value}' has leading or trailing spaces"
        )));
    }
    Ok(())
}

/// Human text: not blank, bounded, no control characters.
fn check_text(what: &str, value: &str, max_chars: usize) -> Result<(), RegistryError> {
    if value.trim().is_empty() {
        return Err(invalid(format!("{what} is empty")));
    }
    if value.chars().count() > max_chars {
        return Err(invalid(format!(
            "{what} is longer than {max_chars} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(format!("{what} contains control characters")));
    }
    Ok(())
}

fn check_optional_text(
    what: &str,
    value: Option<&str>,
    max_chars: usize,
) -> Result<(), RegistryError> {
    value.map_or(Ok(()), |value| check_text(what, value, max_chars))
}

fn check_actor(actor: &str) -> Result<(), RegistryError> {
    check_text("actor", actor, MAX_NAME_CHARS)
}

impl NewOwner {
    /// Checks the fields a person typed.
    pub fn validate(&self) -> Result<(), RegistryError> {
        check_id("owner id", &self.id)?;
        check_text("owner name", &self.name, MAX_NAME_CHARS)?;
        check_optional_text("building", self.building.as_deref(), MAX_NAME_CHARS)?;
        check_optional_text("unit", self.unit.as_deref(), MAX_NAME_CHARS)?;
        check_optional_text("grid code", self.grid_code.as_deref(), MAX_ID_CHARS)
    }
}

impl Consent {
    /// Checks the record; `minor_under_14` is the owner's flag, because a
    /// child's consent must come from a guardian.
    pub fn validate(&self, minor_under_14: bool) -> Result<(), RegistryError> {
        check_text("consent taken_by", &self.taken_by, MAX_NAME_CHARS)?;
        check_text("consent purpose", &self.purpose, MAX_TEXT_CHARS)?;
        check_optional_text(
            "consent guardian_name",
            self.guardian_name.as_deref(),
            MAX_NAME_CHARS,
        )?;
        check_optional_text(
            "consent guardian_relation",
            self.guardian_relation.as_deref(),
            MAX_NAME_CHARS,
        )?;
        if minor_under_14 && self.guardian_name.is_none() {
            return Err(invalid(
                "the owner is under 14: the consent must name the guardian who gave it (guardian_name)",
            ));
        }
        Ok(())
    }
}

impl NewWatchEntry {
    pub fn validate(&self) -> Result<(), RegistryError> {
        check_text("watch-list name", &self.name, MAX_NAME_CHARS)?;
        check_text("watch-list reason", &self.reason, MAX_TEXT_CHARS)
    }
}

impl OwnerPatch {
    fn validate(&self) -> Result<(), RegistryError> {
        if self.is_empty() {
            return Err(invalid("nothing to change: the update names no field"));
        }
        if let Some(name) = &self.name {
            check_text("owner name", name, MAX_NAME_CHARS)?;
        }
        check_optional_text(
            "building",
            self.building.clone().flatten().as_deref(),
            MAX_NAME_CHARS,
        )?;
        check_optional_text(
            "unit",
            self.unit.clone().flatten().as_deref(),
            MAX_NAME_CHARS,
        )?;
        check_optional_text(
            "grid code",
            self.grid_code.clone().flatten().as_deref(),
            MAX_ID_CHARS,
        )
    }
}

/// Checks each face on its own (1-based numbers in messages, as staff count).
/// Dimension agreement with stored templates is checked inside the write
/// transaction, where it cannot race another writer.
fn check_faces(faces: &[FaceTemplate]) -> Result<(), RegistryError> {
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
fn encode_embedding(embedding: &[f32]) -> Vec<u8> {
    embedding.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Decodes a stored embedding, refusing a length that disagrees with `dim`
/// or a value that is not finite: either would poison matching silently.
fn decode_embedding(id: i64, dim: i64, blob: &[u8]) -> Result<Vec<f32>, RegistryError> {
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

// ---------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------

/// The SQLite registry. Reads take `&self`, writes `&mut self`; each write is
/// one transaction that either commits whole or leaves nothing behind.
///
/// Prefer going through [`Gallery`] in the gateway, so the in-memory index
/// follows every change.
#[derive(Debug)]
pub struct Registry {
    conn: Connection,
    /// `storage.data_dir`, where snapshot files live; see
    /// [`Registry::with_snapshot_dir`].
    snapshot_dir: Option<PathBuf>,
    /// Similarity at or above which an unnamed event's face is taken as an
    /// erased owner's (see [`Registry::with_erase_similarity`]).
    erase_similarity: f32,
}

/// The shipped `matching.threshold`: an erasure also removes the unnamed
/// events (stranger, undecided) whose face matches the owner at it.
pub const DEFAULT_ERASE_SIMILARITY: f32 = 0.40;

/// Whose templates a write is about.
#[derive(Debug, Clone, Copy)]
enum Holder<'a> {
    Owner(&'a str),
    Watch(i64),
}

impl Registry {
    /// Opens (creating if needed) the database at `path` and migrates it.
    ///
    /// The parent directory must exist: creating it would hide a typo in the
    /// configured path.
    pub fn open(path: &Path) -> Result<Self, RegistryError> {
        Ok(Self {
            conn: schema::open(path)?,
            snapshot_dir: None,
            erase_similarity: DEFAULT_ERASE_SIMILARITY,
        })
    }

    /// A throwaway registry, for tests and dry runs.
    pub fn open_in_memory() -> Result<Self, RegistryError> {
        let mut conn = crate::db::open_in_memory()?;
        schema::migrate(&mut conn)?;
        Ok(Self {
            conn,
            snapshot_dir: None,
            erase_similarity: DEFAULT_ERASE_SIMILARITY,
        })
    }

    /// Where event snapshots live (`storage.data_dir`): an erasure deletes
    /// the erased person's snapshot files there right after its commit.
    /// Without it they wait in `erased_files` for the retention task.
    pub fn with_snapshot_dir(mut self, data_dir: &Path) -> Self {
        self.snapshot_dir = Some(data_dir.to_owned());
        self
    }

    /// The gateway's `matching.threshold`: an erasure removes, besides the
    /// events naming the owner, the unnamed events (a stranger alert or an
    /// `undecided` from before they enrolled, or while suspended) whose
    /// stored face matches one of the owner's templates at this similarity.
    /// At the threshold a look-alike's capture may go too: for erasure,
    /// deleting one capture too many is the right error.
    pub fn with_erase_similarity(mut self, similarity: f32) -> Self {
        self.erase_similarity = similarity;
        self
    }

    /// See [`Registry::with_erase_similarity`].
    pub fn set_erase_similarity(&mut self, similarity: f32) {
        self.erase_similarity = similarity;
    }

    /// The database's schema version (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<u32, RegistryError> {
        schema::current_version(&self.conn)
    }

    fn write(&mut self, what: &'static str) -> Result<Transaction<'_>, RegistryError> {
        // IMMEDIATE: take the write lock now, so a concurrent writer makes us
        // wait (busy_timeout) instead of failing half-way on lock upgrade.
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(what)
    }

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

    fn read_templates(
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

    /// The newest `limit` audit rows, newest first.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, RegistryError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, ts, actor, action, subject, detail FROM audit
                 ORDER BY id DESC LIMIT ?1",
            )
            .context("prepare audit query")?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        stmt.query_map([limit], |row| {
            let detail: Option<String> = row.get(5)?;
            let detail = detail
                .map(|text| serde_json::from_str(&text))
                .transpose()
                .map_err(|err| {
                    rusqlite::Error::FromSqlConversionFailure(
                        5,
                        rusqlite::types::Type::Text,
                        Box::new(err),
                    )
                })?;
            Ok(AuditEntry {
                id: row.get(0)?,
                ts: row.get::<_, Millis>(1)?.0,
                actor: row.get(2)?,
                action: row.get(3)?,
                subject: row.get(4)?,
                detail,
            })
        })
        .and_then(Iterator::collect)
        .context("read audit log")
    }

    /// Copies the WAL into the main file and truncates it, so deleted face
    /// data does not linger in the WAL after an erasure. Best effort: a
    /// reader in another process can keep the checkpoint from completing,
    /// and the next one will finish the job.
    fn checkpoint(&self) {
        match crate::db::checkpoint(&self.conn) {
            Ok(true) => {}
            Ok(false) => tracing::warn!("WAL checkpoint after an erasure was blocked by a reader"),
            Err(err) => tracing::warn!(error = %err, "WAL checkpoint after an erasure failed"),
        }
    }
}

/// Owner columns in the order [`owner_from_row`] reads them.
const OWNER_COLUMNS: &str =
    "id, name, building, unit, grid_code, status, minor_under_14, created_at, updated_at";

/// Templates of active owners with at least one unwithdrawn consent. The
/// consent condition is belt and braces: processing face data needs consent,
/// so a withdrawn consent must stop matching even before the data is erased.
const ACTIVE_OWNER_TEMPLATES: &str = "
    SELECT t.id, t.model_id, t.dim, t.embedding, o.id, NULL, o.name, NULL
    FROM templates t JOIN owners o ON o.id = t.owner_id
    WHERE o.status = 'active'
      AND EXISTS (SELECT 1 FROM consents c WHERE c.owner_id = o.id AND c.withdrawn_at IS NULL)";

/// Templates of watch-list entries that have not expired at `:now`.
const ACTIVE_WATCH_TEMPLATES: &str = "
    SELECT t.id, t.model_id, t.dim, t.embedding, NULL, w.id, w.name, w.priority
    FROM templates t JOIN watchlist w ON w.id = t.watch_id
    WHERE (w.expires_at IS NULL OR w.expires_at > :now)";

fn owner_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Owner> {
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

/// Reads columns 4..=7 of the template queries: owner id, watch id, name,
/// priority.
fn subject_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Subject> {
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

/// Events naming owner `?1`: by column, or in the body (`?2`, see
/// [`owner_needle`]) of an event whose columns a later revision rewrote.
const NAMES_OWNER: &str = "(subject_kind = 'owner' AND subject_id = ?1) OR instr(body, ?2) > 0";

/// How an event body names owner `id` (`Subject`'s JSON: tag, then id).
fn owner_needle(id: &str) -> String {
    format!("\"kind\":\"owner\",\"id\":{}", serde_json::Value::from(id))
}

/// What [`erase_owner_events`] removed.
struct ErasedEvents {
    events: usize,
    faces: usize,
    outbox: usize,
    files: Vec<String>,
}

/// Events naming owner `id` (by column, or in the body of an event whose
/// columns were rewritten by a later revision): deleted with their faces
/// and undelivered outbox messages (`<event id>`, `<event id>.r<n>`,
/// `<event id>.open`); their snapshot paths queued in `erased_files`.
fn erase_owner_events(
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
fn unnamed_events_matching(
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
fn erase_events(
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
fn inside(dir: &Path, rel: &str) -> Option<PathBuf> {
    let rel = Path::new(rel);
    rel.components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
        .then(|| dir.join(rel))
}

/// Escapes `%`, `_` and `\` so a search for "10_1" does not match "1041".
fn like_pattern(search: &str) -> String {
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

fn owner_exists(conn: &Connection, id: &str) -> Result<bool, RegistryError> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM owners WHERE id = ?1)",
        [id],
        |row| row.get(0),
    )
    .context("look up owner")
}

fn touch_owner(conn: &Connection, id: &str, now: OffsetDateTime) -> Result<(), RegistryError> {
    conn.execute(
        "UPDATE owners SET updated_at = ?2 WHERE id = ?1",
        params![id, Millis(now)],
    )
    .context("update owner timestamp")
    .map(drop)
}

/// Inserts the faces for `holder`, checking each one's dimension against the
/// templates of the same model already stored (including those inserted a
/// moment earlier in this transaction), so one model never has two sizes.
fn insert_templates(
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

/// Appends an audit row. Callers build `detail` from ids and counts only:
/// never an embedding, a photo or a name.
fn audit(
    conn: &Connection,
    now: OffsetDateTime,
    actor: &str,
    action: &str,
    subject: &str,
    detail: serde_json::Value,
) -> Result<(), RegistryError> {
    conn.execute(
        "INSERT INTO audit (ts, actor, action, subject, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![Millis(now), actor, action, subject, detail.to_string()],
    )
    .context("write audit row")
    .map(drop)
}

#[cfg(test)]
mod tests;
