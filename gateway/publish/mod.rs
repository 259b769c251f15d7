//! Publishing to the district command centre over MQTT 5, with nothing
//! lost: every message goes through the durable outbox (a SQLite table
//! written in the same transaction as its event), and a publisher sends it
//! in order with QoS 1 and deletes it only on the broker's PUBACK.
//!
//! # Layout
//! - [`config`]: [`MqttConfig`], the `[mqtt]` section; secrets as
//!   `env:NAME` / `file:PATH` references.
//! - [`payload`]: topics and payloads in one place; [`messages_for`] turns
//!   an event into its outbox messages (events, alerts, camera status,
//!   signed gate open commands).
//! - [`sign`]: HMAC-SHA256 of gate commands and incoming commands, nonces.
//! - [`outbox`]: the outbox table as the publisher sees it.
//! - [`connection`]: MQTT options, TLS, the event-loop task with reconnect
//!   backoff, connection errors in words.
//! - `delivery`: the publisher's bookkeeping (packet ids to outbox rows,
//!   acknowledgement batches, rewinds), pure, with the time passed in.
//! - [`publisher`]: the loop that sends the outbox and matches PUBACKs to
//!   rows; [`start`] and [`PublisherHandle`].
//!
//! Commands from the command centre arrive on the publisher's connection,
//! but are checked and run by [`crate::http::commands`], next to the HTTP
//! API's handlers: the publisher hands them over bounded channels, never
//! runs the models and only publishes the replies.
//!
//! `docs/mqtt.md` documents every topic, payload and signature.

pub mod config;
pub mod connection;
mod delivery;
pub mod outbox;
pub mod payload;
pub mod publisher;
pub mod sign;

pub use config::MqttConfig;
pub use payload::{Topics, messages_for, messages_for_with_face, messages_with_snapshot};
pub use publisher::{PublisherHandle, PublisherSetup, PublisherStats, start};

use crate::registry::RegistryError;

/// What can stop the publisher from starting (at run time it only logs,
/// retries and counts: recognition never waits on the broker).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A config key that is wrong or a secret that cannot be read; the
    /// message names the key.
    #[error("{0}")]
    Config(String),
    #[error("outbox: {context}: {source}")]
    Outbox {
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
}
