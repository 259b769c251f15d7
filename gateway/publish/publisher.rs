//! The publisher: sends the outbox in `seq` order with QoS 1 and deletes a
//! row when the broker's PUBACK for it arrives; publishes the retained
//! status; hands incoming commands over a bounded channel to the command
//! lanes (`crate::http::commands`) and publishes their replies.
//!
//! Matching PUBACKs to rows is [`Delivery`]'s job (pure bookkeeping,
//! `delivery.rs`): at most `max_in_flight` are outstanding; on a connection
//! loss the connection task voids rumqttc's queues, the bookkeeping is
//! cleared, and after the next CONNACK the outbox is sent again from its
//! first undelivered row.
//!
//! SQLite work stays off the async threads: this loop runs on a blocking
//! thread and waits on the runtime through `Handle::block_on`.
//!
//! Commands never run on this loop. The check lane (a blocking thread)
//! verifies them, records nonces and runs the cheap ones (`status`,
//! `gate_open`, `watchlist_remove`); a `watchlist_add` goes on to the photo
//! lane (another blocking thread), which runs the face models. So a
//! `status` or a `gate_open` is answered while a large photo is embedded.
//! Both queues are bounded; a command that finds its queue full is refused
//! as `busy` at once. The command subscription asks the broker for
//! retain-as-published, so a retained command is seen as one (and refused)
//! even when it reaches a gateway that was already subscribed.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    Filter, LastWill, Packet, PubAck, PubAckReason, Publish, PublishProperties, SubscribeReasonCode,
};
use rumqttc::v5::{AsyncClient, Event};
use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::PublishError;
use super::config::{BrokerUrl, MqttConfig};
use super::connection::{self, Backoff, Link, LinkEvent};
use super::delivery::{Delivery, Handed};
use super::outbox::{Outbox, OutboxRow};
use super::payload::{PAYLOAD_SCHEMA, Topics, fmt_ts};
use crate::http::commands::{
    COMMAND_QUEUE, CommandHandler, CommandLanes, CommandOutcome, Incoming, Refusal,
};

/// What the publisher needs to know about the gateway.
#[derive(Debug, Clone)]
pub struct PublisherSetup {
    /// `config.site.code`.
    pub site: String,
    /// Camera names, for the status topic.
    pub cameras: Vec<String>,
    /// The registry database holding the outbox table.
    pub db: PathBuf,
    /// Reported on the status topic; usually `env!("CARGO_PKG_VERSION")`.
    pub version: String,
}

/// Counters since start (also in the retained status as `outbox`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PublisherStats {
    pub connected: bool,
    /// Undelivered outbox rows (refreshed every few seconds).
    pub pending: u64,
    pub in_flight: u64,
    /// Outbox rows acknowledged by the broker.
    pub delivered: u64,
    /// Dropped: older than `outbox_max_age_s`, beyond `outbox_max_rows`.
    pub dropped_age: u64,
    pub dropped_size: u64,
    /// Gate open commands not sent because they had expired.
    pub expired: u64,
    /// Refused by the broker for good (not authorized, bad topic).
    pub rejected: u64,
    pub connects: u64,
    pub commands_ok: u64,
    pub commands_refused: u64,
    pub last_error: Option<String>,
}

/// The running publisher. Dropping it stops the tasks without a drain;
/// call [`PublisherHandle::shutdown`] for an orderly one.
pub struct PublisherHandle {
    notify: Arc<Notify>,
    stats: Arc<Mutex<PublisherStats>>,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl PublisherHandle {
    /// Wakes the publisher: new outbox rows are waiting. Cheap; call it
    /// after every `save_with_outbox` (rows are also found by a poll every
    /// half second without it).
    pub fn notify(&self) {
        self.notify.notify_one();
    }

    pub fn stats(&self) -> PublisherStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// A cheap clonable waker for the event sink.
    pub fn notifier(&self) -> Arc<Notify> {
        self.notify.clone()
    }

    /// Orderly stop: in-flight messages get `shutdown_grace_s` to be
    /// acknowledged, the status turns `offline` (reason `shutdown`), the
    /// session is closed with DISCONNECT (so no last will), tasks end.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tracker.wait().await;
    }
}

