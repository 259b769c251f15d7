//! What travels on `<prefix>/<site>/registry/owners/<key>`: versions, the
//! owner state, and the sealed envelope. Pure: no SQLite, no MQTT.
//!
//! An envelope is JSON with a clear header (scheme, site, key, version,
//! kind) and a `sealed` body: ChaCha20-Poly1305 under a key derived from the
//! sync secret (HKDF-SHA256), with the header as associated data. The AEAD
//! tag is the signature: a message made without the secret, or with one
//! header field changed, fails to open and is refused. Everything personal
//! (the owner id, name, consents, face templates) is inside the sealed
//! body; the topic's `<key>` is an HMAC of the owner id, so the broker and
//! anyone subscribed see neither ids nor names nor faces. Photos and event
//! snapshots are never part of a state.

use std::cmp::Ordering;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::publish::config::Secret;

/// Tag of this message format; also the first line of the associated data.
pub const SCHEME: &str = "facegate-registry-sync/v1";
const AEAD_LABEL: &[u8] = b"facegate registry sync aead v1";
const TOPIC_LABEL: &[u8] = b"facegate registry sync topic key v1";
const NONCE_LEN: usize = 12;

/// A version: a Lamport counter, then the box that made it, so that two
/// boxes changing the same owner at the same counter still order the same
/// way everywhere (a total order: the greater version wins on every box).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Version {
    pub counter: u64,
    pub origin: String,
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.counter
            .cmp(&other.counter)
            .then_with(|| self.origin.cmp(&other.origin))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.counter, self.origin)
    }
}

/// What to do with an incoming version, given the newest one this box knows
/// for the same owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Newer than anything known: apply it.
    Apply,
    /// Exactly what this box has: nothing to do (redelivery, our own echo).
    Same,
    /// Older than what this box has (a replay, or a broker that lost the
    /// newer retained message): refuse it, and put ours back on the broker.
    Stale,
}

/// Idempotence and ordering in one place.
pub fn judge(known: Option<&Version>, incoming: &Version) -> Verdict {
    match known.map(|k| incoming.cmp(k)) {
        None | Some(Ordering::Greater) => Verdict::Apply,
        Some(Ordering::Equal) => Verdict::Same,
        Some(Ordering::Less) => Verdict::Stale,
    }
}

/// An owner's fields as synced (no local timestamps: they differ per box).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerFields {
    pub name: String,
    pub building: Option<String>,
    pub unit: Option<String>,
    pub grid_code: Option<String>,
    /// `active` or `suspended`.
    pub status: String,
    pub minor_under_14: bool,
}

/// One consent record; times are unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentState {
    pub given_at_ms: i64,
    pub method: String,
    pub taken_by: String,
    pub guardian_name: Option<String>,
    pub guardian_relation: Option<String>,
    pub purpose: String,
    pub withdrawn_at_ms: Option<i64>,
}

/// One face template: the model that made it and its vector (base64 of
/// little-endian f32s, exact to the bit). Never a photo.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateState {
    pub model_id: String,
    pub embedding: String,
    pub quality: Option<f64>,
}

/// Never prints the vector.
impl fmt::Debug for TemplateState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TemplateState")
            .field("model_id", &self.model_id)
            .field("embedding_b64_chars", &self.embedding.len())
            .finish()
    }
}

impl TemplateState {
    pub fn from_vector(model_id: &str, embedding: &[f32], quality: Option<f64>) -> Self {
        let bytes: Vec<u8> = embedding.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self {
            model_id: model_id.to_owned(),
            embedding: B64.encode(bytes),
            quality,
        }
    }

    /// The vector, or why it is not one.
    pub fn vector(&self) -> Result<Vec<f32>, String> {
        let bytes = B64
            .decode(&self.embedding)
            .map_err(|e| format!("template embedding is not base64: {e}"))?;
        if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
            return Err(format!(
                "template embedding is {} bytes, not a whole number of f32s",
                bytes.len()
            ));
        }
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

/// Everything another box needs to recognise an owner as this one does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnerState {
    pub owner: OwnerFields,
    pub consents: Vec<ConsentState>,
    pub templates: Vec<TemplateState>,
}

/// What a sealed body holds: the owner id and either their state or, for
/// an erasure, the reason only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Body {
    pub owner_id: String,
    #[serde(default)]
    pub state: Option<OwnerState>,
    /// For an erasure: `request` or `consent_withdrawn`.
    #[serde(default)]
    pub erasure_reason: Option<String>,
}

/// State or erasure, in the clear header (it must agree with the body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    State,
    Erased,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::State => "state",
            Kind::Erased => "erased",
        }
    }
}

/// The message as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub scheme: String,
    pub site: String,
    pub key: String,
    pub counter: u64,
    pub origin: String,
    pub kind: Kind,
    /// base64(nonce || ciphertext || tag).
    pub sealed: String,
}

impl Envelope {
    pub fn version(&self) -> Version {
        Version {
            counter: self.counter,
            origin: self.origin.clone(),
        }
    }

