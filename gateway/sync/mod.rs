//! Registry sync: the boxes of one site share their owners through the
//! MQTT broker they already use (`[sync]`, off by default).
//!
//! # How
//! - **One retained message per owner** on
//!   `<prefix>/<site>/registry/owners/<key>` holds that owner's latest
//!   state (record, consents, face templates with their model id; never a
//!   photo or a snapshot) or, after an erasure, a *tombstone* (the id and the
//!   reason, no personal data) that replaces the state on the broker.
//!   `<key>` is an HMAC of the owner id, so topics name nobody.
//!   Retained messages are what a box that was offline (or a new one) reads
//!   when it subscribes: that is the catch-up.
//!   The gateway refuses retained *commands* (issue 10): those are actions
//!   that must not run again on a reconnect. These are different: versioned
//!   *state*, applied only when newer than what a box has, so reading the
//!   same one again is a no-op.
//! - **Versions** are Lamport counters with the origin box id as the tie
//!   break (a total order; [`message::Version`]). A box keeps the newest
//!   version per owner, tombstones included (`sync_owners`), so an old
//!   state replayed after an erasure never brings the owner back; a box that
//!   sees a stale message puts its newer one back on the broker.
//! - **Sealed and signed**: the body is ChaCha20-Poly1305-encrypted under a
//!   key derived from `sync.secret`, with the clear header (site, key,
//!   version, kind) as associated data: the AEAD tag is the signature. A
//!   forged, altered or wrongly encrypted message is refused with a WARN
//!   naming its topic, and changes nothing.
//! - **Local changes** (HTTP API, `facegate enroll` / `owners ...` on the
//!   command line, even while the gateway is stopped, and the retention
//!   task) are found by SQLite triggers that queue the owner id in
//!   `sync_dirty` (schema migration 6): no hook in any write path. The
//!   gateway drains the queue every `scan_interval_s` and publishes an
//!   owner only if their state differs from the last one published or
//!   applied (a digest), which is also why applying a remote change is not
//!   published again as a new version. A queue row is deleted only after
//!   the broker's PUBACK, so a change made while the broker is away is
//!   published when it is back.
//! - **Applying** goes through the shared [`Gallery`] (the registry's own
//!   enrol / update / status / erase paths): the index follows at once, an
//!   erasure removes events and snapshots as a local one does, and the
//!   audit trail says `sync from <box>`. A template of a model this box
//!   does not run is refused with a WARN.
//! - **Conflicts** (one owner changed on two boxes before either heard of
//!   the other's change): the greater version wins whole, except that an
//!   erasure not yet published wins over a newer remote state (the owner is
//!   not enrolled again and the tombstone goes out with a higher counter).
//!   A box ignores its own messages coming back from the broker.
//!
//! # Layout
//! - [`message`]: versions, states, the sealed envelope (pure).
//! - [`store`]: the SQLite side: states, the queue, versions, applying.
//! - this file: `[sync]` config, errors, and the task with its own MQTT
//!   connection (client id `<mqtt.client_id>-sync`).

pub mod message;
pub mod store;

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::Outgoing as MqttOutgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{LastWill, Packet, PubAckReason, Publish};
use rumqttc::v5::{AsyncClient, Event};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::live::{Live, SyncResult};
use crate::publish::MqttConfig;
use crate::publish::config::{BrokerUrl, MIN_SECRET_BYTES, Secret, SecretRef, is_topic_name};
use crate::publish::connection::{self, Backoff, Link, LinkEvent};
use crate::registry::{Gallery, ParseEnumError, RegistryError};

use message::{Refusal, SyncKeys};
use store::{Applied, Outgoing, SyncStore};

/// After a (re)connection, how long the broker has to send its retained
/// registry messages before the ones it lacks are published again.
const BROKER_CHECK_DELAY: Duration = Duration::from_secs(5);

/// `[sync]`: registry sync with the other boxes of the site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// This box's name, unique among the site's boxes (letters, digits,
    /// `-`, `_`, `.`); empty = sync off.
    pub box_id: String,
    /// The site's shared sync secret, the same on every box: `env:NAME` or
    /// `file:PATH`, at least 16 bytes. It signs and encrypts the messages.
    pub secret: Option<String>,
    /// How often local changes are looked for, seconds.
    pub scan_interval_s: f64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            box_id: String::new(),
            secret: None,
            scan_interval_s: 1.0,
        }
    }
}

