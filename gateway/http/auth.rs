//! Bearer tokens: `Authorization: Bearer fg_…`, or `?access_token=fg_…` on
//! GET requests (an `<img>` or an EventSource cannot set headers).
//!
//! Checking a secret costs an argon2 hash (tens of milliseconds, on
//! purpose), so a token that passed is remembered by its SHA-256 for a
//! minute; a remembered token is still looked up by id on every request,
//! so revoking it takes effect at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};
use crate::registry::{Principal, Role};

const CACHE_TTL: Duration = Duration::from_secs(60);
const CACHE_MAX: usize = 1024;

#[derive(Default)]
pub struct Cache(Mutex<HashMap<[u8; 32], (Principal, Instant)>>);

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
        let cached = state.auth_cache.0.lock().ok().and_then(|c| {
            c.get(&key)
                .filter(|(_, at)| at.elapsed() < CACHE_TTL)
                .map(|(p, _)| p.clone())
        });
        let s = state.clone();
        let principal = tokio::task::spawn_blocking(move || {
            let reg = s.lock_registry()?;
            match cached {
                Some(p) => Ok(reg.token_active(&p.token_id)?.then_some(p)),
                None => Ok::<_, ApiError>(reg.token_verify(&token)?),
            }
        })
        .await
        .map_err(|e| ApiError::internal(format!("auth worker failed: {e}")))??;
        let Some(p) = principal else {
            if let Ok(mut c) = state.auth_cache.0.lock() {
                c.remove(&key);
            }
            return Err(unauthorized("token unknown, revoked or wrong"));
        };
        if let Ok(mut c) = state.auth_cache.0.lock() {
            if c.len() >= CACHE_MAX {
                c.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
                if c.len() >= CACHE_MAX {
                    c.clear();
                }
            }
            c.entry(key).or_insert_with(|| (p.clone(), Instant::now()));
        }
        Ok(Auth(p))
    }
}

/// `GET /api/v1/me`
pub async fn me(auth: Auth) -> Result<Json<serde_json::Value>, ApiError> {
    let p = auth.require(Role::Viewer)?;
    Ok(Json(
        serde_json::json!({ "name": p.name, "role": p.role.as_str() }),
    ))
}
