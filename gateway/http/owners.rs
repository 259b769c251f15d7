//! Owners, the watch list, identify and search by photo.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::error::{JsonBody, Path, Query, bounded};
use super::{ApiError, AppState, Auth, blocking};
use crate::identify::{self, EnrolRules, PhotoUpload};
use crate::registry::{
    Consent, ConsentMethod, NewOwner, NewWatchEntry, OwnerFilter, OwnerPatch, OwnerStatus,
    Priority, Role, Subject,
};
use crate::vision::Checks;
use crate::vision::image::{PhotoLimits, RgbView, decode_photo};

/// Photos in one request at most.
const MAX_PHOTOS: usize = 10;

/// A parsed multipart form: its text fields and its photos.
struct Form {
    text: HashMap<String, String>,
    photos: Vec<PhotoUpload>,
}

impl Form {
    /// Reads the form; fields not in `allowed` (besides `photo`), a text
    /// field given twice, non-UTF-8 text and too many photos are refused.
    async fn read(req: Request, state: &Arc<AppState>, allowed: &[&str]) -> Result<Form, ApiError> {
        let mut mp = Multipart::from_request(req, state).await.map_err(|e| {
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("expected multipart/form-data: {}", e.body_text()),
            )
        })?;
        let limit = state.config.http.max_upload_bytes;
        let mp_err = move |e: axum::extract::multipart::MultipartError| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!(
                        "the upload is larger than the limit of {limit} bytes (http.max_upload_bytes)"
                    ),
                )
            } else {
                ApiError::bad_request(format!("multipart form: {}", e.body_text()))
            }
        };
        let mut form = Form {
            text: HashMap::new(),
            photos: Vec::new(),
        };
        while let Some(field) = mp.next_field().await.map_err(mp_err)? {
            let name = field.name().unwrap_or("").to_owned();
            if name == "photo" {
                if form.photos.len() == MAX_PHOTOS {
                    return Err(ApiError::bad_request(format!(
                        "at most {MAX_PHOTOS} photos per request"
                    )));
                }
                let file = field
                    .file_name()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("photo {}", form.photos.len() + 1));
                let bytes = field.bytes().await.map_err(mp_err)?;
                form.photos.push(PhotoUpload {
                    name: file,
                    bytes: bytes.to_vec(),
                });
            } else if allowed.contains(&name.as_str()) {
                let bytes = field.bytes().await.map_err(mp_err)?;
                let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
                    ApiError::bad_request(format!("field '{name}' is not UTF-8 text"))
                })?;
                if form.text.insert(name.clone(), text).is_some() {
                    return Err(ApiError::bad_request(format!(
                        "field '{name}' is given twice"
                    )));
                }
            } else {
                let mut known: Vec<&str> = allowed.to_vec();
                known.push("photo");
                return Err(ApiError::bad_request(format!(
                    "unknown field '{name}' (known: {})",
                    known.join(", ")
                )));
            }
        }
        Ok(form)
    }

    /// A text field, trimmed; empty counts as absent.
    fn opt(&self, name: &str) -> Option<String> {
        self.text
            .get(name)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    fn required(&self, name: &str) -> Result<String, ApiError> {
        self.opt(name)
            .ok_or_else(|| ApiError::bad_request(format!("field '{name}' is required")))
    }

    fn bool(&self, name: &str) -> Result<bool, ApiError> {
        match self.opt(name).as_deref() {
            None | Some("false") | Some("0") | Some("off") => Ok(false),
            Some("true") | Some("1") | Some("on") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "field '{name}': '{other}' is not true or false"
            ))),
        }
    }

    fn time(&self, name: &str) -> Result<Option<OffsetDateTime>, ApiError> {
        self.opt(name)
            .map(|s| {
                OffsetDateTime::parse(&s, &Rfc3339).map_err(|_| {
                    ApiError::bad_request(format!(
                        "field '{name}': '{s}' is not an RFC 3339 time like 2026-11-27T09:30:00+08:00"
                    ))
                })
            })
            .transpose()
    }

    fn photos(&mut self) -> Result<Vec<PhotoUpload>, ApiError> {
        if self.photos.is_empty() {
            return Err(ApiError::bad_request(
                "no photo: add at least one 'photo' file part",
            ));
        }
        Ok(std::mem::take(&mut self.photos))
    }
}

fn rules(state: &AppState) -> EnrolRules {
    EnrolRules {
        limits: limits(state),
        threshold: state.config.matching.threshold,
        keep_photo: state.config.privacy.store_enrolment_photos,
    }
}

