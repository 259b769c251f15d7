//! The `facegate` command end to end: real models, a real SQLite file,
//! real photos; and every kind of bad input named in the issue.

mod common;

use std::path::Path;
use std::process::Output;

use common::cli::{Workdir, enroll_args};

/// Runs a command that must fail; returns its one-line error.
fn fails(env: &Workdir, args: &[&str]) -> String {
    let o = env.run(args);
    let err = String::from_utf8_lossy(&o.stderr).trim().to_owned();
    assert!(!o.status.success(), "facegate {args:?} should have failed");
    assert_eq!(err.lines().count(), 1, "error should be one line: {err}");
    assert!(err.starts_with("facegate: "), "{err}");
    err
}

fn enroll(env: &Workdir, id: &str, photos: &[&Path]) -> Output {
    let mut args = vec![
        "enroll",
        "--owner-id",
        id,
        "--name",
        id,
        "--unit",
        "3-2-501",
        "--consent-by",
        "staff-wang",
    ];
    let p: Vec<String> = photos.iter().map(|p| p.display().to_string()).collect();
    args.extend(p.iter().map(String::as_str));
    env.run(&args)
}

fn owner_count(env: &Workdir) -> usize {
    env.ok(&["owners", "list", "--json"]).lines().count()
}

fn identify(env: &Workdir, photo: &Path) -> serde_json::Value {
    serde_json::from_str(&env.ok(&["identify", &photo.display().to_string()])).unwrap()
}

