//! The `[mqtt]` section: broker, topics, outbox bounds, gate and command
//! secrets. Secrets are never values in the file: they are references,
//! `env:NAME` or `file:/path`, resolved when the publisher starts.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use time::UtcOffset;

/// MQTT publishing and remote commands. An empty `url` turns MQTT off: no
/// outbox rows are queued and no publisher runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// `mqtt://host[:1883]` or `mqtts://host[:8883]`; no credentials inside.
    pub url: String,
    /// First topic level: `<prefix>/<site>/...`.
    pub prefix: String,
    /// Client id of the persistent session; default `facegate-<site>`.
    pub client_id: Option<String>,
    /// Broker login: `env:NAME` or `file:/path` (never the value itself).
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM file of the CA that signed the broker's certificate (mqtts).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and private key, for brokers that
    /// authenticate clients by certificate.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// MQTT keep-alive, seconds (at least 5).
    pub keep_alive_s: u64,
    /// TCP + TLS + CONNACK must complete within this many seconds.
    pub connect_timeout_s: u64,
    /// Reconnect backoff: first wait, doubled up to the maximum (with jitter).
    pub reconnect_min_s: f64,
    pub reconnect_max_s: f64,
    /// How long the broker keeps our session (subscriptions, queued
    /// commands) while we are away, seconds.
    pub session_expiry_s: u32,
    /// Outbox messages sent but not yet acknowledged, at most.
    pub max_in_flight: u16,
    /// Largest packet we accept from the broker (a `watchlist_add` carries
    /// a photo), bytes.
    pub max_packet_bytes: u32,
    /// Outbox bounds: the oldest undelivered messages beyond these are
    /// dropped, counted, logged and reported on the status topic.
    pub outbox_max_rows: u64,
    pub outbox_max_age_s: u64,
    /// MQTT 5 message expiry of alerts, seconds (0 = never expire): the
    /// broker discards an alert not delivered to a subscriber by then.
    pub alert_expiry_s: u32,
    /// The retained status is refreshed this often, seconds.
    pub status_interval_s: u64,
    /// Base of snapshot URLs, e.g. `http://10.0.0.5:8080/api/v1/snapshots/`;
    /// the snapshot's path below `snapshots/` is appended.
    pub snapshot_base_url: Option<String>,
    /// Put the face crop (base64 JPEG) inside event messages. Off by
    /// default: face data stays on the device, messages carry a URL.
    pub include_face_images: bool,
    /// Offset of the times in payloads: `+08:00` (China) or `Z`.
    pub utc_offset: String,
    /// A gate open command is void this many seconds after the decision.
    pub gate_open_ttl_s: u64,
    /// Shared secret per gate controller: `{ "gate-1" = "env:GATE1_SECRET" }`.
    /// A gate without a secret gets no open command.
    pub gate_secrets: BTreeMap<String, String>,
    /// Shared secret of the command centre's signed commands; none = the
    /// gateway does not subscribe to commands at all.
    pub command_secret: Option<String>,
    /// Commands signed longer ago than this are refused, seconds. Their
    /// nonces are kept on disk (in the outbox database) until then, so a
    /// replay is refused even after a restart.
    pub command_max_age_s: u64,
    /// Commands signed more than this many seconds in the future (by the
    /// gateway's clock) are refused: the clock skew allowed between the
    /// command centre and the gateway. At most `command_max_age_s`.
    pub command_max_skew_s: u64,
    /// On shutdown, wait this long for in-flight messages to be acknowledged.
    pub shutdown_grace_s: f64,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            prefix: "facegate".into(),
            client_id: None,
            username: None,
            password: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            keep_alive_s: 30,
            connect_timeout_s: 10,
            reconnect_min_s: 1.0,
            reconnect_max_s: 30.0,
            session_expiry_s: 7 * 24 * 3600,
            max_in_flight: 32,
            max_packet_bytes: 4 * 1024 * 1024,
            outbox_max_rows: 100_000,
            outbox_max_age_s: 7 * 24 * 3600,
            alert_expiry_s: 0,
            status_interval_s: 60,
            snapshot_base_url: None,
            include_face_images: false,
            utc_offset: "+08:00".into(),
            gate_open_ttl_s: 5,
            gate_secrets: BTreeMap::new(),
            command_secret: None,
            command_max_age_s: 30,
            command_max_skew_s: 10,
            shutdown_grace_s: 3.0,
        }
    }
}

