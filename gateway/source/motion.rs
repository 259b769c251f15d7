//! Skipping detection on frames where nothing moved (issue 11, item 4).
//!
//! Estate cameras mostly look at an empty path or gate. Running the face
//! detector on a still scene finds nothing at a full model's cost, so each
//! taken frame is first reduced to a small luma thumbnail (a box average of
//! the Y plane, [`THUMB_LONG_SIDE`] on the long side: ~0.05 ms at 1080p)
//! and compared with the previous one. Detection runs when:
//! - enough of the thumbnail changed ([`MotionConfig::min_changed`] of its
//!   cells by more than [`MotionConfig::pixel_delta`] grey levels; H.264
//!   noise on a still scene at estate bitrates stays well under it, while a
//!   person entering changes whole cells);
//! - faces are being tracked (a person standing still at the gate is still
//!   followed and decided: the caller says so);
//! - motion was seen within [`MotionConfig::hold`] (a face that stops
//!   moving after walking in keeps being looked at);
//! - or [`MotionConfig::keepalive`] passed since the last detection, so a
//!   slow change (someone creeping in below the threshold) is caught within
//!   it.
//!
//! Comparing with the previous *frame* (not a background model) keeps it
//! stateless but for one thumbnail, and immune to slow lighting drift.

use std::time::{Duration, Instant};

use super::convert::Yuv420;

/// The long side of the luma thumbnail, in cells.
pub const THUMB_LONG_SIDE: u32 = 64;

/// The knobs of [`MotionGate`]; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MotionConfig {
    /// Grey levels (0–255) by which a thumbnail cell must change to count.
    pub pixel_delta: u8,
    /// Fraction of cells that must change for motion.
    pub min_changed: f32,
    /// How long detection keeps running after the last motion.
    pub hold: Duration,
    /// Detection runs at least this often, motion or not.
    pub keepalive: Duration,
}

impl Default for MotionConfig {
    fn default() -> Self {
        Self {
            pixel_delta: 12,
            min_changed: 0.001,
            hold: Duration::from_secs(2),
            keepalive: Duration::from_secs(2),
        }
    }
}

/// Why a frame is (or is not) given to the detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The first frame, or the frame size changed.
    First,
    Motion,
    Tracking,
    Hold,
    Keepalive,
    /// Nothing moved: skip detection on this frame.
    Still,
}

impl Verdict {
    pub fn detect(self) -> bool {
        self != Verdict::Still
    }
}

/// One camera's motion gate: the previous thumbnail and the times of the
/// last motion and the last detection.
#[derive(Debug, Clone)]
pub struct MotionGate {
    config: MotionConfig,
    prev: Vec<u8>,
    size: (u32, u32),
    last_motion: Option<Instant>,
    last_detect: Option<Instant>,
    /// Fraction of cells changed on the last frame compared.
    pub last_changed: f32,
}

impl MotionGate {
    pub fn new(config: MotionConfig) -> Self {
        Self {
            config,
            prev: Vec::new(),
            size: (0, 0),
            last_motion: None,
            last_detect: None,
            last_changed: 0.0,
        }
    }

    /// Whether to detect on this frame, `tracking` being whether the camera
    /// has faces on live tracks. Call once per taken frame.
    pub fn check(&mut self, frame: &Yuv420<'_>, now: Instant, tracking: bool) -> Verdict {
        let (thumb, size) = thumbnail(frame);
        let verdict = if size != self.size || self.prev.len() != thumb.len() {
            Verdict::First
        } else {
            self.last_changed = changed_fraction(&self.prev, &thumb, self.config.pixel_delta);
            let within = |t: Option<Instant>, d: Duration| t.is_some_and(|t| now - t < d);
            if self.last_changed >= self.config.min_changed {
                Verdict::Motion
            } else if tracking {
                Verdict::Tracking
            } else if within(self.last_motion, self.config.hold) {
                Verdict::Hold
            } else if !within(self.last_detect, self.config.keepalive) {
                Verdict::Keepalive
            } else {
                Verdict::Still
            }
        };
        if matches!(verdict, Verdict::Motion | Verdict::First) {
            self.last_motion = Some(now);
        }
        if verdict.detect() {
            self.last_detect = Some(now);
        }
        self.prev = thumb;
        self.size = size;
        verdict
    }
}

/// The Y plane box-averaged down to [`THUMB_LONG_SIDE`] cells on the long
/// side (at least 1 × 1); returns the cells and the thumbnail size.
pub fn thumbnail(frame: &Yuv420<'_>) -> (Vec<u8>, (u32, u32)) {
    let (w, h) = (frame.width as usize, frame.height as usize);
    let long = w.max(h);
    let cell = long.div_ceil(THUMB_LONG_SIDE as usize).max(1);
    let (tw, th) = (w.div_ceil(cell), h.div_ceil(cell));
    let mut sums = vec![0u32; tw * th];
    let mut counts = vec![0u32; tw * th];
    // Every other row and column: the average of a cell of 17×17 pixels at
    // 1080p does not need all 289.
    for y in (0..h).step_by(2) {
        let row = &frame.y[y * frame.y_stride..y * frame.y_stride + w];
        let base = (y / cell) * tw;
        for (x, &v) in row.iter().enumerate().step_by(2) {
            sums[base + x / cell] += u32::from(v);
            counts[base + x / cell] += 1;
        }
    }
    let thumb = sums
        .iter()
        .zip(&counts)
        .map(|(&s, &n)| s.checked_div(n).unwrap_or(0) as u8)
        .collect();
    (thumb, (tw as u32, th as u32))
}

