//! Five-point face alignment: a least-squares similarity transform
//! (rotation, uniform scale, translation; Umeyama without reflection) from
//! the detected landmarks to the embedder's template, then a warp.
//!
//! The warp samples bilinearly like OpenCV's `warpAffine` (border 0), and
//! when the face is larger than the template it averages several samples
//! per output pixel, so large faces are not aliased on the way down.

use super::image::{RgbView, round_to_u8};
use crate::config::AlignTemplate;

/// ArcFace's 112×112 landmark template.
pub const ARCFACE_112: [[f32; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// dlib's 150×150 face chip template.
pub const DLIB_150: [[f32; 2]; 5] = [
    [47.57, 46.60],
    [100.48, 46.60],
    [74.01, 76.56],
    [50.41, 103.02],
    [97.61, 103.02],
];

/// Template points for a square output of `size` pixels.
pub fn template_points(t: AlignTemplate, size: u32) -> [[f32; 2]; 5] {
    let (base, native) = match t {
        AlignTemplate::Arcface => (ARCFACE_112, 112.0),
        AlignTemplate::Dlib => (DLIB_150, 150.0),
    };
    let k = size as f32 / native;
    base.map(|p| [p[0] * k, p[1] * k])
}

/// A similarity transform `dst = [[a, -b], [b, a]]·src + [tx, ty]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    pub a: f32,
    pub b: f32,
    pub tx: f32,
    pub ty: f32,
}

impl Similarity {
    /// The least-squares similarity taking `src` points onto `dst` points.
    pub fn estimate(src: &[[f32; 2]; 5], dst: &[[f32; 2]; 5]) -> Similarity {
        let n = src.len() as f64;
        let mean = |p: &[[f32; 2]; 5]| {
            let (sx, sy) = p
                .iter()
                .fold((0f64, 0f64), |(x, y), q| (x + q[0] as f64, y + q[1] as f64));
            (sx / n, sy / n)
        };
        let (msx, msy) = mean(src);
        let (mdx, mdy) = mean(dst);
        let (mut num_a, mut num_b, mut den) = (0f64, 0f64, 0f64);
        for (s, d) in src.iter().zip(dst) {
            let (sx, sy) = (s[0] as f64 - msx, s[1] as f64 - msy);
            let (dx, dy) = (d[0] as f64 - mdx, d[1] as f64 - mdy);
            num_a += sx * dx + sy * dy;
            num_b += sx * dy - sy * dx;
            den += sx * sx + sy * sy;
        }
        if den <= f64::EPSILON {
            return Similarity {
                a: 1.0,
                b: 0.0,
                tx: (mdx - msx) as f32,
                ty: (mdy - msy) as f32,
            };
        }
        let a = num_a / den;
        let b = num_b / den;
        Similarity {
            a: a as f32,
            b: b as f32,
            tx: (mdx - (a * msx - b * msy)) as f32,
            ty: (mdy - (b * msx + a * msy)) as f32,
        }
    }

    pub fn apply(&self, p: [f32; 2]) -> [f32; 2] {
        [
            self.a * p[0] - self.b * p[1] + self.tx,
            self.b * p[0] + self.a * p[1] + self.ty,
        ]
    }

    /// Output pixels per input pixel.
    pub fn scale(&self) -> f32 {
        (self.a * self.a + self.b * self.b).sqrt()
    }

    pub fn inverse(&self) -> Similarity {
        let d = self.a * self.a + self.b * self.b;
        let (ia, ib) = (self.a / d, -self.b / d);
        Similarity {
            a: ia,
            b: ib,
            tx: -(ia * self.tx - ib * self.ty),
            ty: -(ib * self.tx + ia * self.ty),
        }
    }
}

/// `v.floor()`, inlined (`floorf` is a libm call on baseline x86-64, two
/// per bilinear sample, up to 16 samples per crop pixel): truncation is
/// exact below 2²³, and every float from 2²³ up is already whole (NaN is
/// returned as it is).
#[inline]
fn floor(v: f32) -> f32 {
    if v.is_nan() || v.abs() >= 8_388_608.0 {
        return v;
    }
    let t = v as i32 as f32;
    if t > v { t - 1.0 } else { t }
}

/// Bilinear sample at `(x, y)`; pixels outside the image count as black.
#[inline]
fn sample(img: &RgbView<'_>, x: f32, y: f32, acc: &mut [f32; 3], weight: f32) {
    let x0 = floor(x);
    let y0 = floor(y);
    let fx = x - x0;
    let fy = y - y0;
    let (x0, y0) = (x0 as i64, y0 as i64);
    let (w, h) = (img.width as i64, img.height as i64);
    if x0 >= 0 && y0 >= 0 && x0 + 1 < w && y0 + 1 < h {
        // All four pixels inside: the same terms in the same order as below
        // (a zero-weight term adds +0.0 to a non-negative sum: no change).
        let i = x0 as usize * 3;
        let r0 = &img.row(y0 as usize)[i..i + 6];
        let r1 = &img.row(y0 as usize + 1)[i..i + 6];
        for (row, wy) in [(r0, 1.0 - fy), (r1, fy)] {
            for (o, wx) in [(0, 1.0 - fx), (3, fx)] {
                let k = weight * wx * wy;
                acc[0] += k * row[o] as f32;
                acc[1] += k * row[o + 1] as f32;
                acc[2] += k * row[o + 2] as f32;
            }
        }
        return;
    }
    for (dy, wy) in [(0i64, 1.0 - fy), (1, fy)] {
        let yy = y0 + dy;
        if yy < 0 || yy >= h || wy == 0.0 {
            continue;
        }
        let row = img.row(yy as usize);
        for (dx, wx) in [(0i64, 1.0 - fx), (1, fx)] {
            let xx = x0 + dx;
            if xx < 0 || xx >= w || wx == 0.0 {
                continue;
            }
            let k = weight * wx * wy;
            let p = &row[xx as usize * 3..xx as usize * 3 + 3];
            acc[0] += k * p[0] as f32;
            acc[1] += k * p[1] as f32;
            acc[2] += k * p[2] as f32;
        }
    }
}

/// Warps the face to a `size × size` RGB crop using `to_crop` (image → crop).
pub fn warp(img: RgbView<'_>, to_crop: &Similarity, size: u32) -> Vec<u8> {
    let inv = to_crop.inverse();
    let size = size as usize;
    // Samples per axis: enough to cover an input pixel footprint when shrinking.
    let n = (1.0 / to_crop.scale()).ceil().clamp(1.0, 4.0) as usize;
    let weight = 1.0 / (n * n) as f32;
    let offsets: Vec<f32> = (0..n).map(|i| (i as f32 + 0.5) / n as f32 - 0.5).collect();
    let mut out = vec![0u8; size * size * 3];
    for y in 0..size {
        for x in 0..size {
            let mut acc = [0f32; 3];
            for oy in &offsets {
                for ox in &offsets {
                    let p = inv.apply([x as f32 + ox, y as f32 + oy]);
                    sample(&img, p[0], p[1], &mut acc, weight);
                }
            }
            let o = &mut out[(y * size + x) * 3..(y * size + x) * 3 + 3];
            for c in 0..3 {
                o[c] = round_to_u8(acc[c]);
            }
        }
    }
    out
}

/// Aligns one face: estimate the transform from its landmarks and warp.
pub fn align(img: RgbView<'_>, landmarks: &[[f32; 2]; 5], t: AlignTemplate, size: u32) -> Vec<u8> {
    let m = Similarity::estimate(landmarks, &template_points(t, size));
    warp(img, &m, size)
}

/// Gaussian blur of a square RGB crop in place (separable, radius
/// `ceil(3σ)` as OpenCV picks for 8-bit images, mirrored borders without
/// repeating the edge pixel: OpenCV's BORDER_REFLECT_101).
pub fn gaussian_blur(crop: &mut [u8], size: u32, sigma: f32) {
    if sigma <= 0.0 || size < 2 {
        return;
    }
    let n = size as usize;
    let radius = ((sigma * 3.0 * 2.0 + 1.0).round() as usize | 1) / 2;
    let kernel: Vec<f32> = (0..=2 * radius)
        .map(|i| {
            let x = i as f32 - radius as f32;
            (-x * x / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let sum: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / sum).collect();
    let reflect = |i: isize| -> usize {
        let m = n as isize;
        let mut i = i;
        while i < 0 || i >= m {
            i = if i < 0 { -i } else { 2 * (m - 1) - i };
        }
        i as usize
    };
    let mut tmp = vec![0f32; n * n * 3];
    for y in 0..n {
        for x in 0..n {
            for c in 0..3 {
                let mut acc = 0f32;
                for (k, w) in kernel.iter().enumerate() {
                    let xx = reflect(x as isize + k as isize - radius as isize);
                    acc += w * crop[(y * n + xx) * 3 + c] as f32;
                }
                tmp[(y * n + x) * 3 + c] = acc;
            }
        }
    }
    for y in 0..n {
        for x in 0..n {
            for c in 0..3 {
                let mut acc = 0f32;
                for (k, w) in kernel.iter().enumerate() {
                    let yy = reflect(y as isize + k as isize - radius as isize);
                    acc += w * tmp[(yy * n + x) * 3 + c];
                }
                crop[(y * n + x) * 3 + c] = round_to_u8(acc);
            }
        }
    }
}

/// Mirrors a square RGB crop left to right.
pub fn mirror(crop: &[u8], size: u32) -> Vec<u8> {
    let size = size as usize;
    let mut out = vec![0u8; crop.len()];
    for y in 0..size {
        for x in 0..size {
            let s = (y * size + x) * 3;
            let d = (y * size + (size - 1 - x)) * 3;
            out[d..d + 3].copy_from_slice(&crop[s..s + 3]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_known_similarity() {
        let truth = Similarity {
            a: 0.8 * 0.3f32.cos(),
            b: 0.8 * 0.3f32.sin(),
            tx: 12.0,
            ty: -7.0,
        };
        let src = [
            [10.0, 20.0],
            [50.0, 22.0],
            [30.0, 40.0],
            [15.0, 60.0],
            [48.0, 61.0],
        ];
        let dst = src.map(|p| truth.apply(p));
        let m = Similarity::estimate(&src, &dst);
        for (s, d) in src.iter().zip(&dst) {
            let p = m.apply(*s);
            assert!((p[0] - d[0]).abs() < 1e-3 && (p[1] - d[1]).abs() < 1e-3);
        }
        let back = m.inverse().apply(m.apply([3.0, 4.0]));
        assert!((back[0] - 3.0).abs() < 1e-3 && (back[1] - 4.0).abs() < 1e-3);
    }

    #[test]
    fn identity_warp_copies_pixels_and_outside_is_black() {
        let img =
            image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([x as u8 * 10, y as u8 * 10, 7]));
        let id = Similarity {
            a: 1.0,
            b: 0.0,
            tx: 0.0,
            ty: 0.0,
        };
        let out = warp(RgbView::from_image(&img), &id, 10);
        assert_eq!(&out[(3 * 10 + 2) * 3..(3 * 10 + 2) * 3 + 3], &[20, 30, 7]);
        assert_eq!(&out[(9 * 10 + 9) * 3..(9 * 10 + 9) * 3 + 3], &[0, 0, 0]);
    }

    #[test]
    fn blur_keeps_flat_areas_and_softens_an_edge() {
        let n = 8u32;
        let mut flat = vec![90u8; (n * n * 3) as usize];
        gaussian_blur(&mut flat, n, 0.5);
        assert!(flat.iter().all(|v| *v == 90));
        let mut edge: Vec<u8> = (0..n * n)
            .flat_map(|i| if i % n < 4 { [0u8; 3] } else { [200u8; 3] })
            .collect();
        gaussian_blur(&mut edge, n, 0.5);
        let px = |x: usize| edge[x * 3];
        assert!(
            px(3) > 0 && px(3) < 100 && px(4) > 100 && px(4) < 200,
            "{} {}",
            px(3),
            px(4)
        );
        assert_eq!(px(0), 0);
        assert_eq!(px(7), 200);
    }

    #[test]
    fn mirror_twice_is_identity() {
        let crop: Vec<u8> = (0..4 * 4 * 3).map(|v| v as u8).collect();
        let m = mirror(&crop, 4);
        assert_eq!(&m[0..3], &crop[9..12]);
        assert_eq!(mirror(&m, 4), crop);
    }

    #[test]
    fn inline_floor_equals_floor() {
        for v in [
            -1e30f32,
            -8388609.0,
            -2.5,
            -1.0,
            -0.7,
            -0.0,
            0.0,
            0.3,
            1.0,
            1.999_999_9,
            2.5,
            8388607.5,
            1e30,
        ] {
            assert_eq!(floor(v), v.floor(), "{v}");
            assert!(floor(f32::NAN).is_nan());
        }
    }

    /// `sample` and `warp` as they were before the interior fast path: the
    /// reference for bit-exactness.
    fn sample_before(img: &RgbView<'_>, x: f32, y: f32, acc: &mut [f32; 3], weight: f32) {
        let x0 = x.floor();
        let y0 = y.floor();
        let fx = x - x0;
        let fy = y - y0;
        let (x0, y0) = (x0 as i64, y0 as i64);
        let (w, h) = (img.width as i64, img.height as i64);
        for (dy, wy) in [(0i64, 1.0 - fy), (1, fy)] {
            let yy = y0 + dy;
            if yy < 0 || yy >= h || wy == 0.0 {
                continue;
            }
            let row = img.row(yy as usize);
            for (dx, wx) in [(0i64, 1.0 - fx), (1, fx)] {
                let xx = x0 + dx;
                if xx < 0 || xx >= w || wx == 0.0 {
                    continue;
                }
                let k = weight * wx * wy;
                let p = &row[xx as usize * 3..xx as usize * 3 + 3];
                acc[0] += k * p[0] as f32;
                acc[1] += k * p[1] as f32;
                acc[2] += k * p[2] as f32;
            }
        }
    }
    fn warp_before(img: RgbView<'_>, to_crop: &Similarity, size: u32) -> Vec<u8> {
        let inv = to_crop.inverse();
        let size = size as usize;
        // Samples per axis: enough to cover an input pixel footprint when shrinking.
        let n = (1.0 / to_crop.scale()).ceil().clamp(1.0, 4.0) as usize;
        let weight = 1.0 / (n * n) as f32;
        let offsets: Vec<f32> = (0..n).map(|i| (i as f32 + 0.5) / n as f32 - 0.5).collect();
        let mut out = vec![0u8; size * size * 3];
        for y in 0..size {
            for x in 0..size {
                let mut acc = [0f32; 3];
                for oy in &offsets {
                    for ox in &offsets {
                        let p = inv.apply([x as f32 + ox, y as f32 + oy]);
                        sample_before(&img, p[0], p[1], &mut acc, weight);
                    }
                }
                let o = &mut out[(y * size + x) * 3..(y * size + x) * 3 + 3];
                for c in 0..3 {
                    o[c] = acc[c].round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        out
    }

    #[test]
    fn warp_gives_the_bytes_of_the_bounds_checked_version() {
        let (w, h) = (300u32, 200u32);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<u8> = (0..w * h * 3)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let img = RgbView::new(w, h, w as usize * 3, &data).unwrap();
        // Faces inside, across the border, enlarged and shrunk (1 to 16
        // samples per crop pixel), turned.
        for (cx, cy, side, angle) in [
            (150.0f32, 100.0f32, 60.0f32, 0.0f32),
            (150.0, 100.0, 150.0, 0.3),
            (10.0, 190.0, 80.0, -0.5),
            (290.0, 5.0, 400.0, 1.2),
            (150.5, 99.25, 20.0, 0.1),
        ] {
            let s = 112.0 / side;
            let (c, sn) = (angle.cos() * s, angle.sin() * s);
            let m = Similarity {
                a: c,
                b: sn,
                tx: 56.0 - (c * cx - sn * cy),
                ty: 56.0 - (sn * cx + c * cy),
            };
            assert_eq!(
                warp(img, &m, 112),
                warp_before(img, &m, 112),
                "{cx},{cy} {side} {angle}"
            );
        }
    }
}