/// Where a broker is, from `mqtt.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl BrokerUrl {
    /// `mqtt://host[:port]` or `mqtts://host[:port]`; `[v6]` hosts allowed.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else {
            return Err(format!("'{url}': must start with mqtt:// or mqtts://"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('@') {
            return Err(
                "credentials do not belong in the URL: use mqtt.username and mqtt.password (env:NAME or file:PATH)"
                    .into(),
            );
        }
        if rest.contains('/') || rest.contains('?') {
            return Err(format!("'{url}': no path or query allowed"));
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("'{url}': unclosed '[' in host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => parse_port(p, url)?,
                None if after.is_empty() => default_port,
                None => return Err(format!("'{url}': junk after ']'")),
            };
            (h.to_owned(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), parse_port(p, url)?),
                None => (rest.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err(format!("'{url}': no host"));
        }
        Ok(BrokerUrl { tls, host, port })
    }
}

fn parse_port(p: &str, url: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("'{url}': port '{p}' is not 1..65535")),
    }
}

/// A secret's location: never the secret itself.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl SecretRef {
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(name) = s.strip_prefix("env:") {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("'env:{name}': not an environment variable name"));
            }
            return Ok(SecretRef::Env(name.to_owned()));
        }
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err("'file:' needs a path".into());
            }
            return Ok(SecretRef::File(PathBuf::from(path)));
        }
        Err("must be env:NAME or file:PATH (secrets never live in the config file)".into())
    }

    /// Reads the secret; a file's trailing newline is not part of it.
    pub fn resolve(&self) -> Result<Secret, String> {
        let bytes = match self {
            SecretRef::Env(name) => std::env::var(name)
                .map_err(|_| format!("environment variable {name} is not set"))?
                .into_bytes(),
            SecretRef::File(path) => {
                let mut b = std::fs::read(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                    b.pop();
                }
                b
            }
        };
        if bytes.is_empty() {
            return Err(format!("{self:?} is empty"));
        }
        Ok(Secret(bytes))
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "env:{n}"),
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// A resolved secret; its `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Shared HMAC secrets shorter than this are refused.
pub const MIN_SECRET_BYTES: usize = 16;

