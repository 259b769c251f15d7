//! API tokens: who may use the HTTP API, and as what.
//!
//! A token reads `fg_<id>_<secret>`. The id (12 hex digits) finds the row;
//! only an argon2id hash of the secret (32 random bytes, base64url) is
//! stored, so a copy of the database does not hand out access. The token is
//! shown once, when created. Revoking keeps the row (the audit log names
//! it) and stops the token at once.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use time::OffsetDateTime;

use super::{Context, Millis, Registry, RegistryError, audit, check_text, invalid};

/// What a token may do; each role includes the ones below it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Events, alerts, cameras, the watch list.
    Viewer,
    /// Also owners: enrol, change, suspend; identify; camera snapshots.
    Enroller,
    /// Also erasure, the watch list, face search, the audit log.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Enroller => "enroller",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Result<Role, RegistryError> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "enroller" => Ok(Role::Enroller),
            "admin" => Ok(Role::Admin),
            other => Err(invalid(format!(
                "role '{other}' is not one of admin, enroller, viewer"
            ))),
        }
    }
}

impl std::str::FromStr for Role {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::parse(s)
    }
}

/// A stored token, without its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    #[serde(with = "super::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
    #[serde(with = "super::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// Whom a valid token belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub token_id: String,
    pub name: String,
    pub role: Role,
}

/// A token's stored row: what checking a presented secret needs.
#[derive(Debug, Clone)]
pub struct StoredToken {
    name: String,
    role: String,
    hash: String,
    revoked: bool,
}

/// How a presented token failed (for the log; the client gets one answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    UnknownId,
    Revoked,
    WrongSecret,
}

impl TokenRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRefusal::UnknownId => "unknown token id",
            TokenRefusal::Revoked => "revoked token",
            TokenRefusal::WrongSecret => "wrong secret",
        }
    }
}

/// An argon2id hash of a secret nobody holds: unknown ids are checked
/// against it, so they cost what known ids cost (no timing oracle for which
/// ids exist).
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::encode_b64(&[7u8; 16]).expect("16 bytes is a valid salt");
        Argon2::default()
            .hash_password(b"facegate-no-such-token-secret", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

impl StoredToken {
    /// Checks `secret` against `stored` (argon2, slow on purpose: call it
    /// without holding any lock). An unknown id (`stored` is `None`) or a
    /// revoked token costs the same hash as a live one.
    pub fn verify(
        stored: Option<&StoredToken>,
        id: &str,
        secret: &str,
    ) -> Result<Result<Principal, TokenRefusal>, RegistryError> {
        let hash: &str = match stored {
            Some(s) => &s.hash,
            None => dummy_hash(),
        };
        let ok = match PasswordHash::new(hash) {
            Ok(parsed) => Argon2::default()
                .verify_password(secret.as_bytes(), &parsed)
                .is_ok(),
            Err(e) => {
                if let Some(s) = stored {
                    return Err(invalid(format!(
                        "token '{}': stored hash unreadable: {e}",
                        s.name
                    )));
                }
                false
            }
        };
        let Some(s) = stored else {
            return Ok(Err(TokenRefusal::UnknownId));
        };
        if s.revoked {
            return Ok(Err(TokenRefusal::Revoked));
        }
        if !ok {
            return Ok(Err(TokenRefusal::WrongSecret));
        }
        Ok(Ok(Principal {
            token_id: id.to_owned(),
            name: s.name.clone(),
            role: Role::parse(&s.role)?,
        }))
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], RegistryError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| RegistryError::Io {
        context: "no randomness from the operating system for a token".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(b)
}

fn hash_secret(secret: &str) -> Result<String, RegistryError> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()?)
        .map_err(|e| invalid(format!("token salt: {e}")))?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| invalid(format!("hashing a token: {e}")))
}

/// Splits `fg_<id>_<secret>`; `None` for anything else.
pub fn split_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("fg_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()) && secret.len() == 43)
        .then_some((id, secret))
}

