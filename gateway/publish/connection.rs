//! The broker connection: MQTT 5 options (TLS, login, last will), the task
//! that drives rumqttc's event loop with reconnect backoff, and errors
//! worded for the person who has to fix them.
//!
//! rumqttc replays unacknowledged publishes after a reconnect only while
//! the process lives, from its own queue, in packet-id order, and drops
//! them when the broker lost our session. The outbox is the only source
//! of truth here instead: on every connection loss this task empties
//! rumqttc's queues (under the [`Link`] lock, so the publisher cannot slip
//! a message in between) and the publisher sends again from SQLite, in
//! `seq` order. Duplicates can occur; they carry the same `id`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, LastWill, Packet};
use rumqttc::v5::{ConnectionError, Event, EventLoop, MqttOptions, StateError};
use rumqttc::{TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::PublishError;
use super::config::{BrokerUrl, MqttConfig};

/// Shared between the connection task and the publisher: whether the
/// publisher may hand rumqttc a message now.
#[derive(Debug, Default)]
pub(crate) struct Link {
    pub connected: bool,
}

/// What the connection task reports, in order.
#[derive(Debug)]
pub(crate) enum LinkEvent {
    Mqtt(Box<Event>),
    /// The connection is gone (or never came): everything handed to
    /// rumqttc and not acknowledged is void.
    Down(String),
}

/// MQTT 5 options: persistent session, keep-alive, login, TLS, last will.
pub(crate) fn options(
    cfg: &MqttConfig,
    site: &str,
    url: &BrokerUrl,
    will: LastWill,
) -> Result<MqttOptions, PublishError> {
    let mut o = MqttOptions::new(cfg.client_id_for(site), url.host.clone(), url.port);
    o.set_keep_alive(Duration::from_secs(cfg.keep_alive_s.max(5)))
        .set_clean_start(false)
        .set_session_expiry_interval(Some(cfg.session_expiry_s))
        .set_connection_timeout(cfg.connect_timeout_s)
        .set_max_packet_size(Some(cfg.max_packet_bytes))
        .set_outgoing_inflight_upper_limit(cfg.max_in_flight)
        .set_last_will(will);
    if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
        let user = MqttConfig::resolve("username", u).map_err(PublishError::Config)?;
        let pass = MqttConfig::resolve("password", p).map_err(PublishError::Config)?;
        let user = String::from_utf8(user.expose().to_vec())
            .map_err(|_| PublishError::Config("mqtt.username: not UTF-8".into()))?;
        let pass = String::from_utf8(pass.expose().to_vec())
            .map_err(|_| PublishError::Config("mqtt.password: not UTF-8".into()))?;
        o.set_credentials(user, pass);
    }
    if url.tls {
        let tls = tls_config(cfg)?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    }
    Ok(o)
}

/// A rustls client configuration from the configured PEM files, with the
/// ring provider passed explicitly (no process-wide default needed).
pub(crate) fn tls_config(cfg: &MqttConfig) -> Result<Arc<rustls::ClientConfig>, PublishError> {
    let bad = |key: &str, why: String| PublishError::Config(format!("mqtt.{key}: {why}"));
    let ca = cfg
        .ca_file
        .as_ref()
        .ok_or_else(|| bad("ca_file", "required for mqtts://".into()))?;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| bad("ca_file", format!("{}: {e}", ca.display())))?;
    for c in certs {
        let c = c.map_err(|e| bad("ca_file", format!("{}: {e}", ca.display())))?;
        roots.add(c).map_err(|e| {
            bad(
                "ca_file",
                format!("{}: not a usable CA certificate: {e}", ca.display()),
            )
        })?;
    }
    if roots.is_empty() {
        return Err(bad(
            "ca_file",
            format!("{}: no PEM certificate in it", ca.display()),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PublishError::Config(format!("TLS setup: {e}")))?
        .with_root_certificates(roots);
    let config = match (&cfg.client_cert_file, &cfg.client_key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| bad("client_cert_file", format!("{}: {e}", cert.display())))?;
            if chain.is_empty() {
                return Err(bad(
                    "client_cert_file",
                    format!("{}: no PEM certificate in it", cert.display()),
                ));
            }
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| bad("client_key_file", format!("{}: {e}", key.display())))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                bad(
                    "client_key_file",
                    format!("does not match the certificate: {e}"),
                )
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Exponential backoff with ±20 % jitter, so a district's gateways do not
/// all reconnect in the same second after a broker restart.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: f64,
    max: f64,
    next: f64,
    seed: u64,
}

impl Backoff {
    pub fn new(min_s: f64, max_s: f64) -> Self {
        let seed = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u64
            ^ u64::from(std::process::id()).rotate_left(32);
        Backoff {
            min: min_s,
            max: max_s.max(min_s),
            next: min_s,
            seed: seed | 1,
        }
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }

    pub fn next_delay(&mut self) -> Duration {
        // xorshift64: jitter only, not security.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let unit = (self.seed >> 11) as f64 / (1u64 << 53) as f64;
        let d = self.next * (0.8 + 0.4 * unit);
        self.next = (self.next * 2.0).min(self.max);
        Duration::from_secs_f64(d.clamp(0.01, self.max * 1.2))
    }
}