impl Drop for PublisherHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts the publisher on the current tokio runtime.
pub fn start(
    cfg: &MqttConfig,
    setup: PublisherSetup,
    commands: Option<CommandHandler>,
) -> Result<PublisherHandle, PublishError> {
    cfg.validate().map_err(PublishError::Config)?;
    if !cfg.enabled() {
        return Err(PublishError::Config(
            "mqtt.url: not set (MQTT is off); set it or pass --mqtt URL".into(),
        ));
    }
    cfg.resolve_secrets().map_err(PublishError::Config)?;
    let rt = tokio::runtime::Handle::try_current().map_err(|_| {
        PublishError::Config("the MQTT publisher must be started inside a tokio runtime".into())
    })?;
    let url =
        BrokerUrl::parse(&cfg.url).map_err(|e| PublishError::Config(format!("mqtt.url: {e}")))?;
    let outbox = Outbox::open(&setup.db)?;
    if let Some(w) = cfg.cleartext_warning() {
        tracing::warn!("INSECURE: {w}");
    }
    let topics = Topics::new(&cfg.prefix, &setup.site);
    let started = OffsetDateTime::now_utc();
    let info = StatusInfo {
        site: setup.site.clone(),
        version: setup.version.clone(),
        started_ms: super::outbox::ms(started),
        started_at: fmt_ts(started, cfg.offset()),
        cameras: setup.cameras.clone(),
    };
    let will = LastWill::new(
        topics.status(),
        info.payload(
            "offline",
            Some("connection lost"),
            None,
            "will",
            started,
            cfg,
        ),
        QoS::AtLeastOnce,
        true,
        None,
    );
    let options = connection::options(cfg, &setup.site, &url, will)?;
    let window = usize::from(cfg.max_in_flight);
    let (client, eventloop) = AsyncClient::new(options, window * 2 + 64);
    let (tx, rx) = mpsc::channel(1024);
    let link = Arc::new(Mutex::new(Link::default()));
    let stop = CancellationToken::new();
    let conn_stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    tracker.spawn(connection::run(
        eventloop,
        link.clone(),
        tx,
        conn_stop.clone(),
        Backoff::new(cfg.reconnect_min_s, cfg.reconnect_max_s),
        url.host.clone(),
    ));
    let notify = Arc::new(Notify::new());
    let stats = Arc::new(Mutex::new(PublisherStats::default()));
    let commands = match commands {
        Some(handler) => Some(CommandLanes::start(handler, &setup.db, &tracker)?),
        None => None,
    };
    let mut lp = Loop {
        cfg: cfg.clone(),
        topics,
        info,
        outbox,
        client,
        link,
        rx,
        notify: notify.clone(),
        stop: stop.clone(),
        conn_stop,
        stats: stats.clone(),
        commands,
        rt,
        delivery: Delivery::new(window),
        ready: false,
        status_seq: 0,
        next_status: Instant::now(),
        next_maintenance: Instant::now(),
        next_poll: Instant::now(),
        last_drop_status: None,
        down_since: None,
        last_down: None,
        down_count: 0,
        disconnect_sent: false,
        broker_max_packet: None,
    };
    tracker.spawn_blocking(move || lp.run());
    tracker.close();
    Ok(PublisherHandle {
        notify,
        stats,
        stop,
        tracker,
    })
}

/// The gateway's identity on the status topic.
struct StatusInfo {
    site: String,
    version: String,
    started_ms: i64,
    started_at: String,
    cameras: Vec<String>,
}

impl StatusInfo {
    fn payload(
        &self,
        state: &str,
        reason: Option<&str>,
        stats: Option<&PublisherStats>,
        n: &str,
        now: OffsetDateTime,
        cfg: &MqttConfig,
    ) -> Vec<u8> {
        json!({
            "schema": PAYLOAD_SCHEMA,
            "id": format!("status-{}-{n}", self.started_ms),
            "kind": "status",
            "site": self.site,
            "state": state,
            "reason": reason,
            "version": self.version,
            "started_at": self.started_at,
            "ts": fmt_ts(now, cfg.offset()),
            "cameras": self.cameras,
            "outbox": stats,
        })
        .to_string()
        .into_bytes()
    }
}