fn limits(state: &AppState) -> PhotoLimits {
    PhotoLimits {
        max_bytes: state.config.storage.max_photo_bytes,
        max_pixels: state.config.storage.max_photo_pixels,
    }
}

fn parse_enum<T: std::str::FromStr>(field: &str, value: &str, known: &str) -> Result<T, ApiError> {
    value.parse().map_err(|_| {
        ApiError::bad_request(format!("field '{field}': '{value}' is not one of {known}"))
    })
}

fn owner_json(state: &AppState, id: &str) -> Result<serde_json::Value, ApiError> {
    let g = state.lock_gallery()?;
    let rec = g.registry().owner(id)?;
    let mut v = serde_json::to_value(&rec).map_err(|e| ApiError::internal(e.to_string()))?;
    v["template_count"] = rec.template_count().into();
    Ok(v)
}

const OWNER_FIELDS: &[&str] = &[
    "id",
    "name",
    "building",
    "unit",
    "grid_code",
    "minor_under_14",
    "consent_method",
    "consent_given_at",
    "consent_taken_by",
    "guardian_name",
    "guardian_relation",
];

/// `POST /api/v1/owners`
pub async fn create(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    req: Request,
) -> Result<Response, ApiError> {
    auth.require(Role::Enroller)?;
    let mut form = Form::read(req, &state, OWNER_FIELDS).await?;
    let now = OffsetDateTime::now_utc();
    let owner = NewOwner {
        id: form.required("id")?,
        name: form.required("name")?,
        building: form.opt("building"),
        unit: form.opt("unit"),
        grid_code: form
            .opt("grid_code")
            .or_else(|| Some(state.config.site.grid_code.clone()).filter(|g| !g.is_empty())),
        minor_under_14: form.bool("minor_under_14")?,
    };
    let method: ConsentMethod = parse_enum(
        "consent_method",
        &form.required("consent_method")?,
        "written, electronic, verbal_recorded",
    )?;
    let given_at = form.time("consent_given_at")?.unwrap_or(now);
    if given_at > now + time::Duration::minutes(5) {
        return Err(ApiError::bad_request(
            "field 'consent_given_at' is in the future",
        ));
    }
    if given_at < time::macros::datetime!(2000-01-01 0:00 UTC) {
        return Err(ApiError::bad_request(format!(
            "field 'consent_given_at': {given_at} is before 2000-01-01; give the date the consent was taken"
        )));
    }
    let taken_by = form
        .opt("consent_taken_by")
        .unwrap_or_else(|| auth.0.name.clone());
    let mut consent = Consent::new(given_at, method, &taken_by);
    consent.guardian_name = form.opt("guardian_name");
    consent.guardian_relation = form.opt("guardian_relation");
    owner.validate()?;
    consent.validate(owner.minor_under_14)?;
    let photos = form.photos()?;
    let actor = auth.actor();
    let body = blocking(&state, move |s| {
        let rules = rules(s);
        let exists = |g: &crate::registry::Gallery| -> Result<(), ApiError> {
            match g.registry().owner(&owner.id) {
                Ok(_) => Err(crate::registry::RegistryError::OwnerExists(owner.id.clone()).into()),
                Err(_) => Ok(()),
            }
        };
        exists(&*s.lock_gallery()?)?;
        let names: Vec<String> = photos.iter().map(|p| p.name.clone()).collect();
        // The models run with the gallery unlocked; the checks are repeated
        // under the lock that writes.
        let t = s.with_engine_and_gallery(|engine, gallery| {
            Ok(identify::enrolment_templates(
                engine,
                gallery,
                photos,
                Some(&owner.id),
                rules,
                now,
            )?)
        })?;
        let mut g = s.lock_gallery()?;
        exists(&g)?;
        identify::recheck_not_enrolled_elsewhere(
            &g,
            &t,
            &names,
            Some(&owner.id),
            rules.threshold,
            now,
        )?;
        g.enroll(&owner, &consent, &t, &actor, now)?;
        drop(g);
        owner_json(s, &owner.id)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    q: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// `GET /api/v1/owners`
pub async fn list(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    auth.require(Role::Enroller)?;
    let limit = bounded("limit", q.limit, 50, 1..=500)?;
    let offset = bounded("offset", q.offset, 0, 0..=i64::MAX)?;
    if q.q.as_ref().is_some_and(|s| s.chars().count() > 100) {
        return Err(ApiError::bad_request("q is longer than 100 characters"));
    }
    let status = q
        .status
        .as_deref()
        .map(|s| parse_enum::<OwnerStatus>("status", s, "active, suspended"))
        .transpose()?;
    let filter = OwnerFilter {
        search: q.q,
        status,
        limit: limit as usize,
        offset: offset as usize,
    };
    blocking(&state, move |s| {
        let g = s.lock_gallery()?;
        let items = g.registry().owners(&filter)?;
        let total = g.registry().owners_count(&filter)?;
        let items: Vec<serde_json::Value> = items
            .into_iter()
            .map(|o| {
                let mut v = serde_json::to_value(&o.owner).unwrap_or_default();
                v["template_count"] = o.template_count.into();
                v
            })
            .collect();
        Ok(Json(serde_json::json!({
            "items": items, "total": total, "limit": limit, "offset": offset
        })))
    })
    .await
}

/// `GET /api/v1/owners/{id}`
pub async fn show(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    auth.require(Role::Enroller)?;
    blocking(&state, move |s| owner_json(s, &id).map(Json)).await
}

/// The JSON of a PATCH: absent leaves a field, `null` clears it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    #[serde(default, deserialize_with = "some")]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "some")]
    building: Option<Option<String>>,
    #[serde(default, deserialize_with = "some")]
    unit: Option<Option<String>>,
    #[serde(default, deserialize_with = "some")]
    grid_code: Option<Option<String>>,
}

fn some<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `PATCH /api/v1/owners/{id}`
pub async fn update(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
    JsonBody(p): JsonBody<Patch>,
) -> Result<Json<serde_json::Value>, ApiError> {
    auth.require(Role::Enroller)?;
    let name = match p.name {
        Some(None) => return Err(ApiError::bad_request("name cannot be cleared")),
        Some(Some(n)) => Some(n),
        None => None,
    };
    let patch = OwnerPatch {
        name,
        building: p.building,
        unit: p.unit,
        grid_code: p.grid_code,
    };
    if patch == OwnerPatch::default() {
        return Err(ApiError::bad_request(
            "nothing to change: send at least one of name, building, unit, grid_code",
        ));
    }
    let actor = auth.actor();
    blocking(&state, move |s| {
        {
            let mut g = s.lock_gallery()?;
            g.update_owner(&id, &patch, &actor, OffsetDateTime::now_utc())?;
        }
        owner_json(s, &id).map(Json)
    })
    .await
}

async fn set_status(
    state: Arc<AppState>,
    auth: Auth,
    id: String,
    status: OwnerStatus,
) -> Result<Json<serde_json::Value>, ApiError> {
    auth.require(Role::Enroller)?;
    let actor = auth.actor();
    blocking(&state, move |s| {
        {
            let mut g = s.lock_gallery()?;
            g.set_status(&id, status, &actor, OffsetDateTime::now_utc())?;
        }
        owner_json(s, &id).map(Json)
    })
    .await
}

/// `POST /api/v1/owners/{id}/suspend`
pub async fn suspend(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    set_status(state, auth, id, OwnerStatus::Suspended).await
}

/// `POST /api/v1/owners/{id}/activate`
pub async fn activate(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    set_status(state, auth, id, OwnerStatus::Active).await
}

/// `DELETE /api/v1/owners/{id}`: erasure on request (PIPL art. 47).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EraseQuery {
    reason: Option<String>,
}

/// `DELETE /api/v1/owners/{id}[?reason=request|consent_withdrawn]`: a
/// withdrawal of consent is the same erasure, with its reason audited.
pub async fn erase(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<EraseQuery>,
) -> Result<StatusCode, ApiError> {
    auth.require(Role::Admin)?;
    let reason: crate::registry::ErasureReason = match q.reason.as_deref() {
        None => crate::registry::ErasureReason::Request,
        Some(r) => parse_enum("reason", r, "request, consent_withdrawn")?,
    };
    let actor = auth.actor();
    blocking(&state, move |s| {
        let mut g = s.lock_gallery()?;
        g.erase_owner(&id, reason, &actor, OffsetDateTime::now_utc())?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// `GET /api/v1/owners/{id}/export`: the owner's copy of their data (PIPL
/// Art. 45) as one JSON document: `owner` is what `facegate owners export`
/// writes as `owner.json`, `files` carries the photos they gave and their
/// face crops, base64. Audited; never cached.
pub async fn export(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    auth.require(Role::Admin)?;
    let actor = auth.actor();
    let name: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let data = blocking(&state, move |s| {
        let mut r = s.lock_registry()?;
        Ok(r.export_owner_files(&id, &actor, OffsetDateTime::now_utc())?)
    })
    .await?;
    use base64::Engine as _;
    let files: Vec<serde_json::Value> = data
        .files
        .iter()
        .map(|(path, bytes)| {
            serde_json::json!({
                "path": path,
                "content_type": crate::registry::image_type(bytes).1,
                "bytes": bytes.len(),
                "data_base64": base64::engine::general_purpose::STANDARD.encode(bytes),
            })
        })
        .collect();
    let body = serde_json::json!({ "owner": data.export, "files": files });
    Ok((
        [
            (axum::http::header::CACHE_CONTROL, "no-store".to_owned()),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"owner-{name}-export.json\""),
            ),
        ],
        Json(body),
    )
        .into_response())
}

/// `POST /api/v1/owners/{id}/faces`
pub async fn add_faces(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    auth.require(Role::Enroller)?;
    let mut form = Form::read(req, &state, &[]).await?;
    let photos = form.photos()?;
    let actor = auth.actor();
    let body = blocking(&state, move |s| {
        let rules = rules(s);
        let now = OffsetDateTime::now_utc();
        s.lock_gallery()?.registry().owner(&id)?;
        let names: Vec<String> = photos.iter().map(|p| p.name.clone()).collect();
        // The models run with the gallery unlocked; the checks are repeated
        // under the lock that writes.
        let t = s.with_engine_and_gallery(|engine, gallery| {
            Ok(identify::enrolment_templates(
                engine,
                gallery,
                photos,
                Some(&id),
                rules,
                now,
            )?)
        })?;
        let mut g = s.lock_gallery()?;
        identify::recheck_not_enrolled_elsewhere(&g, &t, &names, Some(&id), rules.threshold, now)?;
        g.add_faces(&id, &t, &actor, now)?;
        drop(g);
        owner_json(s, &id)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `DELETE /api/v1/owners/{id}/faces/{template_id}`
pub async fn remove_face(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path((id, template_id)): Path<(String, i64)>,
) -> Result<StatusCode, ApiError> {
    auth.require(Role::Enroller)?;
    let actor = auth.actor();
    blocking(&state, move |s| {
        let mut g = s.lock_gallery()?;
        // The template must be this owner's: a URL names one owner's face.
        let rec = g.registry().owner(&id)?;
        if !rec.templates.iter().any(|t| t.id == template_id) {
            return Err(ApiError::not_found(format!(
                "owner {id} has no face template {template_id}"
            )));
        }
        g.remove_face(template_id, &actor, OffsetDateTime::now_utc())?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// `GET /api/v1/watchlist`
pub async fn watchlist(
    State(state): State<Arc<AppState>>,
    auth: Auth,
) -> Result<Json<serde_json::Value>, ApiError> {
    auth.require(Role::Viewer)?;
    blocking(&state, move |s| {
        let g = s.lock_gallery()?;
        let list = g.registry().watchlist(OffsetDateTime::now_utc())?;
        Ok(Json(
            serde_json::to_value(list).map_err(|e| ApiError::internal(e.to_string()))?,
        ))
    })
    .await
}

/// `POST /api/v1/watchlist`
pub async fn watch_add(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    req: Request,
) -> Result<Response, ApiError> {
    auth.require(Role::Admin)?;
    let mut form = Form::read(req, &state, &["name", "reason", "priority", "expires_at"]).await?;
    let now = OffsetDateTime::now_utc();
    let entry = NewWatchEntry {
        name: form.required("name")?,
        reason: form.required("reason")?,
        priority: match form.opt("priority") {
            Some(p) => parse_enum::<Priority>("priority", &p, "low, normal, high, critical")?,
            None => Priority::Normal,
        },
        expires_at: form.time("expires_at")?,
    };
    if entry.expires_at.is_some_and(|t| t <= now) {
        return Err(ApiError::bad_request("field 'expires_at' is in the past"));
    }
    entry.validate()?;
    let photos = form.photos()?;
    let actor = auth.actor();
    let body = blocking(&state, move |s| {
        let rules = rules(s);
        let t = s.with_engine_and_gallery(|engine, _| {
            let mut t = Vec::new();
            for p in photos {
                let img = decode_photo(&p.bytes, &p.name, rules.limits)?;
                let (_, tpl) =
                    identify::enrolment_template(engine, RgbView::from_image(&img), &p.name)?;
                t.push(tpl);
            }
            Ok(t)
        })?;
        let id = s.lock_gallery()?.watchlist_add(&entry, &t, &actor, now)?;
        let g = s.lock_gallery()?;
        let e = g
            .registry()
            .watchlist(now)?
            .into_iter()
            .find(|e| e.id == id)
            .ok_or_else(|| ApiError::internal("watch-list entry vanished"))?;
        serde_json::to_value(e).map_err(|e| ApiError::internal(e.to_string()))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `DELETE /api/v1/watchlist/{id}`
pub async fn watch_remove(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    auth.require(Role::Admin)?;
    let actor = auth.actor();
    blocking(&state, move |s| {
        let mut g = s.lock_gallery()?;
        g.watchlist_remove(id, &actor, OffsetDateTime::now_utc())?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// The one photo of a form.
fn one_photo(form: &mut Form) -> Result<PhotoUpload, ApiError> {
    let mut photos = form.photos()?;
    if photos.len() > 1 {
        return Err(ApiError::bad_request("send one 'photo' only"));
    }
    Ok(photos.remove(0))
}

/// `POST /api/v1/identify`
///
/// A face is named only when it matches someone at or above
/// `matching.threshold`; below it `best_match` is null and the decision
/// `stranger` (no match), never the nearest person. Every identify is audited (who asked, what was
/// found: counts and the matched ids, no names).
pub async fn identify(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    req: Request,
) -> Result<Json<serde_json::Value>, ApiError> {
    auth.require(Role::Enroller)?;
    let mut form = Form::read(req, &state, &["liveness"]).await?;
    let liveness = form.bool("liveness")?;
    let photo = one_photo(&mut form)?;
    let actor = auth.actor();
    // A decoded photo costs up to 3 bytes a pixel until answered: bound how
    // many are held at once (the engine runs one at a time anyway).
    let slot = state
        .photo_slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::unavailable("the server is stopping"))?;
    blocking(&state, move |s| {
        let _slot = slot;
        let img = decode_photo(&photo.bytes, &photo.name, limits(s))?;
        let threshold = s.config.matching.threshold;
        let now = OffsetDateTime::now_utc();
        let mut faces = s.with_engine_and_gallery(|engine, gallery| {
            Ok(identify::identify(
                engine,
                gallery,
                RgbView::from_image(&img),
                Checks {
                    liveness,
                    pose: true,
                },
                threshold,
                now,
            )?)
        })?;
        let (width, height) = img.dimensions();
        drop(img);
        let mut matched = Vec::new();
        for f in &mut faces {
            if matches!(
                f.decision,
                identify::Decision::Owner | identify::Decision::Watchlist
            ) {
                if let Some(m) = &f.best_match {
                    matched.push(match &m.subject {
                        Subject::Owner { id, .. } => id.clone(),
                        Subject::Watch { id, .. } => format!("watch:{id}"),
                    });
                }
            } else {
                f.best_match = None;
            }
        }
        s.lock_registry()?.record_audit(
            now,
            &actor,
            "identify",
            "identify",
            serde_json::json!({ "faces": faces.len(), "matched": matched }),
        )?;
        Ok(Json(serde_json::json!({
            "width": width,
            "height": height,
            "threshold": threshold,
            "faces": faces,
        })))
    })
    .await
}

/// `POST /api/v1/search/face`: where has this person been seen.
pub async fn search_face(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    req: Request,
) -> Result<Json<serde_json::Value>, ApiError> {
    auth.require(Role::Admin)?;
    let mut form = Form::read(req, &state, &["limit", "min_score"]).await?;
    let limit = match form.opt("limit") {
        None => 20,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=200).contains(&n) => n,
            _ => return Err(ApiError::bad_request(format!("limit '{l}' is not 1..=200"))),
        },
    };
    let min_score = match form.opt("min_score") {
        None => state.config.matching.threshold,
        Some(m) => match m.parse::<f32>() {
            Ok(v) if (-1.0..=1.0).contains(&v) => v,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "min_score '{m}' is not -1..=1"
                )));
            }
        },
    };
    let photo = one_photo(&mut form)?;
    let actor = auth.actor();
    blocking(&state, move |s| {
        let img = decode_photo(&photo.bytes, &photo.name, limits(s))?;
        let (model_id, embedding) = s.with_engine_and_gallery(|engine, _| {
            let (_, t) =
                identify::enrolment_template(engine, RgbView::from_image(&img), &photo.name)?;
            Ok((t.model_id, t.embedding))
        })?;
        let now = OffsetDateTime::now_utc();
        let since = now - time::Duration::days(i64::from(s.config.privacy.snapshot_retention_days));
        let (hits, searched) = s
            .lock_events()?
            .search_faces(&model_id, &embedding, since, min_score, limit)?;
        s.lock_registry()?.record_audit(
            now,
            &actor,
            "events.face_search",
            "events",
            serde_json::json!({ "hits": hits.len(), "searched": searched }),
        )?;
        Ok(Json(serde_json::json!({
            "searched": searched,
            "min_score": min_score,
            "hits": hits,
        })))
    })
    .await
}
