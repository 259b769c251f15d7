//! The registry: who may enter (owners, with their consent), who to watch for
//! (the watch list), their face templates, and an audit trail of every change.
//!
//! Layout:
//! - `mod.rs`: the domain types, their validation, [`RegistryError`], and
//!   [`Registry`], the SQLite store (one file, WAL, foreign keys on): opening,
//!   transactions, the audit trail.
//! - `owners.rs`: enrolment, faces, reads, status and field changes;
//!   `watchlist.rs`: the watch list; `templates.rs`: template validation,
//!   encoding and the reads behind the index; `erasure.rs`: erasing an
//!   owner and every trace of them; `export.rs`: an owner's copy of their
//!   data; `tokens.rs`: API tokens.
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

mod erasure;
mod export;
mod gallery;
pub mod index;
mod owners;
mod report;
mod retention;
pub mod schema;
mod templates;
mod tokens;
mod watchlist;

use erasure::*;
use owners::*;
use templates::*;

pub(crate) use export::image_type;
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