enum Wake {
    Link(LinkEvent),
    Reply(CommandOutcome),
    Stop,
    Timer,
    LinkGone,
}

/// While draining, the loop looks again this often.
const ACK_DELAY: Duration = super::delivery::ACK_DELAY;
/// Outbox rows written without a notify are found within this.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// Bounds are enforced and the depth counted this often.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(5);
/// A drop is reported on the status topic at most this often.
const DROP_STATUS_EVERY: Duration = Duration::from_secs(10);
/// Bytes of a PUBLISH beyond topic and payload (header, packet id,
/// properties), generously.
const PACKET_OVERHEAD: usize = 64;
/// An unreachable broker is logged again this often (the same error).
const DOWN_LOG_EVERY: Duration = Duration::from_secs(60);

struct Loop {
    cfg: MqttConfig,
    topics: Topics,
    info: StatusInfo,
    outbox: Outbox,
    client: AsyncClient,
    link: Arc<Mutex<Link>>,
    rx: mpsc::Receiver<LinkEvent>,
    notify: Arc<Notify>,
    stop: CancellationToken,
    conn_stop: CancellationToken,
    stats: Arc<Mutex<PublisherStats>>,
    commands: Option<CommandLanes>,
    rt: tokio::runtime::Handle,
    delivery: Delivery,
    /// CONNACK seen and no loss since: rows may be handed over.
    ready: bool,
    status_seq: u64,
    next_status: Instant,
    next_maintenance: Instant,
    next_poll: Instant,
    last_drop_status: Option<Instant>,
    down_since: Option<Instant>,
    last_down: Option<(String, Instant)>,
    down_count: u64,
    disconnect_sent: bool,
    /// The broker's maximum packet size (CONNACK), if it has one.
    broker_max_packet: Option<u32>,
}

impl Loop {
    fn run(&mut self) {
        self.maintenance();
        loop {
            match self.wait(self.deadline(), false) {
                Wake::Stop => break,
                Wake::LinkGone => {
                    tracing::error!("MQTT connection task ended unexpectedly; publisher stops");
                    return;
                }
                Wake::Link(ev) => self.on_link(ev),
                Wake::Reply(out) => self.on_reply(out),
                Wake::Timer => {}
            }
            // Everything already queued, before touching SQLite again.
            while let Ok(ev) = self.rx.try_recv() {
                self.on_link(ev);
            }
            while let Some(out) = self
                .commands
                .as_mut()
                .and_then(|c| c.replies.try_recv().ok())
            {
                self.on_reply(out);
            }
            self.housekeeping();
        }
        self.drain();
    }

    /// The next time a timer is due.
    fn deadline(&self) -> Instant {
        let mut d = self.next_poll.min(self.next_maintenance);
        if self.ready {
            d = d.min(self.next_status);
        }
        self.delivery.deadline(d)
    }

    fn wait(&mut self, deadline: Instant, stopping: bool) -> Wake {
        let rx = &mut self.rx;
        let notify = &self.notify;
        let stop = &self.stop;
        let replies = self.commands.as_mut().map(|c| &mut c.replies);
        self.rt.block_on(async {
            let reply = async {
                match replies {
                    Some(r) => r.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                ev = rx.recv() => ev.map_or(Wake::LinkGone, Wake::Link),
                Some(out) = reply => Wake::Reply(out),
                _ = stop.cancelled(), if !stopping => Wake::Stop,
                _ = notify.notified(), if !stopping => Wake::Timer,
                _ = tokio::time::sleep_until(deadline.into()) => Wake::Timer,
            }
        })
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        if self.delivery.flush_due(now) {
            self.flush_acks();
        }
        if now >= self.next_maintenance {
            self.maintenance();
        }
        if self.ready && now >= self.next_status {
            self.publish_status();
        }
        self.refill();
        if now >= self.next_poll {
            self.next_poll = now + POLL_EVERY;
        }
    }

    fn on_link(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Down(why) => self.on_down(why),
            LinkEvent::Mqtt(ev) => self.on_mqtt(*ev),
        }
    }

