//! Events, snapshots, the live feed (server-sent events), cameras, metrics
//! and the audit log.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_util::sync::CancellationToken;

use super::error::{Path, Query, bounded};
use super::{ApiError, AppState, Auth, blocking};
use crate::events::{EventFilter, EventKind};
use crate::registry::Role;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    since: Option<String>,
    until: Option<String>,
    camera: Option<String>,
    kind: Option<String>,
    owner: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

fn time_param(name: &str, v: Option<&str>) -> Result<Option<OffsetDateTime>, ApiError> {
    v.map(|s| {
        OffsetDateTime::parse(s, &Rfc3339).map_err(|_| {
            ApiError::bad_request(format!(
                "{name} '{s}' is not an RFC 3339 time like 2026-11-27T09:30:00+08:00"
            ))
        })
    })
    .transpose()
}

/// `GET /api/v1/events`
pub async fn list(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Query(q): Query<EventsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    auth.require(Role::Viewer)?;
    let limit = bounded("limit", q.limit, 100, 1..=1000)?;
    let offset = bounded("offset", q.offset, 0, 0..=100_000)?;
    let kind = q
        .kind
        .as_deref()
        .map(|k| {
            EventKind::parse(k).ok_or_else(|| {
                ApiError::bad_request(format!("kind '{k}' is not one of {}", EventKind::names()))
            })
        })
        .transpose()?;
    let filter = EventFilter {
        since: time_param("since", q.since.as_deref())?,
        until: time_param("until", q.until.as_deref())?,
        kind,
        camera: q.camera,
        subject_id: q.owner,
        limit: limit as usize,
        offset: offset as usize,
    };
    blocking(&state, move |s| {
        let items = s.lock_events()?.list(&filter)?;
        Ok(Json(
            serde_json::json!({ "items": items, "limit": limit, "offset": offset }),
        ))
    })
    .await
}

/// `GET /api/v1/events/{id}`
pub async fn show(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    auth.require(Role::Viewer)?;
    blocking(&state, move |s| {
        let e = s
            .lock_events()?
            .get(&id)?
            .ok_or_else(|| ApiError::not_found(format!("no event '{id}'")))?;
        Ok(Json(
            serde_json::to_value(e).map_err(|e| ApiError::internal(e.to_string()))?,
        ))
    })
    .await
}

fn jpeg(bytes: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg")),
            // Faces: kept by no cache, the browser's included.
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-store"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        bytes,
    )
        .into_response()
}

/// Reads `<data_dir>/<rel>` if `rel` is a snapshot path (no escaping the
/// snapshots folder), decrypting a sealed one (`.jpg.enc`). A `.jpg` that
/// is not on disk is looked for sealed, so links ending in `.jpg` work
/// whichever way the file was written.
fn read_snapshot(state: &AppState, rel: &str) -> Result<Vec<u8>, ApiError> {
    let path = std::path::Path::new(rel);
    let ok = path.starts_with("snapshots")
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !ok {
        return Err(ApiError::bad_request("not a snapshot path"));
    }
    let mut file = state.data_dir.join(path);
    if !file.exists() && !rel.ends_with(crate::crypto::SEALED_EXT) {
        let mut sealed = file.clone().into_os_string();
        sealed.push(crate::crypto::SEALED_EXT);
        file = sealed.into();
    }
    crate::crypto::read_snapshot(&file).map_err(|e| match e {
        crate::crypto::CryptoError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            ApiError::not_found("snapshot not found (expired after privacy.snapshot_retention_days, or never saved)")
        }
        e => ApiError::internal(format!("reading snapshot: {e}")),
    })
}