impl Registry {
    /// Creates a token; returns it (the only time it is ever shown).
    pub fn token_create(
        &self,
        name: &str,
        role: Role,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<String, RegistryError> {
        check_text("token name", name, 100)?;
        let exists: Option<String> = self
            .conn
            .query_row("SELECT id FROM api_tokens WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .context("look up token name")?;
        if exists.is_some() {
            return Err(invalid(format!(
                "a token named '{name}' exists already; revoke it or choose another name"
            )));
        }
        let id: String = random_bytes::<6>()?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
        let hash = hash_secret(&secret)?;
        let tx = self.conn.unchecked_transaction().context("begin token")?;
        tx.execute(
            "INSERT INTO api_tokens (id, name, role, secret_hash, created_at, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, name, role.as_str(), hash, Millis(now), actor],
        )
        .context("insert token")?;
        audit(
            &tx,
            now,
            actor,
            "token.create",
            &format!("token:{name}"),
            serde_json::json!({ "role": role.as_str(), "token_id": id }),
        )?;
        tx.commit().context("commit token")?;
        Ok(format!("fg_{id}_{secret}"))
    }

    /// All tokens, revoked ones included, by name.
    pub fn tokens(&self) -> Result<Vec<TokenInfo>, RegistryError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, name, role, created_at, created_by, revoked_at FROM api_tokens ORDER BY name",
            )
            .context("list tokens")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Millis>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<Millis>>(5)?,
                ))
            })
            .context("list tokens")?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name, role, created, by, revoked) = row.context("read token")?;
            out.push(TokenInfo {
                id,
                name,
                role: Role::parse(&role)?,
                created_at: created.0,
                created_by: by,
                revoked_at: revoked.map(|m| m.0),
            });
        }
        Ok(out)
    }

    /// Revokes the token named `name`.
    pub fn token_revoke(
        &self,
        name: &str,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<(), RegistryError> {
        let tx = self.conn.unchecked_transaction().context("begin revoke")?;
        let n = tx
            .execute(
                "UPDATE api_tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
                params![name, Millis(now)],
            )
            .context("revoke token")?;
        if n == 0 {
            return Err(invalid(format!("no active token named '{name}'")));
        }
        audit(
            &tx,
            now,
            actor,
            "token.revoke",
            &format!("token:{name}"),
            serde_json::json!({}),
        )?;
        tx.commit().context("commit revoke")
    }

    /// Checks a presented token: `Ok(None)` when it is malformed, unknown,
    /// revoked or its secret is wrong (the caller answers 401 for all of
    /// them alike). Slow on purpose (argon2): callers cache the result, and
    /// callers holding a lock around the registry use [`Registry::token_lookup`]
    /// under it and [`StoredToken::verify`] outside it.
    pub fn token_verify(&self, token: &str) -> Result<Option<Principal>, RegistryError> {
        let Some((id, secret)) = split_token(token) else {
            return Ok(None);
        };
        let stored = self.token_lookup(id)?;
        Ok(StoredToken::verify(stored.as_ref(), id, secret)?.ok())
    }

    /// The stored row of token `id` (fast: one indexed read), for
    /// [`StoredToken::verify`].
    pub fn token_lookup(&self, id: &str) -> Result<Option<StoredToken>, RegistryError> {
        self.conn
            .query_row(
                "SELECT name, role, secret_hash, revoked_at FROM api_tokens WHERE id = ?1",
                [id],
                |r| {
                    Ok(StoredToken {
                        name: r.get(0)?,
                        role: r.get(1)?,
                        hash: r.get(2)?,
                        revoked: r.get::<_, Option<i64>>(3)?.is_some(),
                    })
                },
            )
            .optional()
            .context("look up token")
    }

    /// Whether the token with this id is still active (for cached tokens).
    pub fn token_active(&self, id: &str) -> Result<bool, RegistryError> {
        let revoked: Option<Option<i64>> = self
            .conn
            .query_row(
                "SELECT revoked_at FROM api_tokens WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()
            .context("look up token")?;
        Ok(matches!(revoked, Some(None)))
    }

    /// Writes an audit row for an action that changes nothing in the
    /// registry (a face search, a camera snapshot taken). `detail` holds ids
    /// and counts only.
    pub fn record_audit(
        &self,
        now: OffsetDateTime,
        actor: &str,
        action: &str,
        subject: &str,
        detail: serde_json::Value,
    ) -> Result<(), RegistryError> {
        audit(&self.conn, now, actor, action, subject, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_once_created_and_stops_when_revoked() {
        let r = Registry::open_in_memory().unwrap();
        let now = OffsetDateTime::now_utc();
        let t = r
            .token_create("gate-desk", Role::Enroller, "cli", now)
            .unwrap();
        let p = r.token_verify(&t).unwrap().expect("valid");
        assert_eq!((p.name.as_str(), p.role), ("gate-desk", Role::Enroller));
        // A changed secret, an unknown id, garbage: all simply invalid.
        let mut wrong = t.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == 'A' { 'B' } else { 'A' });
        assert!(r.token_verify(&wrong).unwrap().is_none());
        assert!(
            r.token_verify("fg_000000000000_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
                .unwrap()
                .is_none()
        );
        assert!(r.token_verify("Bearer nonsense").unwrap().is_none());
        // Names are unique; the hash is stored, never the token.
        assert!(
            r.token_create("gate-desk", Role::Admin, "cli", now)
                .is_err()
        );
        let stored: String = r
            .conn
            .query_row("SELECT secret_hash FROM api_tokens", [], |row| row.get(0))
            .unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(!stored.contains(split_token(&t).unwrap().1));
        r.token_revoke("gate-desk", "cli", now).unwrap();
        assert!(r.token_verify(&t).unwrap().is_none());
        assert!(!r.token_active(&p.token_id).unwrap());
        assert!(r.token_revoke("gate-desk", "cli", now).is_err());
        let audit = r.audit(10).unwrap();
        assert!(
            audit
                .iter()
                .any(|a| a.action == "token.create" && a.actor == "cli")
        );
        assert!(audit.iter().any(|a| a.action == "token.revoke"));
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin > Role::Enroller && Role::Enroller > Role::Viewer);
        assert!(Role::parse("root").is_err());
    }
}
