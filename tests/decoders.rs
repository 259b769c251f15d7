//! Decoder choice (`[ingest]`, issue 11 item 4): a decoder named in
//! `prefer_decoders` is the one decodebin uses, and real H.264 decodes
//! through it; one not installed is reported, not fatal; `avoid_decoders`
//! takes one out. A hardware decoder (mppvideodec, v4l2slh264dec) is not on
//! this x86 box, so OpenH264 (gstreamer1.0-plugins-bad) stands in for "a
//! decoder that is not decodebin's default choice". Its own test binary:
//! decoder ranks are process-wide.

mod common;

use facegate::source::{Replay, decoder_for, rank_decoders};

#[test]
fn a_preferred_decoder_is_used_and_a_missing_one_is_named() {
    let Some(videos) = common::rtsp::video_dir() else {
        return;
    };
    facegate::source::init().unwrap();
    let default = decoder_for("video/x-h264").unwrap();
    assert_eq!(default.as_deref(), Some("avdec_h264"), "this box's default");
    if gstreamer::ElementFactory::find("openh264dec").is_none() {
        eprintln!(
            "\n!!!!! SKIPPED: openh264dec not installed (apt install gstreamer1.0-plugins-bad) !!!!!\n"
        );
        return;
    }
    let missing = rank_decoders(&["mppvideodec".into(), "openh264dec".into()], &[]).unwrap();
    assert_eq!(missing, vec!["mppvideodec".to_owned()]);
    assert_eq!(
        decoder_for("video/x-h264").unwrap().as_deref(),
        Some("openh264dec")
    );

    // Real H.264 through it: frames come out, and the pipeline's decoder is
    // the preferred one.
    let clip = videos.join("frec_short_hamilton_clip.mp4");
    let mut replay = Replay::open(&clip).unwrap();
    let mut frames = 0;
    for f in (&mut replay).take(10) {
        assert!(f.unwrap().width > 0);
        frames += 1;
    }
    assert_eq!(frames, 10);
    let used = replay.decoders();
    assert!(
        used.iter().any(|d| d == "openh264dec") && !used.iter().any(|d| d == "avdec_h264"),
        "decoders in the pipeline: {used:?}"
    );

    // Avoided: back to the default.
    rank_decoders(&[], &["openh264dec".into()]).unwrap();
    assert_eq!(
        decoder_for("video/x-h264").unwrap().as_deref(),
        Some("avdec_h264")
    );
}
