//! Topics and payloads, in one place: what an event becomes on the wire.
//! `docs/mqtt.md` shows every one of them with an example.

use base64::Engine as _;
use serde_json::{Map, Value, json};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use super::config::{MqttConfig, Secret, is_topic_name};
use super::sign;
use crate::events::{Event, EventKind, OutboxMessage};
use crate::registry::Priority;

/// Version of every payload's layout (`schema` field); bumped on
/// incompatible changes only, new fields do not bump it.
pub const PAYLOAD_SCHEMA: u32 = 1;

/// The topic names of one site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    base: String,
}

impl Topics {
    pub fn new(prefix: &str, site: &str) -> Self {
        Topics {
            base: format!("{prefix}/{site}"),
        }
    }

    /// Retained gateway state; the last will sets it offline.
    pub fn status(&self) -> String {
        format!("{}/status", self.base)
    }

    /// Retained state of one camera.
    pub fn camera_status(&self, camera: &str) -> String {
        format!("{}/cameras/{camera}/status", self.base)
    }

    /// Every track decision of a camera.
    pub fn events(&self, camera: &str) -> String {
        format!("{}/events/{camera}", self.base)
    }

    /// The alerts of the site (`<prefix>/+/alerts` gives a district all).
    pub fn alerts(&self) -> String {
        format!("{}/alerts", self.base)
    }

    /// The local gate controller's open command.
    pub fn gate_open(&self, gate: &str) -> String {
        format!("{}/gates/{gate}/open", self.base)
    }

    /// What the gateway subscribes to for commands.
    pub fn commands_filter(&self) -> String {
        format!("{}/cmd/+", self.base)
    }

    pub fn command_reply(&self, name: &str) -> String {
        format!("{}/cmd/{name}/reply", self.base)
    }

    /// The command name of a command topic, `None` for any other topic.
    pub fn command_name<'a>(&self, topic: &'a str) -> Option<&'a str> {
        let rest = topic.strip_prefix(&self.base)?.strip_prefix("/cmd/")?;
        (!rest.is_empty() && !rest.contains('/')).then_some(rest)
    }
}

