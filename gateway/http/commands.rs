//! Commands from the command centre: `watchlist_add`, `watchlist_remove`,
//! `gate_open`, `status`.
//!
//! A command is a JSON envelope `{"signed": "<JSON text>", "sig": "<hex>"}`
//! where `sig = hex(HMAC-SHA256(command_secret, utf8(signed)))` and
//! `signed` parses to `{"cmd", "site", "ts", "nonce", "args"}`. The check
//! order is fixed: retained → envelope JSON → signature → inner JSON →
//! cmd/site match the topic → freshness (age and clock skew) → nonce not
//! used → arguments. A command refused at any step changes nothing but the
//! reply; its nonce is recorded only once the signature and time were good
//! (so junk cannot fill the nonce table).
//!
//! Nonces are recorded on disk ([`NonceStore`], in the outbox database)
//! before the command acts, until the command could no longer pass the age
//! check: a replay is refused after a restart too, whatever its timestamp.
//!
//! Running a command is split in two so that nothing waits behind the face
//! models: [`CommandHandler::check`] verifies, records the nonce and runs
//! the cheap commands; a `watchlist_add` comes back as a [`PhotoJob`] that
//! [`WatchAdder::run`] embeds and stores, on a thread of its own (see
//! `publisher.rs`). [`CommandHandler::handle`] does both in line (tests,
//! tools).

use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::events::OutboxMessage;
use crate::publish::config::{MqttConfig, Secret};
use crate::publish::outbox::{NonceClaim, NonceStore, Outbox};
use crate::publish::payload::{GateOpenCause, PAYLOAD_SCHEMA, Topics, fmt_ts, gate_open_message};
use crate::publish::{PublishError, sign};
use crate::registry::{FaceTemplate, Gallery, NewWatchEntry, Priority};

/// Turns a photo (JPEG/PNG bytes) into a face template of the gallery's
/// model. The gateway wires [`engine_embedder`]; tests may wire anything.
pub type EmbedFn = Box<dyn FnMut(&[u8]) -> Result<FaceTemplate, String> + Send>;

/// Live nonces kept at most; beyond this, commands are refused as busy
/// (an eviction could let a replay through).
const MAX_NONCES: usize = 10_000;
/// Largest photo accepted in a `watchlist_add`, decoded bytes.
const MAX_PHOTO_BYTES: usize = 8 * 1024 * 1024;

/// Why a command was refused (`code` in the reply) and in words (`error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("retained command refused: commands must be published with retain=false")]
    Retained,
    #[error("malformed command: {0}")]
    Malformed(String),
    #[error("bad signature")]
    BadSignature,
    #[error("command addressed to {0}")]
    WrongTarget(String),
    #[error("stale command: signed {age_s} s ago, more than {max_s} s")]
    Stale { age_s: i64, max_s: i64 },
    #[error(
        "command signed {ahead_s} s in the future by this gateway's clock, more than the {max_s} s of clock skew allowed (mqtt.command_max_skew_s): check both clocks"
    )]
    Future { ahead_s: i64, max_s: i64 },
    #[error("replayed nonce: this command was already received")]
    Replayed,
    #[error("too many commands in the last {0} s; sign it again later with a fresh nonce")]
    Busy(i64),
    #[error("busy: {max} {queue} are waiting already; sign it again later with a fresh nonce")]
    QueueFull { queue: &'static str, max: usize },
    #[error("unknown command '{0}' (known: watchlist_add, watchlist_remove, gate_open, status)")]
    Unknown(String),
    #[error("invalid arguments: {0}")]
    InvalidArgs(String),
    #[error("{0}")]
    Failed(String),
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Retained => "retained",
            Refusal::Malformed(_) => "malformed",
            Refusal::BadSignature => "bad_signature",
            Refusal::WrongTarget(_) => "wrong_target",
            Refusal::Stale { .. } | Refusal::Future { .. } => "stale",
            Refusal::Replayed => "replayed",
            Refusal::Busy(_) | Refusal::QueueFull { .. } => "busy",
            Refusal::Unknown(_) => "unknown_command",
            Refusal::InvalidArgs(_) => "invalid_args",
            Refusal::Failed(_) => "failed",
        }
    }
}

/// What handling one command produced.
#[derive(Debug, Clone)]
pub struct CommandOutcome {
    pub name: String,
    pub reply_topic: String,
    pub reply: Vec<u8>,
    /// The command was executed successfully.
    pub ok: bool,
    /// Messages to queue in the outbox (a gate open).
    pub enqueue: Vec<OutboxMessage>,
}

/// Builds command replies; cheap to clone, so every lane can answer.
#[derive(Debug, Clone)]
pub struct Replier {
    topics: Topics,
    site: String,
    offset: UtcOffset,
}

impl Replier {
    fn new(cfg: &MqttConfig, site: &str) -> Self {
        Self {
            topics: Topics::new(&cfg.prefix, site),
            site: site.to_owned(),
            offset: cfg.offset(),
        }
    }

