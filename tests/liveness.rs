//! Liveness through the real models on the real samples
//! (`../shared/faces/liveness`): the shipped ensemble's error rates, the
//! "not judged" verdict for small faces, and clear config errors.

mod common;

use std::path::PathBuf;

use facegate::config::Config;
use facegate::eval_liveness::{self, SubjectFilter};
use facegate::vision::image::{PhotoLimits, RgbView, load_photo, resize};
use facegate::vision::liveness::NotJudged;
use facegate::vision::{Checks, FaceEngine, Rejection};

const CHECKS: Checks = Checks {
    liveness: true,
    pose: true,
};

/// The shipped ensemble at full size on all samples (NUAA subjects 1–8 and
/// 16, Silent-Face's three): the bounds are the measured figures plus about
/// one sample of slack, so a change in crop, resize or threshold shows.
/// (These samples chose the threshold: this guards the code, it is not a
/// held-out figure; those are in BENCHMARKS.md.)
#[test]
fn the_shipped_ensemble_keeps_its_error_rates_on_the_samples() {
    let Some(faces) = common::faces_dir() else {
        return;
    };
    let mut engine = common::engine();
    let r = eval_liveness::run(
        &mut engine,
        &faces.join("liveness"),
        &[1.0],
        &SubjectFilter::default(),
        None,
    )
    .unwrap();
    eprint!("{}", eval_liveness::summary(&r));
    let s = &r.scales[0];
    assert_eq!((s.live_not_judged, s.attacks_not_judged), (0, 0));
    let e = s.rates.iter().find(|x| x.name == "ensemble").unwrap();
    assert_eq!((e.live, e.attacks), (81, 92));
    assert!(e.bpcer <= MAX_BPCER, "BPCER {}", e.bpcer);
    assert!(e.apcer <= MAX_APCER, "APCER {}", e.apcer);
}

/// Measured 2026-12-01 (flip-averaged ensemble, threshold 0.05): BPCER
/// 7/81 = 0.086, APCER 14/92 = 0.152; the bounds allow one more of each.
const MAX_BPCER: f32 = 0.10;
const MAX_APCER: f32 = 0.165;

#[test]
fn silentface_live_sample_passes_and_its_print_and_screen_replay_do_not() {
    let Some(faces) = common::faces_dir() else {
        return;
    };
    let mut engine = common::engine();
    let dir = faces.join("liveness/silentface_samples");
    let threshold = common::shipped_config().vision.liveness.threshold;
    let mut check = |file: &str| {
        let img = load_photo(&dir.join(file), PhotoLimits::default()).unwrap();
        let faces = engine.analyze(RgbView::from_image(&img), CHECKS).unwrap();
        assert_eq!(faces.len(), 1, "{file}");
        (faces[0].liveness.unwrap(), faces[0].rejection.clone())
    };
    let (t1, r1) = check("image_T1.jpg");
    assert!(t1 >= threshold && r1.is_none(), "live sample scored {t1}");
    for f in ["image_F1.jpg", "image_F2.jpg"] {
        let (s, r) = check(f);
        assert!(s < threshold, "{f}: spoof scored {s}");
        assert!(matches!(r, Some(Rejection::Spoof { .. })), "{f}: {r:?}");
    }
}