/// Topic levels we build from names: no MQTT wildcards or separators.
pub fn is_topic_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// `localhost` or a loopback address (`127.0.0.0/8`, `::1`): traffic that
/// never leaves the machine. Decided on the name as written (no lookup).
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `+08:00`, `-05:30`, `Z`.
pub fn parse_utc_offset(s: &str) -> Result<UtcOffset, String> {
    if s == "Z" || s == "z" {
        return Ok(UtcOffset::UTC);
    }
    let bad = || format!("'{s}': expected +HH:MM, -HH:MM or Z");
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1i8, &s[1..]),
        Some(b'-') => (-1i8, &s[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: i8 = h.parse().map_err(|_| bad())?;
    let m: i8 = m.parse().map_err(|_| bad())?;
    UtcOffset::from_hms(sign * h, sign * m, 0).map_err(|_| bad())
}

impl MqttConfig {
    /// Whether MQTT is configured at all.
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    /// The client id: configured, else `facegate-<site>`.
    pub fn client_id_for(&self, site: &str) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("facegate-{site}"))
    }

    /// The payload time offset (validated).
    pub fn offset(&self) -> UtcOffset {
        parse_utc_offset(&self.utc_offset).unwrap_or(UtcOffset::UTC)
    }

    /// Checks what serde cannot. The error names the key: `mqtt.<key>: why`.
    /// Secrets are checked for form only; [`MqttConfig::resolve_secrets`]
    /// reads them.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |key: &str, why: String| format!("mqtt.{key}: {why}");
        if self.enabled() {
            let url = BrokerUrl::parse(&self.url).map_err(|e| bad("url", e))?;
            if url.tls && self.ca_file.is_none() {
                return Err(bad(
                    "ca_file",
                    "required for mqtts:// (the PEM CA that signed the broker's certificate)"
                        .into(),
                ));
            }
            if !url.tls && (self.ca_file.is_some() || self.client_cert_file.is_some()) {
                return Err(bad(
                    "url",
                    "certificates are configured but the URL is mqtt:// (plain TCP); use mqtts://"
                        .into(),
                ));
            }
        }
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return Err(bad(
                "client_key_file",
                "client_cert_file and client_key_file go together".into(),
            ));
        }
        if !is_topic_name(&self.prefix) {
            return Err(bad(
                "prefix",
                "must be 1-64 ASCII letters, digits, '-', '_' or '.' (one topic level)".into(),
            ));
        }
        if let Some(id) = &self.client_id
            && (id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control()))
        {
            return Err(bad(
                "client_id",
                "must be 1-128 printable characters".into(),
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(bad(
                "password",
                "username and password go together (both env:NAME or file:PATH)".into(),
            ));
        }
        for (key, v) in [("username", &self.username), ("password", &self.password)] {
            if let Some(v) = v {
                SecretRef::parse(v).map_err(|e| bad(key, e))?;
            }
        }
        if self.keep_alive_s < 5 || self.keep_alive_s > 3600 {
            return Err(bad("keep_alive_s", "must be 5 to 3600 seconds".into()));
        }
        if self.connect_timeout_s == 0 || self.connect_timeout_s > 300 {
            return Err(bad("connect_timeout_s", "must be 1 to 300 seconds".into()));
        }
        if !(self.reconnect_min_s >= 0.05 && self.reconnect_min_s <= 600.0) {
            return Err(bad("reconnect_min_s", "must be 0.05 to 600 seconds".into()));
        }
        if !(self.reconnect_max_s >= self.reconnect_min_s && self.reconnect_max_s <= 3600.0) {
            return Err(bad(
                "reconnect_max_s",
                "must be at least reconnect_min_s and at most 3600 seconds".into(),
            ));
        }
        if self.max_in_flight == 0 || self.max_in_flight > 1000 {
            return Err(bad("max_in_flight", "must be 1 to 1000".into()));
        }
        if self.max_packet_bytes < 64 * 1024 || self.max_packet_bytes > 256 * 1024 * 1024 {
            return Err(bad("max_packet_bytes", "must be 64 KiB to 256 MiB".into()));
        }
        if self.outbox_max_rows == 0 {
            return Err(bad("outbox_max_rows", "must be at least 1".into()));
        }
        if self.outbox_max_age_s < 60 {
            return Err(bad(
                "outbox_max_age_s",
                "must be at least 60 seconds".into(),
            ));
        }
        if self.status_interval_s == 0 {
            return Err(bad("status_interval_s", "must be at least 1 second".into()));
        }
        if let Some(u) = &self.snapshot_base_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(bad(
                "snapshot_base_url",
                format!("'{u}': must start with http:// or https://"),
            ));
        }
        parse_utc_offset(&self.utc_offset).map_err(|e| bad("utc_offset", e))?;
        if self.gate_open_ttl_s == 0 || self.gate_open_ttl_s > 60 {
            return Err(bad(
                "gate_open_ttl_s",
                "must be 1 to 60 seconds (a gate that opens late is a security hole)".into(),
            ));
        }
        for (gate, r) in &self.gate_secrets {
            if !is_topic_name(gate) {
                return Err(bad(
                    &format!("gate_secrets.{gate}"),
                    "gate names must be ASCII letters, digits, '-', '_' or '.' (a topic level)"
                        .into(),
                ));
            }
            SecretRef::parse(r).map_err(|e| bad(&format!("gate_secrets.{gate}"), e))?;
        }
        if let Some(r) = &self.command_secret {
            SecretRef::parse(r).map_err(|e| bad("command_secret", e))?;
        }
        if self.command_max_age_s == 0 || self.command_max_age_s > 3600 {
            return Err(bad("command_max_age_s", "must be 1 to 3600 seconds".into()));
        }
        if self.command_max_skew_s > self.command_max_age_s {
            return Err(bad(
                "command_max_skew_s",
                format!(
                    "{} s is more than command_max_age_s ({} s)",
                    self.command_max_skew_s, self.command_max_age_s
                ),
            ));
        }
        if !(0.0..=60.0).contains(&self.shutdown_grace_s) {
            return Err(bad("shutdown_grace_s", "must be 0 to 60 seconds".into()));
        }
        Ok(())
    }

    /// What travels in clear text to a broker that is not on this machine
    /// (`mqtt://`, not `mqtts://`): broker credentials, remote commands
    /// (names, face photos, gate opens anyone on the path can watch and
    /// delay). One loud sentence, or `None` (TLS, loopback or MQTT off).
    pub fn cleartext_warning(&self) -> Option<String> {
        let url = BrokerUrl::parse(&self.url).ok()?;
        if url.tls || is_loopback_host(&url.host) {
            return None;
        }
        let mut what = Vec::new();
        if self.username.is_some() {
            what.push("the broker username and password");
        }
        if self.command_secret.is_some() {
            what.push("remote commands (watch-list photos and names, gate opens)");
        }
        if !self.gate_secrets.is_empty() {
            what.push("gate open commands");
        }
        what.push("events and alerts");
        Some(format!(
            "mqtt.url '{}' is plain mqtt:// to a broker that is not on this machine: {} travel in clear text and can be read on the network; use mqtts:// with mqtt.ca_file",
            self.url,
            what.join(", ")
        ))
    }

    /// Resolves a named secret reference (already validated in form).
    pub fn resolve(key: &str, r: &str) -> Result<Secret, String> {
        SecretRef::parse(r)
            .and_then(|s| s.resolve())
            .map_err(|e| format!("mqtt.{key}: {e}"))
    }

    /// The HMAC secret of a gate, if configured; errors name the key.
    pub fn gate_secret(&self, gate: &str) -> Option<Result<Secret, String>> {
        let r = self.gate_secrets.get(gate)?;
        Some(
            Self::resolve(&format!("gate_secrets.{gate}"), r)
                .and_then(check_strength(&format!("mqtt.gate_secrets.{gate}"))),
        )
    }

    /// The command secret, if configured.
    pub fn command_secret(&self) -> Option<Result<Secret, String>> {
        let r = self.command_secret.as_ref()?;
        Some(Self::resolve("command_secret", r).and_then(check_strength("mqtt.command_secret")))
    }

    /// Reads every secret once, so a missing variable or file stops the
    /// start with its key named instead of failing at the first gate open.
    pub fn resolve_secrets(&self) -> Result<(), String> {
        for gate in self.gate_secrets.keys() {
            if let Some(r) = self.gate_secret(gate) {
                r?;
            }
        }
        if let Some(r) = self.command_secret() {
            r?;
        }
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            Self::resolve("username", u)?;
            Self::resolve("password", p)?;
        }
        Ok(())
    }
}

