//! Talking to the gateway's HTTP API from a test: multipart bodies for
//! the owner and identify endpoints, and a blocking client's answer as
//! status and JSON.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use facegate::config::Config;
use facegate::http::AppState;
use facegate::live::Live;
use facegate::registry::{Registry, Role};
use serde_json::Value;

const BOUNDARY: &str = "----facegate-test-boundary-7d1f";

/// A multipart/form-data body (content type, bytes): the text `fields`,
/// then each of `photos` as a `photo` part named by its file name (the
/// server names a bad photo by it).
pub fn multipart<N: AsRef<str>, B: AsRef<[u8]>>(
    fields: &[(&str, &str)],
    photos: &[(N, B)],
) -> (String, Vec<u8>) {
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    for (name, bytes) in photos {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"{}\"\r\nContent-Type: application/octet-stream\r\n\r\n",
                name.as_ref()
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes.as_ref());
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={BOUNDARY}"), body)
}

/// Sends a form made by [`multipart`] (content type, body) with `req`.
/// The result is ureq's own, for [`json`] or a caller reading headers.
#[allow(clippy::result_large_err)]
pub fn send_form(
    req: ureq::Request,
    (content_type, body): (String, Vec<u8>),
) -> Result<ureq::Response, ureq::Error> {
    req.set("content-type", &content_type).send_bytes(&body)
}

/// A blocking (ureq) request's status and JSON body (`Null` when the body
/// is not JSON); an error status is an answer too, a failed connection a
/// panic.
pub fn json(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    match r {
        Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(s, r)) => (s, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("request failed: {e}"),
    }
}

/// Three staff tokens in the registry at `db`: `boss` (admin), `gate-desk`
/// (enroller) and `guard` (viewer), in that order.
pub fn staff_tokens(db: &Path) -> (String, String, String) {
    let now = time::OffsetDateTime::now_utc();
    let r = Registry::open(db).unwrap();
    (
        r.token_create("boss", Role::Admin, "test", now).unwrap(),
        r.token_create("gate-desk", Role::Enroller, "test", now)
            .unwrap(),
        r.token_create("guard", Role::Viewer, "test", now).unwrap(),
    )
}

/// The API's state over the registry at `db` with the real models loaded
/// (for enrolment and identify), as `facegate run` builds it.
pub fn app_state(config: Config, db: &Path, data: &Path) -> AppState {
    let engine = facegate::vision::FaceEngine::new(&config).unwrap();
    let gallery = facegate::pipeline::open_gallery(db, &engine).unwrap();
    AppState::new(Arc::new(config), db, data, gallery, Arc::new(Live::new()))
        .unwrap()
        .with_engine(engine)
}
