//! The HTTP API (`/api/v1`, described by `openapi.json`) and the web console.
//!
//! - [`AppState`]: what handlers share: the config, the gallery the cameras
//!   match against (so an enrolment counts at once), a face engine for
//!   photos, the event store and the [`Live`] state.
//! - [`auth`]: bearer tokens with roles; every change is audited under the
//!   token's name.
//! - [`error`]: every failure is a JSON `{"error": {"code", "message"}}`
//!   with a 4xx for bad input; JSON, query, path and multipart rejections
//!   included.
//! - [`owners`] (owners, watch list, identify, search by photo) and
//!   [`feed`] (events, snapshots, the live SSE feed, cameras, metrics).
//! - [`commands`]: the command centre's signed commands over MQTT
//!   (`watchlist_add`, `watchlist_remove`, `gate_open`, `status`): the same
//!   registry operations as the handlers above, reached through the
//!   publisher's connection instead of HTTP.
//!
//! Inference and SQLite run on the blocking pool, never on the runtime's
//! threads.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::events::{Alerting, EventKind, EventStore};
use crate::live::Live;
use crate::pipeline::PipelineError;
use crate::registry::{Gallery, Registry};
use crate::vision::FaceEngine;

pub mod auth;
pub mod commands;
pub mod error;
pub mod feed;
pub mod owners;

pub use auth::Auth;
pub use error::ApiError;

/// The OpenAPI document, served as is.
pub const OPENAPI: &str = include_str!("openapi.json");

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const APP_CSS: &str = include_str!("../web/app.css");

/// The console's script, with its lists of event kinds written from the
/// one declaration ([`EventKind::ALL`]): every kind (the filter, the live
/// feed's event names) and those the console flags as alerts (a camera
/// coming back online clears an alert rather than raising one).
fn app_js() -> &'static str {
    static JS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| console_script(APP_JS));
    &JS
}

fn console_script(src: &str) -> String {
    let names = |keep: fn(EventKind) -> bool| {
        let v: Vec<&str> = EventKind::ALL
            .iter()
            .filter(|k| keep(**k))
            .map(|k| k.as_str())
            .collect();
        serde_json::to_string(&v).unwrap_or_else(|_| "[]".into())
    };
    src.replacen("/*EVENT_KINDS*/[]", &names(|_| true), 1)
        .replacen(
            "/*ALERT_KINDS*/[]",
            &names(|k| k.alerting() == Alerting::Raises),
            1,
        )
}

/// What the handlers share.
pub struct AppState {
    pub config: Arc<Config>,
    pub data_dir: PathBuf,
    pub gallery: Arc<Mutex<Gallery>>,
    /// For photos (enrol, identify, search); made on first use.
    engine: Mutex<Option<FaceEngine>>,
    pub events: Mutex<EventStore>,
    /// Tokens and audit rows for actions outside the gallery.
    pub registry: Mutex<Registry>,
    pub live: Arc<Live>,
    /// Verified tokens and failed attempts.
    pub auth_cache: auth::Cache,
    /// Photo requests being decoded or held at once (`http.max_concurrent_photos`).
    pub photo_slots: Arc<tokio::sync::Semaphore>,
    /// Open live event streams (`http.max_event_streams`).
    pub stream_slots: Arc<tokio::sync::Semaphore>,
    /// Cancelled when the server stops: open event streams end with it
    /// (otherwise a console left open would hold the shutdown forever).
    pub shutdown: CancellationToken,
}