/// `GET /api/v1/events/{id}/snapshot/{part}`
pub async fn event_snapshot(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path((id, part)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    auth.require(Role::Viewer)?;
    if part != "face" && part != "scene" {
        return Err(ApiError::bad_request(format!(
            "part '{part}' is not face or scene"
        )));
    }
    blocking(&state, move |s| {
        let e = s
            .lock_events()?
            .get(&id)?
            .ok_or_else(|| ApiError::not_found(format!("no event '{id}'")))?;
        let snap = e
            .snapshot
            .ok_or_else(|| ApiError::not_found(format!("event '{id}' has no snapshot")))?;
        let rel = if part == "face" {
            snap.face
        } else {
            snap.scene
        };
        read_snapshot(s, &rel).map(jpeg)
    })
    .await
}

/// `GET /api/v1/snapshots/{day}/{file}`: the path MQTT payloads link to.
pub async fn snapshot_file(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path((day, file)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    auth.require(Role::Viewer)?;
    let day_ok = day.len() == 10
        && day.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    let file_ok = (file.ends_with(".jpg") || file.ends_with(".jpg.enc"))
        && !file.starts_with('.')
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !day_ok || !file_ok {
        return Err(ApiError::bad_request(
            "expected /api/v1/snapshots/YYYY-MM-DD/<event id>-face.jpg or -scene.jpg (.jpg.enc when encrypted)",
        ));
    }
    blocking(&state, move |s| {
        read_snapshot(s, &format!("snapshots/{day}/{file}")).map(jpeg)
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    alerts_only: Option<bool>,
}

/// `GET /api/v1/events/stream`: each event as it is decided, as
/// `event: <kind>` with the event JSON; a reader that falls behind gets
/// `event: lagged` with how many it missed.
///
/// At most `http.max_event_streams` are open at once (one more gets a 503).
/// A stream ends when the server stops, and within
/// `http.stream_token_check_s` of its token being revoked.
pub async fn stream(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Query(q): Query<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    auth.require(Role::Viewer)?;
    let slot = state.stream_slots.clone().try_acquire_owned().map_err(|_| {
        ApiError::unavailable(format!(
            "{} live event streams are open, the most allowed (http.max_event_streams); close one or try again later",
            state.config.http.max_event_streams
        ))
        .with_retry_after(10)
    })?;
    let alerts_only = q.alerts_only.unwrap_or(false);
    let rx = state.live.subscribe();
    let s = BroadcastStream::new(rx).filter_map(move |item| {
        let out = match item {
            Ok(e) => {
                if alerts_only && (e.repeat || !e.kind.is_alert()) {
                    None
                } else {
                    let data = serde_json::to_string(&e).unwrap_or_else(|_| "{}".into());
                    Some(Ok(SseEvent::default()
                        .event(e.kind.as_str())
                        .id(format!("{}#{}", e.id, e.revision))
                        .data(data)))
                }
            }
            Err(BroadcastStreamRecvError::Lagged(n)) => Some(Ok(SseEvent::default()
                .event("lagged")
                .data(format!("{{\"missed\":{n}}}")))),
        };
        std::future::ready(out)
    });
    let end = state.shutdown.child_token();
    watch_token(state.clone(), auth.0.token_id.clone(), end.clone());
    // The watcher stops when the stream is dropped (the client went away).
    let watcher = end.clone().drop_guard();
    let s = s.take_until(end.cancelled_owned()).map(move |item| {
        let _held = (&slot, &watcher);
        item
    });
    Ok(Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Cancels `end` once token `token_id` is no longer active (revoked, by the
/// API or `facegate token revoke` in another process); returns when `end`
/// is cancelled for any reason.
fn watch_token(state: Arc<AppState>, token_id: String, end: CancellationToken) {
    let every = Duration::from_secs(state.config.http.stream_token_check_s);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = end.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let (s, id) = (state.clone(), token_id.clone());
            let active = tokio::task::spawn_blocking(move || {
                s.lock_registry()
                    .ok()
                    .and_then(|r| r.token_active(&id).ok())
            })
            .await;
            // A busy or failing database is no reason to cut a viewer off.
            if let Ok(Some(false)) = active {
                tracing::info!(token_id = %token_id, "live event stream ended: its token was revoked");
                end.cancel();
                return;
            }
        }
    });
}

/// `GET /api/v1/cameras`
pub async fn cameras(
    State(state): State<Arc<AppState>>,
    auth: Auth,
) -> Result<Json<serde_json::Value>, ApiError> {
    auth.require(Role::Viewer)?;
    let list: Vec<serde_json::Value> = state
        .live
        .cameras()
        .iter()
        .map(|c| {
            let st = c.handle.status();
            let mut v = serde_json::to_value(&st).unwrap_or_default();
            v["name"] = c.ctx.name.clone().into();
            v["role"] = serde_json::to_value(c.ctx.role).unwrap_or_default();
            v["detect_fps"] = c.ctx.detect_fps.into();
            v["site"] = c.ctx.place.site.clone().into();
            v["community"] = c.ctx.place.community.clone().into();
            v["grid"] = c.ctx.place.grid.clone().into();
            v["building"] = serde_json::to_value(&c.ctx.place.building).unwrap_or_default();
            v["last_frame_age_s"] = st
                .last_frame_at
                .and_then(|t| t.elapsed().ok())
                .map(|d| d.as_secs_f64())
                .into();
            v
        })
        .collect();
    Ok(Json(serde_json::Value::Array(list)))
}

/// `GET /api/v1/cameras/{name}/snapshot`: the newest frame as JPEG.
pub async fn camera_snapshot(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    auth.require(Role::Enroller)?;
    let cam = state
        .live
        .camera(&name)
        .ok_or_else(|| ApiError::not_found(format!("no camera '{name}'")))?;
    let actor = auth.actor();
    blocking(&state, move |s| {
        let frame = cam
            .latest
            .lock()
            .map_err(|_| ApiError::internal("frame lock poisoned"))?
            .clone()
            .ok_or_else(|| {
                ApiError::unavailable(format!(
                    "camera '{name}' has no frame yet (state: {:?})",
                    cam.handle.status().state
                ))
            })?;
        let rgb = frame
            .to_rgb()
            .map_err(|e| ApiError::internal(format!("frame conversion: {e}")))?;
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&rgb)
            .map_err(|e| ApiError::internal(format!("JPEG encoding: {e}")))?;
        s.lock_registry()?.record_audit(
            OffsetDateTime::now_utc(),
            &actor,
            "camera.snapshot",
            &format!("camera:{name}"),
            serde_json::json!({}),
        )?;
        Ok(jpeg(out))
    })
    .await
}

/// `GET /metrics` (Prometheus text format).
pub async fn metrics(State(state): State<Arc<AppState>>, auth: Auth) -> Result<Response, ApiError> {
    auth.require(Role::Viewer)?;
    blocking(&state, move |s| {
        let depth = s.events.lock().ok().and_then(|e| e.outbox_depth().ok());
        let text = s.live.metrics.render(&s.live.cameras(), depth);
        Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            text,
        )
            .into_response())
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    limit: Option<i64>,
}

/// `GET /api/v1/audit`
pub async fn audit(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Query(q): Query<AuditQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    auth.require(Role::Admin)?;
    let limit = bounded("limit", q.limit, 100, 1..=1000)?;
    blocking(&state, move |s| {
        let rows = s.lock_registry()?.audit(limit as usize)?;
        Ok(Json(
            serde_json::to_value(rows).map_err(|e| ApiError::internal(e.to_string()))?,
        ))
    })
    .await
}