fn check_strength(key: &str) -> impl FnOnce(Secret) -> Result<Secret, String> + '_ {
    move |s| {
        if s.expose().len() < MIN_SECRET_BYTES {
            Err(format!(
                "{key}: the secret is shorter than {MIN_SECRET_BYTES} bytes"
            ))
        } else {
            Ok(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_default_ports_and_refuse_credentials() {
        assert_eq!(
            BrokerUrl::parse("mqtt://broker.local").unwrap(),
            BrokerUrl {
                tls: false,
                host: "broker.local".into(),
                port: 1883
            }
        );
        let u = BrokerUrl::parse("mqtts://10.1.2.3:9883/").unwrap();
        assert!(u.tls);
        assert_eq!((u.host.as_str(), u.port), ("10.1.2.3", 9883));
        assert_eq!(BrokerUrl::parse("mqtts://[::1]").unwrap().port, 8883);
        assert!(
            BrokerUrl::parse("mqtt://u:p@host")
                .unwrap_err()
                .contains("credentials")
        );
        assert!(BrokerUrl::parse("http://host").is_err());
        assert!(BrokerUrl::parse("mqtt://host:0").is_err());
        assert!(BrokerUrl::parse("mqtt://host/x").is_err());
    }

    #[test]
    fn the_default_is_valid_and_off() {
        let c = MqttConfig::default();
        c.validate().unwrap();
        assert!(!c.enabled());
        assert_eq!(c.client_id_for("gy-001"), "facegate-gy-001");
        assert_eq!(c.offset(), UtcOffset::from_hms(8, 0, 0).unwrap());
    }

    #[test]
    fn errors_name_the_key() {
        let c = MqttConfig {
            url: "mqtts://broker".into(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().starts_with("mqtt.ca_file:"));
        let c = MqttConfig {
            password: Some("hunter2".into()),
            username: Some("env:U".into()),
            ..Default::default()
        };
        let e = c.validate().unwrap_err();
        assert!(
            e.starts_with("mqtt.password:") && e.contains("env:NAME"),
            "{e}"
        );
        let mut c = MqttConfig::default();
        c.gate_secrets.insert("gate/1".into(), "env:X".into());
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("mqtt.gate_secrets.gate/1")
        );
        let c = MqttConfig {
            keep_alive_s: 2,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().starts_with("mqtt.keep_alive_s"));
        let c = MqttConfig {
            utc_offset: "8".into(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().starts_with("mqtt.utc_offset"));
    }

    #[test]
    fn toml_keys_are_checked_and_defaulted() {
        let c: MqttConfig = toml::from_str(
            "url = \"mqtt://127.0.0.1:1884\"\ngate_secrets = { \"gate-1\" = \"file:/run/g1\" }\n",
        )
        .unwrap();
        assert_eq!(c.prefix, "facegate");
        c.validate().unwrap();
        assert!(toml::from_str::<MqttConfig>("urll = \"x\"").is_err());
    }

    #[test]
    fn secrets_resolve_from_files_and_are_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "0123456789abcdef0123\n").unwrap();
        let r = format!("file:{}", p.display());
        let mut c = MqttConfig::default();
        c.gate_secrets.insert("g1".into(), r.clone());
        let s = c.gate_secret("g1").unwrap().unwrap();
        assert_eq!(s.expose(), b"0123456789abcdef0123");
        assert!(!format!("{s:?}").contains("0123"));
        std::fs::write(&p, "short").unwrap();
        assert!(
            c.gate_secret("g1")
                .unwrap()
                .unwrap_err()
                .contains("shorter")
        );
        assert!(c.gate_secret("g2").is_none());
        c.command_secret = Some("env:FACEGATE_TEST_SURELY_UNSET_VAR".into());
        let e = c.resolve_secrets().unwrap_err();
        assert!(
            e.contains("mqtt.gate_secrets.g1") || e.contains("command_secret"),
            "{e}"
        );
    }

    #[test]
    fn cleartext_to_another_machine_is_warned_about_unless_loopback_or_tls() {
        let c = MqttConfig {
            url: "mqtt://broker.estate.lan".into(),
            username: Some("env:U".into()),
            password: Some("env:P".into()),
            command_secret: Some("env:C".into()),
            ..Default::default()
        };
        let w = c.cleartext_warning().unwrap();
        assert!(
            w.contains("clear text") && w.contains("username") && w.contains("remote commands"),
            "{w}"
        );
        assert!(w.contains("mqtts://"), "{w}");
        for url in [
            "mqtt://127.0.0.1:1883",
            "mqtt://127.0.1.1",
            "mqtt://localhost",
            "mqtt://[::1]:1883",
            "mqtts://broker.estate.lan",
            "",
        ] {
            let c = MqttConfig {
                url: url.into(),
                ..c.clone()
            };
            assert_eq!(c.cleartext_warning(), None, "{url}");
        }
        let c = MqttConfig {
            url: "mqtt://10.0.0.9".into(),
            ..Default::default()
        };
        assert!(c.cleartext_warning().unwrap().contains("events"));
    }

    #[test]
    fn skew_is_bounded_by_the_age() {
        let c = MqttConfig {
            command_max_age_s: 30,
            command_max_skew_s: 31,
            ..Default::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("mqtt.command_max_skew_s")
        );
    }

    #[test]
    fn offsets_parse() {
        assert_eq!(parse_utc_offset("Z").unwrap(), UtcOffset::UTC);
        assert_eq!(
            parse_utc_offset("-05:30").unwrap(),
            UtcOffset::from_hms(-5, -30, 0).unwrap()
        );
        assert!(parse_utc_offset("+8:00").is_err());
    }
}