impl AppState {
    pub fn new(
        config: Arc<Config>,
        db: &Path,
        data_dir: &Path,
        gallery: Arc<Mutex<Gallery>>,
        live: Arc<Live>,
    ) -> Result<Self, PipelineError> {
        let auth_cache = auth::Cache::new(&config.http);
        let photo_slots = Arc::new(tokio::sync::Semaphore::new(
            config.http.max_concurrent_photos,
        ));
        let stream_slots = Arc::new(tokio::sync::Semaphore::new(config.http.max_event_streams));
        let threshold = config.matching.threshold;
        if let Ok(mut g) = gallery.lock() {
            g.set_erase_similarity(threshold);
        }
        Ok(Self {
            config,
            data_dir: data_dir.to_owned(),
            gallery,
            engine: Mutex::new(None),
            events: Mutex::new(EventStore::open(db)?),
            registry: Mutex::new(
                Registry::open(db)?
                    .with_snapshot_dir(data_dir)
                    .with_erase_similarity(threshold),
            ),
            live,
            auth_cache,
            photo_slots,
            stream_slots,
            shutdown: CancellationToken::new(),
        })
    }

    /// Gives the state a face engine made elsewhere (saves loading the models twice).
    pub fn with_engine(self, engine: FaceEngine) -> Self {
        if let Ok(mut e) = self.engine.lock() {
            *e = Some(engine);
        }
        self
    }

    pub fn lock_gallery(&self) -> Result<std::sync::MutexGuard<'_, Gallery>, ApiError> {
        self.gallery
            .lock()
            .map_err(|_| ApiError::internal("gallery lock poisoned"))
    }

    pub fn lock_events(&self) -> Result<std::sync::MutexGuard<'_, EventStore>, ApiError> {
        self.events
            .lock()
            .map_err(|_| ApiError::internal("event store lock poisoned"))
    }

    pub fn lock_registry(&self) -> Result<std::sync::MutexGuard<'_, Registry>, ApiError> {
        self.registry
            .lock()
            .map_err(|_| ApiError::internal("registry lock poisoned"))
    }

    /// Runs `f` with the face engine (loading it the first time) and the
    /// shared gallery, *unlocked*: `f` runs the models first and locks the
    /// gallery only to search ([`crate::identify::Matcher`]) or to write
    /// ([`AppState::lock_gallery`]), so cameras never wait behind an upload.
    /// Blocking: call from the blocking pool.
    pub fn with_engine_and_gallery<T>(
        &self,
        f: impl FnOnce(&mut FaceEngine, &Mutex<Gallery>) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let mut engine = self
            .engine
            .lock()
            .map_err(|_| ApiError::internal("face engine lock poisoned"))?;
        if engine.is_none() {
            *engine =
                Some(FaceEngine::new(&self.config).map_err(|e| {
                    ApiError::unavailable(format!("face engine cannot start: {e}"))
                })?);
        }
        let engine = engine.as_mut().expect("set above");
        f(engine, &self.gallery)
    }
}

/// Runs `f` on the blocking pool with the state.
pub async fn blocking<T: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&AppState) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let s = state.clone();
    tokio::task::spawn_blocking(move || f(&s))
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?
}

/// The whole HTTP surface: console, API, health and metrics.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = usize::try_from(state.config.http.max_upload_bytes).unwrap_or(usize::MAX);
    let api = Router::new()
        .route("/openapi.json", get(openapi))
        .route("/me", get(auth::me))
        .route("/owners", get(owners::list).post(owners::create))
        .route(
            "/owners/{id}",
            get(owners::show)
                .patch(owners::update)
                .delete(owners::erase),
        )
        .route("/owners/{id}/export", get(owners::export))
        .route("/owners/{id}/suspend", post(owners::suspend))
        .route("/owners/{id}/activate", post(owners::activate))
        .route("/owners/{id}/faces", post(owners::add_faces))
        .route(
            "/owners/{id}/faces/{template_id}",
            axum::routing::delete(owners::remove_face),
        )
        .route("/watchlist", get(owners::watchlist).post(owners::watch_add))
        .route(
            "/watchlist/{id}",
            axum::routing::delete(owners::watch_remove),
        )
        .route("/identify", post(owners::identify))
        .route("/search/face", post(owners::search_face))
        .route("/events", get(feed::list))
        .route("/events/stream", get(feed::stream))
        .route("/events/{id}", get(feed::show))
        .route("/events/{id}/snapshot/{part}", get(feed::event_snapshot))
        .route("/snapshots/{day}/{file}", get(feed::snapshot_file))
        .route("/cameras", get(feed::cameras))
        .route("/cameras/{name}/snapshot", get(feed::camera_snapshot))
        .route("/audit", get(feed::audit))
        .fallback(api_not_found);
    Router::new()
        .route(
            "/",
            get(|| async { page(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/app.js",
            get(|| async { page(app_js(), "text/javascript; charset=utf-8") }),
        )
        .route(
            "/app.css",
            get(|| async { page(APP_CSS, "text/css; charset=utf-8") }),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(feed::metrics))
        .nest("/api/v1", api)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

fn page(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; object-src 'none'; frame-ancestors 'none'",
                ),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "cameras": state.live.cameras().len(),
    }))
    .into_response()
}