impl SyncConfig {
    pub fn enabled(&self) -> bool {
        !self.box_id.is_empty()
    }

    /// Checks what serde cannot: `Err((key, reason))`.
    pub fn validate(&self, mqtt: &MqttConfig) -> Result<(), (String, String)> {
        let bad = |key: &str, why: &str| Err((format!("sync.{key}"), why.to_owned()));
        if !self.enabled() {
            return Ok(());
        }
        if !is_topic_name(&self.box_id) {
            return bad(
                "box_id",
                "must be 1 to 64 ASCII letters, digits, '-', '_' or '.'",
            );
        }
        let Some(secret) = &self.secret else {
            return bad(
                "secret",
                "required when sync.box_id is set: env:NAME or file:PATH, the same on every box of the site",
            );
        };
        if let Err(e) = SecretRef::parse(secret) {
            return bad("secret", &e);
        }
        if !(self.scan_interval_s > 0.0 && self.scan_interval_s <= 3600.0) {
            return bad("scan_interval_s", "must be between 0 and 3600 seconds");
        }
        if !mqtt.enabled() {
            return bad(
                "box_id",
                "sync travels through the broker: set mqtt.url (or remove sync.box_id)",
            );
        }
        if mqtt.client_id.is_none() {
            return Err((
                "mqtt.client_id".into(),
                "must be set, and differ per box, when sync is on: boxes of one site sharing the default client id would push each other off the broker".into(),
            ));
        }
        Ok(())
    }

    /// Reads the secret; errors name the key.
    pub fn resolve_secret(&self) -> Result<Secret, SyncError> {
        let r = self
            .secret
            .as_deref()
            .ok_or_else(|| SyncError::Config("sync.secret: not set".into()))?;
        let s = SecretRef::parse(r)
            .and_then(|s| s.resolve())
            .map_err(|e| SyncError::Config(format!("sync.secret: {e}")))?;
        if s.expose().len() < MIN_SECRET_BYTES {
            return Err(SyncError::Config(format!(
                "sync.secret: the secret is shorter than {MIN_SECRET_BYTES} bytes"
            )));
        }
        Ok(s)
    }
}

/// What the sync can fail at.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A config key or secret; the message names the key.
    #[error("{0}")]
    Config(String),
    #[error("registry sync: {context}: {source}")]
    Sqlite {
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(
        "a face template of model '{found}', but this box embeds with '{ours}': both boxes must run the same embedding model; refused"
    )]
    ForeignModel { found: String, ours: String },
    #[error("{0}")]
    Invalid(String),
}

impl From<ParseEnumError> for SyncError {
    fn from(e: ParseEnumError) -> Self {
        SyncError::Invalid(e.to_string())
    }
}

/// What the sync task needs from the gateway.
pub struct SyncSetup {
    pub site: String,
    pub db: PathBuf,
    /// The embedding model this box runs.
    pub model_id: String,
    pub gallery: Arc<Mutex<Gallery>>,
    /// Where the task counts its messages (`/metrics`).
    pub live: Arc<Live>,
}

