//! facegate: an edge gateway for face recognition in residential estates.
//!
//! # Layout
//! A photo's (later: a frame's) journey is the architecture:
//! decode → detect → align → quality (liveness, pose, size) → embed → match.
//!
//! - [`config`]: the TOML configuration, defaults and validation.
//! - [`db`]: the one place that opens the SQLite file (pragmas, key, errors);
//!   [`crypto`]: keys for encryption at rest, the snapshot AEAD.
//! - [`vision`]: ONNX Runtime, photo decoding, detectors (YuNet,
//!   RetinaFace), alignment, liveness and head pose, embedders; the
//!   [`vision::FaceEngine`] that ties them together.
//! - [`registry`]: owners, consents, face templates, the watch list and the
//!   audit log in SQLite, and the in-memory 1:N index built from them.
//! - [`identify`]: one photo in, one decision per face out
//!   (owner / watchlist / stranger / rejected).
//! - [`eval`]: the accuracy protocol over a labelled folder;
//!   [`eval_liveness`]: APCER/BPCER over live and attack photos.
//! - [`source`], [`track`], [`decide`], [`pipeline`]: cameras to decisions.
//! - [`events`], [`publish`]: events in SQLite, the MQTT outbox.
//! - [`live`], [`http`]: the live feed, metrics, the HTTP API and console.
//! - [`systemd`]: the notify protocol (ready, watchdog, stopping).
//! - [`run`]: `facegate run`, the one place that builds the gateway from
//!   these parts and stops it in order (intake, drain, flush, exit).
//! - [`sync`]: owners shared between the boxes of one site over MQTT.

pub mod bench;
pub mod config;
pub mod crypto;
pub mod db;
pub mod decide;
pub mod doctor;
pub mod eval;
pub mod eval_liveness;
pub mod events;
pub mod http;
pub mod identify;
pub mod live;
pub mod pipeline;
pub mod publish;
pub mod registry;
pub mod run;
pub mod sched;
pub mod source;
pub mod sync;
pub mod systemd;
pub mod track;
pub mod vision;
