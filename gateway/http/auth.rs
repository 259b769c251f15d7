//! Bearer tokens: `Authorization: Bearer fg_…`, or `?access_token=fg_…` on
//! the few GETs a browser cannot add a header to (the live feed's
//! EventSource and snapshot `<img>`s). A query token is never logged.
//!
//! Checking a secret costs an argon2 hash (tens of milliseconds, on
//! purpose), so a token that passed is remembered by its SHA-256 for
//! `http.token_cache_s` after its last use; a remembered token is still
//! looked up by id on every request, so revoking it takes effect at once.
//! The hash never runs under the registry lock: the row is read under it,
//! the secret checked after.
//!
//! Failed attempts are logged (token id and client address, never the
//! secret) and limited: after `http.max_auth_failures` within a minute from
//! one address, or for one token id, further unverified attempts get a 429
//! with `Retry-After` until the minute is over, without paying the hash.
//! Tokens already verified go on working. An unknown id is checked against
//! a dummy hash, so it costs what a known one costs.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};
use crate::config::HttpConfig;
use crate::registry::{Principal, Role, StoredToken, split_token};

const CACHE_MAX: usize = 1024;
/// The window failed attempts are counted in.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses and token ids tracked at most (the oldest windows go first).
const FAILURES_MAX: usize = 10_000;

/// The routes that take `?access_token=`: a browser loads them with an
/// EventSource or an `<img>`, which cannot send an Authorization header.
const QUERY_TOKEN_ROUTES: &[&str] = &[
    "/api/v1/events/stream",
    "/api/v1/events/{id}/snapshot/{part}",
    "/api/v1/snapshots/{day}/{file}",
];

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FailureKey {
    Client(IpAddr),
    TokenId(String),
}

/// Verified tokens, failed attempts, and how many secrets were checked.
pub struct Cache {
    tokens: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
    ttl: Duration,
    failures: Mutex<HashMap<FailureKey, (Instant, u32)>>,
    max_failures: u32,
    verifications: AtomicU64,
}

impl Default for Cache {
    fn default() -> Self {
        Self::new(&HttpConfig::default())
    }
}

impl Cache {
    pub fn new(http: &HttpConfig) -> Self {
        Self {
            tokens: Mutex::new(HashMap::new()),
            ttl: Duration::from_secs(http.token_cache_s),
            failures: Mutex::new(HashMap::new()),
            max_failures: http.max_auth_failures,
            verifications: AtomicU64::new(0),
        }
    }

    /// Secrets checked with argon2 since start (each unremembered token,
    /// known or not, costs one).
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    fn remembered(&self, key: &[u8; 32], now: Instant) -> Option<Principal> {
        let c = self.tokens.lock().ok()?;
        c.get(key)
            .filter(|(_, at)| now.duration_since(*at) < self.ttl)
            .map(|(p, _)| p.clone())
    }

    /// Remembers (or renews) a verified token from `now`.
    fn remember(&self, key: [u8; 32], p: Principal, now: Instant) {
        if let Ok(mut c) = self.tokens.lock() {
            if c.len() >= CACHE_MAX && !c.contains_key(&key) {
                c.retain(|_, (_, at)| now.duration_since(*at) < self.ttl);
                if c.len() >= CACHE_MAX {
                    c.clear();
                }
            }
            c.insert(key, (p, now));
        }
    }

    fn forget(&self, key: &[u8; 32]) {
        if let Ok(mut c) = self.tokens.lock() {
            c.remove(key);
        }
    }

    /// Seconds until `keys` may try again, if any of them is over the limit.
    fn locked_out(&self, keys: &[FailureKey], now: Instant) -> Option<u64> {
        let f = self.failures.lock().ok()?;
        keys.iter()
            .filter_map(|k| f.get(k))
            .filter(|(start, n)| {
                *n >= self.max_failures && now.duration_since(*start) < FAILURE_WINDOW
            })
            .map(|(start, _)| {
                let left = FAILURE_WINDOW.saturating_sub(now.duration_since(*start));
                left.as_secs().max(1)
            })
            .max()
    }

    fn record_failure(&self, keys: &[FailureKey], now: Instant) {
        let Ok(mut f) = self.failures.lock() else {
            return;
        };
        if f.len() >= FAILURES_MAX {
            f.retain(|_, (start, _)| now.duration_since(*start) < FAILURE_WINDOW);
            if f.len() >= FAILURES_MAX {
                // Ids are cheap to invent; addresses are what an attacker
                // cannot multiply as easily: drop the ids first.
                f.retain(|k, _| matches!(k, FailureKey::Client(_)));
            }
        }
        for k in keys {
            let e = f.entry(k.clone()).or_insert((now, 0));
            if now.duration_since(e.0) >= FAILURE_WINDOW {
                *e = (now, 0);
            }
            e.1 = e.1.saturating_add(1);
        }
    }
}

/// The caller, authenticated. Handlers call [`Auth::require`] with the
/// lowest role the operation needs.
#[derive(Debug, Clone)]
pub struct Auth(pub Principal);

