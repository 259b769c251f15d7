//! Motion gating (issue 11, item 4) on real H.264: a face walking in is
//! never skipped, and a still, empty scene mostly is. GStreamer encodes a
//! gate scene at a low bitrate (640×480, 10 fps, 500 kbit/s), the Replay
//! source decodes every frame, the real detector says on which frames a
//! face can be found, and the motion gate (fed, as the pipeline feeds it,
//! with whether the camera has live tracks) must let every one of those
//! frames through.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use facegate::source::Replay;
use facegate::source::motion::{MotionConfig, MotionGate, Verdict};
use facegate::vision::image::RgbView;

/// What is in front of the camera on each frame.
#[derive(Clone)]
enum Shot {
    Empty,
    /// A photo at (x, y) of the given height.
    Person(PathBuf, i64, i64, u32),
}

fn background() -> image::RgbImage {
    // A textured, static scene (a wall and a path), so the encoder has
    // detail to be noisy about.
    image::RgbImage::from_fn(640, 480, |x, y| {
        let t = ((x * 7 + y * 13) % 23) as u8;
        let v = if y > 300 {
            70 + t
        } else {
            120 + (x / 40) as u8 + t
        };
        image::Rgb([v, v, v.saturating_add(10)])
    })
}

fn encode(dir: &Path, shots: &[Shot]) -> PathBuf {
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let bg = background();
    for (n, shot) in shots.iter().enumerate() {
        let mut canvas = bg.clone();
        if let Shot::Person(photo, x, y, h) = shot {
            let img = image::open(photo).unwrap().to_rgb8();
            let w = img.width() * h / img.height();
            let img = image::imageops::resize(&img, w, *h, image::imageops::FilterType::Triangle);
            image::imageops::overlay(&mut canvas, &img, *x, *y);
        }
        canvas.save(frames.join(format!("f{n:04}.jpg"))).unwrap();
    }
    let out = dir.join("gate.mp4");
    common::clip::encode_jpeg_frames(&frames, shots.len(), &out, 500, 20);
    out
}

/// Someone walking in from one side towards the middle, growing as they
/// come near, for `n` frames.
fn walk_in(photo: &Path, n: usize, from_left: bool) -> Vec<Shot> {
    (0..n)
        .map(|i| {
            let f = i as f64 / (n - 1) as f64;
            let h = (70.0 + 150.0 * f) as u32;
            let x = if from_left {
                -150.0 + 380.0 * f
            } else {
                640.0 - 380.0 * f
            };
            Shot::Person(photo.to_owned(), x as i64, (140.0 - 40.0 * f) as i64, h)
        })
        .collect()
}

#[test]
fn a_face_walking_in_is_never_skipped_and_an_empty_scene_mostly_is() {
    let Some(faces) = common::faces_dir() else {
        return;
    };
    let ids = faces.join("identities");
    let (a, b) = (
        ids.join("Barack_Obama/1.jpg"),
        ids.join("Angelina_Jolie/1.jpg"),
    );
    let mut shots = vec![Shot::Empty; 40];
    shots.extend(walk_in(&a, 25, true));
    // Standing still at the gate for 2 s: no motion, but a live track.
    let Some(Shot::Person(_, x, y, h)) = shots.last().cloned() else {
        unreachable!()
    };
    shots.extend(vec![Shot::Person(a.clone(), x, y, h); 20]);
    shots.extend(vec![Shot::Empty; 50]);
    shots.extend(walk_in(&b, 25, false));
    shots.extend(vec![Shot::Empty; 40]);
    let dir = tempfile::tempdir().unwrap();
    let video = encode(dir.path(), &shots);

    let mut engine = common::engine();
    let mut gate = MotionGate::new(MotionConfig::default());
    let t0 = Instant::now();
    let mut tracking = false;
    let (mut face_frames, mut missed) = (0, Vec::new());
    let (mut empty_after_warmup, mut empty_skipped) = (0, 0);
    for (i, frame) in Replay::open(&video).unwrap().enumerate() {
        let frame = frame.unwrap();
        let now = t0 + Duration::from_millis(100 * i as u64);
        let verdict = frame
            .with_yuv(|yuv| gate.check(yuv, now, tracking))
            .unwrap();
        let rgb = frame.to_rgb().unwrap();
        let found = engine.detect(RgbView::from_image(&rgb)).unwrap();
        if !found.is_empty() {
            face_frames += 1;
            if !verdict.detect() {
                missed.push((i, gate.last_changed));
            }
        } else if matches!(shots.get(i), Some(Shot::Empty)) && i >= 20 {
            empty_after_warmup += 1;
            if verdict == Verdict::Still {
                empty_skipped += 1;
            }
        }
        // As the pipeline does: the camera has live tracks while the frames
        // it analyses show faces.
        if verdict.detect() {
            tracking = !found.is_empty();
        }
    }
    eprintln!(
        "{face_frames} frames with a face, {} skipped; empty frames skipped: {empty_skipped} of {empty_after_warmup}",
        missed.len()
    );
    assert!(
        face_frames >= 50,
        "the detector found too few faces to test anything"
    );
    assert!(
        missed.is_empty(),
        "frames with a face were skipped: {missed:?}"
    );
    assert!(
        empty_skipped * 2 >= empty_after_warmup,
        "only {empty_skipped} of {empty_after_warmup} empty frames skipped"
    );
}