/// RFC 3339 in the configured offset (`2026-11-27T18:00:00.123+08:00`).
pub fn fmt_ts(t: OffsetDateTime, offset: UtcOffset) -> String {
    t.to_offset(offset)
        .format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// The id a message carries: the event id for its first decision, with
/// `.r<revision>` appended for later revisions of the same track's event,
/// so a consumer dropping duplicates by `id` never drops an update.
pub fn message_id(e: &Event) -> String {
    if e.revision == 0 {
        e.id.clone()
    } else {
        format!("{}.r{}", e.id, e.revision)
    }
}

/// The alert priority: the event's own (a watch-list entry's), else its
/// kind's ([`EventKind::default_priority`]).
pub fn priority_of(e: &Event) -> Priority {
    e.priority.unwrap_or(e.kind.default_priority())
}

/// The outbox messages of an event: the event on `events/<camera>` (track
/// decisions), alerts on `alerts`, camera state changes on the retained
/// `cameras/<camera>/status`, and a signed gate open command for an owner
/// pass at a gate that has a secret. Empty when MQTT is off. Face images
/// stay out (see [`messages_for_with_face`]).
pub fn messages_for(event: &Event, cfg: &MqttConfig, site: &str) -> Vec<OutboxMessage> {
    messages_for_with_face(event, cfg, site, None)
}

/// [`messages_for`], with the face crop (JPEG bytes) put into event and
/// alert payloads when `include_face_images` allows it.
pub fn messages_for_with_face(
    event: &Event,
    cfg: &MqttConfig,
    site: &str,
    face_jpeg: Option<&[u8]>,
) -> Vec<OutboxMessage> {
    if !cfg.enabled() {
        return Vec::new();
    }
    let topics = Topics::new(&cfg.prefix, site);
    let id = message_id(event);
    let face = face_jpeg.filter(|_| cfg.include_face_images);
    let payload = event_payload(event, cfg, site, face)
        .to_string()
        .into_bytes();
    let mut out = Vec::with_capacity(3);
    let msg = |topic: String, payload: Vec<u8>, retain: bool| OutboxMessage {
        message_id: id.clone(),
        topic,
        payload,
        qos: 1,
        retain,
        expires_at: None,
    };
    if event.kind.is_camera_state() {
        if is_topic_name(&event.camera) {
            out.push(msg(
                topics.camera_status(&event.camera),
                camera_status_payload(event, cfg, site),
                true,
            ));
        }
    } else if is_topic_name(&event.camera) {
        out.push(msg(topics.events(&event.camera), payload.clone(), false));
    } else {
        tracing::error!(camera = %event.camera, "camera name unusable as an MQTT topic level; event not published on events/");
    }
    if event.kind.is_alert() && !event.repeat {
        out.push(msg(topics.alerts(), payload, false));
    }
    if event.kind == EventKind::OwnerPass
        && !event.repeat
        && let Some(gate) = &event.gate
    {
        match cfg.gate_secret(gate) {
            Some(Ok(secret)) => {
                let expires = event.ts + time::Duration::seconds(cfg.gate_open_ttl_s as i64);
                out.push(gate_open_message(
                    cfg,
                    site,
                    gate,
                    &secret,
                    GateOpenCause::Event {
                        event_id: &id,
                        camera: &event.camera,
                    },
                    event.ts,
                    expires,
                ));
            }
            Some(Err(e)) => {
                tracing::error!(gate = %gate, error = %e, "gate open command not sent: no usable secret")
            }
            None if cfg.gate_secrets.is_empty() => {}
            None => tracing::warn!(
                gate = %gate,
                "gate open command not sent: the gate has no entry in mqtt.gate_secrets"
            ),
        }
    }
    out
}

/// What the event sink calls: [`messages_for`], with the face crop read
/// from the event's snapshot under `data_dir` only when
/// `include_face_images` is on (an unreadable file just leaves it out).
pub fn messages_with_snapshot(
    event: &Event,
    cfg: &MqttConfig,
    site: &str,
    data_dir: &std::path::Path,
) -> Vec<OutboxMessage> {
    let face = match (&event.snapshot, cfg.include_face_images && cfg.enabled()) {
        (Some(s), true) => crate::crypto::read_snapshot(&data_dir.join(&s.face)).ok(),
        _ => None,
    };
    messages_for_with_face(event, cfg, site, face.as_deref())
}

/// An event as JSON: the stored event's fields, with `id` the message id,
/// `event_id`, `ts` in the configured offset, `priority` and `alert`
/// always set, snapshot URLs, and the face crop only if allowed.
pub fn event_payload(e: &Event, cfg: &MqttConfig, site: &str, face_jpeg: Option<&[u8]>) -> Value {
    let mut m = match serde_json::to_value(e) {
        Ok(Value::Object(m)) => m,
        // Event is plain data; serialising it cannot fail.
        _ => Map::new(),
    };
    let off = cfg.offset();
    // f32 scores widened to f64 print as 0.9700000286102295: 4 decimals.
    for key in ["score", "liveness"] {
        if let Some(v) = m.get(key).and_then(Value::as_f64) {
            m.insert(key.into(), json!((v * 1e4).round() / 1e4));
        }
    }
    m.insert("schema".into(), json!(PAYLOAD_SCHEMA));
    m.insert("id".into(), json!(message_id(e)));
    m.insert("event_id".into(), json!(e.id));
    m.insert("site".into(), json!(site));
    m.insert("ts".into(), json!(fmt_ts(e.ts, off)));
    m.insert("priority".into(), json!(priority_of(e).as_str()));
    m.insert("alert".into(), json!(e.kind.is_alert()));
    if let (Some(base), Some(s)) = (&cfg.snapshot_base_url, &e.snapshot) {
        m.insert("snapshot_url".into(), json!(snapshot_url(base, &s.face)));
        m.insert("scene_url".into(), json!(snapshot_url(base, &s.scene)));
    }
    if let Some(jpeg) = face_jpeg {
        m.insert(
            "face_jpeg".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(jpeg)),
        );
    }
    Value::Object(m)
}