/// Drives the event loop until `stop`: forwards every event, and on an
/// error voids rumqttc's queues, reports `Down` and waits the backoff.
pub(crate) async fn run(
    mut eventloop: EventLoop,
    link: Arc<Mutex<Link>>,
    tx: mpsc::Sender<LinkEvent>,
    stop: CancellationToken,
    mut backoff: Backoff,
    host: String,
) {
    loop {
        let polled = tokio::select! {
            _ = stop.cancelled() => break,
            r = eventloop.poll() => r,
        };
        match polled {
            Ok(ev) => {
                if matches!(ev, Event::Incoming(Packet::ConnAck(_))) {
                    if let Ok(mut l) = link.lock() {
                        l.connected = true;
                    }
                    backoff.reset();
                }
                if tx.send(LinkEvent::Mqtt(Box::new(ev))).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                if let Ok(mut l) = link.lock() {
                    // Whatever the publisher handed over since the error is
                    // drained by clean(); then nothing of the old connection
                    // is left to be replayed or to produce stale events.
                    eventloop.clean();
                    eventloop.pending.clear();
                    eventloop.state.events.clear();
                    l.connected = false;
                }
                if tx.send(LinkEvent::Down(describe(&e, &host))).await.is_err() {
                    break;
                }
                let delay = backoff.next_delay();
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    if let Ok(mut l) = link.lock() {
        l.connected = false;
    }
}

/// A connection error in words, with the config key to look at.
pub fn describe(e: &ConnectionError, host: &str) -> String {
    // rumqttc wraps read errors without a `source()` link: look inside.
    let inner: Option<&(dyn std::error::Error + 'static)> = match e {
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::v5::mqttbytes::Error::Io(io),
        )) => Some(io),
        _ => None,
    };
    if let Some(tls) = find_rustls(e).or_else(|| inner.and_then(find_rustls)) {
        return describe_tls(tls, host);
    }
    match e {
        ConnectionError::ConnectionRefused(code) => match code {
            ConnectReturnCode::BadUserNamePassword => {
                "the broker refused the login: bad user name or password (mqtt.username, mqtt.password)".into()
            }
            ConnectReturnCode::NotAuthorized => {
                "the broker refused the connection: not authorized (wrong user name or password in mqtt.username / mqtt.password, or the broker's rules for mqtt.client_id)".into()
            }
            ConnectReturnCode::ClientIdentifierNotValid | ConnectReturnCode::BadClientId => {
                "the broker refused our client id (mqtt.client_id)".into()
            }
            ConnectReturnCode::Banned => "the broker has banned this client".into(),
            other => format!("the broker refused the connection: {other:?}"),
        },
        ConnectionError::Timeout(_) => {
            "no answer from the broker in time (mqtt.connect_timeout_s): network down or wrong port?"
                .into()
        }
        ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!("connection refused by {host}: is the broker running, is mqtt.url's port right?")
        }
        ConnectionError::MqttState(StateError::ServerDisconnect {
            reason_code,
            reason_string,
        }) => {
            let hint = if format!("{reason_code:?}") == "SessionTakenOver" {
                ": another client connected with our client id (mqtt.client_id must be unique)"
            } else {
                ""
            };
            format!(
                "the broker disconnected us: {reason_code:?}{}{hint}",
                reason_string
                    .as_ref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            )
        }
        ConnectionError::MqttState(StateError::ConnectionAborted) => {
            "the broker closed the connection".into()
        }
        ConnectionError::MqttState(StateError::AwaitPingResp) => {
            "the broker stopped answering (keep-alive timed out)".into()
        }
        other => format!("broker connection: {other}"),
    }
}

fn find_rustls<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(r) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

fn describe_tls(e: &rustls::Error, host: &str) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            format!("TLS: the broker's certificate is not signed by the CA in mqtt.ca_file ({e})")
        }
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => format!(
            "TLS: the broker's certificate is not valid for '{host}': the host in mqtt.url must be one of its names ({e})"
        ),
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            format!("TLS: the broker's certificate has expired ({e})")
        }
        E::InvalidCertificate(_) => format!("TLS: the broker's certificate is refused: {e}"),
        E::AlertReceived(
            A::BadCertificate
            | A::CertificateRequired
            | A::UnknownCA
            | A::CertificateUnknown
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::AccessDenied,
        ) => format!(
            "TLS: the broker refused our client certificate (mqtt.client_cert_file, mqtt.client_key_file): {e}"
        ),
        other => format!("TLS: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(1.0, 8.0);
        let d: Vec<f64> = (0..6).map(|_| b.next_delay().as_secs_f64()).collect();
        for (got, base) in d.iter().zip([1.0, 2.0, 4.0, 8.0, 8.0, 8.0]) {
            assert!(
                *got >= base * 0.8 - 1e-9 && *got <= base * 1.2 + 1e-9,
                "{d:?}"
            );
        }
        b.reset();
        assert!(b.next_delay().as_secs_f64() <= 1.2);
    }

    #[test]
    fn refusals_are_worded_with_the_key_to_fix() {
        let e = ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword);
        assert!(describe(&e, "h").contains("mqtt.password"));
        let e = ConnectionError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(describe(&e, "10.0.0.9").contains("10.0.0.9"));
        let tls = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let e = ConnectionError::Io(tls);
        assert!(
            describe(&e, "h").contains("mqtt.ca_file"),
            "{}",
            describe(&e, "h")
        );
    }

    #[test]
    fn tls_files_are_checked_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a certificate").unwrap();
        let cfg = MqttConfig {
            url: "mqtts://broker".into(),
            ca_file: Some(p),
            ..Default::default()
        };
        let e = tls_config(&cfg).unwrap_err().to_string();
        assert!(e.contains("mqtt.ca_file"), "{e}");
        let cfg = MqttConfig {
            ca_file: Some(dir.path().join("missing.pem")),
            ..cfg
        };
        assert!(
            tls_config(&cfg)
                .unwrap_err()
                .to_string()
                .contains("missing.pem")
        );
    }
}
