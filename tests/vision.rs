//! The face engine through the real ONNX models on real photos.

mod common;

use facegate::config::DetectorKind;
use facegate::vision::FaceEngine;
use facegate::vision::embed::cosine;
use facegate::vision::image::{PhotoLimits, RgbView, load_photo};

fn faces_in(engine: &mut FaceEngine, path: &std::path::Path) -> usize {
    let img = load_photo(path, PhotoLimits::default()).unwrap();
    engine.detect(RgbView::from_image(&img)).unwrap().len()
}

#[test]
fn faces_are_found_on_the_scene_photos() {
    let Some(faces) = common::faces_dir() else {
        return;
    };
    let scenes = faces.join("scenes");
    // Counted by eye. The selfie has seven faces, one cut by the frame edge;
    // YuNet finds six, RetinaFace-MobileNet0.25 five.
    let expected = [
        ("frec_obama_and_biden.jpg", 3, 3),
        ("frec_two_people.jpg", 2, 2),
        ("deepface_couple.jpg", 2, 2),
        ("frec_kit_with_rose.jpg", 2, 2),
        ("deepface_selfie_many_people.jpg", 5, 7),
    ];
    for kind in [DetectorKind::Yunet, DetectorKind::Retinaface] {
        let mut config = common::shipped_config();
        config.vision.detector = match kind {
            DetectorKind::Yunet => "yunet".into(),
            DetectorKind::Retinaface => "retinaface".into(),
        };
        let mut engine = FaceEngine::new(&config).unwrap();
        for (file, lo, hi) in expected {
            let n = faces_in(&mut engine, &scenes.join(file));
            assert!(
                (lo..=hi).contains(&n),
                "{kind:?} {file}: {n} faces, expected {lo}..={hi}"
            );
        }
        let mut total = 0;
        for e in std::fs::read_dir(&scenes).unwrap() {
            total += faces_in(&mut engine, &e.unwrap().path());
        }
        assert!(total >= 40, "{kind:?}: only {total} faces on all scenes");
    }
}

#[test]
fn same_person_scores_above_different_people() {
    let Some(faces) = common::faces_dir() else {
        return;
    };
    let mut engine = common::engine();
    let ids = faces.join("identities");
    let mut emb = |who: &str, n: u32| {
        let img = load_photo(
            &ids.join(who).join(format!("{n}.jpg")),
            PhotoLimits::default(),
        )
        .unwrap();
        let view = RgbView::from_image(&img);
        let dets = engine.detect_with_border(view).unwrap();
        let d = dets
            .iter()
            .max_by(|a, b| a.area().total_cmp(&b.area()))
            .unwrap();
        engine.embed(view, d).unwrap()
    };
    let people = [
        "Barack_Obama",
        "Joe_Biden",
        "Angelina_Jolie",
        "nuaa_client_0001",
        "nuaa_client_0002",
    ];
    let e: Vec<(Vec<f32>, Vec<f32>)> = people.iter().map(|p| (emb(p, 1), emb(p, 2))).collect();
    for (i, (a1, a2)) in e.iter().enumerate() {
        let genuine = cosine(a1, a2);
        assert!(genuine > 0.4, "{}: same-person score {genuine}", people[i]);
        for (j, (b1, _)) in e.iter().enumerate() {
            if i != j {
                let impostor = cosine(a1, b1);
                assert!(
                    genuine > impostor + 0.2,
                    "{} vs {}: {genuine} vs {impostor}",
                    people[i],
                    people[j]
                );
            }
        }
    }
}

// Liveness on the Silent-Face samples: tests/liveness.rs.

#[test]
fn dev_set_accuracy_matches_the_reference_pipeline() {
    let Some(faces) = common::faces_dir() else {
        return;
    };
    let mut engine = common::engine();
    let r = facegate::eval::run(&mut engine, &faces.join("identities"), None).unwrap();
    eprintln!("{}", serde_json::to_string(&r).unwrap());
    assert_eq!(r.identities, 31);
    assert_eq!(r.failed_to_acquire, 0);
    // The reference (ONNX Runtime + NumPy + OpenCV, same models and protocol): 0.989 / 1.00.
    assert!(
        r.tar_at_far_1e3 >= 0.989,
        "TAR@FAR1e-3 {}",
        r.tar_at_far_1e3
    );
    assert!(r.dir_at_fpir_1e2 >= 1.0, "DIR@FPIR1% {}", r.dir_at_fpir_1e2);
}