    /// The reply to command `name` (nonce known once the signature was good).
    pub fn reply(
        &self,
        name: &str,
        nonce: Option<&str>,
        result: Result<Value, Refusal>,
        now: OffsetDateTime,
        enqueue: Vec<OutboxMessage>,
    ) -> CommandOutcome {
        let (ok, result, error) = match result {
            Ok(v) => (true, Some(v), None),
            Err(r) => {
                tracing::warn!(cmd = %name, code = r.code(), reason = %r, "command refused");
                (false, None, Some(r))
            }
        };
        let reply = json!({
            "schema": PAYLOAD_SCHEMA,
            "id": format!("reply-{}", nonce.map_or_else(sign::nonce, str::to_owned)),
            "kind": "command_reply",
            "site": self.site,
            "cmd": name,
            "nonce": nonce,
            "ok": ok,
            "code": error.as_ref().map(Refusal::code),
            "error": error.as_ref().map(ToString::to_string),
            "result": result,
            "ts": fmt_ts(now, self.offset),
        });
        CommandOutcome {
            name: name.to_owned(),
            reply_topic: self.topics.command_reply(name),
            reply: reply.to_string().into_bytes(),
            ok,
            enqueue: if ok { enqueue } else { Vec::new() },
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    signed: String,
    sig: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Signed {
    cmd: String,
    site: String,
    ts: String,
    nonce: String,
    #[serde(default)]
    args: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchAddArgs {
    name: String,
    reason: String,
    #[serde(default = "normal")]
    priority: Priority,
    #[serde(default)]
    expires_at: Option<String>,
    /// Base64 (standard alphabet) JPEG or PNG.
    photo: String,
    #[serde(default)]
    by: Option<String>,
}

fn normal() -> Priority {
    Priority::Normal
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchRemoveArgs {
    id: i64,
    #[serde(default)]
    by: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GateOpenArgs {
    gate: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    by: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// A verified `watchlist_add` (nonce recorded) whose photo still has to be
/// embedded: the slow part, run by [`WatchAdder::run`].
#[derive(Debug)]
pub struct PhotoJob {
    nonce: String,
    args: WatchAddArgs,
    received: OffsetDateTime,
}

impl PhotoJob {
    pub fn nonce(&self) -> &str {
        &self.nonce
    }
}

/// What [`CommandHandler::check`] leaves to do.
#[derive(Debug)]
pub enum Checked {
    /// Answered (refused, or a cheap command run).
    Done(CommandOutcome),
    /// A `watchlist_add` for the photo lane.
    Photo(PhotoJob),
}

/// Runs `watchlist_add`: embeds the photo (the face models) and adds the
/// entry. Owns the embedder; lives on a thread of its own in the gateway.
pub struct WatchAdder {
    replier: Replier,
    gallery: Arc<Mutex<Gallery>>,
    embed: EmbedFn,
}

impl std::fmt::Debug for WatchAdder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchAdder").finish_non_exhaustive()
    }
}

impl WatchAdder {
    /// Embeds, stores and answers one job.
    pub fn run(&mut self, job: PhotoJob) -> CommandOutcome {
        let result = self.add(job.args, job.received);
        self.replier.reply(
            "watchlist_add",
            Some(&job.nonce),
            result,
            OffsetDateTime::now_utc(),
            Vec::new(),
        )
    }

    fn add(&mut self, a: WatchAddArgs, now: OffsetDateTime) -> Result<Value, Refusal> {
        let expires_at = a
            .expires_at
            .as_deref()
            .map(|t| {
                OffsetDateTime::parse(t, &Rfc3339)
                    .map_err(|e| Refusal::InvalidArgs(format!("expires_at '{t}': {e}")))
            })
            .transpose()?;
        let entry = NewWatchEntry {
            name: a.name,
            reason: a.reason,
            priority: a.priority,
            expires_at,
        };
        entry
            .validate()
            .map_err(|e| Refusal::InvalidArgs(e.to_string()))?;
        if a.photo.len() > MAX_PHOTO_BYTES * 4 / 3 + 4 {
            return Err(Refusal::InvalidArgs(format!(
                "photo larger than {MAX_PHOTO_BYTES} bytes"
            )));
        }
        let photo = base64::engine::general_purpose::STANDARD
            .decode(a.photo.as_bytes())
            .map_err(|e| Refusal::InvalidArgs(format!("photo: not base64: {e}")))?;
        // The models run here, before the gallery lock is taken.
        let template =
            (self.embed)(&photo).map_err(|e| Refusal::InvalidArgs(format!("photo: {e}")))?;
        let actor = actor(a.by.as_deref());
        let id = self
            .gallery
            .lock()
            .map_err(|_| Refusal::Failed("gallery lock poisoned".into()))?
            .watchlist_add(&entry, std::slice::from_ref(&template), &actor, now)
            .map_err(|e| Refusal::Failed(e.to_string()))?;
        tracing::info!(watch_id = id, priority = %entry.priority, actor = %actor, "watch-list entry added by command");
        Ok(json!({ "watch_id": id }))
    }
}

/// Checks commands and runs the cheap ones; owns the nonce store.
pub struct CommandHandler {
    replier: Replier,
    site: String,
    cfg: MqttConfig,
    secret: Secret,
    max_age: time::Duration,
    max_skew: time::Duration,
    /// Opened by [`crate::publish::start`] on the outbox database, or by
    /// [`CommandHandler::with_nonce_store`].
    nonces: Option<NonceStore>,
    gallery: Arc<Mutex<Gallery>>,
    /// Taken by the publisher for its photo lane.
    adder: Option<WatchAdder>,
}

impl std::fmt::Debug for CommandHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandHandler")
            .field("site", &self.site)
            .finish_non_exhaustive()
    }
}

impl CommandHandler {
    /// Needs `mqtt.command_secret` set and readable.
    pub fn new(
        cfg: &MqttConfig,
        site: &str,
        gallery: Arc<Mutex<Gallery>>,
        embed: EmbedFn,
    ) -> Result<Self, PublishError> {
        let secret = match cfg.command_secret() {
            Some(s) => s.map_err(PublishError::Config)?,
            None => {
                return Err(PublishError::Config(
                    "mqtt.command_secret: not set; commands need a shared secret".into(),
                ));
            }
        };
        let replier = Replier::new(cfg, site);
        Ok(Self {
            replier: replier.clone(),
            site: site.to_owned(),
            cfg: cfg.clone(),
            secret,
            max_age: time::Duration::seconds(cfg.command_max_age_s as i64),
            max_skew: time::Duration::seconds(cfg.command_max_skew_s as i64),
            nonces: None,
            adder: Some(WatchAdder {
                replier,
                gallery: gallery.clone(),
                embed,
            }),
            gallery,
        })
    }

    /// Records nonces in `store` (the publisher opens one on the outbox
    /// database); without one every command is refused.
    pub fn with_nonce_store(mut self, store: NonceStore) -> Self {
        self.nonces = Some(store);
        self
    }

    pub(crate) fn has_nonce_store(&self) -> bool {
        self.nonces.is_some()
    }

    pub fn topics(&self) -> &Topics {
        &self.replier.topics
    }

    pub fn replier(&self) -> &Replier {
        &self.replier
    }

    /// The photo lane's part; `None` once taken.
    pub fn take_adder(&mut self) -> Option<WatchAdder> {
        self.adder.take()
    }

    /// Checks and runs one command received on `cmd/<name>` in line,
    /// photo included; `status` is what a `status` command answers.
    pub fn handle(
        &mut self,
        name: &str,
        payload: &[u8],
        retained: bool,
        now: OffsetDateTime,
        status: &Value,
    ) -> CommandOutcome {
        match self.check(name, payload, retained, now, status) {
            Checked::Done(o) => o,
            Checked::Photo(job) => match self.adder.as_mut() {
                Some(adder) => adder.run(job),
                None => self.replier.reply(
                    name,
                    Some(&job.nonce),
                    Err(Refusal::Failed("no photo lane".into())),
                    now,
                    Vec::new(),
                ),
            },
        }
    }

    /// Verifies one command and records its nonce; runs it unless it is a
    /// `watchlist_add` (returned as a [`PhotoJob`]). Never runs the models.
    pub fn check(
        &mut self,
        name: &str,
        payload: &[u8],
        retained: bool,
        now: OffsetDateTime,
        status: &Value,
    ) -> Checked {
        let mut nonce = None;
        let mut enqueue = Vec::new();
        let result = self.check_and_run(
            name,
            payload,
            retained,
            now,
            status,
            &mut nonce,
            &mut enqueue,
        );
        match result {
            Ok(Run::Photo(args)) => Checked::Photo(PhotoJob {
                nonce: nonce.unwrap_or_default(),
                args,
                received: now,
            }),
            Ok(Run::Done(v)) => {
                Checked::Done(
                    self.replier
                        .reply(name, nonce.as_deref(), Ok(v), now, enqueue),
                )
            }
            Err(r) => {
                Checked::Done(
                    self.replier
                        .reply(name, nonce.as_deref(), Err(r), now, Vec::new()),
                )
            }
        }
    }

    /// Whether the signed time is acceptable at `now`.
    fn fresh(&self, ts: OffsetDateTime, now: OffsetDateTime) -> Result<(), Refusal> {
        let age = now - ts;
        if age > self.max_age {
            return Err(Refusal::Stale {
                age_s: age.whole_seconds(),
                max_s: self.max_age.whole_seconds(),
            });
        }
        if -age > self.max_skew {
            return Err(Refusal::Future {
                ahead_s: (-age).whole_seconds(),
                max_s: self.max_skew.whole_seconds(),
            });
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn check_and_run(
        &mut self,
        name: &str,
        payload: &[u8],
        retained: bool,
        now: OffsetDateTime,
        status: &Value,
        nonce_out: &mut Option<String>,
        enqueue: &mut Vec<OutboxMessage>,
    ) -> Result<Run, Refusal> {
        if retained {
            return Err(Refusal::Retained);
        }
        let env: Envelope = serde_json::from_slice(payload).map_err(|e| {
            Refusal::Malformed(format!(
                "expected {{\"signed\": \"...\", \"sig\": \"...\"}}: {e}"
            ))
        })?;
        if !sign::verify_hex(&self.secret, env.signed.as_bytes(), &env.sig) {
            return Err(Refusal::BadSignature);
        }
        let s: Signed = serde_json::from_str(&env.signed)
            .map_err(|e| Refusal::Malformed(format!("signed: {e}")))?;
        if s.cmd != name || s.site != self.site {
            return Err(Refusal::WrongTarget(format!(
                "site '{}' command '{}', received on site '{}' topic cmd/{name}",
                s.site, s.cmd, self.site
            )));
        }
        if s.nonce.len() < 8
            || s.nonce.len() > 128
            || !s
                .nonce
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Refusal::Malformed(
                "nonce: 8-128 ASCII letters, digits, '-' or '_'".into(),
            ));
        }
        *nonce_out = Some(s.nonce.clone());
        let ts = OffsetDateTime::parse(&s.ts, &Rfc3339)
            .map_err(|e| Refusal::Malformed(format!("ts '{}': not RFC 3339: {e}", s.ts)))?;
        self.fresh(ts, now)?;
        // Kept until the command would be stale anyway (one second more:
        // the age check keeps a command of exactly max_age).
        let until = ts + self.max_age + time::Duration::seconds(1);
        let Some(store) = &self.nonces else {
            return Err(Refusal::Failed(
                "no nonce store: commands cannot be checked for replays".into(),
            ));
        };
        match store.claim(&s.nonce, until, now, MAX_NONCES) {
            Ok(NonceClaim::Fresh) => {}
            Ok(NonceClaim::Used) => return Err(Refusal::Replayed),
            Ok(NonceClaim::Full) => return Err(Refusal::Busy(self.max_age.whole_seconds())),
            Err(e) => {
                tracing::error!(error = %e, "cannot record a command nonce; command refused");
                return Err(Refusal::Failed(format!("cannot record the nonce: {e}")));
            }
        }
        match name {
            "status" => {
                parse_args::<NoArgs>(s.args)?;
                Ok(Run::Done(status.clone()))
            }
            "watchlist_add" => Ok(Run::Photo(parse_args(s.args)?)),
            "watchlist_remove" => {
                let a: WatchRemoveArgs = parse_args(s.args)?;
                let actor = actor(a.by.as_deref());
                self.gallery
                    .lock()
                    .map_err(|_| Refusal::Failed("gallery lock poisoned".into()))?
                    .watchlist_remove(a.id, &actor, now)
                    .map_err(|e| Refusal::Failed(e.to_string()))?;
                tracing::info!(watch_id = a.id, actor = %actor, "watch-list entry removed by command");
                Ok(Run::Done(json!({ "watch_id": a.id })))
            }
            "gate_open" => {
                let a: GateOpenArgs = parse_args(s.args)?;
                let secret = match self.cfg.gate_secret(&a.gate) {
                    Some(Ok(secret)) => secret,
                    Some(Err(e)) => return Err(Refusal::Failed(e)),
                    None => {
                        return Err(Refusal::InvalidArgs(format!(
                            "gate '{}' has no secret in mqtt.gate_secrets",
                            a.gate
                        )));
                    }
                };
                let expires = now + time::Duration::seconds(self.cfg.gate_open_ttl_s as i64);
                let msg = gate_open_message(
                    &self.cfg,
                    &self.site,
                    &a.gate,
                    &secret,
                    GateOpenCause::Command { nonce: &s.nonce },
                    now,
                    expires,
                );
                tracing::info!(gate = %a.gate, actor = %actor(a.by.as_deref()), reason = ?a.reason, "remote gate open");
                let id = msg.message_id.clone();
                enqueue.push(msg);
                Ok(Run::Done(
                    json!({ "gate": a.gate, "open_id": id, "expires_at": fmt_ts(expires, self.cfg.offset()) }),
                ))
            }
            other => Err(Refusal::Unknown(other.to_owned())),
        }
    }
}

/// What a verified command still needs.
enum Run {
    Done(Value),
    Photo(WatchAddArgs),
}

fn parse_args<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, Refusal> {
    let v = if v.is_null() { json!({}) } else { v };
    serde_json::from_value(v).map_err(|e| Refusal::InvalidArgs(e.to_string()))
}

/// Who the audit trail names for a remote change.
fn actor(by: Option<&str>) -> String {
    let by: String = by
        .unwrap_or("command-centre")
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect();
    format!(
        "mqtt:{}",
        if by.trim().is_empty() {
            "command-centre"
        } else {
            &by
        }
    )
}

/// The embedder the gateway wires: decode the photo within the storage
/// limits, one usable face, its template (the photo itself is kept only
/// when `store_photo`, i.e. `privacy.store_enrolment_photos`).
pub fn engine_embedder(
    mut engine: crate::vision::FaceEngine,
    limits: crate::vision::image::PhotoLimits,
    store_photo: bool,
) -> EmbedFn {
    Box::new(move |bytes: &[u8]| {
        let img = crate::vision::image::decode_photo(bytes, "watchlist_add photo", limits)
            .map_err(|e| e.to_string())?;
        let (_, mut t) = crate::identify::enrolment_template(
            &mut engine,
            crate::vision::image::RgbView::from_image(&img),
            "watchlist_add photo",
        )
        .map_err(|e| e.to_string())?;
        if store_photo {
            t.photo = Some(bytes.to_vec());
        }
        Ok(t)
    })
}

/// [`engine_embedder`] with a face engine made from `config` at the first
/// `watchlist_add` (no second set of models in memory until one comes),
/// photo limits from `storage`, photos kept per `privacy`.
pub fn lazy_engine_embedder(config: crate::config::Config) -> EmbedFn {
    let limits = crate::vision::image::PhotoLimits {
        max_bytes: config.storage.max_photo_bytes,
        max_pixels: config.storage.max_photo_pixels,
    };
    let store_photo = config.privacy.store_enrolment_photos;
    let mut inner: Option<EmbedFn> = None;
    Box::new(move |bytes: &[u8]| {
        if inner.is_none() {
            let engine = crate::vision::FaceEngine::new(&config)
                .map_err(|e| format!("face engine unavailable: {e}"))?;
            inner = Some(engine_embedder(engine, limits, store_photo));
        }
        match inner.as_mut() {
            Some(embed) => embed(bytes),
            None => Err("face engine unavailable".into()),
        }
    })
}

/// Builds a signed command envelope (for tests, tools and the docs).
pub fn sign_command(
    secret: &Secret,
    site: &str,
    cmd: &str,
    ts: &str,
    nonce: &str,
    args: &Value,
) -> Vec<u8> {
    let signed =
        json!({ "cmd": cmd, "site": site, "ts": ts, "nonce": nonce, "args": args }).to_string();
    let sig = sign::sign_hex(secret, signed.as_bytes());
    json!({ "signed": signed, "sig": sig })
        .to_string()
        .into_bytes()
}

// The lanes: where the publisher hands commands over (bounded channels)
// and gets the replies back to publish.

/// Commands waiting for the check lane, at most.
pub(crate) const COMMAND_QUEUE: usize = 32;
/// `watchlist_add` photos waiting for the photo lane, at most (each holds
/// its photo in memory).
const PHOTO_QUEUE: usize = 2;

/// A command as it came from the broker.
pub(crate) struct Incoming {
    pub(crate) name: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) retained: bool,
    pub(crate) received: OffsetDateTime,
    /// What a `status` command answers, as of its arrival.
    pub(crate) status: Value,
}

/// The publisher's side of the two command lanes.
pub(crate) struct CommandLanes {
    pub(crate) tx: mpsc::Sender<Incoming>,
    pub(crate) replies: mpsc::Receiver<CommandOutcome>,
    pub(crate) replier: Replier,
}

impl CommandLanes {
    /// Opens the nonce store and an outbox connection on the database and
    /// starts both lanes on the blocking pool. They end when the publisher
    /// loop drops its sender (the photo lane after its current photo).
    pub(crate) fn start(
        mut handler: CommandHandler,
        db: &Path,
        tracker: &TaskTracker,
    ) -> Result<Self, PublishError> {
        if !handler.has_nonce_store() {
            handler = handler.with_nonce_store(NonceStore::open(db)?);
        }
        let outbox = Outbox::open(db)?;
        let replier = handler.replier().clone();
        let adder = handler.take_adder();
        let (tx, rx) = mpsc::channel::<Incoming>(COMMAND_QUEUE);
        let (reply_tx, replies) = mpsc::channel::<CommandOutcome>(COMMAND_QUEUE);
        let (photo_tx, photo_rx) = mpsc::channel::<PhotoJob>(PHOTO_QUEUE);
        if let Some(mut adder) = adder {
            let reply_tx = reply_tx.clone();
            let mut photo_rx = photo_rx;
            tracker.spawn_blocking(move || {
                while let Some(job) = photo_rx.blocking_recv() {
                    if reply_tx.blocking_send(adder.run(job)).is_err() {
                        break;
                    }
                }
            });
        }
        let r = replier.clone();
        tracker.spawn_blocking(move || check_lane(handler, outbox, rx, photo_tx, reply_tx, r));
        Ok(Self {
            tx,
            replies,
            replier,
        })
    }
}

/// The check lane: verify, record the nonce, run the cheap commands (a
/// gate open is queued in the outbox before its reply), pass photos on.
fn check_lane(
    mut handler: CommandHandler,
    outbox: Outbox,
    mut rx: mpsc::Receiver<Incoming>,
    photos: mpsc::Sender<PhotoJob>,
    replies: mpsc::Sender<CommandOutcome>,
    replier: Replier,
) {
    while let Some(c) = rx.blocking_recv() {
        let out = match handler.check(&c.name, &c.payload, c.retained, c.received, &c.status) {
            Checked::Done(out) => queue_messages(&outbox, out, c.received),
            Checked::Photo(job) => match photos.try_send(job) {
                Ok(()) => continue,
                Err(e) => {
                    let job = e.into_inner();
                    replier.reply(
                        &c.name,
                        Some(job.nonce()),
                        Err(Refusal::QueueFull {
                            queue: "watch-list photos",
                            max: PHOTO_QUEUE,
                        }),
                        c.received,
                        Vec::new(),
                    )
                }
            },
        };
        if replies.blocking_send(out).is_err() {
            break;
        }
    }
}

/// Queues what an accepted command sends (a gate open); if that fails the
/// reply says so instead.
fn queue_messages(outbox: &Outbox, mut out: CommandOutcome, now: OffsetDateTime) -> CommandOutcome {
    if out.enqueue.is_empty() {
        return out;
    }
    if let Err(e) = outbox.enqueue(&out.enqueue, now) {
        tracing::error!(error = %e, "command accepted but its message could not be queued");
        out.ok = false;
        if let Ok(mut v) = serde_json::from_slice::<Value>(&out.reply) {
            v["ok"] = json!(false);
            v["code"] = json!("failed");
            v["error"] = json!(format!("not queued: {e}"));
            v["result"] = Value::Null;
            out.reply = v.to_string().into_bytes();
        }
    }
    out.enqueue.clear();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    const SECRET: &str = "command-secret-0123456789";

    fn handler(embed_calls: Arc<Mutex<u32>>) -> (tempfile::TempDir, CommandHandler) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, SECRET).unwrap();
        let g = dir.path().join("gate");
        std::fs::write(&g, "gate-secret-0123456789").unwrap();
        let mut cfg = MqttConfig {
            url: "mqtt://127.0.0.1:1".into(),
            command_secret: Some(format!("file:{}", p.display())),
            ..Default::default()
        };
        cfg.gate_secrets
            .insert("gate-1".into(), format!("file:{}", g.display()));
        let reg = Registry::open(&dir.path().join("r.db")).unwrap();
        let gallery = Gallery::open(reg, "m", 4, OffsetDateTime::now_utc()).unwrap();
        let embed: EmbedFn = Box::new(move |b: &[u8]| {
            *embed_calls.lock().unwrap() += 1;
            if b == b"no face" {
                return Err("no face found".into());
            }
            Ok(FaceTemplate {
                model_id: "m".into(),
                embedding: vec![1.0, 0.0, 0.0, 0.0],
                quality: 0.9,
                photo: None,
            })
        });
        let store = NonceStore::open(&dir.path().join("r.db")).unwrap();
        let h = CommandHandler::new(&cfg, "gy-001", Arc::new(Mutex::new(gallery)), embed)
            .unwrap()
            .with_nonce_store(store);
        (dir, h)
    }

