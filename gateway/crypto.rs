//! Keys for encryption at rest, and the snapshot files' AEAD.
//!
//! One 32-byte key protects both the database and the snapshots:
//!
//! - the database: SQLCipher takes it raw (`PRAGMA key = "x'…'"`, no
//!   passphrase stretching: the key is already random), set by
//!   [`crate::db::open`] on every connection;
//! - snapshots: ChaCha20-Poly1305 under a key derived from it with HKDF-SHA256
//!   (label [`SNAPSHOT_LABEL`]), so the same bytes never serve two ciphers.
//!
//! The key comes from `storage.key_file` (64 hex characters; the file must be
//! mode 0600 or 0400 and owned by the user running the gateway) or, when no
//! file is configured, from the environment variable [`KEY_ENV`]. It is set
//! once per process ([`install`]) at start-up; a process that never installs
//! one (unit tests, tools) reads [`KEY_ENV`] on first use.
//!
//! A sealed snapshot is `MAGIC ‖ nonce (12 bytes, random) ‖ ciphertext ‖ tag`;
//! the file's name (without `.enc`) is the associated data, so a face crop
//! cannot be passed off as another event's.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};

/// The environment variable holding the key (64 hex characters) when no
/// key file is configured.
pub const KEY_ENV: &str = "FACEGATE_DB_KEY";
/// HKDF `info` for the snapshot key.
pub const SNAPSHOT_LABEL: &[u8] = b"facegate snapshot aead v1";
/// The extension added to an encrypted snapshot's name.
pub const SEALED_EXT: &str = ".enc";
/// First bytes of a sealed snapshot.
const MAGIC: &[u8; 4] = b"FGS1";
const NONCE_LEN: usize = 12;

/// What is wrong with a key or a sealed file, phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("key file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "key file {path} has mode {mode:04o}: it must be readable by its owner only (chmod 600 or 400)"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "key file {path} is owned by uid {owner}, not by the user running facegate (uid {me}): chown it"
    )]
    Owner { path: PathBuf, owner: u32, me: u32 },
    #[error("{what}: the key must be 64 hexadecimal characters (32 bytes), {found}")]
    Format { what: String, found: String },
    #[error("{0}: not a sealed snapshot (bad header)")]
    NotSealed(PathBuf),
    #[error(
        "{0}: the snapshot does not decrypt with this key (wrong key, or the file was altered)"
    )]
    Decrypt(PathBuf),
    #[error(
        "{0}: the snapshot is encrypted but no key is configured (storage.key_file or {KEY_ENV})"
    )]
    NoKey(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the encryption key was already set for this process")]
    AlreadySet,
}

/// The 32-byte key for the database and (derived) snapshots.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(…)")
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        // Best effort: volatile writes so the compiler keeps them.
        for b in self.0.iter_mut() {
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

impl MasterKey {
    /// Parses 64 hex characters (surrounding whitespace ignored); `what`
    /// names the source in the error.
    pub fn from_hex(text: &str, what: &str) -> Result<Self, CryptoError> {
        let t = text.trim();
        let bad = |found: String| CryptoError::Format {
            what: what.to_owned(),
            found,
        };
        if t.len() != 64 {
            return Err(bad(format!("found {} characters", t.len())));
        }
        let mut key = [0u8; 32];
        for (i, pair) in t.as_bytes().chunks(2).enumerate() {
            let hex = |c: u8| (c as char).to_digit(16);
            match (hex(pair[0]), hex(pair[1])) {
                (Some(h), Some(l)) => key[i] = (h * 16 + l) as u8,
                _ => return Err(bad("found a character that is not hexadecimal".into())),
            }
        }
        Ok(Self(key))
    }

    /// A new random key.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| CryptoError::Io {
            path: PathBuf::from("(random source)"),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(Self(key))
    }

    /// The key as SQLCipher's raw-key pragma value: `x'…'` (with quotes).
    pub fn sqlcipher_pragma_value(&self) -> String {
        format!("\"x'{}'\"", self.hex())
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The snapshot key: HKDF-SHA256(key, info = [`SNAPSHOT_LABEL`]).
    pub fn snapshot_key(&self) -> SnapshotKey {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, &self.0);
        let mut okm = [0u8; 32];
        // 32 bytes is far below HKDF's limit (255 × 32): cannot fail.
        hk.expand(SNAPSHOT_LABEL, &mut okm)
            .expect("32-byte HKDF output");
        SnapshotKey(ChaCha20Poly1305::new(&okm.into()))
    }
}

