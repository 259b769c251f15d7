//! The HTTP API through the real router (tower `oneshot`) and over a real
//! socket on 127.0.0.1: real models, real face photos, a real SQLite file,
//! and for the live part a real GStreamer camera.

mod common;

use std::path::Path as FsPath;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::http::{app_state, multipart, staff_tokens};
use facegate::config::Config;
use facegate::http::router;
use facegate::registry::Registry;
use serde_json::Value;
use tower::ServiceExt;

struct Api {
    router: Router,
    admin: String,
    enroller: String,
    viewer: String,
    db: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn setup(config: Config) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fg.db");
    let (admin, enroller, viewer) = staff_tokens(&db);
    let state = app_state(config, &db, &dir.path().join("data"));
    Api {
        router: router(Arc::new(state)),
        admin,
        enroller,
        viewer,
        db,
        _dir: dir,
    }
}

impl Api {
    async fn send(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<(String, Vec<u8>)>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some((ct, b)) => req.header("content-type", ct).body(Body::from(b)),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 64 << 20)
            .await
            .unwrap();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, v)
    }

    /// A request without a body, as the holder of `token`.
    async fn call(&self, method: &str, uri: &str, token: &str) -> (StatusCode, Value) {
        self.send(method, uri, Some(token), None).await
    }

    async fn get(&self, uri: &str, token: &str) -> (StatusCode, Value) {
        self.call("GET", uri, token).await
    }

    async fn enrol(
        &self,
        token: &str,
        id: &str,
        name: &str,
        photo: &FsPath,
    ) -> (StatusCode, Value) {
        let bytes = std::fs::read(photo).unwrap();
        let body = multipart(
            &[
                ("id", id),
                ("name", name),
                ("consent_method", "written"),
                ("unit", "3-1201"),
            ],
            &[("photo.jpg", bytes)],
        );
        self.send("POST", "/api/v1/owners", Some(token), Some(body))
            .await
    }

    /// Puts the face of `photo` on the watch list with `fields`, as admin.
    async fn watch(&self, fields: &[(&str, &str)], photo: &FsPath) -> (StatusCode, Value) {
        let body = multipart(fields, &[("p.jpg", std::fs::read(photo).unwrap())]);
        self.send("POST", "/api/v1/watchlist", Some(&self.admin), Some(body))
            .await
    }

    async fn identify(&self, token: &str, photo: &FsPath) -> (StatusCode, Value) {
        let body = multipart(&[], &[("probe.jpg", std::fs::read(photo).unwrap())]);
        self.send("POST", "/api/v1/identify", Some(token), Some(body))
            .await
    }
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no error code>")
}