/// `base` + the snapshot's path below `snapshots/`.
pub fn snapshot_url(base: &str, path: &str) -> String {
    let rel = path.strip_prefix("snapshots/").unwrap_or(path);
    if base.ends_with('/') {
        format!("{base}{rel}")
    } else {
        format!("{base}/{rel}")
    }
}

fn camera_status_payload(e: &Event, cfg: &MqttConfig, site: &str) -> Vec<u8> {
    json!({
        "schema": PAYLOAD_SCHEMA,
        "id": message_id(e),
        "kind": "camera_status",
        "site": site,
        "camera": e.camera,
        "state": if e.kind == EventKind::CameraOffline { "offline" } else { "online" },
        "reason": e.reason,
        "ts": fmt_ts(e.ts, cfg.offset()),
    })
    .to_string()
    .into_bytes()
}

/// Why a gate is opened.
#[derive(Debug, Clone, Copy)]
pub enum GateOpenCause<'a> {
    /// An owner recognised at the gate's camera.
    Event { event_id: &'a str, camera: &'a str },
    /// A signed `gate_open` command from the command centre.
    Command { nonce: &'a str },
}

/// A signed, never retained gate open command, void after `expires`.
pub fn gate_open_message(
    cfg: &MqttConfig,
    site: &str,
    gate: &str,
    secret: &Secret,
    cause: GateOpenCause<'_>,
    at: OffsetDateTime,
    expires: OffsetDateTime,
) -> OutboxMessage {
    let off = cfg.offset();
    let (ts, exp) = (fmt_ts(at, off), fmt_ts(expires, off));
    let nonce = sign::nonce();
    let sig = sign::sign_hex(
        secret,
        sign::gate_open_string(site, gate, &ts, &exp, &nonce).as_bytes(),
    );
    let (id, source, camera, event_id) = match cause {
        GateOpenCause::Event { event_id, camera } => (
            format!("{event_id}.open"),
            "face",
            Some(camera),
            Some(event_id),
        ),
        GateOpenCause::Command { nonce } => (format!("cmd-{nonce}.open"), "command", None, None),
    };
    let payload = json!({
        "schema": PAYLOAD_SCHEMA,
        "id": id,
        "kind": "gate_open",
        "site": site,
        "gate": gate,
        "source": source,
        "camera": camera,
        "event_id": event_id,
        "ts": ts,
        "expires_at": exp,
        "nonce": nonce,
        "sig_alg": "hmac-sha256",
        "sig": sig,
    });
    OutboxMessage {
        message_id: id,
        topic: Topics::new(&cfg.prefix, site).gate_open(gate),
        payload: payload.to_string().into_bytes(),
        qos: 1,
        retain: false,
        expires_at: Some(expires),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CameraRole;
    use crate::events::{Place, Snapshot};
    use crate::registry::Subject;

    fn cfg() -> MqttConfig {
        MqttConfig {
            url: "mqtt://127.0.0.1:1883".into(),
            snapshot_base_url: Some("http://gw:8080/api/v1/snapshots/".into()),
            ..Default::default()
        }
    }

    /// The test config with a secret for gate `door-1`, kept in a file in `dir`.
    fn cfg_with_gate_secret(dir: &std::path::Path) -> MqttConfig {
        let p = dir.join("g");
        std::fs::write(&p, "gate-secret-0123456789").unwrap();
        let mut c = cfg();
        c.gate_secrets
            .insert("door-1".into(), format!("file:{}", p.display()));
        c
    }

    fn event(kind: EventKind) -> Event {
        let place = Place {
            site: "gy-001".into(),
            grid: "g-7".into(),
            ..Default::default()
        };
        let t = time::macros::datetime!(2026-11-27 10:00:00 UTC);
        Event::new(kind, t, "gate-1", CameraRole::Gate, &place)
    }

    #[test]
    fn topics_and_command_names() {
        let t = Topics::new("facegate", "gy-001");
        assert_eq!(t.events("cam-1"), "facegate/gy-001/events/cam-1");
        assert_eq!(t.alerts(), "facegate/gy-001/alerts");
        assert_eq!(t.gate_open("g1"), "facegate/gy-001/gates/g1/open");
        assert_eq!(t.command_name("facegate/gy-001/cmd/status"), Some("status"));
        assert_eq!(t.command_name("facegate/gy-001/cmd/status/reply"), None);
        assert_eq!(t.command_name("facegate/gy-002/cmd/status"), None);
    }

    #[test]
    fn a_stranger_goes_to_events_and_alerts_with_one_id_and_an_offset_time() {
        let mut e = event(EventKind::Stranger);
        e.score = Some(0.97);
        e.snapshot = Some(Snapshot {
            face: "snapshots/2026-11-27/x-face.jpg".into(),
            scene: "snapshots/2026-11-27/x-scene.jpg".into(),
        });
        let msgs = messages_for(&e, &cfg(), "gy-001");
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].topic, "facegate/gy-001/events/gate-1");
        assert_eq!(msgs[1].topic, "facegate/gy-001/alerts");
        assert!(
            msgs.iter()
                .all(|m| m.message_id == e.id && !m.retain && m.qos == 1)
        );
        let v: Value = serde_json::from_slice(&msgs[1].payload).unwrap();
        assert_eq!(v["id"], json!(e.id));
        assert_eq!(v["ts"], json!("2026-11-27T18:00:00+08:00"));
        // No priority of its own: the kind's declared default.
        assert_eq!(v["priority"], json!("normal"));
        assert_eq!(v["kind"], json!("stranger"));
        assert_eq!(v["grid"], json!("g-7"));
        assert_eq!(v["score"], json!(0.97));
        assert_eq!(
            v["snapshot_url"],
            json!("http://gw:8080/api/v1/snapshots/2026-11-27/x-face.jpg")
        );
        assert!(v.get("face_jpeg").is_none());
        // Face data only where allowed.
        let with = messages_for_with_face(&e, &cfg(), "gy-001", Some(b"jpeg"));
        assert!(!String::from_utf8_lossy(&with[0].payload).contains("face_jpeg"));
        let allow = MqttConfig {
            include_face_images: true,
            ..cfg()
        };
        let with = messages_for_with_face(&e, &allow, "gy-001", Some(b"jpeg"));
        assert!(String::from_utf8_lossy(&with[0].payload).contains("\"face_jpeg\":\"anBlZw==\""));
    }

    #[test]
    fn the_sink_helper_reads_the_face_crop_only_when_allowed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("snapshots/d")).unwrap();
        std::fs::write(dir.path().join("snapshots/d/f.jpg"), b"jpeg").unwrap();
        let mut e = event(EventKind::Stranger);
        e.snapshot = Some(Snapshot {
            face: "snapshots/d/f.jpg".into(),
            scene: "snapshots/d/s.jpg".into(),
        });
        let has_face = |c: &MqttConfig| {
            messages_with_snapshot(&e, c, "gy-001", dir.path())
                .iter()
                .all(|m| String::from_utf8_lossy(&m.payload).contains("face_jpeg"))
        };
        assert!(!has_face(&cfg()));
        let allow = MqttConfig {
            include_face_images: true,
            ..cfg()
        };
        assert!(has_face(&allow));
    }

    #[test]
    fn revisions_get_their_own_message_id() {
        let mut e = event(EventKind::Watchlist);
        e.revision = 2;
        e.priority = Some(Priority::Critical);
        let msgs = messages_for(&e, &cfg(), "gy-001");
        assert_eq!(msgs[0].message_id, format!("{}.r2", e.id));
        let v: Value = serde_json::from_slice(&msgs[0].payload).unwrap();
        assert_eq!(v["event_id"], json!(e.id));
        assert_eq!(v["priority"], json!("critical"));
    }

    #[test]
    fn camera_state_goes_to_alerts_and_the_retained_camera_status() {
        let mut e = event(EventKind::CameraOffline);
        e.reason = Some("stalled".into());
        let msgs = messages_for(&e, &cfg(), "gy-001");
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].topic, "facegate/gy-001/cameras/gate-1/status");
        assert!(msgs[0].retain);
        let v: Value = serde_json::from_slice(&msgs[0].payload).unwrap();
        assert_eq!(v["state"], json!("offline"));
        assert_eq!(msgs[1].topic, "facegate/gy-001/alerts");
        let v: Value = serde_json::from_slice(&msgs[1].payload).unwrap();
        assert_eq!(v["priority"], json!("high"));
    }

    #[test]
    fn an_owner_pass_at_a_gate_with_a_secret_gets_a_signed_expiring_open() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg_with_gate_secret(dir.path());
        let mut e = event(EventKind::OwnerPass);
        e.subject = Some(Subject::Owner {
            id: "A-1".into(),
            name: "Li".into(),
        });
        e.gate = Some("door-1".into());
        let msgs = messages_for(&e, &c, "gy-001");
        assert_eq!(msgs.len(), 2, "events + gate open, no alert");
        let open = &msgs[1];
        assert_eq!(open.topic, "facegate/gy-001/gates/door-1/open");
        assert!(!open.retain);
        assert_eq!(open.expires_at, Some(e.ts + time::Duration::seconds(5)));
        let v: Value = serde_json::from_slice(&open.payload).unwrap();
        assert_eq!(v["expires_at"], json!("2026-11-27T18:00:05+08:00"));
        let signed = sign::gate_open_string(
            "gy-001",
            "door-1",
            v["ts"].as_str().unwrap(),
            v["expires_at"].as_str().unwrap(),
            v["nonce"].as_str().unwrap(),
        );
        let secret = Secret::new(b"gate-secret-0123456789".to_vec());
        assert!(sign::verify_hex(
            &secret,
            signed.as_bytes(),
            v["sig"].as_str().unwrap()
        ));
        // A gate without a secret gets no command; MQTT off gets nothing.
        e.gate = Some("door-2".into());
        assert_eq!(messages_for(&e, &c, "gy-001").len(), 1);
        assert!(messages_for(&e, &MqttConfig::default(), "gy-001").is_empty());
    }

    #[test]
    fn undecided_and_repeat_decisions_are_events_not_alerts_and_never_open() {
        let e = event(EventKind::Undecided);
        let msgs = messages_for(&e, &cfg(), "gy-001");
        assert_eq!(msgs.len(), 1, "events only");
        let v: Value = serde_json::from_slice(&msgs[0].payload).unwrap();
        assert_eq!(v["alert"], json!(false));
        let mut s = event(EventKind::Stranger);
        s.repeat = true;
        let msgs = messages_for(&s, &cfg(), "gy-001");
        assert_eq!(msgs.len(), 1, "a repeat is recorded, not alerted again");
        let v: Value = serde_json::from_slice(&msgs[0].payload).unwrap();
        assert_eq!(v["repeat"], json!(true));
        // A repeat pass never sends a second open, even with a gate and secret.
        let dir = tempfile::tempdir().unwrap();
        let c = cfg_with_gate_secret(dir.path());
        let mut pass = event(EventKind::OwnerPass);
        pass.gate = Some("door-1".into());
        assert_eq!(messages_for(&pass, &c, "gy-001").len(), 2);
        pass.repeat = true;
        assert_eq!(messages_for(&pass, &c, "gy-001").len(), 1);
    }
}
