//! A test's own MQTT client on the test broker: it subscribes (again after
//! every reconnect), records every message it receives, and publishes.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event as MqttEvent, MqttOptions};
use serde_json::Value;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::broker::wait_for;

/// One message as the test client received it.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    /// The payload as JSON (`Null` when it is not JSON).
    pub json: Value,
    pub retain: bool,
    /// MQTT 5 message expiry left when the broker forwarded it.
    pub expiry: Option<u32>,
}

pub struct TestClient {
    client: AsyncClient,
    msgs: Arc<Mutex<Vec<Msg>>>,
    subacks: Arc<AtomicU64>,
    pubacks: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl TestClient {
    /// A client of the broker on `port` subscribed to `filters`, taking
    /// packets up to 16 MiB.
    pub fn start(port: u16, filters: &[&str]) -> Self {
        Self::start_with(port, "test", filters, 16 * 1024 * 1024)
    }

    /// [`TestClient::start`], once the broker has confirmed a subscription.
    pub async fn subscribed(port: u16, filters: &[&str]) -> Self {
        let c = Self::start(port, filters);
        wait_for("subscription", Duration::from_secs(5), || c.subacks() >= 1).await;
        c
    }

    /// The same with the client id starting with `id_prefix` and packets
    /// up to `max_packet_bytes`.
    pub fn start_with(port: u16, id_prefix: &str, filters: &[&str], max_packet_bytes: u32) -> Self {
        static STARTED: AtomicU64 = AtomicU64::new(0);
        let id = format!(
            "{id_prefix}-{}-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::SeqCst),
            OffsetDateTime::now_utc().unix_timestamp_nanos() % 1_000_000_000
        );
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_max_packet_size(Some(max_packet_bytes));
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut el) = AsyncClient::new(o, 64);
        let msgs: Arc<Mutex<Vec<Msg>>> = Arc::default();
        let subacks = Arc::new(AtomicU64::new(0));
        let pubacks = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        let (c, m, s, p, st) = (
            client.clone(),
            msgs.clone(),
            subacks.clone(),
            pubacks.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = st.cancelled() => break,
                    ev = el.poll() => ev,
                };
                match ev {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        for f in &filters {
                            let _ = c.try_subscribe(f.clone(), QoS::AtLeastOnce);
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                        s.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(MqttEvent::Incoming(Packet::PubAck(_))) => {
                        p.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(pb))) => {
                        m.lock().unwrap().push(Msg {
                            topic: String::from_utf8_lossy(&pb.topic).into_owned(),
                            json: serde_json::from_slice(&pb.payload).unwrap_or(Value::Null),
                            retain: pb.retain,
                            expiry: pb
                                .properties
                                .as_ref()
                                .and_then(|p| p.message_expiry_interval),
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        TestClient {
            client,
            msgs,
            subacks,
            pubacks,
            stop,
        }
    }

    /// Every message received so far, in arrival order.
    pub fn msgs(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap().clone()
    }

    /// The messages received on exactly `topic`.
    pub fn on(&self, topic: &str) -> Vec<Msg> {
        self.msgs()
            .into_iter()
            .filter(|m| m.topic == topic)
            .collect()
    }

    /// The `id`s of the JSON messages on topics starting with `topic_prefix`.
    pub fn ids_on(&self, topic_prefix: &str) -> Vec<String> {
        self.msgs()
            .into_iter()
            .filter(|m| m.topic.starts_with(topic_prefix))
            .filter_map(|m| m.json["id"].as_str().map(str::to_owned))
            .collect()
    }

    /// SUBACKs received (one per filter per connection).
    pub fn subacks(&self) -> u64 {
        self.subacks.load(Ordering::SeqCst)
    }

    /// Publishes with QoS 1 and waits for the broker's PUBACK.
    pub async fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) {
        let before = self.pubacks.load(Ordering::SeqCst);
        self.send(topic, payload, retain).await;
        wait_for("the broker's PUBACK", Duration::from_secs(5), || {
            self.pubacks.load(Ordering::SeqCst) > before
        })
        .await;
    }

    /// Queues a QoS 1 publish, without waiting for the broker.
    pub async fn send(&self, topic: &str, payload: Vec<u8>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .expect("queue publish");
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