#[tokio::test(flavor = "multi_thread")]
async fn enrol_identify_suspend_and_erase_through_the_router() {
    let Some(faces) = common::faces_dir() else {
        return;
    };
    let api = setup(common::shipped_config());
    let ids = faces.join("identities");
    let (s, owner) = api
        .enrol(
            &api.enroller,
            "B-0101",
            "Barack Obama",
            &ids.join("Barack_Obama/1.jpg"),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{owner}");
    assert_eq!(owner["id"], "B-0101");
    assert_eq!(owner["template_count"], 1);
    assert_eq!(owner["consents"][0]["method"], "written");
    // Consent taken by: the token's name unless the form names someone.
    assert_eq!(owner["consents"][0]["taken_by"], "gate-desk");

    // Another photo of him is recognised as the owner; someone else is not.
    let (s, r) = api
        .identify(&api.enroller, &ids.join("Barack_Obama/3.jpg"))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["faces"].as_array().unwrap().len(), 1);
    assert_eq!(r["faces"][0]["decision"], "owner", "{r}");
    assert_eq!(r["faces"][0]["best_match"]["id"], "B-0101");
    let (_, r) = api
        .identify(&api.enroller, &ids.join("Joe_Biden/1.jpg"))
        .await;
    assert_eq!(r["faces"][0]["decision"], "stranger", "{r}");

    // Listing with search and paging.
    let (s, page) = api
        .get("/api/v1/owners?q=obama&limit=10", &api.enroller)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page["total"], 1);
    assert_eq!(page["items"][0]["id"], "B-0101");
    let (_, page) = api.get("/api/v1/owners?q=nobody", &api.enroller).await;
    assert_eq!(page["total"], 0);

    // Update, suspend (no longer recognised as an owner), reactivate.
    let patch = (
        "application/json".to_owned(),
        br#"{"unit": "5-0302", "building": null}"#.to_vec(),
    );
    let (s, o) = api
        .send(
            "PATCH",
            "/api/v1/owners/B-0101",
            Some(&api.enroller),
            Some(patch),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{o}");
    assert_eq!(o["unit"], "5-0302");
    let (s, _) = api
        .call("POST", "/api/v1/owners/B-0101/suspend", &api.enroller)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, r) = api
        .identify(&api.enroller, &ids.join("Barack_Obama/3.jpg"))
        .await;
    assert_eq!(r["faces"][0]["decision"], "stranger", "suspended: {r}");
    api.call("POST", "/api/v1/owners/B-0101/activate", &api.enroller)
        .await;

    // A second face photo, then removing it again.
    let body = multipart(
        &[],
        &[(
            "2.jpg",
            std::fs::read(ids.join("Barack_Obama/2.jpg")).unwrap(),
        )],
    );
    let (s, o) = api
        .send(
            "POST",
            "/api/v1/owners/B-0101/faces",
            Some(&api.enroller),
            Some(body),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{o}");
    assert_eq!(o["template_count"], 2);
    let tid = o["templates"][1]["id"].as_i64().unwrap();
    let (s, _) = api
        .call(
            "DELETE",
            &format!("/api/v1/owners/B-0101/faces/{tid}"),
            &api.enroller,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    // Erasure needs admin; afterwards the face is a stranger and the owner gone.
    let (s, e) = api
        .send("DELETE", "/api/v1/owners/B-0101", Some(&api.enroller), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    // A withdrawal of consent is the same erasure, with its reason audited;
    // an unknown reason erases nothing.
    let (s, e) = api
        .call(
            "DELETE",
            "/api/v1/owners/B-0101?reason=changed_mind",
            &api.admin,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, _) = api.get("/api/v1/owners/B-0101", &api.enroller).await;
    assert_eq!(s, StatusCode::OK, "a refused erasure erases nothing");
    let (s, _) = api
        .call(
            "DELETE",
            "/api/v1/owners/B-0101?reason=consent_withdrawn",
            &api.admin,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = api.get("/api/v1/owners/B-0101", &api.enroller).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, r) = api
        .identify(&api.enroller, &ids.join("Barack_Obama/3.jpg"))
        .await;
    assert_eq!(r["faces"][0]["decision"], "stranger", "erased: {r}");

    // Every change is in the audit log under the token's name.
    let (s, audit) = api.get("/api/v1/audit?limit=50", &api.admin).await;
    assert_eq!(s, StatusCode::OK);
    let removal = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "owner.remove" && a["subject"] == "B-0101")
        .expect("owner.remove audited");
    assert_eq!(
        removal["detail"]["reason"], "consent_withdrawn",
        "{removal}"
    );
    let rows: Vec<(String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["actor"].as_str().unwrap().to_owned(),
                a["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (actor, action) in [
        ("api:gate-desk", "owner.enroll"),
        ("api:gate-desk", "owner.update"),
        ("api:gate-desk", "owner.suspend"),
        ("api:gate-desk", "owner.add_face"),
        ("api:gate-desk", "owner.remove_face"),
        ("api:boss", "owner.remove"),
    ] {
        assert!(
            rows.iter().any(|(a, b)| a == actor && b == action),
            "no audit row {actor} {action} in {rows:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_token_is_401_and_a_low_role_is_403() {
    let api = setup(common::shipped_config());
    // Public: health and the API description.
    let (s, h) = api.send("GET", "/healthz", None, None).await;
    assert_eq!((s, h["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, doc) = api.send("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.0.3");

    for (method, uri) in [
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/owners"),
        ("POST", "/api/v1/owners"),
        ("GET", "/api/v1/owners/A-1"),
        ("DELETE", "/api/v1/owners/A-1"),
        ("GET", "/api/v1/watchlist"),
        ("POST", "/api/v1/identify"),
        ("POST", "/api/v1/search/face"),
        ("GET", "/api/v1/events"),
        ("GET", "/api/v1/events/stream"),
        ("GET", "/api/v1/cameras"),
        ("GET", "/api/v1/audit"),
        ("GET", "/metrics"),
    ] {
        let (s, e) = api.send(method, uri, None, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {uri}: {e}");
        assert_eq!(error_code(&e), "unauthorized");
        let (s, _) = api
            .call(
                method,
                uri,
                "fg_0123456789ab_not-a-real-secret-not-a-real-secret-xx",
            )
            .await;
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "{method} {uri} with a made-up token"
        );
    }
    // A real token with one character changed is refused too.
    let mut wrong = api.viewer.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'x' { 'y' } else { 'x' });
    let (s, _) = api.get("/api/v1/me", &wrong).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Not "Bearer": 401 with a message saying how.
    let req = Request::get("/api/v1/me")
        .header("authorization", format!("Basic {}", api.viewer))
        .body(Body::empty())
        .unwrap();
    let res = api.router.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let (s, me) = api.get("/api/v1/me", &api.viewer).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (me["name"].as_str(), me["role"].as_str()),
        (Some("guard"), Some("viewer"))
    );
    // The viewer sees events and cameras, not owners; enrollers do not erase
    // or search faces.
    let (s, _) = api.get("/api/v1/events", &api.viewer).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api.get("/api/v1/cameras", &api.viewer).await;
    assert_eq!(s, StatusCode::OK);
    for (method, uri, token) in [
        ("GET", "/api/v1/owners", &api.viewer),
        ("POST", "/api/v1/owners", &api.viewer),
        ("POST", "/api/v1/identify", &api.viewer),
        ("DELETE", "/api/v1/owners/A-1", &api.enroller),
        ("POST", "/api/v1/watchlist", &api.enroller),
        ("POST", "/api/v1/search/face", &api.enroller),
        ("GET", "/api/v1/audit", &api.enroller),
    ] {
        let (s, e) = api.send(method, uri, Some(token), None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {uri}: {e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains("needs"),
            "{e}"
        );
    }
    // Only the event stream and snapshot images (EventSource, img tags) take
    // the token in the query; other GETs and POSTs do not.
    let (s, _) = api
        .send(
            "GET",
            &format!("/api/v1/me?access_token={}", api.viewer),
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = api
        .send(
            "POST",
            &format!("/api/v1/identify?access_token={}", api.enroller),
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Revoked: refused at once, even though it was just used.
    Registry::open(&api.db)
        .unwrap()
        .token_revoke("guard", "test", time::OffsetDateTime::now_utc())
        .unwrap();
    let (s, _) = api.get("/api/v1/me", &api.viewer).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

/// A plain gradient: a valid photo with no face in it.
fn no_face_jpeg() -> Vec<u8> {
    let img = image::RgbImage::from_fn(320, 240, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_a_4xx_json_error_and_nothing_is_written() {
    let Some(faces) = common::faces_dir() else {
        return;
    };
    let mut config = common::shipped_config();
    config.http.max_upload_bytes = 1024 * 1024;
    let api = setup(config);
    let ids = faces.join("identities");
    let obama = std::fs::read(ids.join("Barack_Obama/1.jpg")).unwrap();
    let (s, e) = api
        .enrol(
            &api.enroller,
            "B-0101",
            "Barack Obama",
            &ids.join("Barack_Obama/1.jpg"),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{e}");

    let base = [
        ("id", "N-1"),
        ("name", "Someone"),
        ("consent_method", "written"),
    ];
    let form = |extra: &[(&'static str, &'static str)], photos: Vec<(&'static str, Vec<u8>)>| {
        let mut f: Vec<(&str, &str)> = base.to_vec();
        f.extend_from_slice(extra);
        Some(multipart(&f, &photos))
    };
    let big: Vec<u8> = (0..1200 * 1024).map(|i| (i % 251) as u8).collect();
    let mut truncated = obama.clone();
    truncated.truncate(obama.len() / 2);
    let several = std::fs::read(faces.join("scenes/frec_two_people.jpg")).unwrap();
    // (what, body, status, error code, the message mentions)
    type Case = (
        &'static str,
        Option<(String, Vec<u8>)>,
        StatusCode,
        &'static str,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "a text file as photo",
            form(&[], vec![("notes.txt", b"hello, not a photo".to_vec())]),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not_an_image",
            "not an image",
        ),
        (
            "an upload over http.max_upload_bytes",
            form(&[], vec![("big.jpg", big)]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "max_upload_bytes",
        ),
        (
            "a photo with no face",
            form(&[], vec![("wall.jpg", no_face_jpeg())]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_face",
            "no face",
        ),
        (
            "a photo with several faces",
            form(&[], vec![("two.jpg", several)]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "several_faces",
            "one person",
        ),
        (
            "a truncated JPEG",
            form(&[], vec![("half.jpg", truncated)]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_photo",
            "truncated",
        ),
        (
            "a face enrolled as another owner",
            form(&[], vec![("again.jpg", obama.clone())]),
            StatusCode::CONFLICT,
            "already_enrolled",
            "B-0101",
        ),
        (
            "an unknown field",
            form(&[("shoe_size", "42")], vec![("a.jpg", obama.clone())]),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "unknown field 'shoe_size'",
        ),
        (
            "no consent method",
            Some(multipart(
                &[("id", "N-1"), ("name", "X")],
                &[("a.jpg", obama.clone())],
            )),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "consent_method",
        ),
        (
            "an unknown consent method",
            Some(multipart(
                &[("id", "N-1"), ("name", "X"), ("consent_method", "nodded")],
                &[("a.jpg", obama.clone())],
            )),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "nodded",
        ),
        (
            "a child without a guardian",
            form(
                &[("minor_under_14", "true")],
                vec![("a.jpg", obama.clone())],
            ),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "guardian",
        ),
        (
            "no photo",
            form(&[], vec![]),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "no photo",
        ),
        (
            "not multipart",
            Some(("application/json".into(), b"{}".to_vec())),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "multipart",
        ),
        (
            "the same id twice",
            Some(multipart(
                &[
                    ("id", "B-0101"),
                    ("name", "X"),
                    ("consent_method", "written"),
                ],
                &[("a.jpg", obama.clone())],
            )),
            StatusCode::CONFLICT,
            "conflict",
            "already enrolled",
        ),
    ];
    for (what, body, status, code, says) in cases {
        let (s, e) = api
            .send("POST", "/api/v1/owners", Some(&api.enroller), body)
            .await;
        assert_eq!(s, status, "{what}: {e}");
        assert_eq!(error_code(&e), code, "{what}: {e}");
        let msg = e["error"]["message"].as_str().unwrap_or("");
        assert!(
            msg.contains(says),
            "{what}: message {msg:?} should mention {says:?}"
        );
        if code == "already_enrolled" {
            assert_eq!(e["error"]["owner_id"], "B-0101");
        }
    }
    // Bad paging and query values.
    for uri in [
        "/api/v1/owners?limit=0",
        "/api/v1/owners?limit=abc",
        "/api/v1/owners?offset=-1",
        "/api/v1/owners?limit=100000",
        "/api/v1/owners?status=gone",
        "/api/v1/owners?color=red",
        "/api/v1/events?limit=0",
        "/api/v1/events?since=yesterday",
        "/api/v1/events?kind=party",
    ] {
        let (s, e) = api.get(uri, &api.admin).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}: {e}");
        assert!(e["error"]["message"].as_str().is_some(), "{uri}: {e}");
    }
    // An unknown kind is answered with every kind there is (from the one
    // declaration: `undecided` was missing from a hand-written list), and
    // each of them is accepted.
    let (_, e) = api.get("/api/v1/events?kind=party", &api.admin).await;
    let msg = e["error"]["message"].as_str().unwrap_or("");
    for kind in facegate::events::EventKind::ALL {
        assert!(msg.contains(kind.as_str()), "{kind:?} not named in {msg:?}");
        let (s, e) = api
            .get(&format!("/api/v1/events?kind={kind}"), &api.admin)
            .await;
        assert_eq!(s, StatusCode::OK, "{kind}: {e}");
    }
    // Bad JSON in a PATCH.
    for body in [
        r#"{"shoe_size": 42}"#,
        r#"{"name": null}"#,
        "{}",
        "not json",
    ] {
        let (s, e) = api
            .send(
                "PATCH",
                "/api/v1/owners/B-0101",
                Some(&api.enroller),
                Some(("application/json".into(), body.as_bytes().to_vec())),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {e}");
    }
    // A non-numeric template id, an unknown owner.
    let (s, _) = api
        .call("DELETE", "/api/v1/owners/B-0101/faces/abc", &api.enroller)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = api.get("/api/v1/owners/NOBODY", &api.enroller).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Nothing was written by any of the refusals: one owner, one enrolment
    // in the audit log, and the service still works.
    let (_, page) = api.get("/api/v1/owners", &api.enroller).await;
    assert_eq!(page["total"], 1, "{page}");
    let (_, audit) = api.get("/api/v1/audit", &api.admin).await;
    let enrols = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "owner.enroll")
        .count();
    assert_eq!(enrols, 1, "{audit}");
    let (s, r) = api
        .identify(&api.enroller, &ids.join("Barack_Obama/2.jpg"))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r["faces"][0]["decision"], "owner");
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_list_through_the_api_gives_a_watchlist_hit() {
    let Some(faces) = common::faces_dir() else {
        return;
    };
    let api = setup(common::shipped_config());
    let ids = faces.join("identities");
    let photo = ids.join("Colin_Powell/1.jpg");
    let (s, w) = api
        .watch(
            &[
                ("name", "Missing grandfather"),
                ("reason", "寻人: left home 11-26"),
                ("priority", "high"),
                ("expires_at", "2099-01-01T00:00:00Z"),
            ],
            &photo,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{w}");
    assert_eq!(w["priority"], "high");
    let (_, list) = api.get("/api/v1/watchlist", &api.viewer).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (_, r) = api
        .identify(&api.enroller, &ids.join("Colin_Powell/2.jpg"))
        .await;
    assert_eq!(r["faces"][0]["decision"], "watchlist", "{r}");
    let (s, _) = api
        .call(
            "DELETE",
            &format!("/api/v1/watchlist/{}", w["id"]),
            &api.admin,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, r) = api
        .identify(&api.enroller, &ids.join("Colin_Powell/2.jpg"))
        .await;
    assert_eq!(r["faces"][0]["decision"], "stranger", "{r}");
    // An expiry in the past is refused.
    let (s, _) = api
        .watch(
            &[
                ("name", "X"),
                ("reason", "Y"),
                ("expires_at", "2001-01-01T00:00:00Z"),
            ],
            &photo,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

/// PIPL Art. 45: an owner's copy of their data through the API, with the
/// photo they gave, audited, never cached, for admins only.
#[tokio::test(flavor = "multi_thread")]
async fn an_admin_exports_one_owners_data_with_the_photo_they_gave() {
    let Some(faces) = common::faces_dir() else {
        return;
    };
    let mut config = common::shipped_config();
    config.privacy.store_enrolment_photos = true;
    let api = setup(config);
    let ids = faces.join("identities");
    let photo = ids.join("Colin_Powell/1.jpg");
    let (s, o) = api
        .enrol(&api.enroller, "C-0707", "Colin Powell", &photo)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{o}");
    let (s, o) = api
        .enrol(
            &api.enroller,
            "D-0808",
            "Donald Rumsfeld",
            &ids.join("Donald_Rumsfeld/1.jpg"),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{o}");

    // Lower roles may not; an unknown owner is a 404.
    for token in [&api.enroller, &api.viewer] {
        let (s, v) = api.get("/api/v1/owners/C-0707/export", token).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    }
    let (s, v) = api.get("/api/v1/owners/Z-9/export", &api.admin).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");

    let req = Request::builder()
        .uri("/api/v1/owners/C-0707/export")
        .header("authorization", format!("Bearer {}", api.admin))
        .body(Body::empty())
        .unwrap();
    let res = api.router.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("owner-C-0707-export.json"),
        "{:?}",
        res.headers()
    );
    let bytes = axum::body::to_bytes(res.into_body(), 64 << 20)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["owner"]["owner"]["name"], "Colin Powell", "{v}");
    assert_eq!(v["owner"]["owner"]["consents"][0]["method"], "written");
    // Only this owner's data: nothing about the other one.
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains("Rumsfeld") && !text.contains("D-0808"));
    // The photo they gave comes back byte for byte.
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0]["content_type"], "image/jpeg");
    use base64::Engine as _;
    let back = base64::engine::general_purpose::STANDARD
        .decode(files[0]["data_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(back, std::fs::read(&photo).unwrap());
    assert_eq!(
        v["owner"]["files"][0], files[0]["path"],
        "owner.json lists the file"
    );

    // The export is in the audit log, with who and how.
    let (s, audit) = api.get("/api/v1/audit?limit=50", &api.admin).await;
    assert_eq!(s, StatusCode::OK, "{audit}");
    let row = audit["items"]
        .as_array()
        .or(audit.as_array())
        .unwrap()
        .iter()
        .find(|r| r["action"] == "owner.export")
        .unwrap_or_else(|| panic!("no owner.export in {audit}"))
        .clone();
    assert_eq!(row["subject"], "C-0707");
    assert_eq!(row["actor"], "api:boss");
    assert_eq!(row["detail"]["via"], "api");
}
