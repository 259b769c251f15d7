//! Events per second through the durable outbox, against plain rumqttc QoS 1
//! publishing, in the same run, on the same mosquitto (127.0.0.1, no
//! persistence).
//!
//! - `outbox/end_to_end`: `Event::new` + `save_with_outbox(messages_for)`
//!   (one SQLite WAL transaction per event, `synchronous = FULL` as the
//!   event store opens it: durable across a power cut) + the publisher
//!   sending both messages of a stranger event (`events/<camera>` and
//!   `alerts`) with QoS 1, PUBACK, and the rows deleted. An iteration's
//!   time ends when the last of its rows is acknowledged.
//! - `outbox/save_only`: the SQLite part alone (no publisher), which is
//!   where the time goes.
//! - `plain_rumqttc_qos1`: the same two payloads per event published with
//!   rumqttc's MQTT 5 client straight from memory, 32 in flight (the
//!   publisher's default window), until every PUBACK is in.
//!
//! After criterion's lines the run prints the mean events per second of
//! each and the ratio. Run: `cargo bench --bench outbox` (needs mosquitto).

#[path = "../tests/common/broker.rs"]
mod broker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event as MqttEvent, MqttOptions};
use time::OffsetDateTime;

use facegate::config::CameraRole;
use facegate::events::{Event, EventKind, EventStore, OutboxMessage, Place};
use facegate::publish::{self, MqttConfig, PublisherSetup, messages_for};

const SITE: &str = "bench";

/// Mean events per second over all measured iterations of one bench.
#[derive(Default)]
struct Tally {
    events: u64,
    secs: f64,
}

impl Tally {
    fn add(&mut self, events: u64, d: Duration) {
        self.events += events;
        self.secs += d.as_secs_f64();
    }

    fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.events as f64 / self.secs
        } else {
            0.0
        }
    }
}

fn place() -> Place {
    Place {
        site: SITE.into(),
        street: "st-1".into(),
        community: "co-1".into(),
        grid: "grid-7".into(),
        building: Some("B3".into()),
    }
}

fn stranger() -> Event {
    let mut e = Event::new(
        EventKind::Stranger,
        OffsetDateTime::now_utc(),
        "cam-1",
        CameraRole::Patrol,
        &place(),
    );
    e.stranger_id = Some("cam-1-S-17".into());
    e.score = Some(0.23);
    e.track_id = Some(42);
    e.faces = Some(3);
    e
}

fn main() {
    if !broker::mosquitto_available() {
        return;
    }
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6))
        .configure_from_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let broker = broker::Broker::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = MqttConfig {
        url: broker.url(),
        reconnect_min_s: 0.2,
        reconnect_max_s: 1.0,
        ..Default::default()
    };

    // The outbox path: one database and one publisher for the whole run.
    let db = dir.path().join("bench.db");
    let store = EventStore::open(&db).expect("event store");
    let publisher = rt
        .block_on(async {
            publish::start(
                &cfg,
                PublisherSetup {
                    site: SITE.into(),
                    cameras: vec!["cam-1".into()],
                    db: db.clone(),
                    version: env!("CARGO_PKG_VERSION").into(),
                },
                None,
            )
        })
        .expect("publisher");
    let connected = Instant::now();
    while !publisher.stats().connected {
        assert!(
            connected.elapsed() < Duration::from_secs(10),
            "publisher did not connect"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let messages_per_event = messages_for(&stranger(), &cfg, SITE).len() as u64;
    let outbox_tally = Mutex::new(Tally::default());
    let save_tally = Mutex::new(Tally::default());
    let plain_tally = Mutex::new(Tally::default());

    let mut g = c.benchmark_group("mqtt_events");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(1));
    g.bench_function("outbox/end_to_end", |b| {
        b.iter_custom(|iters| {
            let target = publisher.stats().delivered + iters * messages_per_event;
            let start = Instant::now();
            for _ in 0..iters {
                let e = stranger();
                store
                    .save_with_outbox(&e, &messages_for(&e, &cfg, SITE))
                    .expect("save");
                publisher.notify();
            }
            while publisher.stats().delivered < target {
                std::thread::sleep(Duration::from_micros(200));
            }
            let d = start.elapsed();
            outbox_tally.lock().unwrap().add(iters, d);
            d
        })
    });

    // SQLite alone: the same transaction on a database nobody publishes.
    let db2 = dir.path().join("save-only.db");
    let store2 = EventStore::open(&db2).expect("event store");
    g.bench_function("outbox/save_only", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let e = stranger();
                store2
                    .save_with_outbox(&e, &messages_for(&e, &cfg, SITE))
                    .expect("save");
            }
            let d = start.elapsed();
            save_tally.lock().unwrap().add(iters, d);
            store2
                .connection()
                .execute("DELETE FROM outbox", [])
                .expect("empty");
            d
        })
    });

    // Plain rumqttc: the same payloads, QoS 1, from memory.
    let acks = Arc::new(AtomicU64::new(0));
    let client = rt.block_on(async {
        let mut o = MqttOptions::new("bench-plain", "127.0.0.1", broker.port());
        o.set_outgoing_inflight_upper_limit(cfg.max_in_flight);
        let (client, mut el) = AsyncClient::new(o, 64);
        let a = acks.clone();
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(MqttEvent::Incoming(Packet::PubAck(_))) => {
                        a.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        client
    });
    g.bench_function("plain_rumqttc_qos1", |b| {
        b.iter_custom(|iters| {
            let target = acks.load(Ordering::SeqCst) + iters * messages_per_event;
            let start = Instant::now();
            rt.block_on(async {
                for _ in 0..iters {
                    let e = stranger();
                    for m in messages_for(&e, &cfg, SITE) {
                        let OutboxMessage { topic, payload, .. } = m;
                        client
                            .publish(topic, QoS::AtLeastOnce, false, payload)
                            .await
                            .expect("publish");
                    }
                }
                while acks.load(Ordering::SeqCst) < target {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            });
            let d = start.elapsed();
            plain_tally.lock().unwrap().add(iters, d);
            d
        })
    });
    g.finish();
    c.final_summary();

    let (o, s, p) = (
        outbox_tally.lock().unwrap().rate(),
        save_tally.lock().unwrap().rate(),
        plain_tally.lock().unwrap().rate(),
    );
    let stats = publisher.stats();
    println!(
        "\nstranger events ({messages_per_event} messages each), means over every iteration run (warm-up included):\n\
         outbox end to end (SQLite WAL, delivered, PUBACK, deleted): {o:>9.0} events/s\n\
         outbox SQLite save only:                                    {s:>9.0} events/s\n\
         plain rumqttc QoS 1 from memory:                            {p:>9.0} events/s\n\
         ratio plain / outbox: {:.1}x   (publisher: {} delivered, {} reconnects)",
        if o > 0.0 { p / o } else { f64::NAN },
        stats.delivered,
        stats.connects.saturating_sub(1),
    );
    rt.block_on(publisher.shutdown());
}