/// Reads a key file: refused unless it is 0600 or 0400 and owned by the
/// user running this process.
pub fn read_key_file(path: &Path) -> Result<MasterKey, CryptoError> {
    let meta = std::fs::metadata(path).map_err(|source| CryptoError::Read {
        path: path.to_owned(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mode = meta.permissions().mode() & 0o777;
        if mode != 0o600 && mode != 0o400 {
            return Err(CryptoError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(CryptoError::Owner {
                path: path.to_owned(),
                owner: meta.uid(),
                me,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let text = std::fs::read_to_string(path).map_err(|source| CryptoError::Read {
        path: path.to_owned(),
        source,
    })?;
    MasterKey::from_hex(&text, &format!("key file {}", path.display()))
}

/// Writes a new key file, 0600, failing if it exists.
pub fn write_key_file(path: &Path, key: &MasterKey) -> Result<(), CryptoError> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let io = |source| CryptoError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = o.open(path).map_err(io)?;
    writeln!(f, "{}", key.hex()).map_err(io)?;
    f.sync_all().map_err(io)
}

/// The key from `key_file` if given, else from [`KEY_ENV`], else none.
pub fn load_key(key_file: Option<&Path>) -> Result<Option<MasterKey>, CryptoError> {
    if let Some(p) = key_file {
        return read_key_file(p).map(Some);
    }
    key_from_env()
}

fn key_from_env() -> Result<Option<MasterKey>, CryptoError> {
    match std::env::var(KEY_ENV) {
        Ok(v) if !v.trim().is_empty() => MasterKey::from_hex(&v, KEY_ENV).map(Some),
        _ => Ok(None),
    }
}

static KEY: OnceLock<Option<MasterKey>> = OnceLock::new();

/// Sets the process's key (or its absence) once, at start-up, before the
/// database is opened.
pub fn install(key: Option<MasterKey>) -> Result<(), CryptoError> {
    KEY.set(key).map_err(|_| CryptoError::AlreadySet)
}

/// The process's key: the installed one, else (never installed) the one in
/// [`KEY_ENV`]; a malformed variable then counts as none (the start-up path,
/// which installs, reports it).
pub fn installed() -> Option<&'static MasterKey> {
    KEY.get_or_init(|| key_from_env().ok().flatten()).as_ref()
}

/// ChaCha20-Poly1305 under the derived snapshot key.
pub struct SnapshotKey(ChaCha20Poly1305);

impl SnapshotKey {
    /// Encrypts `plain` for the file named `name` (the associated data).
    pub fn seal(&self, name: &str, plain: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| CryptoError::Io {
            path: PathBuf::from(name),
            source: std::io::Error::other(e.to_string()),
        })?;
        let ct = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Decrypt(PathBuf::from(name)))?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + ct.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypts a sealed file's bytes; `path` names it in errors and its
    /// file name (less `.enc`) is the associated data.
    pub fn open(&self, path: &Path, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < MAGIC.len() + NONCE_LEN || &sealed[..MAGIC.len()] != MAGIC {
            return Err(CryptoError::NotSealed(path.to_owned()));
        }
        let (nonce, ct) = sealed[MAGIC.len()..].split_at(NONCE_LEN);
        self.0
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: plain_name(path).as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Decrypt(path.to_owned()))
    }
}

/// The file name a sealed file stands for (`x-face.jpg.enc` → `x-face.jpg`).
fn plain_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.strip_suffix(SEALED_EXT)
        .map(str::to_owned)
        .unwrap_or(name)
}

/// Reads a snapshot file: one ending in `.enc` is decrypted with the
/// process's key; any other is read as it is (plain snapshots from before
/// encryption was turned on).
pub fn read_snapshot(path: &Path) -> Result<Vec<u8>, CryptoError> {
    let bytes = std::fs::read(path).map_err(|source| CryptoError::Io {
        path: path.to_owned(),
        source,
    })?;
    if !path.to_string_lossy().ends_with(SEALED_EXT) {
        return Ok(bytes);
    }
    let key = installed().ok_or_else(|| CryptoError::NoKey(path.to_owned()))?;
    key.snapshot_key().open(path, &bytes)
}

/// Re-encrypts every sealed snapshot under `snapshots_dir` from `old` to
/// `new` (each file written beside, then renamed over). Returns how many.
pub fn rekey_snapshots(
    snapshots_dir: &Path,
    old: &MasterKey,
    new: &MasterKey,
) -> Result<usize, CryptoError> {
    let (old, new) = (old.snapshot_key(), new.snapshot_key());
    let mut n = 0;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| CryptoError::Io { path, source }
    };
    let Ok(days) = std::fs::read_dir(snapshots_dir) else {
        return Ok(0);
    };
    for day in days.flatten() {
        if !day.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(day.path())
            .map_err(io(&day.path()))?
            .flatten()
        {
            let path = f.path();
            if !path.to_string_lossy().ends_with(SEALED_EXT) {
                continue;
            }
            let sealed = std::fs::read(&path).map_err(io(&path))?;
            let plain = match old.open(&path, &sealed) {
                Ok(p) => p,
                // Already under the new key (a rekey interrupted earlier).
                Err(_) if new.open(&path, &sealed).is_ok() => continue,
                Err(e) => return Err(e),
            };
            let resealed = new.seal(&plain_name(&path), &plain)?;
            write_private_atomic(&path, &resealed)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Writes `bytes` to `path` through a 0600 temporary file beside it and a
/// rename, so a reader never sees half a file.
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> Result<(), CryptoError> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let io = |p: &Path| {
        let p = p.to_owned();
        move |source| CryptoError::Io { path: p, source }
    };
    // A leftover temporary file would keep its old mode: start afresh.
    let _ = std::fs::remove_file(&tmp);
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut f = o.open(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn hex_keys_parse_and_bad_ones_are_named() {
        let k = MasterKey::from_hex(&format!(" {HEX}\n"), "t").unwrap();
        assert_eq!(k.hex(), HEX);
        assert_eq!(k.sqlcipher_pragma_value(), format!("\"x'{HEX}'\""));
        let e = MasterKey::from_hex("abc", "key file k").unwrap_err();
        assert!(e.to_string().contains("key file k"), "{e}");
        assert!(e.to_string().contains("64 hexadecimal"), "{e}");
        let e = MasterKey::from_hex(&HEX.replace('0', "g"), "t").unwrap_err();
        assert!(e.to_string().contains("not hexadecimal"), "{e}");
    }

    #[test]
    fn sealed_snapshots_round_trip_and_are_bound_to_name_and_key() {
        let k = MasterKey::from_hex(HEX, "t").unwrap();
        let sk = k.snapshot_key();
        let jpeg = b"\xFF\xD8\xFFjpeg bytes";
        let sealed = sk.seal("e1-face.jpg", jpeg).unwrap();
        assert!(!sealed.starts_with(b"\xFF\xD8"));
        let p = Path::new("snapshots/d/e1-face.jpg.enc");
        assert_eq!(sk.open(p, &sealed).unwrap(), jpeg);
        // Another name, another key, a flipped bit: all refused.
        assert!(sk.open(Path::new("e2-face.jpg.enc"), &sealed).is_err());
        let other = MasterKey::generate().unwrap().snapshot_key();
        assert!(matches!(
            other.open(p, &sealed),
            Err(CryptoError::Decrypt(_))
        ));
        let mut bent = sealed.clone();
        *bent.last_mut().unwrap() ^= 1;
        assert!(sk.open(p, &bent).is_err());
        assert!(matches!(sk.open(p, jpeg), Err(CryptoError::NotSealed(_))));
        // Two seals of one image differ (random nonce).
        assert_ne!(sealed, sk.seal("e1-face.jpg", jpeg).unwrap());
    }

    #[cfg(unix)]
    #[test]
    fn key_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let k = MasterKey::generate().unwrap();
        write_key_file(&p, &k).unwrap();
        assert_eq!(read_key_file(&p).unwrap(), k);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(read_key_file(&p).unwrap(), k);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_key_file(&p).unwrap_err().to_string();
        assert!(e.contains("mode 0644") && e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn rekey_moves_snapshots_to_the_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let day = dir.path().join("2026-12-01");
        std::fs::create_dir_all(&day).unwrap();
        let (a, b) = (
            MasterKey::generate().unwrap(),
            MasterKey::generate().unwrap(),
        );
        let f = day.join("e-face.jpg.enc");
        std::fs::write(&f, a.snapshot_key().seal("e-face.jpg", b"img").unwrap()).unwrap();
        assert_eq!(rekey_snapshots(dir.path(), &a, &b).unwrap(), 1);
        let sealed = std::fs::read(&f).unwrap();
        assert_eq!(b.snapshot_key().open(&f, &sealed).unwrap(), b"img");
        assert!(a.snapshot_key().open(&f, &sealed).is_err());
        // Running it again (an interrupted rekey) skips what is done.
        assert_eq!(rekey_snapshots(dir.path(), &a, &b).unwrap(), 0);
    }
}
