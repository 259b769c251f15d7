//! Fuzz targets (issue 10, item 6) as proptest properties on stable Rust:
//! the parsers and decoders that take outside input get arbitrary and
//! mutated inputs, and must never panic and always say clearly what was
//! wrong.
//!
//! - `config_parser`: `Config::parse` on mutated `config/facegate.toml` and
//!   on random text;
//! - `command_payloads`: `CommandHandler::handle` (the MQTT command entry:
//!   envelope, signature, timestamp, nonce, arguments) on random bytes,
//!   mutated signed commands and validly signed commands with random
//!   arguments;
//! - `multipart_forms`: the real HTTP router (real models, real SQLite)
//!   with random and mutated multipart bodies on the upload endpoints: never
//!   a 5xx;
//! - `image_decoding`: `decode_photo` on mutated real JPEG and PNG bytes
//!   (8 and 16 bits).
//!
//! By default each target runs a short CI batch. For a long run:
//! `FACEGATE_FUZZ_SECS=300 cargo test --test fuzz -- --nocapture --test-threads 1`
//! (each target for that many seconds; the number of cases is printed).

mod common;

use std::fmt::Debug;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};

/// Runs `test` on values of `strategy`: `ci_cases` of them, or with
/// `FACEGATE_FUZZ_SECS` set, batches of fresh random cases until that many
/// seconds have passed. A failure (a broken property or a panic) is shrunk
/// by proptest and reported with the smallest input found.
fn fuzz<S>(
    name: &str,
    ci_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug,
{
    let secs: Option<f64> = std::env::var("FACEGATE_FUZZ_SECS")
        .ok()
        .map(|s| s.parse().expect("FACEGATE_FUZZ_SECS: a number of seconds"));
    let batch = if secs.is_some() { 200 } else { ci_cases };
    let start = Instant::now();
    let mut total = 0u64;
    loop {
        // A new runner each batch: a new random seed, new cases.
        let mut runner = TestRunner::new(RunnerConfig {
            cases: batch,
            failure_persistence: None,
            max_shrink_iters: 2000,
            ..RunnerConfig::default()
        });
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("fuzz target {name} failed after {total} cases: {e}");
        }
        total += u64::from(batch);
        if secs.is_none_or(|s| start.elapsed().as_secs_f64() >= s) {
            break;
        }
    }
    eprintln!(
        "fuzz target {name}: {total} cases in {:.1} s, no failure",
        start.elapsed().as_secs_f64()
    );
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Edit {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Delete(Index, usize),
    Insert(Index, Vec<u8>),
    Duplicate(Index, usize),
    Truncate(Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Edit::FlipBit(i, b)),
        3 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::SetByte(i, b)),
        2 => (any::<Index>(), 1usize..64).prop_map(|(i, n)| Edit::Delete(i, n)),
        2 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..32))
            .prop_map(|(i, v)| Edit::Insert(i, v)),
        1 => (any::<Index>(), 1usize..256).prop_map(|(i, n)| Edit::Duplicate(i, n)),
        1 => any::<Index>().prop_map(Edit::Truncate),
    ]
}

fn apply(mut b: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        if b.is_empty() {
            break;
        }
        let at = |i: &Index, b: &Vec<u8>| i.index(b.len());
        match e {
            Edit::FlipBit(i, bit) => {
                let p = at(i, &b);
                b[p] ^= 1 << bit;
            }
            Edit::SetByte(i, v) => {
                let p = at(i, &b);
                b[p] = *v;
            }
            Edit::Delete(i, n) => {
                let p = at(i, &b);
                let end = (p + n).min(b.len());
                b.drain(p..end);
            }
            Edit::Insert(i, v) => {
                let p = at(i, &b);
                b.splice(p..p, v.iter().copied());
            }
            Edit::Duplicate(i, n) => {
                let p = at(i, &b);
                let end = (p + n).min(b.len());
                let chunk = b[p..end].to_vec();
                b.splice(end..end, chunk);
            }
            Edit::Truncate(i) => {
                let p = at(i, &b);
                b.truncate(p.max(1));
            }
        }
    }
    b
}

/// `base` with 1 to 8 random edits.
fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(edit(), 1..8).prop_map(move |e| apply(base.clone(), &e))
}

fn repo(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
}

// ---------------------------------------------------------------------------
// The config parser.