/// A printed photo shrunk below `min_face_px` is "not judged", not a
/// spoof and not live: the face is still recognised, and the decision logic
/// calls the liveness uncertain.
#[test]
fn a_face_below_the_liveness_minimum_is_not_judged_rather_than_a_spoof() {
    let Some(faces) = common::faces_dir() else {
        return;
    };
    let config = common::shipped_config();
    let min = config.vision.liveness.min_face_px as f32;
    let mut engine = FaceEngine::new(&config).unwrap();
    let img = load_photo(
        &faces.join("liveness/silentface_samples/image_F1.jpg"),
        PhotoLimits::default(),
    )
    .unwrap();
    let full = engine.analyze(RgbView::from_image(&img), CHECKS).unwrap();
    let size = full[0].size_px;
    assert!(matches!(full[0].rejection, Some(Rejection::Spoof { .. })));
    // Shrink so the face is about 80% of the minimum.
    let k = 0.8 * min / size;
    let (w, h) = (
        (img.width() as f32 * k) as u32,
        (img.height() as f32 * k) as u32,
    );
    let small = resize(RgbView::from_image(&img), w, h);
    let faces = engine.analyze(RgbView::from_image(&small), CHECKS).unwrap();
    assert_eq!(faces.len(), 1, "the shrunk face must still be found");
    let f = &faces[0];
    assert!(f.size_px < min, "{} px", f.size_px);
    assert_eq!(f.liveness, None);
    assert!(
        matches!(f.liveness_not_judged, Some(NotJudged::TooSmall { min_px, .. }) if min_px as f32 == min),
        "{:?}",
        f.liveness_not_judged
    );
    assert!(
        !matches!(f.rejection, Some(Rejection::Spoof { .. })),
        "{:?}",
        f.rejection
    );
    let text = f.liveness_not_judged.unwrap().to_string();
    assert!(text.contains("not judged"), "{text}");
}

/// `facegate identify --liveness` and `facegate eval-liveness` give the
/// same score for the same photo (one code path).
#[test]
fn the_per_photo_verdict_and_the_evaluation_agree() {
    let Some(faces) = common::faces_dir() else {
        return;
    };
    let dir = faces.join("liveness");
    let mut engine = common::engine();
    let r = eval_liveness::run(
        &mut engine,
        &dir,
        &[1.0],
        &SubjectFilter {
            only: Some(vec![3]),
            exclude: Vec::new(),
        },
        None,
    )
    .unwrap();
    assert_eq!(r.observations.len(), 20);
    for o in r.observations.iter().take(4) {
        let folder = if o.live { "nuaa_live" } else { "nuaa_print" };
        let img = load_photo(&dir.join(folder).join(&o.file), PhotoLimits::default()).unwrap();
        let a = engine.analyze(RgbView::from_image(&img), CHECKS).unwrap();
        let best = a
            .iter()
            .max_by(|x, y| x.detection.area().total_cmp(&y.detection.area()))
            .unwrap();
        let (l, e) = (best.liveness.unwrap(), o.ensemble.unwrap());
        assert!((l - e).abs() < 1e-5, "{}: {l} vs {e}", o.file);
        let spoof = matches!(best.rejection, Some(Rejection::Spoof { .. }));
        assert_eq!(spoof, e < r.threshold, "{}", o.file);
    }
}