async fn api_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such API endpoint; see /api/v1/openapi.json",
    )
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such page")
}

/// Counts responses by route template and answers 405s in JSON too.
async fn observe(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let res = next.run(req).await;
    state.live.metrics.count_http(&route, res.status().as_u16());
    if res.status() == StatusCode::METHOD_NOT_ALLOWED
        && res.headers().get(header::CONTENT_TYPE).is_none()
    {
        let allow = res.headers().get(header::ALLOW).cloned();
        let mut r = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this endpoint does not take that method; see /api/v1/openapi.json",
        )
        .into_response();
        if let Some(a) = allow {
            r.headers_mut().insert(header::ALLOW, a);
        }
        return r;
    }
    res
}

/// How long stopping waits for requests in flight.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `listener` until `cancel`; open event streams end then too.
///
/// Our own accept loop rather than `axum::serve`, for three limits a
/// gateway on an estate's network needs: at most `http.max_connections`
/// open connections (beyond that, new ones wait in the kernel's queue), a
/// `http.header_timeout_s` for a request's headers (also closing idle
/// keep-alive connections, so slow or idle clients cannot hold the slots),
/// and the client's address for the failed-login limit.
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let http = state.config.http.clone();
    let streams = state.shutdown.clone();
    let slots = Arc::new(tokio::sync::Semaphore::new(http.max_connections));
    let app = router(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(http.header_timeout_s))
        .keep_alive(true);
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, addr) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        let svc =
            tower::ServiceExt::map_request(app, move |req: Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(addr));
                req
            });
        let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, client = %addr, "HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    streams.cancel();
    // Requests in flight finish; a client stalled mid-upload is not waited
    // for past the grace period.
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after the grace period; closing them");
    }
    Ok(())
}

/// Binds the configured address, with a message that names it on failure.
pub async fn bind(listen: &str) -> Result<tokio::net::TcpListener, PipelineError> {
    let addr: SocketAddr = listen
        .parse()
        .map_err(|_| PipelineError::Setup(format!("http.listen '{listen}' is not an address")))?;
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| PipelineError::Setup(format!("http: cannot listen on {addr}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_gets_every_kind_from_the_declaration_and_a_label_for_each() {
        assert!(APP_JS.contains("/*EVENT_KINDS*/[]") && APP_JS.contains("/*ALERT_KINDS*/[]"));
        let js = app_js();
        assert!(!js.contains("/*EVENT_KINDS*/") && !js.contains("/*ALERT_KINDS*/"));
        assert!(js.contains(
            r#"const EVENT_KINDS = ["owner_pass","stranger","watchlist","spoof","loitering","undecided","camera_offline","camera_online"];"#
        ));
        assert!(js.contains(
            r#"const ALERT_KINDS = new Set(["stranger","watchlist","spoof","loitering","camera_offline"]);"#
        ));
        // A new kind needs its words in both languages (English, Chinese).
        for k in EventKind::ALL {
            let label = format!("k_{k}: ");
            assert_eq!(js.matches(&label).count(), 2, "console label {label:?}");
        }
    }

    #[test]
    fn the_api_schema_lists_exactly_the_declared_kinds() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let listed = &doc["components"]["schemas"]["EventKind"]["enum"];
        let declared: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(listed, &serde_json::json!(declared));
    }
}