/// The fraction of cells that differ by more than `delta`.
pub fn changed_fraction(a: &[u8], b: &[u8], delta: u8) -> f32 {
    if a.is_empty() {
        return 0.0;
    }
    let changed = a
        .iter()
        .zip(b)
        .filter(|(x, y)| x.abs_diff(**y) > delta)
        .count();
    changed as f32 / a.len() as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::convert::Chroma;

    struct Img {
        w: u32,
        h: u32,
        y: Vec<u8>,
        uv: Vec<u8>,
    }

    impl Img {
        fn grey(w: u32, h: u32, v: u8) -> Img {
            Img {
                w,
                h,
                y: vec![v; (w * h) as usize],
                uv: vec![128; (w.div_ceil(2) * h.div_ceil(2) * 2) as usize],
            }
        }
        fn rect(&mut self, x0: u32, y0: u32, s: u32, v: u8) {
            for y in y0..(y0 + s).min(self.h) {
                for x in x0..(x0 + s).min(self.w) {
                    self.y[(y * self.w + x) as usize] = v;
                }
            }
        }
        fn yuv(&self) -> Yuv420<'_> {
            Yuv420::new(
                self.w,
                self.h,
                &self.y,
                self.w as usize,
                Chroma::Interleaved {
                    uv: &self.uv,
                    stride: (self.w.div_ceil(2) * 2) as usize,
                },
            )
            .unwrap()
        }
    }

    #[test]
    fn a_still_scene_is_skipped_and_a_small_object_entering_is_not() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut gate = MotionGate::new(MotionConfig::default());
        let mut img = Img::grey(1920, 1080, 90);
        assert_eq!(gate.check(&img.yuv(), ms(0), false), Verdict::First);
        // Still, after the hold that the first frame starts.
        assert_eq!(gate.check(&img.yuv(), ms(2100), false), Verdict::Keepalive);
        assert_eq!(gate.check(&img.yuv(), ms(2400), false), Verdict::Still);
        assert_eq!(gate.check(&img.yuv(), ms(2700), false), Verdict::Still);
        // A 60 px face-sized patch at 1080p: a handful of cells.
        img.rect(900, 500, 60, 200);
        assert_eq!(gate.check(&img.yuv(), ms(3000), false), Verdict::Motion);
        // It stops moving: held, then tracked while the caller tracks it.
        assert_eq!(gate.check(&img.yuv(), ms(3300), false), Verdict::Hold);
        assert_eq!(gate.check(&img.yuv(), ms(5200), true), Verdict::Tracking);
        // Tracks ended, hold over, keepalive fresh: skipped.
        assert_eq!(gate.check(&img.yuv(), ms(5500), false), Verdict::Still);
        // Keepalive.
        assert_eq!(gate.check(&img.yuv(), ms(7300), false), Verdict::Keepalive);
    }

    #[test]
    fn noise_and_slow_light_changes_are_still() {
        let t0 = Instant::now();
        let mut gate = MotionGate::new(MotionConfig {
            keepalive: Duration::from_secs(3600),
            hold: Duration::ZERO,
            ..MotionConfig::default()
        });
        let mut img = Img::grey(640, 480, 100);
        gate.check(&img.yuv(), t0, false);
        // ±6 grey levels of pixel noise and +1 level per frame of drift.
        let mut seed = 7u32;
        for n in 1..50u64 {
            for (i, v) in img.y.iter_mut().enumerate() {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let noise = (seed >> 16) % 13;
                *v = (100 + n as u32 + noise).saturating_sub(6).min(255) as u8;
                let _ = i;
            }
            let v = gate.check(&img.yuv(), t0 + Duration::from_millis(100 * n), false);
            assert_eq!(v, Verdict::Still, "frame {n}: {}", gate.last_changed);
        }
    }

    #[test]
    fn a_new_frame_size_starts_over() {
        let t0 = Instant::now();
        let mut gate = MotionGate::new(MotionConfig::default());
        gate.check(&Img::grey(640, 480, 10).yuv(), t0, false);
        assert_eq!(
            gate.check(&Img::grey(1280, 720, 10).yuv(), t0, false),
            Verdict::First
        );
    }

    #[test]
    fn thumbnails_of_odd_sizes_cover_every_pixel() {
        let img = Img::grey(333, 77, 50);
        let (t, (w, h)) = thumbnail(&img.yuv());
        assert_eq!(t.len(), (w * h) as usize);
        assert!(t.iter().all(|&v| v == 50), "{t:?}");
        assert!(w <= THUMB_LONG_SIDE && w * 6 >= THUMB_LONG_SIDE * 5);
    }
}