    fn associated_data(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            self.scheme,
            self.site,
            self.key,
            self.counter,
            self.origin,
            self.kind.as_str()
        )
    }
}

/// The digest that tells "changed" from "the same": SHA-256 of the state's
/// JSON (field order is fixed by the structs), or of a marker for erased.
pub fn digest(state: Option<&OwnerState>) -> Vec<u8> {
    let mut h = Sha256::new();
    match state {
        Some(s) => {
            h.update(b"state\n");
            // Serialising plain structs of strings and numbers cannot fail.
            h.update(serde_json::to_vec(s).unwrap_or_default());
        }
        None => h.update(b"erased\n"),
    }
    h.finalize().to_vec()
}

/// Why an incoming message was refused (logged with its topic).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a registry sync message: {0}")]
    Malformed(String),
    #[error("for site '{0}', not this one")]
    OtherSite(String),
    #[error("the topic's owner key does not match the message's")]
    KeyMismatch,
    #[error(
        "cannot be opened with this box's sync.secret (forged, altered, or another secret): refused"
    )]
    BadSeal,
}

/// The keys derived from the site's sync secret.
pub struct SyncKeys {
    aead: ChaCha20Poly1305,
    topic: Vec<u8>,
}

impl fmt::Debug for SyncKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SyncKeys(..)")
    }
}

impl SyncKeys {
    pub fn derive(secret: &Secret) -> Self {
        let hk = hkdf::Hkdf::<Sha256>::new(None, secret.expose());
        let mut aead = [0u8; 32];
        let mut topic = [0u8; 32];
        // 32 bytes is far below HKDF's limit (255 × 32): cannot fail.
        hk.expand(AEAD_LABEL, &mut aead)
            .expect("32-byte HKDF output");
        hk.expand(TOPIC_LABEL, &mut topic)
            .expect("32-byte HKDF output");
        Self {
            aead: ChaCha20Poly1305::new(&aead.into()),
            topic: topic.to_vec(),
        }
    }