#[test]
fn liveness_config_errors_name_the_key_and_the_file() {
    // The old single-model keys.
    let err = Config::parse(
        "[vision.liveness]\nfile = \"liveness_faceplugin_128.onnx\"\nthreshold = 0.5\n",
        std::path::Path::new("old.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("old.toml") && err.contains("vision.liveness.file"),
        "{err}"
    );
    assert!(err.contains("[[vision.liveness.models]]"), "{err}");
    // A model file that is not there and not optional: the engine refuses
    // to start, naming it.
    let mut c = common::shipped_config();
    c.vision.liveness.models[0].file = PathBuf::from("no_such_liveness.onnx");
    c.vision.liveness.models[0].optional = false;
    let err = FaceEngine::new(&c).err().unwrap().to_string();
    assert!(
        err.contains("no_such_liveness.onnx") && err.contains("mirror-only"),
        "{err}"
    );
    // A file with the wrong checksum.
    let mut c = common::shipped_config();
    c.vision.liveness.models[0].sha256 = "00".repeat(32);
    let err = FaceEngine::new(&c).err().unwrap().to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
}

/// A box without the mirror-only MiniFASNet files (`optional = true`)
/// starts, warns, and judges liveness with the models it has; when every
/// model is optional and absent it refuses to start, naming the files.
#[test]
fn missing_optional_models_are_skipped_and_the_rest_still_judge() {
    let Some(faces) = common::faces_dir() else {
        return;
    };
    let shipped = common::shipped_config();
    let dir = tempfile::tempdir().unwrap();
    let mut absent = Vec::new();
    for e in std::fs::read_dir(&shipped.vision.models_dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("minifasnet_") {
            absent.push(name);
            continue;
        }
        std::os::unix::fs::symlink(e.path(), dir.path().join(&name)).unwrap();
    }
    assert_eq!(absent.len(), 2, "{absent:?}");
    let optional: Vec<String> = shipped
        .vision
        .liveness
        .models
        .iter()
        .filter(|m| m.optional)
        .map(|m| m.file.display().to_string())
        .collect();
    absent.sort();
    let mut optional_sorted = optional.clone();
    optional_sorted.sort();
    assert_eq!(
        optional_sorted, absent,
        "the shipped config marks the MiniFASNets optional"
    );
    let mut c = shipped.clone();
    c.vision.models_dir = dir.path().to_owned();
    let mut engine = FaceEngine::new(&c).expect("starts without the optional models");
    let l = engine.liveness().unwrap();
    assert_eq!(l.names(), vec!["faceplugin".to_string()]);
    // It still judges: the Silent-Face live sample passes, the poster does not.
    let sf = faces.join("liveness/silentface_samples");
    let mut score = |file: &str| {
        let img = load_photo(&sf.join(file), PhotoLimits::default()).unwrap();
        let a = engine.analyze(RgbView::from_image(&img), CHECKS).unwrap();
        assert_eq!(a.len(), 1, "{file}");
        (a[0].liveness.unwrap(), a[0].rejection.clone())
    };
    let (live, r) = score("image_T1.jpg");
    assert!(
        r.is_none(),
        "live sample rejected without the MiniFASNets: {live} {r:?}"
    );
    let (poster, r) = score("image_F1.jpg");
    assert!(
        matches!(r, Some(Rejection::Spoof { .. })),
        "poster accepted without the MiniFASNets: {poster}"
    );
    // Every liveness model optional and absent: refuse, naming the files.
    c.vision.liveness.models.retain(|m| m.optional);
    let err = FaceEngine::new(&c).err().unwrap().to_string();
    assert!(
        err.contains("no liveness model") && err.contains(&optional[0]),
        "{err}"
    );
}

/// The held-out protocol end to end: the threshold tuned on subjects 1–4
/// (BPCER ≤ 8% of their live faces, full size and 0.6 pooled) applied to
/// subjects 5–8 and 16. Measured 2026-12-01: T 0.064, APCER 11/97 = 0.113,
/// BPCER 9/80 = 0.113; the bounds allow one more of each.
#[test]
fn a_threshold_tuned_on_one_subject_half_holds_on_the_other() {
    let Some(faces) = common::faces_dir() else {
        return;
    };
    let dir = faces.join("liveness");
    let mut engine = common::engine();
    let scales = [1.0, 0.6];
    let half = |h| SubjectFilter::split(h).unwrap();
    let tuned = eval_liveness::run(&mut engine, &dir, &scales, &half("a"), None).unwrap();
    let target = tuned
        .targets
        .iter()
        .find(|p| p.bpcer_target == 0.08)
        .unwrap();
    assert!(target.bpcer <= 0.08, "{target:?}");
    let r = eval_liveness::run(
        &mut engine,
        &dir,
        &scales,
        &half("b"),
        Some(target.threshold),
    )
    .unwrap();
    eprint!("{}", eval_liveness::summary(&r));
    let e = r.pooled.iter().find(|x| x.name == "ensemble").unwrap();
    assert_eq!((e.live, e.attacks), (80, 97));
    assert!(e.apcer <= 12.0 / 97.0 + 1e-6, "held-out APCER {}", e.apcer);
    assert!(e.bpcer <= 10.0 / 80.0 + 1e-6, "held-out BPCER {}", e.bpcer);
}