    fn on_mqtt(&mut self, ev: Event) {
        match ev {
            Event::Incoming(p) => match p {
                Packet::ConnAck(ack) => {
                    self.broker_max_packet =
                        ack.properties.as_ref().and_then(|p| p.max_packet_size);
                    self.on_connected(ack.session_present)
                }
                Packet::PubAck(ack) => self.on_puback(&ack),
                Packet::Publish(p) => self.on_command(p),
                Packet::SubAck(s) => {
                    for code in &s.return_codes {
                        if !matches!(code, SubscribeReasonCode::Success(_)) {
                            tracing::error!(
                                filter = %self.topics.commands_filter(),
                                code = ?code,
                                "the broker refused our command subscription; remote commands will not arrive"
                            );
                        }
                    }
                }
                _ => {}
            },
            Event::Outgoing(o) => match o {
                Outgoing::Publish(pkid) => self.on_sent(pkid),
                Outgoing::AwaitAck(_) => self.delivery.on_await_ack(),
                Outgoing::Disconnect => self.disconnect_sent = true,
                _ => {}
            },
        }
    }

    fn on_connected(&mut self, session_present: bool) {
        self.flush_acks();
        self.ready = true;
        self.delivery.connected();
        let outage = self.down_since.take().map(|t| t.elapsed());
        self.last_down = None;
        self.down_count = 0;
        if let Ok(mut s) = self.stats.lock() {
            s.connected = true;
            s.connects += 1;
            s.last_error = None;
        }
        match outage {
            Some(d) => tracing::info!(
                url = %self.cfg.url,
                outage_s = d.as_secs(),
                session_present,
                "MQTT broker reachable again; sending the outbox"
            ),
            None => {
                tracing::info!(url = %self.cfg.url, session_present, "connected to the MQTT broker")
            }
        }
        // Retain-as-published: a broker clears the retain flag of a message
        // sent to existing subscribers, which would let a retained command
        // pass for a live one.
        let filter = Filter {
            preserve_retain: true,
            ..Filter::new(self.topics.commands_filter(), QoS::AtLeastOnce)
        };
        if self.commands.is_some()
            && let Err(e) = self.client.try_subscribe_many([filter])
        {
            tracing::error!(error = %e, "cannot subscribe to commands");
        }
        self.refresh_pending();
        self.publish_status();
    }

    fn on_down(&mut self, why: String) {
        self.flush_acks();
        let was_ready = std::mem::replace(&mut self.ready, false);
        self.delivery.lost();
        self.down_count += 1;
        let now = Instant::now();
        self.down_since.get_or_insert(now);
        if let Ok(mut s) = self.stats.lock() {
            s.connected = false;
            s.in_flight = 0;
            s.last_error = Some(why.clone());
        }
        if self.disconnect_sent {
            return;
        }
        let repeat = self
            .last_down
            .as_ref()
            .is_some_and(|(m, at)| *m == why && at.elapsed() < DOWN_LOG_EVERY);
        if repeat {
            tracing::debug!(error = %why, attempts = self.down_count, "MQTT broker still unreachable");
        } else {
            if was_ready {
                tracing::warn!(url = %self.cfg.url, error = %why, "MQTT connection lost; events wait in the outbox");
            } else {
                tracing::error!(url = %self.cfg.url, error = %why, attempts = self.down_count, "cannot connect to the MQTT broker; events wait in the outbox");
            }
            self.last_down = Some((why, now));
        }
    }

    fn on_sent(&mut self, pkid: u16) {
        if let Some(seq) = self.delivery.on_sent(pkid) {
            self.delivered(seq);
        }
    }