fn decisions(v: &serde_json::Value) -> Vec<String> {
    v["faces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["decision"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn enrol_identify_round_trip_then_erasure() {
    let Some(env) = Workdir::new() else { return };
    let o = enroll(
        &env,
        "A-0301",
        &[
            &env.photo("Angelina_Jolie", 1),
            &env.photo("Angelina_Jolie", 2),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Another photo of her: the owner, by id and name, with a real score.
    let v = identify(&env, &env.photo("Angelina_Jolie", 3));
    assert_eq!(decisions(&v), ["owner"]);
    let face = &v["faces"][0];
    assert_eq!(face["best_match"]["id"], "A-0301");
    assert!(face["best_match"]["score"].as_f64().unwrap() > 0.4);
    assert_eq!(face["landmarks"].as_array().unwrap().len(), 5);
    assert!(face["pose"]["yaw"].is_number());

    // In a crowded selfie she is the one owner; everyone else is a stranger.
    let v = identify(&env, &env.scene("deepface_selfie_many_people.jpg"));
    let d = decisions(&v);
    assert_eq!(d.iter().filter(|d| *d == "owner").count(), 1, "{d:?}");
    assert!(d.iter().filter(|d| *d == "stranger").count() >= 4, "{d:?}");

    // Someone else is a stranger, with her as the (low) best candidate.
    let v = identify(&env, &env.photo("Jennifer_Aniston", 1));
    assert_eq!(decisions(&v), ["stranger"]);

    let show: serde_json::Value =
        serde_json::from_str(&env.ok(&["owners", "show", "A-0301"])).unwrap();
    assert_eq!(show["consents"][0]["taken_by"], "staff-wang");
    assert_eq!(show["templates"].as_array().unwrap().len(), 2);

    // Suspended owners are not recognised; erased owners are gone, audited.
    env.ok(&["owners", "suspend", "A-0301"]);
    assert_eq!(
        decisions(&identify(&env, &env.photo("Angelina_Jolie", 3))),
        ["stranger"]
    );
    env.ok(&["owners", "activate", "A-0301"]);
    assert_eq!(
        decisions(&identify(&env, &env.photo("Angelina_Jolie", 3))),
        ["owner"]
    );
    env.ok(&["owners", "remove", "A-0301", "--by", "manager-li"]);
    assert_eq!(
        decisions(&identify(&env, &env.photo("Angelina_Jolie", 3))),
        ["stranger"]
    );
    assert_eq!(owner_count(&env), 0);
    let audit = env.ok(&["audit"]);
    assert!(
        audit.contains("owner.remove") && audit.contains("manager-li"),
        "{audit}"
    );
    assert!(audit.contains("owner.enroll"), "{audit}");
}

#[test]
fn watch_list_hit_is_reported_as_watchlist() {
    let Some(env) = Workdir::new() else { return };
    env.ok(&[
        "watchlist",
        "add",
        "--name",
        "Missing: Mr Zhang",
        "--reason",
        "missing elderly, dementia",
        "--priority",
        "high",
        "--days",
        "30",
        &env.photo("Colin_Powell", 1).display().to_string(),
    ]);
    let v = identify(&env, &env.photo("Colin_Powell", 2));
    assert_eq!(decisions(&v), ["watchlist"]);
    assert_eq!(v["faces"][0]["best_match"]["priority"], "high");
    assert!(env.ok(&["watchlist", "list"]).contains("Missing: Mr Zhang"));
    env.ok(&["watchlist", "remove", "1"]);
    assert_eq!(
        decisions(&identify(&env, &env.photo("Colin_Powell", 2))),
        ["stranger"]
    );
}

#[test]
fn enrolment_photos_with_no_face_or_several_faces_are_refused_and_nothing_is_written() {
    let Some(env) = Workdir::new() else { return };
    let err = fails(
        &env,
        &enroll_args(
            "B-1",
            "B",
            "s",
            &[&env.scene("frec_obama_and_biden.jpg").display().to_string()],
        ),
    );
    assert!(err.contains("3 faces found"), "{err}");

    let mut blank = Vec::new();
    image::RgbImage::from_pixel(300, 300, image::Rgb([120, 130, 140]))
        .write_to(
            &mut std::io::Cursor::new(&mut blank),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    let blank = env.file("wall.jpg", &blank);
    let err = fails(
        &env,
        &enroll_args("B-1", "B", "s", &[&blank.display().to_string()]),
    );
    assert!(err.contains("no face found"), "{err}");

    // A good photo followed by a bad one: the enrolment is one transaction.
    let good = env.photo("Matt_Damon", 1).display().to_string();
    let err = fails(
        &env,
        &enroll_args("B-1", "B", "s", &[&good, &blank.display().to_string()]),
    );
    assert!(err.contains("wall.jpg"), "{err}");
    assert_eq!(owner_count(&env), 0);

    // The same face cannot be enrolled as two owners.
    env.ok(&enroll_args("B-1", "B", "s", &[&good]));
    let other = env.photo("Matt_Damon", 2).display().to_string();
    let err = fails(&env, &enroll_args("B-2", "C", "s", &[&other]));
    assert!(err.contains("already enrolled as owner B-1"), "{err}");
    assert_eq!(owner_count(&env), 1);
}

#[test]
fn bad_photos_get_one_line_errors() {
    let Some(env) = Workdir::new() else { return };
    let real = std::fs::read(env.photo("Barack_Obama", 1)).unwrap();
    // Garble the tables after the EXIF block (quantisation, Huffman, frame header).
    let exif_end = 4 + u16::from_be_bytes([real[4], real[5]]) as usize;
    let mut corrupt = real.clone();
    for b in corrupt.iter_mut().skip(exif_end + 2).take(600) {
        *b = 0x5a;
    }
    let truncated = &real[..real.len() / 2];
    let mut alpha = Vec::new();
    image::RgbaImage::from_fn(200, 200, |x, _| {
        image::Rgba([200, 150, 100, if x < 100 { 0 } else { 255 }])
    })
    .write_to(
        &mut std::io::Cursor::new(&mut alpha),
        image::ImageFormat::Png,
    )
    .unwrap();
    let mut huge = Vec::new();
    image::GrayImage::new(9000, 6000)
        .write_to(
            &mut std::io::Cursor::new(&mut huge),
            image::ImageFormat::Png,
        )
        .unwrap();
    let cases: [(&str, &[u8], &str); 6] = [
        ("corrupt.jpg", &corrupt, "corrupt image"),
        ("truncated.jpg", truncated, "truncated JPEG"),
        ("alpha.png", &alpha, "transparent pixels"),
        ("huge.png", &huge, "more than the limit"),
        ("empty.jpg", b"", "empty file"),
        (
            "notes.jpg",
            b"this is a text file, not a photo\n",
            "not an image",
        ),
    ];
    for (name, bytes, why) in cases {
        let p = env.file(name, bytes).display().to_string();
        for args in [
            vec!["identify", p.as_str()],
            vec![
                "enroll",
                "--owner-id",
                "X-1",
                "--name",
                "X",
                "--consent-by",
                "s",
                p.as_str(),
            ],
        ] {
            let err = fails(&env, &args);
            assert!(err.contains(name) && err.contains(why), "{name}: {err}");
        }
    }
    let err = fails(&env, &["identify", "/nonexistent/photo.jpg"]);
    assert!(err.contains("/nonexistent/photo.jpg"), "{err}");
    assert_eq!(owner_count(&env), 0);
}

#[test]
fn events_list_names_every_event_kind_in_its_help_and_its_error() {
    let Some(env) = Workdir::new() else { return };
    // Both from the one declaration (`undecided` was missing from the
    // hand-written help).
    let help = env.ok(&["events", "list", "--help"]);
    let err = fails(&env, &["events", "list", "--kind", "party"]);
    assert!(err.contains("--kind party: unknown event kind"), "{err}");
    for kind in facegate::events::EventKind::ALL {
        assert!(
            help.contains(kind.as_str()),
            "{kind} not in the help: {help}"
        );
        assert!(
            err.contains(kind.as_str()),
            "{kind} not in the error: {err}"
        );
        env.ok(&["events", "list", "--kind", kind.as_str()]);
    }
}

#[test]
fn unknown_owner_ids_are_named() {
    let Some(env) = Workdir::new() else { return };
    for args in [
        vec!["owners", "show", "NOPE-9"],
        vec!["owners", "remove", "NOPE-9"],
        vec!["owners", "suspend", "NOPE-9"],
    ] {
        let err = fails(&env, &args);
        assert!(err.contains("no owner with id 'NOPE-9'"), "{err}");
    }
    let p = env.photo("Matt_Damon", 1).display().to_string();
    let err = fails(
        &env,
        &[
            "enroll",
            "--add",
            "--owner-id",
            "NOPE-9",
            "--name",
            "x",
            "--consent-by",
            "s",
            &p,
        ],
    );
    assert!(err.contains("NOPE-9"), "{err}");
}

#[test]
fn a_wrong_or_missing_model_stops_with_its_name() {
    let Some(env) = Workdir::new() else { return };
    let photo = env.photo("Matt_Damon", 1).display().to_string();
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");

    // A model file whose bytes are not the published ones.
    let bad_models = env.dir.path().join("models");
    std::fs::create_dir_all(&bad_models).unwrap();
    for e in std::fs::read_dir(&models).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), bad_models.join(e.file_name())).unwrap();
        }
    }
    let arc = bad_models.join("arcface_mbf_faceplugin_512.onnx");
    let mut bytes = std::fs::read(&arc).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0xff;
    std::fs::write(&arc, bytes).unwrap();
    let cfg = env.file(
        "bad.toml",
        format!(
            "[vision]\nmodels_dir = \"{}\"\nonnxruntime = \"{}\"\n",
            bad_models.display(),
            models.join("onnxruntime/libonnxruntime.so").display()
        )
        .as_bytes(),
    );
    let err = fails(
        &env,
        &["--config", &cfg.display().to_string(), "identify", &photo],
    );
    assert!(
        err.contains("arcface_mbf_faceplugin_512.onnx") && err.contains("checksum mismatch"),
        "{err}"
    );

    // The fusion model is optional: without it, arcface alone, with a warning.
    let mut lean = bad_models.clone();
    lean.set_file_name("lean-models");
    std::fs::create_dir_all(&lean).unwrap();
    for e in std::fs::read_dir(&models).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() && !e.file_name().to_string_lossy().starts_with("mobilefacenet") {
            std::fs::copy(e.path(), lean.join(e.file_name())).unwrap();
        }
    }
    let lean_cfg = env.file(
        "lean.toml",
        format!("[vision]\nmodels_dir = \"{}\"\n", lean.display()).as_bytes(),
    );
    let o = env.run(&[
        "--config",
        &lean_cfg.display().to_string(),
        "identify",
        &photo,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("running arcface_mbf alone"));

    // A model file that is not there.
    std::fs::remove_file(bad_models.join("yunet_2023mar_dynamic.onnx")).unwrap();
    let err = fails(
        &env,
        &["--config", &cfg.display().to_string(), "identify", &photo],
    );
    assert!(
        err.contains("yunet_2023mar_dynamic.onnx") && err.contains("not found"),
        "{err}"
    );

    // No ONNX Runtime library where the config says.
    let cfg = env.file(
        "nolib.toml",
        b"[vision]\nonnxruntime = \"/nonexistent/libonnxruntime.so\"\n",
    );
    let err = fails(
        &env,
        &["--config", &cfg.display().to_string(), "identify", &photo],
    );
    assert!(err.contains("ONNX Runtime library not found"), "{err}");

    // A config with a typo names the key.
    let cfg = env.file("typo.toml", b"[matching]\nthreshhold = 0.5\n");
    let err = fails(
        &env,
        &["--config", &cfg.display().to_string(), "identify", &photo],
    );
    assert!(err.contains("threshhold"), "{err}");
}

#[test]
fn templates_of_another_model_are_refused_at_start() {
    let Some(env) = Workdir::new() else { return };
    env.ok(&enroll_args(
        "C-1",
        "C",
        "s",
        &[&env.photo("Matt_Damon", 1).display().to_string()],
    ));
    let cfg = env.file("mfn.toml", b"[vision]\nembedder = \"mobilefacenet\"\n[vision.fusion]\nenabled = false\nembedder = \"arcface_mbf\"\nweight = 0.2\n");
    let err = fails(
        &env,
        &[
            "--config",
            &cfg.display().to_string(),
            "identify",
            &env.photo("Matt_Damon", 2).display().to_string(),
        ],
    );
    assert!(err.contains("re-enrol"), "{err}");
}