/// Starts the sync task if `[sync]` is on (`Ok(None)` if off). Errors are
/// for the operator (a missing secret, a bad broker URL) and stop the start;
/// at run time the task logs, retries and never stops the gateway.
pub fn start(
    sync: &SyncConfig,
    mqtt: &MqttConfig,
    setup: SyncSetup,
    cancel: CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, SyncError> {
    if !sync.enabled() {
        return Ok(None);
    }
    let secret = sync.resolve_secret()?;
    let store = SyncStore::open(&setup.db, &sync.box_id, &setup.model_id)?;
    let marked = store.mark_unsynced()?;
    let url =
        BrokerUrl::parse(&mqtt.url).map_err(|e| SyncError::Config(format!("mqtt.url: {e}")))?;
    let mut cfg = mqtt.clone();
    cfg.client_id = Some(format!("{}-sync", mqtt.client_id_for(&setup.site)));
    let prefix = format!("{}/{}/registry", mqtt.prefix, setup.site);
    // The will says this box's sync link went away; nobody needs to act on it.
    let will = LastWill::new(
        format!("{prefix}/boxes/{}", sync.box_id),
        "offline",
        QoS::AtMostOnce,
        false,
        None,
    );
    let mut options = connection::options(&cfg, &setup.site, &url, will)
        .map_err(|e| SyncError::Config(e.to_string()))?;
    // Catch-up comes from the retained messages at every subscription, so
    // no broker session needs to be kept for us.
    options.set_clean_start(true);
    options.set_session_expiry_interval(None);
    let (client, eventloop) = AsyncClient::new(options, 64);
    let (tx, rx) = mpsc::channel(256);
    let link = Arc::new(Mutex::new(Link::default()));
    let conn_stop = cancel.child_token();
    let conn = tokio::spawn(connection::run(
        eventloop,
        link,
        tx,
        conn_stop.clone(),
        Backoff::new(mqtt.reconnect_min_s, mqtt.reconnect_max_s),
        url.host.clone(),
    ));
    tracing::info!(
        box_id = %sync.box_id,
        owners_to_publish = marked,
        "registry sync on"
    );
    let task = SyncTask {
        keys: Arc::new(SyncKeys::derive(&secret)),
        site: setup.site,
        prefix,
        client,
        store: Arc::new(Mutex::new(store)),
        gallery: setup.gallery,
        live: setup.live,
        connected: false,
        in_flight: None,
        again: VecDeque::new(),
        seen: HashSet::new(),
        check_broker_at: None,
    };
    let scan = Duration::from_secs_f64(sync.scan_interval_s);
    task.live.metrics.sync_connected(false);
    Ok(Some(tokio::spawn(async move {
        task.run(rx, scan, cancel).await;
        conn_stop.cancel();
        let _ = conn.await;
    })))
}

/// A message handed to rumqttc and not yet acknowledged.
struct InFlight {
    out: Outgoing,
    pkid: Option<u16>,
    since: tokio::time::Instant,
}

/// An unacknowledged message is given up (and its change sent again as a
/// new version) after this long, so one lost PUBACK cannot stall the sync.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

struct SyncTask {
    keys: Arc<SyncKeys>,
    site: String,
    /// `<prefix>/<site>/registry`.
    prefix: String,
    client: AsyncClient,
    store: Arc<Mutex<SyncStore>>,
    gallery: Arc<Mutex<Gallery>>,
    live: Arc<Live>,
    connected: bool,
    in_flight: Option<InFlight>,
    /// Owners whose version to put back on the broker (over a stale or
    /// unreadable message, or where the broker has none).
    again: VecDeque<String>,
    /// Owner keys the broker sent since the last (re)connection.
    seen: HashSet<String>,
    /// When to compare `seen` with what this box knows: a broker that lost
    /// its retained messages (restarted without persistence) gets ours back.
    check_broker_at: Option<tokio::time::Instant>,
}

impl SyncTask {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<LinkEvent>,
        scan: Duration,
        cancel: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(scan);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                ev = rx.recv() => match ev {
                    Some(ev) => self.on_link(ev).await,
                    None => break,
                },
                _ = tick.tick() => {
                    if self.connected
                        && self
                            .check_broker_at
                            .is_some_and(|at| tokio::time::Instant::now() >= at)
                    {
                        self.check_broker_at = None;
                        self.restore_missing().await;
                    }
                    if self.in_flight.as_ref().is_some_and(|f| f.since.elapsed() > ACK_TIMEOUT) {
                        tracing::warn!("registry sync: no PUBACK for a registry message; sending again");
                        self.in_flight = None;
                    }
                    self.send_next().await;
                }
            }
        }
    }

    async fn on_link(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Down(why) => {
                if self.connected {
                    tracing::warn!(reason = %why, "registry sync: broker connection lost; changes wait in the database");
                }
                self.connected = false;
                self.live.metrics.sync_connected(false);
                self.in_flight = None;
            }
            LinkEvent::Mqtt(ev) => match *ev {
                Event::Incoming(Packet::ConnAck(_)) => {
                    self.connected = true;
                    self.live.metrics.sync_connected(true);
                    self.in_flight = None;
                    self.seen.clear();
                    self.check_broker_at = Some(tokio::time::Instant::now() + BROKER_CHECK_DELAY);
                    let filter = format!("{}/owners/+", self.prefix);
                    if let Err(e) = self.client.try_subscribe(filter, QoS::AtLeastOnce) {
                        tracing::error!(error = %e, "registry sync: cannot subscribe");
                    }
                    tracing::info!("registry sync: connected; reading the site's registry");
                    self.send_next().await;
                }
                Event::Incoming(Packet::Publish(p)) => self.on_message(p).await,
                Event::Incoming(Packet::PubAck(ack)) => {
                    let ours = self
                        .in_flight
                        .as_ref()
                        .is_some_and(|f| f.pkid == Some(ack.pkid));
                    if !ours {
                        return;
                    }
                    match ack.reason {
                        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => {
                            if let Some(f) = self.in_flight.take() {
                                self.acknowledged(f.out).await;
                            }
                            self.send_next().await;
                        }
                        other => {
                            tracing::warn!(reason = ?other, "registry sync: the broker did not take a registry message (check its ACL for the registry topics); retrying");
                            self.in_flight = None;
                        }
                    }
                }
                Event::Outgoing(MqttOutgoing::Publish(pkid)) => {
                    if let Some(f) = &mut self.in_flight
                        && f.pkid.is_none()
                    {
                        f.pkid = Some(pkid);
                    }
                }
                _ => {}
            },
        }
    }

    /// Runs `f` on the store on the blocking pool.
    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SyncStore, &Mutex<Gallery>) -> Result<T, SyncError> + Send + 'static,
    ) -> Result<T, SyncError> {
        let (store, gallery) = (self.store.clone(), self.gallery.clone());
        tokio::task::spawn_blocking(move || {
            let store = store
                .lock()
                .map_err(|_| SyncError::Invalid("sync store lock poisoned".into()))?;
            f(&store, &gallery)
        })
        .await
        .map_err(|e| SyncError::Invalid(format!("sync task failed: {e}")))?
    }

    async fn acknowledged(&self, out: Outgoing) {
        let version = out.version.clone();
        let erased = out.body.state.is_none();
        match self.with_store(move |s, _| s.published(&out)).await {
            Ok(()) => {
                self.live.metrics.count_sync(SyncResult::Published);
                tracing::info!(%version, erased, "registry sync: change published")
            }
            Err(e) => tracing::error!(error = %e, "registry sync: cannot record a publication"),
        }
    }

    /// Publishes the next stale-repair or local change, one at a time.
    async fn send_next(&mut self) {
        if !self.connected || self.in_flight.is_some() {
            return;
        }
        let next = match self.again.pop_front() {
            Some(owner) => self.with_store(move |s, _| s.republication(&owner)).await,
            None => self.with_store(|s, _| s.next_local_change()).await,
        };
        let out = match next {
            Ok(Some(out)) => out,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "registry sync: cannot read local changes; retrying");
                return;
            }
        };
        let env = match self.keys.seal(&self.site, &out.version, &out.body) {
            Ok(env) => env,
            Err(e) => {
                tracing::error!(error = %e, "registry sync: cannot seal a message");
                return;
            }
        };
        let topic = format!("{}/owners/{}", self.prefix, env.key);
        let payload = match serde_json::to_vec(&env) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "registry sync: cannot encode a message");
                return;
            }
        };
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, true, payload)
        {
            Ok(()) => {
                self.in_flight = Some(InFlight {
                    out,
                    pkid: None,
                    since: tokio::time::Instant::now(),
                })
            }
            Err(e) => tracing::warn!(error = %e, "registry sync: publish not queued; retrying"),
        }
    }

    /// Queues every owner this box has a version of whose topic the broker
    /// did not send after the subscription (its retained message is gone).
    async fn restore_missing(&mut self) {
        let (keys, seen) = (self.keys.clone(), self.seen.clone());
        let missing = self
            .with_store(move |s, _| {
                Ok(s.known_owners()?
                    .into_iter()
                    .filter(|id| !seen.contains(&keys.owner_key(id)))
                    .collect::<Vec<_>>())
            })
            .await;
        match missing {
            Ok(missing) if !missing.is_empty() => {
                tracing::warn!(
                    owners = missing.len(),
                    "registry sync: the broker lacks the retained registry messages of owners this box knows (a broker restarted without persistence?); publishing them again"
                );
                self.again.extend(missing);
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "registry sync: cannot compare with the broker"),
        }
    }

    async fn on_message(&mut self, p: Publish) {
        let topic = String::from_utf8_lossy(&p.topic).into_owned();
        if p.payload.is_empty() {
            // A retained message cleared by an operator: nothing to apply.
            return;
        }
        let owners = format!("{}/owners/", self.prefix);
        let Some(key) = topic.strip_prefix(&owners) else {
            return;
        };
        self.seen.insert(key.to_owned());
        let (env, body) = match self.keys.open(&self.site, key, &p.payload) {
            Ok(opened) => opened,
            Err(refusal) => {
                self.live.metrics.count_sync(SyncResult::Refused);
                tracing::warn!(%topic, reason = %refusal, "registry sync: message refused; nothing changed");
                if matches!(refusal, Refusal::BadSeal | Refusal::Malformed(_)) {
                    // A retained message we cannot read replaced the real
                    // one on the broker: put ours back, if we know the owner.
                    let (keys, key) = (self.keys.clone(), key.to_owned());
                    if let Ok(Some(owner)) = self
                        .with_store(move |s, _| s.owner_for_key(&keys, &key))
                        .await
                    {
                        self.again.push_back(owner);
                        self.send_next().await;
                    }
                }
                return;
            }
        };
        let version = env.version();
        if self
            .in_flight
            .as_ref()
            .is_some_and(|f| f.out.version == version)
        {
            // Our own message, back before its PUBACK: applying it would
            // undo a local change made since it was sent.
            return;
        }
        let owner = body.owner_id.clone();
        let v = version.clone();
        let applied = self
            .with_store(move |s, g| s.apply(g, &v, &body, OffsetDateTime::now_utc()))
            .await;
        match &applied {
            Ok(a) => self.live.metrics.count_sync(sync_result(a)),
            Err(_) => self.live.metrics.count_sync(SyncResult::Failed),
        }
        match applied {
            Ok(Applied::Same) => {}
            Ok(Applied::Stale) => {
                tracing::warn!(%topic, %version, "registry sync: an older version than this box has (a replay, or a broker that lost the newer one); ignored, ours goes back on the broker");
                self.again.push_back(owner);
                self.send_next().await;
            }
            Ok(done) => tracing::info!(%topic, %version, result = ?done, "registry sync: applied"),
            Err(e) => {
                tracing::warn!(%topic, %version, error = %e, "registry sync: message not applied")
            }
        }
    }
}