/// Edits that make sense to TOML: replace a value, drop or repeat a line,
/// insert a TOML-ish token.
fn toml_token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("=".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("\"".to_owned()),
        Just("'''".to_owned()),
        Just("\n".to_owned()),
        Just("[[cameras]]\n".to_owned()),
        Just("[cameras]\n".to_owned()),
        Just("-1".to_owned()),
        Just("1e999".to_owned()),
        Just("nan".to_owned()),
        Just("inf".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("0".to_owned()),
        Just("\"\"".to_owned()),
        Just("{}".to_owned()),
        Just("[]".to_owned()),
        Just("\"rtsp://u:p@h/x?password=1\"".to_owned()),
        Just("\"file:///dev/zero\"".to_owned()),
        Just("\"env:\"".to_owned()),
        "[a-z_.]{1,12}",
        "\\PC{0,8}",
    ]
}

fn mutated_config(base: String) -> impl Strategy<Value = String> {
    let lines: Vec<String> = base.lines().map(str::to_owned).collect();
    let n = lines.len();
    prop::collection::vec((0..n, 0u8..4, toml_token()), 1..6).prop_map(move |ops| {
        let mut l = lines.clone();
        for (i, op, tok) in ops {
            let i = i % l.len().max(1);
            if l.is_empty() {
                l.push(tok);
                continue;
            }
            match op {
                0 => {
                    // A new value for a key.
                    if let Some((k, _)) = l[i].split_once('=') {
                        l[i] = format!("{k}= {tok}");
                    } else {
                        l[i].push_str(&tok);
                    }
                }
                1 => {
                    l.remove(i);
                }
                2 => {
                    let dup = l[i].clone();
                    l.insert(i, dup);
                }
                _ => l.insert(i, tok),
            }
        }
        l.join("\n")
    })
}