    fn on_puback(&mut self, ack: &PubAck) {
        let Some(handed) = self.delivery.on_puback(ack.pkid) else {
            return;
        };
        let Handed::Row { seq } = handed else {
            return;
        };
        match ack.reason {
            PubAckReason::Success | PubAckReason::NoMatchingSubscribers => self.delivered(seq),
            PubAckReason::NotAuthorized
            | PubAckReason::TopicNameInvalid
            | PubAckReason::PayloadFormatInvalid => {
                tracing::error!(
                    seq,
                    reason = ?ack.reason,
                    "the broker refused an outbox message for good; dropped (check the broker's ACL for our topics)"
                );
                self.delivery.ack(seq, Instant::now());
                if let Ok(mut s) = self.stats.lock() {
                    s.rejected += 1;
                }
            }
            other => {
                tracing::warn!(seq, reason = ?other, "the broker did not take an outbox message; it will be sent again");
                self.delivery
                    .rewind_at(Instant::now() + Duration::from_secs(1));
            }
        }
    }

    fn delivered(&mut self, seq: i64) {
        self.delivery.ack(seq, Instant::now());
        if let Ok(mut s) = self.stats.lock() {
            s.delivered += 1;
        }
    }

    fn flush_acks(&mut self) {
        let acked = self.delivery.acked();
        if acked.is_empty() {
            return;
        }
        match self.outbox.remove(acked) {
            Ok(()) => {
                if let Ok(mut s) = self.stats.lock() {
                    s.pending = s.pending.saturating_sub(acked.len() as u64);
                }
                self.delivery.flushed();
            }
            // Kept for the next try; at worst they are sent again.
            Err(e) => {
                tracing::error!(error = %e, "cannot delete delivered outbox rows");
                self.delivery.flush_failed(Instant::now());
            }
        }
    }

