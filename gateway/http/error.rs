//! API errors as JSON, and extractors whose rejections are JSON too.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::identify::EnrolPhotoError;
use crate::registry::RegistryError;
use crate::vision::image::PhotoError;

/// `{"error": {"code", "message"[, "owner_id"]}}` with a status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// On 409 "already enrolled": whose face it is.
    pub owner_id: Option<String>,
    /// On 429 and 503: seconds before trying again (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            owner_id: None,
            retry_after: None,
        }
    }

    /// Adds a `Retry-After` header of `secs`.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, message = %self.message, "API error");
        }
        let mut err = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(o) = self.owner_id {
            err["owner_id"] = o.into();
        }
        let mut res = (self.status, Json(serde_json::json!({ "error": err }))).into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        res
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let msg = e.to_string();
        match e {
            RegistryError::UnknownOwner(_)
            | RegistryError::UnknownWatchEntry(_)
            | RegistryError::UnknownTemplate(_) => Self::not_found(msg),
            RegistryError::OwnerExists(_) => Self::new(StatusCode::CONFLICT, "conflict", msg),
            RegistryError::Invalid(_) => Self::bad_request(msg),
            ref other if other.is_transient() => {
                Self::unavailable(format!("{msg}; the database is busy, try again"))
            }
            _ => Self::internal(msg),
        }
    }
}

impl From<PhotoError> for ApiError {
    fn from(e: PhotoError) -> Self {
        let msg = e.to_string();
        match e {
            PhotoError::TooLarge { .. } | PhotoError::TooManyPixels { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", msg)
            }
            PhotoError::NotAnImage(_) => {
                Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "not_an_image", msg)
            }
            PhotoError::Io(..) => Self::bad_request(msg),
            PhotoError::Empty(_)
            | PhotoError::Truncated(_)
            | PhotoError::Corrupt(..)
            | PhotoError::Transparent(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_photo", msg)
            }
        }
    }
}

impl From<EnrolPhotoError> for ApiError {
    fn from(e: EnrolPhotoError) -> Self {
        let msg = e.to_string();
        match e {
            EnrolPhotoError::NoFace { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "no_face", msg)
            }
            EnrolPhotoError::SeveralFaces { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "several_faces", msg)
            }
            EnrolPhotoError::Unusable { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unusable_face", msg)
            }
            EnrolPhotoError::AlreadyEnrolled { owner_id, .. } => Self {
                owner_id: Some(owner_id),
                ..Self::new(StatusCode::CONFLICT, "already_enrolled", msg)
            },
            EnrolPhotoError::Photo(p) => p.into(),
            EnrolPhotoError::Vision(v) => Self::internal(v.to_string()),
            EnrolPhotoError::Registry(r) => r.into(),
        }
    }
}

impl From<crate::identify::IdentifyError> for ApiError {
    fn from(e: crate::identify::IdentifyError) -> Self {
        match e {
            crate::identify::IdentifyError::Registry(r) => r.into(),
            crate::identify::IdentifyError::Vision(v) => Self::internal(v.to_string()),
        }
    }
}

/// A query parameter `name` (absent: `default`) checked to lie in `range`.
pub fn bounded(
    name: &str,
    value: Option<i64>,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, ApiError> {
    let v = value.unwrap_or(default);
    if range.contains(&v) {
        Ok(v)
    } else {
        Err(ApiError::bad_request(format!(
            "{name} {v} is outside {}..={}",
            range.start(),
            range.end()
        )))
    }
}

/// A query string, strictly: unknown parameters and bad values are a 400
/// naming them. `access_token` (auth for GETs) is not a query parameter.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let raw = parts.uri.query().unwrap_or("");
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
            .map_err(|e| ApiError::bad_request(format!("query string: {e}")))?;
        let kept: Vec<(String, String)> = pairs
            .into_iter()
            .filter(|(k, _)| k != "access_token")
            .collect();
        let text = serde_urlencoded::to_string(&kept)
            .map_err(|e| ApiError::bad_request(format!("query string: {e}")))?;
        serde_urlencoded::from_str(&text)
            .map(Query)
            .map_err(|e| ApiError::bad_request(format!("query string: {e}")))
    }
}

/// A path parameter; a rejection (e.g. a non-numeric id) is a JSON 400.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e: PathRejection| ApiError::bad_request(format!("path: {}", e.body_text())))
    }
}

/// A JSON body; rejections are JSON 400/413/415 with the parser's message.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(e) => Err(json_rejection(e)),
        }
    }
}

fn json_rejection(e: JsonRejection) -> ApiError {
    let status = e.status();
    let text = e.body_text();
    match status {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            status,
            "unsupported_media_type",
            "expected a JSON body with Content-Type: application/json",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(status, "too_large", text),
        _ => ApiError::bad_request(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_the_status_a_client_can_act_on() {
        let e: ApiError = RegistryError::UnknownOwner("A-1".into()).into();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        let e: ApiError = PhotoError::NotAnImage("x".into()).into();
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let e: ApiError = EnrolPhotoError::AlreadyEnrolled {
            photo: "p".into(),
            who: "owner A-1 (Li)".into(),
            owner_id: "A-1".into(),
            score: 0.8,
        }
        .into();
        assert_eq!(e.status, StatusCode::CONFLICT);
        assert_eq!(e.owner_id.as_deref(), Some("A-1"));
        let e: ApiError = EnrolPhotoError::NoFace { photo: "p".into() }.into();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
    }
}