#[test]
fn config_parser() {
    let base = std::fs::read_to_string(repo("config/facegate.toml")).unwrap();
    let path = Path::new("fuzz.toml");
    let strategy = prop_oneof![
        3 => mutated_config(base.clone()),
        1 => mutated(base.clone().into_bytes())
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        1 => "\\PC{0,400}",
    ];
    fuzz("config_parser", 300, strategy, |text| {
        match facegate::config::Config::parse(&text, path) {
            Ok(c) => {
                // What parsed must validate the same way again.
                prop_assert!(c.validate(path).is_ok());
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(
                    msg.starts_with("config fuzz.toml: ") && msg.len() > 20,
                    "unclear error: {msg}"
                );
                prop_assert!(!msg.contains('\n'), "error over several lines: {msg}");
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// MQTT command payloads.

const SECRET: &str = "fuzz-command-secret-0123456789";
const SITE: &str = "gy-001";

fn command_handler(dir: &Path) -> facegate::http::commands::CommandHandler {
    use facegate::http::commands::{CommandHandler, EmbedFn};
    use facegate::publish::MqttConfig;
    use facegate::registry::{FaceTemplate, Gallery, Registry};
    let p = dir.join("secret");
    std::fs::write(&p, SECRET).unwrap();
    let g = dir.join("gate");
    std::fs::write(&g, "gate-secret-0123456789").unwrap();
    let mut cfg = MqttConfig {
        url: "mqtt://127.0.0.1:1".into(),
        command_secret: Some(format!("file:{}", p.display())),
        ..Default::default()
    };
    cfg.gate_secrets
        .insert("gate-1".into(), format!("file:{}", g.display()));
    let reg = Registry::open(&dir.join("r.db")).unwrap();
    let gallery = Gallery::open(reg, "m", 4, time::OffsetDateTime::now_utc()).unwrap();
    // The face engine is not under test here (image decoding has its own
    // target): a stand-in that accepts any photo but an empty one.
    let embed: EmbedFn = Box::new(|b: &[u8]| {
        if b.is_empty() {
            return Err("no face found".into());
        }
        Ok(FaceTemplate {
            model_id: "m".into(),
            embedding: vec![0.5, 0.5, 0.5, 0.5],
            quality: 0.9,
            photo: None,
        })
    });
    CommandHandler::new(&cfg, SITE, Arc::new(Mutex::new(gallery)), embed).unwrap()
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::String),
        prop::collection::vec(any::<u8>(), 0..48).prop_map(|b| {
            use base64::Engine;
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("name".to_owned()),
                    Just("reason".to_owned()),
                    Just("priority".to_owned()),
                    Just("photo".to_owned()),
                    Just("expires".to_owned()),
                    Just("days".to_owned()),
                    Just("by".to_owned()),
                    Just("id".to_owned()),
                    Just("gate".to_owned()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn command_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("status".to_owned()),
        Just("watchlist_add".to_owned()),
        Just("watchlist_remove".to_owned()),
        Just("gate_open".to_owned()),
        "\\PC{0,16}",
    ]
}

fn timestamp() -> impl Strategy<Value = String> {
    let now = time::OffsetDateTime::now_utc();
    prop_oneof![
        3 => (-120i64..120).prop_map(move |d| {
            (now + time::Duration::seconds(d))
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        }),
        1 => Just("1970-01-01T00:00:00Z".to_owned()),
        1 => Just("9999-12-31T23:59:59+14:00".to_owned()),
        1 => "\\PC{0,32}",
    ]
}

/// (command name, payload, retained)
fn command_input() -> impl Strategy<Value = (String, Vec<u8>, bool)> {
    use facegate::publish::config::Secret;
    let signed = (
        command_name(),
        command_name(),
        prop_oneof![Just(SITE.to_owned()), "\\PC{0,8}"],
        timestamp(),
        "[a-zA-Z0-9-]{0,40}",
        json_value(),
    )
        .prop_map(|(topic_cmd, cmd, site, ts, nonce, args)| {
            let payload = facegate::http::commands::sign_command(
                &Secret::new(SECRET.as_bytes().to_vec()),
                &site,
                &cmd,
                &ts,
                &nonce,
                &args,
            );
            // Mostly on the topic of the command it signs.
            (
                if topic_cmd.len() % 3 == 0 {
                    topic_cmd
                } else {
                    cmd
                },
                payload,
            )
        });
    let good = facegate::http::commands::sign_command(
        &Secret::new(SECRET.as_bytes().to_vec()),
        SITE,
        "status",
        &time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
        "nonce-fuzz-0001",
        &serde_json::json!({}),
    );
    (
        prop_oneof![
            3 => signed,
            2 => (command_name(), mutated(good)),
            1 => (command_name(), prop::collection::vec(any::<u8>(), 0..300)),
        ],
        prop::bool::weighted(0.05),
    )
        .prop_map(|((name, payload), retained)| (name, payload, retained))
}

#[test]
fn command_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let handler = Mutex::new(command_handler(dir.path()));
    let status = serde_json::json!({ "online": true });
    fuzz(
        "command_payloads",
        400,
        command_input(),
        |(name, payload, retained)| {
            let now = time::OffsetDateTime::now_utc();
            let o = handler
                .lock()
                .unwrap()
                .handle(&name, &payload, retained, now, &status);
            let reply: serde_json::Value = serde_json::from_slice(&o.reply)
                .map_err(|e| TestCaseError::fail(format!("reply is not JSON: {e}")))?;
            prop_assert_eq!(reply["ok"].as_bool(), Some(o.ok));
            if !o.ok {
                let err = reply["error"].as_str().unwrap_or("");
                prop_assert!(err.len() > 5, "refusal without a reason: {}", reply);
                prop_assert!(
                    reply["code"].is_string(),
                    "refusal without a code: {}",
                    reply
                );
                prop_assert!(o.enqueue.is_empty(), "a refused command queued messages");
            }
            if retained {
                prop_assert!(!o.ok, "a retained command ran");
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------
// Image decoding.

/// A real photo, made small (decoding cost is not what is tested).
fn small_photo(faces: &Path) -> image::RgbImage {
    let img = image::open(faces.join("identities/Colin_Powell/1.jpg"))
        .unwrap()
        .to_rgb8();
    image::imageops::thumbnail(&img, 96, 96)
}

fn encoded(img: &image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// Real JPEG, PNG (8-bit RGB, 16-bit RGBA) and WebP bytes of one photo.
fn image_bases(faces: &Path) -> Vec<Vec<u8>> {
    let small = image::DynamicImage::ImageRgb8(small_photo(faces));
    vec![
        std::fs::read(faces.join("identities/Colin_Powell/1.jpg")).unwrap(),
        encoded(&small, image::ImageFormat::Jpeg),
        encoded(&small, image::ImageFormat::Png),
        encoded(
            &image::DynamicImage::ImageRgba16(small.to_rgba16()),
            image::ImageFormat::Png,
        ),
        encoded(&small, image::ImageFormat::WebP),
    ]
}

#[test]
fn image_decoding() {
    use facegate::vision::image::{PhotoLimits, decode_photo};
    let Some(faces) = common::faces_dir() else {
        return;
    };
    let bases = image_bases(&faces);
    let strategy = prop_oneof![
        6 => prop::sample::select(bases).prop_flat_map(mutated),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ];
    let limits = PhotoLimits {
        max_bytes: 2 << 20,
        max_pixels: 4_000_000,
    };
    fuzz("image_decoding", 400, strategy, |bytes| {
        match decode_photo(&bytes, "fuzz.jpg", limits) {
            Ok(img) => {
                let px = u64::from(img.width()) * u64::from(img.height());
                prop_assert!(
                    px > 0 && px <= limits.max_pixels,
                    "{}x{}",
                    img.width(),
                    img.height()
                );
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(
                    msg.contains("fuzz.jpg"),
                    "error does not name the photo: {msg}"
                );
                prop_assert!(!msg.contains('\n'), "error over several lines: {msg}");
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// Multipart forms through the real router.

const BOUNDARY: &str = "----facegate-fuzz-5c2e";

#[derive(Debug, Clone)]
struct Part {
    name: String,
    filename: Option<String>,
    body: Vec<u8>,
}

fn form_field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("id".to_owned()),
        Just("name".to_owned()),
        Just("consent_taken_by".to_owned()),
        Just("consent_method".to_owned()),
        Just("consent_given_at".to_owned()),
        Just("minor_under_14".to_owned()),
        Just("guardian_name".to_owned()),
        Just("reason".to_owned()),
        Just("priority".to_owned()),
        Just("expires".to_owned()),
        Just("photo".to_owned()),
        "\\PC{0,12}",
    ]
}

fn field_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"written".to_vec()),
        Just(b"true".to_vec()),
        Just(b"2026-01-01T00:00:00Z".to_vec()),
        Just(b"0001-01-01T00:00:00Z".to_vec()),
        Just(b"high".to_vec()),
        "\\PC{0,40}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

fn part(photos: Vec<Vec<u8>>) -> impl Strategy<Value = Part> {
    let photo = prop::sample::select(photos)
        .prop_flat_map(|p| prop_oneof![2 => Just(p.clone()), 3 => mutated(p)]);
    prop_oneof![
        3 => (form_field(), field_value()).prop_map(|(name, body)| Part { name, filename: None, body }),
        2 => (photo, "[a-z]{1,8}\\.(jpg|png|gif)").prop_map(|(body, f)| Part {
            name: "photo".into(),
            filename: Some(f),
            body,
        }),
    ]
}

/// The fields `path` needs, with a real photo (mutated or not) and one
/// field given a random value.
fn complete_form(path: &'static str, photos: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<Part>> {
    let fields: &[(&str, &str)] = match path {
        "/api/v1/owners" => &[
            ("id", "fuzz-1"),
            ("name", "Fuzz Owner"),
            ("consent_method", "written"),
            ("consent_taken_by", "staff"),
        ],
        "/api/v1/watchlist" => &[("name", "Fuzz"), ("reason", "fuzz"), ("priority", "normal")],
        "/api/v1/identify" => &[("liveness", "false")],
        "/api/v1/search/face" => &[("limit", "5")],
        _ => &[],
    };
    let photo = prop::sample::select(photos)
        .prop_flat_map(|p| prop_oneof![1 => Just(p.clone()), 1 => mutated(p)]);
    (photo, any::<Index>(), field_value(), any::<bool>()).prop_map(
        move |(photo, which, value, change)| {
            let mut parts: Vec<Part> = fields
                .iter()
                .map(|(name, v)| Part {
                    name: (*name).into(),
                    filename: None,
                    body: v.as_bytes().to_vec(),
                })
                .collect();
            parts.push(Part {
                name: "photo".into(),
                filename: Some("p.jpg".into()),
                body: photo,
            });
            if change && parts.len() > 1 {
                let i = which.index(parts.len() - 1);
                parts[i].body = value;
            }
            parts
        },
    )
}

fn render(parts: &[Part]) -> Vec<u8> {
    let mut body = Vec::new();
    for p in parts {
        let disp = match &p.filename {
            Some(f) => format!("form-data; name=\"{}\"; filename=\"{f}\"", p.name),
            None => format!("form-data; name=\"{}\"", p.name),
        };
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: {disp}\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(&p.body);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

#[test]
fn multipart_forms() {
    use axum::body::Body;
    use axum::http::Request;
    use facegate::registry::{Registry, Role};
    use tower::ServiceExt;
    let Some(faces) = common::faces_dir() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fg.db");
    let config = common::shipped_config();
    let token = Registry::open(&db)
        .unwrap()
        .token_create("desk", Role::Admin, "fuzz", time::OffsetDateTime::now_utc())
        .unwrap();
    let engine = facegate::vision::FaceEngine::new(&config).unwrap();
    let gallery = facegate::pipeline::open_gallery(&db, &engine).unwrap();
    let state = facegate::http::AppState::new(
        Arc::new(config),
        &db,
        &dir.path().join("data"),
        gallery,
        Arc::new(facegate::live::Live::new()),
    )
    .unwrap()
    .with_engine(engine);
    let router = facegate::http::router(Arc::new(state));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let small = image::DynamicImage::ImageRgb8(small_photo(&faces));
    let photos = vec![
        encoded(&small, image::ImageFormat::Jpeg),
        encoded(&small, image::ImageFormat::Png),
    ];
    let content_type = || {
        prop_oneof![
            6 => Just(format!("multipart/form-data; boundary={BOUNDARY}")),
            1 => Just("multipart/form-data".to_owned()),
            1 => Just("multipart/form-data; boundary=".to_owned()),
            1 => Just("application/json".to_owned()),
            1 => "\\PC{0,40}",
        ]
    };
    let strategy = prop::sample::select(vec![
        "/api/v1/owners",
        "/api/v1/identify",
        "/api/v1/search/face",
        "/api/v1/watchlist",
        "/api/v1/owners/fuzz-1/faces",
    ])
    .prop_flat_map(move |path| {
        let body = prop_oneof![
            3 => prop::collection::vec(part(photos.clone()), 0..6).prop_map(|p| render(&p)),
            // A complete form for the endpoint, a value or the photo off.
            6 => complete_form(path, photos.clone()).prop_map(|p| render(&p)),
            2 => prop::collection::vec(part(vec![b"x".to_vec()]), 1..4)
                .prop_flat_map(|p| mutated(render(&p))),
            1 => prop::collection::vec(any::<u8>(), 0..400),
        ];
        (Just(path), content_type(), body)
    });
    let statuses = Mutex::new(std::collections::BTreeMap::<u16, u64>::new());
    fuzz("multipart_forms", 150, strategy, |(path, ct, body)| {
        let req = Request::builder()
            .method("POST")
            .uri(path)
            .header("authorization", format!("Bearer {token}"));
        let req = match axum::http::HeaderValue::from_str(&ct) {
            Ok(v) => req.header("content-type", v),
            Err(_) => req,
        };
        let req = req.body(Body::from(body)).unwrap();
        let (status, text) = rt.block_on(async {
            let res = router.clone().oneshot(req).await.unwrap();
            let status = res.status();
            let bytes = axum::body::to_bytes(res.into_body(), 16 << 20)
                .await
                .unwrap_or_default();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        });
        prop_assert!(!status.is_server_error(), "{path}: {status}: {text}");
        if std::env::var_os("FACEGATE_FUZZ_VERBOSE").is_some() {
            eprintln!(
                "{path}: {status}: {}",
                text.chars().take(200).collect::<String>()
            );
        }
        *statuses.lock().unwrap().entry(status.as_u16()).or_insert(0) += 1;
        if status.is_client_error() {
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                TestCaseError::fail(format!("{status} without a JSON body ({e}): {text}"))
            })?;
            let msg = v["error"]["message"]
                .as_str()
                .or(v["message"].as_str())
                .unwrap_or("");
            prop_assert!(
                msg.len() > 5,
                "{path}: {status} without a clear message: {text}"
            );
        }
        Ok(())
    });
    // The forms must reach the handlers: not all refused before them
    // (authentication, routing).
    let statuses = statuses.into_inner().unwrap();
    eprintln!("multipart_forms: answers by status {statuses:?}");
    let handled: u64 = statuses
        .iter()
        .filter(|(s, _)| ![401, 403, 404, 405].contains(*s))
        .map(|(_, n)| n)
        .sum();
    assert!(handled > 0, "no form reached a handler: {statuses:?}");
}