    fn cmd(cmd: &str, ts: OffsetDateTime, nonce: &str, args: Value) -> Vec<u8> {
        sign_command(
            &Secret::new(SECRET.as_bytes().to_vec()),
            "gy-001",
            cmd,
            &ts.format(&Rfc3339).unwrap(),
            nonce,
            &args,
        )
    }

    fn reply(o: &CommandOutcome) -> Value {
        serde_json::from_slice(&o.reply).unwrap()
    }

    fn add_args() -> Value {
        json!({
            "name": "Wang", "reason": "missing person", "priority": "high",
            "photo": base64::engine::general_purpose::STANDARD.encode(b"jpeg bytes"),
        })
    }

    fn watch_count(h: &CommandHandler) -> usize {
        h.gallery
            .lock()
            .unwrap()
            .registry()
            .watchlist(OffsetDateTime::now_utc())
            .unwrap()
            .len()
    }

    #[test]
    fn refusals_say_why_and_change_nothing() {
        let calls = Arc::new(Mutex::new(0));
        let (_d, mut h) = handler(calls.clone());
        let now = OffsetDateTime::now_utc();
        let st = json!({});
        let good = cmd("watchlist_add", now, "nonce-0001", add_args());
        let cases: Vec<(&str, Vec<u8>, bool, &str)> = vec![
            ("retained", good.clone(), true, "retained"),
            ("malformed", b"{not json".to_vec(), false, "malformed"),
            (
                "bad sig",
                {
                    let mut v: Value = serde_json::from_slice(&good).unwrap();
                    v["sig"] = json!("00".repeat(32));
                    v.to_string().into_bytes()
                },
                false,
                "bad_signature",
            ),
            (
                "tampered",
                {
                    let mut v: Value = serde_json::from_slice(&good).unwrap();
                    let s = v["signed"].as_str().unwrap().replace("Wang", "Zhao");
                    v["signed"] = json!(s);
                    v.to_string().into_bytes()
                },
                false,
                "bad_signature",
            ),
            (
                "stale",
                cmd(
                    "watchlist_add",
                    now - time::Duration::seconds(31),
                    "nonce-0002",
                    add_args(),
                ),
                false,
                "stale",
            ),
            (
                "future",
                cmd(
                    "watchlist_add",
                    now + time::Duration::seconds(31),
                    "nonce-0003",
                    add_args(),
                ),
                false,
                "stale",
            ),
        ];
        for (what, payload, retained, code) in cases {
            let o = h.handle("watchlist_add", &payload, retained, now, &st);
            let r = reply(&o);
            assert!(!o.ok, "{what}");
            assert_eq!(r["code"], json!(code), "{what}: {r}");
            assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()));
            assert_eq!(o.reply_topic, "facegate/gy-001/cmd/watchlist_add/reply");
        }
        // Ahead of the gateway's clock by more than the skew allowed.
        let o = h.handle(
            "status",
            &cmd(
                "status",
                now + time::Duration::seconds(11),
                "nonce-0009",
                Value::Null,
            ),
            false,
            now,
            &st,
        );
        assert!(
            reply(&o)["error"]
                .as_str()
                .unwrap()
                .contains("in the future"),
            "{}",
            reply(&o)
        );
        // A command for another topic or site.
        let o = h.handle("watchlist_remove", &good, false, now, &st);
        assert_eq!(reply(&o)["code"], json!("wrong_target"));
        assert_eq!(*calls.lock().unwrap(), 0, "nothing was embedded");
        assert_eq!(watch_count(&h), 0);
        // The good one works once; its replay is refused.
        let o = h.handle("watchlist_add", &good, false, now, &st);
        assert!(o.ok, "{}", reply(&o));
        assert_eq!(reply(&o)["result"]["watch_id"], json!(1));
        let o = h.handle(
            "watchlist_add",
            &good,
            false,
            now + time::Duration::seconds(5),
            &st,
        );
        assert_eq!(reply(&o)["code"], json!("replayed"));
        assert_eq!(watch_count(&h), 1);
        assert_eq!(*calls.lock().unwrap(), 1);
    }

    #[test]
    fn execution_errors_and_other_commands() {
        let (_d, mut h) = handler(Arc::new(Mutex::new(0)));
        let now = OffsetDateTime::now_utc();
        let st = json!({ "state": "online" });
        let mut a = add_args();
        a["photo"] = json!(base64::engine::general_purpose::STANDARD.encode(b"no face"));
        let o = h.handle(
            "watchlist_add",
            &cmd("watchlist_add", now, "n-00000001", a),
            false,
            now,
            &st,
        );
        assert_eq!(reply(&o)["code"], json!("invalid_args"));
        let o = h.handle(
            "status",
            &cmd("status", now, "n-00000002", Value::Null),
            false,
            now,
            &st,
        );
        assert!(o.ok);
        assert_eq!(reply(&o)["result"], st);
        let o = h.handle(
            "reboot",
            &cmd("reboot", now, "n-00000003", Value::Null),
            false,
            now,
            &st,
        );
        assert_eq!(reply(&o)["code"], json!("unknown_command"));
        let o = h.handle(
            "gate_open",
            &cmd("gate_open", now, "n-00000004", json!({ "gate": "gate-1" })),
            false,
            now,
            &st,
        );
        assert!(o.ok, "{}", reply(&o));
        assert_eq!(o.enqueue.len(), 1);
        assert_eq!(o.enqueue[0].topic, "facegate/gy-001/gates/gate-1/open");
        assert_eq!(
            o.enqueue[0].expires_at,
            Some(now + time::Duration::seconds(5))
        );
        let o = h.handle(
            "gate_open",
            &cmd("gate_open", now, "n-00000005", json!({ "gate": "gate-9" })),
            false,
            now,
            &st,
        );
        assert_eq!(reply(&o)["code"], json!("invalid_args"));
        assert!(o.enqueue.is_empty());
        let o = h.handle(
            "watchlist_remove",
            &cmd("watchlist_remove", now, "n-00000006", json!({ "id": 77 })),
            false,
            now,
            &st,
        );
        assert_eq!(reply(&o)["code"], json!("failed"));
    }

    #[test]
    fn a_nonce_is_refused_by_a_new_handler_on_the_same_database_whatever_its_skew() {
        let (dir, mut h) = handler(Arc::new(Mutex::new(0)));
        let now = OffsetDateTime::now_utc();
        let st = json!({});
        let ahead = cmd(
            "status",
            now + time::Duration::seconds(9),
            "n-ahead-01",
            Value::Null,
        );
        assert!(h.handle("status", &ahead, false, now, &st).ok);
        // A restart: a new handler, a new store connection on the same file.
        drop(h);
        let store = NonceStore::open(&dir.path().join("r.db")).unwrap();
        let reg = crate::registry::Registry::open(&dir.path().join("r.db")).unwrap();
        let gallery = Gallery::open(reg, "m", 4, now).unwrap();
        let cfg = MqttConfig {
            url: "mqtt://127.0.0.1:1".into(),
            command_secret: Some(format!("file:{}", dir.path().join("secret").display())),
            ..Default::default()
        };
        let embed: EmbedFn = Box::new(|_: &[u8]| Err("unused".into()));
        let mut h2 = CommandHandler::new(&cfg, "gy-001", Arc::new(Mutex::new(gallery)), embed)
            .unwrap()
            .with_nonce_store(store);
        for later in [0, 5, 30] {
            let at = now + time::Duration::seconds(later);
            let o = h2.handle("status", &ahead, false, at, &st);
            assert_eq!(reply(&o)["code"], json!("replayed"), "+{later} s");
        }
        // Once past the age limit it is stale, not accepted again.
        let o = h2.handle(
            "status",
            &ahead,
            false,
            now + time::Duration::seconds(41),
            &st,
        );
        assert_eq!(reply(&o)["code"], json!("stale"));
    }

    #[test]
    fn check_hands_watchlist_add_over_without_embedding() {
        let calls = Arc::new(Mutex::new(0));
        let (_d, mut h) = handler(calls.clone());
        let now = OffsetDateTime::now_utc();
        let c = cmd("watchlist_add", now, "n-photo-01", add_args());
        let Checked::Photo(job) = h.check("watchlist_add", &c, false, now, &json!({})) else {
            panic!("expected a photo job");
        };
        assert_eq!(*calls.lock().unwrap(), 0, "check never embeds");
        let mut adder = h.take_adder().unwrap();
        let o = adder.run(job);
        assert!(o.ok, "{}", reply(&o));
        assert_eq!(reply(&o)["nonce"], json!("n-photo-01"));
        assert_eq!(*calls.lock().unwrap(), 1);
    }
}