    /// Hands undelivered rows to rumqttc until the window is full.
    fn refill(&mut self) {
        if !self.ready || self.disconnect_sent {
            return;
        }
        if self.delivery.rewind_due(Instant::now()) {
            self.flush_acks();
            self.delivery.rewind();
        }
        loop {
            let room = self.delivery.room();
            if room == 0 {
                break;
            }
            let rows = match self.outbox.next_after(self.delivery.cursor(), room) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox");
                    break;
                }
            };
            if rows.is_empty() {
                break;
            }
            let fetched = rows.len();
            let now = OffsetDateTime::now_utc();
            let mut void = Vec::new();
            let mut handed = 0;
            let mut stopped = false;
            {
                let Ok(link) = self.link.lock() else { return };
                if !link.connected {
                    return;
                }
                for row in rows {
                    if row.expired(now) {
                        tracing::warn!(
                            id = %row.message_id,
                            topic = %row.topic,
                            "expired before the broker took it (gate open?): dropped, never sent late"
                        );
                        void.push((row.seq, true));
                        self.delivery.skipped(row.seq);
                        continue;
                    }
                    if !valid_topic(&row.topic) {
                        tracing::error!(seq = row.seq, topic = %row.topic, "invalid MQTT topic in the outbox; dropped");
                        void.push((row.seq, false));
                        self.delivery.skipped(row.seq);
                        continue;
                    }
                    // Sending it would fail the connection, again and again.
                    let size = row.payload.len() + row.topic.len() + PACKET_OVERHEAD;
                    if self
                        .broker_max_packet
                        .is_some_and(|max| size > max as usize)
                    {
                        tracing::error!(
                            id = %row.message_id,
                            bytes = size,
                            max = ?self.broker_max_packet,
                            "message larger than the broker's maximum packet size; dropped (include_face_images?)"
                        );
                        void.push((row.seq, false));
                        self.delivery.skipped(row.seq);
                        continue;
                    }
                    let props = self.properties(&row, now);
                    let qos = if row.qos == 0 {
                        QoS::AtMostOnce
                    } else {
                        QoS::AtLeastOnce
                    };
                    let sent = match props {
                        Some(p) => self.client.try_publish_with_properties(
                            row.topic,
                            qos,
                            row.retain,
                            row.payload,
                            p,
                        ),
                        None => self
                            .client
                            .try_publish(row.topic, qos, row.retain, row.payload),
                    };
                    if sent.is_err() {
                        stopped = true;
                        break;
                    }
                    self.delivery.handed(Handed::Row { seq: row.seq });
                    handed += 1;
                }
            }
            if !void.is_empty() {
                let seqs: Vec<i64> = void.iter().map(|(s, _)| *s).collect();
                if let Err(e) = self.outbox.remove(&seqs) {
                    tracing::error!(error = %e, "cannot delete expired outbox rows");
                }
                if let Ok(mut s) = self.stats.lock() {
                    for (_, expired) in &void {
                        if *expired {
                            s.expired += 1;
                        } else {
                            s.rejected += 1;
                        }
                    }
                }
            }
            if let Ok(mut s) = self.stats.lock() {
                s.in_flight = self.delivery.in_flight() as u64;
            }
            if stopped || (handed == 0 && void.is_empty()) || fetched < room {
                break;
            }
        }
    }

    /// MQTT 5 properties: a gate command expires on the broker when it
    /// does for us; alerts get the configured expiry.
    fn properties(&self, row: &OutboxRow, now: OffsetDateTime) -> Option<PublishProperties> {
        let expiry = if let Some(at) = row.expires_at {
            let left_ms = at - super::outbox::ms(now);
            Some(((left_ms + 999) / 1000).clamp(1, i64::from(u32::MAX)) as u32)
        } else if self.cfg.alert_expiry_s > 0 && row.topic == self.topics.alerts() {
            Some(self.cfg.alert_expiry_s)
        } else {
            None
        };
        expiry.map(|s| PublishProperties {
            message_expiry_interval: Some(s),
            ..Default::default()
        })
    }

    /// A status or reply, outside the outbox. False when not connected.
    fn publish_direct(&mut self, topic: String, payload: Vec<u8>, retain: bool) -> bool {
        if !self.ready {
            return false;
        }
        let Ok(link) = self.link.lock() else {
            return false;
        };
        if !link.connected {
            return false;
        }
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
        {
            Ok(()) => {
                self.delivery.handed(Handed::Direct);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "direct publish not queued");
                false
            }
        }
    }

    fn status_payload(&mut self, state: &str, reason: Option<&str>) -> Vec<u8> {
        self.status_seq += 1;
        let stats = self.stats();
        self.info.payload(
            state,
            reason,
            Some(&stats),
            &self.status_seq.to_string(),
            OffsetDateTime::now_utc(),
            &self.cfg,
        )
    }

    fn publish_status(&mut self) {
        let payload = self.status_payload("online", None);
        self.publish_direct(self.topics.status(), payload, true);
        self.next_status = Instant::now() + Duration::from_secs(self.cfg.status_interval_s);
    }

    fn stats(&self) -> PublisherStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn refresh_pending(&mut self) {
        match self.outbox.pending() {
            Ok(n) => {
                if let Ok(mut s) = self.stats.lock() {
                    s.pending = n;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot count the outbox"),
        }
    }

    /// Bounds by age and size; drops are counted, logged and reported.
    fn maintenance(&mut self) {
        self.next_maintenance = Instant::now() + MAINTENANCE_EVERY;
        let d = match self.outbox.enforce_limits(
            self.cfg.outbox_max_rows,
            Duration::from_secs(self.cfg.outbox_max_age_s),
            OffsetDateTime::now_utc(),
        ) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot enforce the outbox bounds");
                return;
            }
        };
        self.refresh_pending();
        if d.by_age + d.by_size > 0 {
            tracing::error!(
                by_age = d.by_age,
                by_size = d.by_size,
                max_rows = self.cfg.outbox_max_rows,
                max_age_s = self.cfg.outbox_max_age_s,
                "outbox full: the oldest undelivered messages were dropped"
            );
            if let Ok(mut s) = self.stats.lock() {
                s.dropped_age += d.by_age;
                s.dropped_size += d.by_size;
            }
            // Rows may have gone from under the cursor; nothing to redo.
            if self.ready
                && self
                    .last_drop_status
                    .is_none_or(|t| t.elapsed() >= DROP_STATUS_EVERY)
            {
                self.last_drop_status = Some(Instant::now());
                self.publish_status();
            }
        }
    }

    fn on_command(&mut self, p: Publish) {
        let topic = String::from_utf8_lossy(&p.topic).into_owned();
        let Some(name) = self.topics.command_name(&topic).map(str::to_owned) else {
            tracing::debug!(topic = %topic, "message on an unexpected topic ignored");
            return;
        };
        if p.payload.is_empty() {
            // How a retained message is cleared: not a command.
            tracing::debug!(topic = %topic, "empty message on a command topic ignored");
            return;
        }
        let status = json!({
            "site": self.info.site,
            "version": self.info.version,
            "started_at": self.info.started_at,
            "cameras": self.info.cameras,
            "outbox": self.stats(),
        });
        let Some(lanes) = self.commands.as_mut() else {
            return;
        };
        let now = OffsetDateTime::now_utc();
        let job = Incoming {
            name: name.clone(),
            payload: p.payload.to_vec(),
            retained: p.retain,
            received: now,
            status,
        };
        match lanes.tx.try_send(job) {
            Ok(()) => {}
            Err(e) => {
                let out = lanes.replier.reply(
                    &name,
                    None,
                    Err(Refusal::QueueFull {
                        queue: "commands",
                        max: COMMAND_QUEUE,
                    }),
                    now,
                    Vec::new(),
                );
                if matches!(e, mpsc::error::TrySendError::Closed(_)) {
                    tracing::error!("the command lane has stopped; command refused");
                }
                self.on_reply(out);
            }
        }
    }

    /// A command's reply, from a lane (or refused here): counted, sent.
    fn on_reply(&mut self, out: CommandOutcome) {
        if let Ok(mut s) = self.stats.lock() {
            if out.ok {
                s.commands_ok += 1;
            } else {
                s.commands_refused += 1;
            }
        }
        if !self.publish_direct(out.reply_topic, out.reply, false) {
            tracing::warn!(cmd = %out.name, "command reply not sent (connection lost)");
        }
    }

    /// Shutdown: let in-flight rows be acknowledged, say offline, DISCONNECT.
    fn drain(&mut self) {
        let grace = Duration::from_secs_f64(self.cfg.shutdown_grace_s);
        let deadline = Instant::now() + grace;
        let busy = |s: &Self| s.delivery.busy();
        while self.ready && busy(self) && Instant::now() < deadline {
            match self.wait(deadline.min(Instant::now() + ACK_DELAY), true) {
                Wake::Link(ev) => self.on_link(ev),
                Wake::LinkGone => break,
                _ => {}
            }
        }
        self.flush_acks();
        if self.ready {
            let payload = self.status_payload("offline", Some("shutdown"));
            self.publish_direct(self.topics.status(), payload, true);
            let deadline = Instant::now() + grace.max(Duration::from_millis(500));
            while self.ready && busy(self) && Instant::now() < deadline {
                match self.wait(deadline, true) {
                    Wake::Link(ev) => self.on_link(ev),
                    Wake::LinkGone => break,
                    _ => {}
                }
            }
            if self.client.try_disconnect().is_ok() {
                let deadline = Instant::now() + Duration::from_secs(1);
                while !self.disconnect_sent && Instant::now() < deadline {
                    match self.wait(deadline, true) {
                        Wake::Link(ev) => self.on_link(ev),
                        Wake::LinkGone => break,
                        _ => {}
                    }
                }
            }
        }
        self.flush_acks();
        self.conn_stop.cancel();
        self.refresh_pending();
        if let Ok(mut s) = self.stats.lock() {
            s.connected = false;
            s.in_flight = 0;
            tracing::info!(
                pending = s.pending,
                delivered = s.delivered,
                "MQTT publisher stopped"
            );
        }
    }
}

/// A topic rumqttc will accept for publishing.
fn valid_topic(t: &str) -> bool {
    !t.is_empty() && t.len() < 65_535 && !t.contains(['+', '#', '\0'])
}