/// How `/metrics` counts what became of a message.
fn sync_result(a: &Applied) -> SyncResult {
    match a {
        Applied::Enrolled | Applied::Updated | Applied::Erased | Applied::TombstoneRecorded => {
            SyncResult::Applied
        }
        Applied::Same | Applied::Unchanged => SyncResult::Unchanged,
        Applied::Stale | Applied::KeptErased => SyncResult::Stale,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(secret: &str) -> SyncConfig {
        SyncConfig {
            box_id: "north".into(),
            secret: Some(secret.into()),
            ..SyncConfig::default()
        }
    }

    #[test]
    fn secrets_are_read_and_checked_with_the_key_named() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "too-short\n").unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, "a-site-secret-of-32-bytes-or-so\n").unwrap();
        let e = config(&format!("file:{}", short.display()))
            .resolve_secret()
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("sync.secret:") && e.contains("shorter"),
            "{e}"
        );
        let e = config("env:FACEGATE_SYNC_TEST_SURELY_UNSET")
            .resolve_secret()
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("sync.secret:") && e.contains("not set"),
            "{e}"
        );
        let s = config(&format!("file:{}", good.display()))
            .resolve_secret()
            .unwrap();
        assert_eq!(s.expose(), b"a-site-secret-of-32-bytes-or-so");
    }
}