    /// The topic level that stands for an owner: 32 hex digits of
    /// HMAC-SHA256(topic key, owner id). Stable, topic-safe, and says
    /// nothing about the owner to whoever reads the broker.
    pub fn owner_key(&self, owner_id: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.topic)
            .expect("HMAC-SHA256 takes keys of any length");
        mac.update(owner_id.as_bytes());
        crate::publish::sign::to_hex(&mac.finalize().into_bytes()[..16])
    }

    /// Builds and seals a message.
    pub fn seal(&self, site: &str, version: &Version, body: &Body) -> Result<Envelope, String> {
        let kind = if body.state.is_some() {
            Kind::State
        } else {
            Kind::Erased
        };
        let mut env = Envelope {
            scheme: SCHEME.to_owned(),
            site: site.to_owned(),
            key: self.owner_key(&body.owner_id),
            counter: version.counter,
            origin: version.origin.clone(),
            kind,
            sealed: String::new(),
        };
        let plain = serde_json::to_vec(body).map_err(|e| format!("encode sync body: {e}"))?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| format!("random nonce: {e}"))?;
        let aad = env.associated_data();
        let ct = self
            .aead
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| "encrypt sync body".to_owned())?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ct);
        env.sealed = B64.encode(sealed);
        Ok(env)
    }

    /// Checks and opens a message that arrived on the topic whose last
    /// level is `topic_key`.
    pub fn open(
        &self,
        site: &str,
        topic_key: &str,
        payload: &[u8],
    ) -> Result<(Envelope, Body), Refusal> {
        let env: Envelope = serde_json::from_slice(payload)
            .map_err(|e| Refusal::Malformed(format!("JSON: {e}")))?;
        if env.scheme != SCHEME {
            return Err(Refusal::Malformed(format!(
                "scheme '{}', expected '{SCHEME}'",
                env.scheme
            )));
        }
        if env.site != site {
            return Err(Refusal::OtherSite(env.site.clone()));
        }
        if env.key != topic_key {
            return Err(Refusal::KeyMismatch);
        }
        if env.counter == 0 || !crate::publish::config::is_topic_name(&env.origin) {
            return Err(Refusal::Malformed(
                "version counter 0 or a bad origin box id".into(),
            ));
        }
        let sealed = B64
            .decode(&env.sealed)
            .map_err(|_| Refusal::Malformed("sealed body is not base64".into()))?;
        if sealed.len() < NONCE_LEN + 16 {
            return Err(Refusal::BadSeal);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let aad = env.associated_data();
        let plain = self
            .aead
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| Refusal::BadSeal)?;
        let body: Body = serde_json::from_slice(&plain)
            .map_err(|e| Refusal::Malformed(format!("sealed body: {e}")))?;
        if self.owner_key(&body.owner_id) != env.key {
            return Err(Refusal::KeyMismatch);
        }
        if (env.kind == Kind::State) != body.state.is_some() {
            return Err(Refusal::Malformed(
                "the header's kind disagrees with the body".into(),
            ));
        }
        Ok((env, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(counter: u64, origin: &str) -> Version {
        Version {
            counter,
            origin: origin.into(),
        }
    }

    fn keys(secret: &str) -> SyncKeys {
        SyncKeys::derive(&Secret::new(secret.as_bytes().to_vec()))
    }

    fn state(name: &str) -> OwnerState {
        OwnerState {
            owner: OwnerFields {
                name: name.into(),
                building: Some("3".into()),
                unit: None,
                grid_code: None,
                status: "active".into(),
                minor_under_14: false,
            },
            consents: vec![ConsentState {
                given_at_ms: 1_700_000_000_000,
                method: "written".into(),
                taken_by: "staff".into(),
                guardian_name: None,
                guardian_relation: None,
                purpose: "estate access by face".into(),
                withdrawn_at_ms: None,
            }],
            templates: vec![TemplateState::from_vector(
                "m1",
                &[0.25, -1.5, 3.0],
                Some(0.9),
            )],
        }
    }

    #[test]
    fn versions_order_by_counter_then_box() {
        assert!(v(2, "a") > v(1, "z"));
        assert!(v(2, "b") > v(2, "a"));
        assert_eq!(v(3, "a").cmp(&v(3, "a")), Ordering::Equal);
        let mut all = vec![v(2, "b"), v(1, "z"), v(2, "a"), v(10, "a")];
        all.sort();
        assert_eq!(all, vec![v(1, "z"), v(2, "a"), v(2, "b"), v(10, "a")]);
    }

    #[test]
    fn judging_is_idempotent_and_refuses_the_old() {
        assert_eq!(judge(None, &v(1, "a")), Verdict::Apply);
        assert_eq!(judge(Some(&v(1, "a")), &v(2, "a")), Verdict::Apply);
        assert_eq!(judge(Some(&v(2, "a")), &v(2, "b")), Verdict::Apply);
        assert_eq!(judge(Some(&v(2, "a")), &v(2, "a")), Verdict::Same);
        assert_eq!(judge(Some(&v(5, "a")), &v(4, "z")), Verdict::Stale);
    }

    #[test]
    fn sealed_messages_round_trip_and_hide_the_person() {
        let k = keys("0123456789abcdef-site-secret");
        let body = Body {
            owner_id: "A-0301".into(),
            state: Some(state("王芳")),
            erasure_reason: None,
        };
        let env = k.seal("s1", &v(7, "box-a"), &body).unwrap();
        let wire = serde_json::to_vec(&env).unwrap();
        let text = String::from_utf8_lossy(&wire);
        assert!(!text.contains("A-0301") && !text.contains("王芳") && !text.contains("staff"));
        let (back, opened) = k.open("s1", &k.owner_key("A-0301"), &wire).unwrap();
        assert_eq!(back.version(), v(7, "box-a"));
        assert_eq!(opened, body);
        assert_eq!(
            opened.state.unwrap().templates[0].vector().unwrap(),
            vec![0.25, -1.5, 3.0]
        );
    }

    #[test]
    fn forged_altered_or_misplaced_messages_are_refused() {
        let k = keys("0123456789abcdef-site-secret");
        let body = Body {
            owner_id: "A-1".into(),
            state: None,
            erasure_reason: Some("request".into()),
        };
        let key = k.owner_key("A-1");
        // Another secret.
        let forged = keys("another-secret-of-16-bytes")
            .seal("s1", &v(9, "box-x"), &body)
            .unwrap();
        let wire = serde_json::to_vec(&forged).unwrap();
        // The forger's key for A-1 differs too; on the right topic it is a mismatch.
        assert_eq!(k.open("s1", &key, &wire).unwrap_err(), Refusal::KeyMismatch);
        assert_eq!(
            k.open("s1", &forged.key, &wire).unwrap_err(),
            Refusal::BadSeal
        );
        // A header field changed (a replay with a bumped version).
        let mut env = k.seal("s1", &v(9, "box-a"), &body).unwrap();
        env.counter = 99;
        let wire = serde_json::to_vec(&env).unwrap();
        assert_eq!(k.open("s1", &key, &wire).unwrap_err(), Refusal::BadSeal);
        // Another site, or not JSON at all.
        let env = k.seal("s2", &v(9, "box-a"), &body).unwrap();
        let wire = serde_json::to_vec(&env).unwrap();
        assert!(matches!(
            k.open("s1", &key, &wire),
            Err(Refusal::OtherSite(_))
        ));
        assert!(matches!(
            k.open("s1", &key, b"{\"cmd\":1}"),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn digests_tell_changes_from_sameness() {
        let a = state("A");
        assert_eq!(digest(Some(&a)), digest(Some(&a.clone())));
        assert_ne!(digest(Some(&a)), digest(Some(&state("B"))));
        assert_ne!(digest(Some(&a)), digest(None));
        let mut suspended = a.clone();
        suspended.owner.status = "suspended".into();
        assert_ne!(digest(Some(&a)), digest(Some(&suspended)));
    }
}