impl Auth {
    pub fn require(&self, role: Role) -> Result<&Principal, ApiError> {
        if self.0.role >= role {
            Ok(&self.0)
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "token '{}' has role {}; this needs {} or higher",
                    self.0.name,
                    self.0.role.as_str(),
                    role.as_str()
                ),
            ))
        }
    }

    /// The name changes are audited under.
    pub fn actor(&self) -> String {
        format!("api:{}", self.0.name)
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

fn presented(parts: &Parts) -> Result<Option<String>, ApiError> {
    if let Some(h) = parts.headers.get(header::AUTHORIZATION) {
        let v = h
            .to_str()
            .map_err(|_| unauthorized("Authorization header is not text"))?;
        let Some(t) = v.strip_prefix("Bearer ") else {
            return Err(unauthorized(
                "Authorization must be 'Bearer <token>' (make one with facegate token create)",
            ));
        };
        return Ok(Some(t.trim().to_owned()));
    }
    if parts.method == Method::GET
        && let Some(q) = parts.uri.query()
    {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q).unwrap_or_default();
        if let Some((_, t)) = pairs.into_iter().find(|(k, _)| k == "access_token") {
            let route = parts
                .extensions
                .get::<MatchedPath>()
                .map(MatchedPath::as_str);
            if !route.is_some_and(|r| QUERY_TOKEN_ROUTES.contains(&r)) {
                return Err(unauthorized(
                    "access_token in the URL is only taken by the event stream and snapshot images; send 'Authorization: Bearer <token>'",
                ));
            }
            return Ok(Some(t));
        }
    }
    Ok(None)
}

impl FromRequestParts<Arc<AppState>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let Some(token) = presented(parts)? else {
            return Err(unauthorized(
                "no token: send 'Authorization: Bearer <token>' (make one with facegate token create)",
            ));
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cache = &state.auth_cache;
        if let Some(p) = cache.remembered(&key, Instant::now()) {
            let s = state.clone();
            let id = p.token_id.clone();
            let active = tokio::task::spawn_blocking(move || {
                Ok::<_, ApiError>(s.lock_registry()?.token_active(&id)?)
            })
            .await
            .map_err(|e| ApiError::internal(format!("auth worker failed: {e}")))??;
            if active {
                cache.remember(key, p.clone(), Instant::now());
                return Ok(Auth(p));
            }
            cache.forget(&key);
            tracing::warn!(token_id = %p.token_id, "API authentication refused: revoked token");
            return Err(unauthorized("token unknown, revoked or wrong"));
        }
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let id = split_token(&token).map(|(id, _)| id.to_owned());
        let mut keys = Vec::with_capacity(2);
        keys.extend(client.map(FailureKey::Client));
        keys.extend(id.clone().map(FailureKey::TokenId));
        if let Some(wait) = cache.locked_out(&keys, Instant::now()) {
            tracing::warn!(client = ?client, token_id = ?id, "API authentication refused: too many failures");
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_failures",
                format!("too many failed authentications from this client or for this token; try again in {wait} s"),
            )
            .with_retry_after(wait));
        }
        let Some(id) = id else {
            cache.record_failure(&keys, Instant::now());
            tracing::warn!(client = ?client, "API authentication failed: malformed token");
            return Err(unauthorized(
                "token unknown, revoked or wrong (a token reads fg_<12 hex digits>_<secret>)",
            ));
        };
        let s = state.clone();
        let checked = tokio::task::spawn_blocking(move || {
            // The row under the lock; the argon2 hash after it.
            let stored = s.lock_registry()?.token_lookup(&id)?;
            let secret = split_token(&token).map_or("", |(_, secret)| secret);
            s.auth_cache.verifications.fetch_add(1, Ordering::Relaxed);
            Ok::<_, ApiError>((StoredToken::verify(stored.as_ref(), &id, secret)?, id))
        })
        .await
        .map_err(|e| ApiError::internal(format!("auth worker failed: {e}")))??;
        match checked {
            (Ok(p), _) => {
                cache.remember(key, p.clone(), Instant::now());
                Ok(Auth(p))
            }
            (Err(why), id) => {
                cache.record_failure(&keys, Instant::now());
                tracing::warn!(client = ?client, token_id = %id, reason = why.as_str(), "API authentication failed");
                Err(unauthorized("token unknown, revoked or wrong"))
            }
        }
    }
}

/// `GET /api/v1/me`
pub async fn me(auth: Auth) -> Result<Json<serde_json::Value>, ApiError> {
    let p = auth.require(Role::Viewer)?;
    Ok(Json(
        serde_json::json!({ "name": p.name, "role": p.role.as_str() }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(max_failures: u32) -> Cache {
        Cache::new(&HttpConfig {
            max_auth_failures: max_failures,
            token_cache_s: 60,
            ..HttpConfig::default()
        })
    }

    #[test]
    fn failures_lock_out_after_the_limit_until_the_window_ends() {
        let c = cache(3);
        let t0 = Instant::now();
        let keys = [FailureKey::Client(IpAddr::from([10, 0, 0, 9]))];
        for _ in 0..2 {
            c.record_failure(&keys, t0);
        }
        assert_eq!(c.locked_out(&keys, t0), None);
        c.record_failure(&keys, t0);
        assert_eq!(c.locked_out(&keys, t0), Some(60));
        assert_eq!(c.locked_out(&keys, t0 + Duration::from_secs(45)), Some(15));
        assert_eq!(c.locked_out(&keys, t0 + FAILURE_WINDOW), None);
        // Another address is not affected.
        assert_eq!(
            c.locked_out(&[FailureKey::Client(IpAddr::from([10, 0, 0, 8]))], t0),
            None
        );
    }

    #[test]
    fn a_used_token_is_renewed_not_kept_at_its_first_time() {
        let c = cache(3);
        let t0 = Instant::now();
        let p = Principal {
            token_id: "abc".into(),
            name: "desk".into(),
            role: Role::Viewer,
        };
        c.remember([1; 32], p.clone(), t0);
        let later = t0 + Duration::from_secs(50);
        assert!(c.remembered(&[1; 32], later).is_some());
        c.remember([1; 32], p, later);
        assert!(
            c.remembered(&[1; 32], t0 + Duration::from_secs(100))
                .is_some()
        );
        assert!(
            c.remembered(&[1; 32], t0 + Duration::from_secs(111))
                .is_none()
        );
    }
}