#[cfg(test)]
mod lane_tests {
    use super::*;
    use crate::publish::PublisherSetup;
    use crate::registry::{FaceTemplate, Gallery, Registry};
    use std::sync::mpsc as std_mpsc;
    use time::format_description::well_known::Rfc3339;

    const SECRET: &str = "command-secret-0123456789";

    fn incoming(name: &str, nonce: &str, args: Value) -> Incoming {
        let now = OffsetDateTime::now_utc();
        let payload = sign_command(
            &Secret::new(SECRET.as_bytes().to_vec()),
            "gy-001",
            name,
            &now.format(&Rfc3339).unwrap(),
            nonce,
            &args,
        );
        Incoming {
            name: name.into(),
            payload,
            retained: false,
            received: now,
            status: json!({ "state": "online" }),
        }
    }

    /// With a photo being embedded (held by the test) and the photo queue
    /// full, a further `watchlist_add` is refused as busy at once and a
    /// `status` is answered; the photos then complete in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_photo_queue_refuses_as_busy_and_status_still_answers() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("r.db");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, SECRET).unwrap();
        let cfg = MqttConfig {
            url: "mqtt://127.0.0.1:1".into(),
            command_secret: Some(format!("file:{}", secret.display())),
            ..Default::default()
        };
        let now = OffsetDateTime::now_utc();
        let gallery = Gallery::open(Registry::open(&db).unwrap(), "m", 4, now).unwrap();
        let (started_tx, started) = std_mpsc::channel::<()>();
        let (release, release_rx) = std_mpsc::channel::<()>();
        let embed: EmbedFn = Box::new(move |_: &[u8]| {
            started_tx.send(()).unwrap();
            release_rx.recv().map_err(|e| e.to_string())?;
            Ok(FaceTemplate {
                model_id: "m".into(),
                embedding: vec![1.0, 0.0, 0.0, 0.0],
                quality: 0.9,
                photo: None,
            })
        });
        let handler =
            CommandHandler::new(&cfg, "gy-001", Arc::new(Mutex::new(gallery)), embed).unwrap();
        let setup = PublisherSetup {
            site: "gy-001".into(),
            cameras: Vec::new(),
            db,
            version: "test".into(),
        };
        let tracker = TaskTracker::new();
        let mut lanes = CommandLanes::start(handler, &setup.db, &tracker).unwrap();
        let add = |n: u32| {
            incoming(
                "watchlist_add",
                &format!("add-{n:08}"),
                json!({ "name": format!("P{n}"), "reason": "test", "photo": "eA==" }),
            )
        };
        let reply = |o: &CommandOutcome| serde_json::from_slice::<Value>(&o.reply).unwrap();
        assert!(lanes.tx.try_send(add(1)).is_ok());
        // Photo 1 is in the embedder (held); 2 and 3 fill the photo queue.
        let _started = tokio::task::spawn_blocking(move || {
            started.recv().unwrap();
            started
        })
        .await
        .unwrap();
        for n in 2..=4 {
            assert!(lanes.tx.try_send(add(n)).is_ok());
        }
        let status = incoming("status", "status-0001", Value::Null);
        assert!(lanes.tx.try_send(status).is_ok());
        let first = lanes.replies.recv().await.unwrap();
        assert_eq!(reply(&first)["code"], json!("busy"), "{}", reply(&first));
        assert_eq!(reply(&first)["nonce"], json!("add-00000004"));
        assert!(
            reply(&first)["error"]
                .as_str()
                .unwrap()
                .contains("watch-list photos")
        );
        let second = lanes.replies.recv().await.unwrap();
        assert_eq!(second.name, "status");
        assert!(second.ok);
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        for n in 1..=3 {
            let o = lanes.replies.recv().await.unwrap();
            assert!(o.ok, "{}", reply(&o));
            assert_eq!(reply(&o)["nonce"], json!(format!("add-{n:08}")));
        }
        drop(lanes);
        tracker.close();
        tracker.wait().await;
    }
}
