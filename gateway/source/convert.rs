//! YUV 4:2:0 (I420 or NV12) to packed RGB in integer arithmetic, read
//! straight from the decoder's planes.
//!
//! Only the frames a consumer takes are converted: at 1080p25 with
//! detection at 3 fps, converting every frame in GStreamer would spend most
//! of a core on pixels nobody looks at. Plane strides come from the caller
//! (GStreamer's `VideoInfo`/`VideoMeta`); nothing here assumes `width × k`.

/// How the two chroma planes of a 4:2:0 frame are stored.
#[derive(Debug, Clone, Copy)]
pub enum Chroma<'a> {
    /// I420: a U plane and a V plane, each `ceil(w/2) × ceil(h/2)`.
    Planar {
        u: &'a [u8],
        u_stride: usize,
        v: &'a [u8],
        v_stride: usize,
    },
    /// NV12: one plane of interleaved U,V pairs, `ceil(h/2)` rows.
    Interleaved { uv: &'a [u8], stride: usize },
}

/// A borrowed 4:2:0 frame: a full-resolution luma plane and half-resolution
/// chroma (odd sizes round up, as GStreamer lays them out).
#[derive(Debug, Clone, Copy)]
pub struct Yuv420<'a> {
    pub width: u32,
    pub height: u32,
    pub y: &'a [u8],
    pub y_stride: usize,
    pub chroma: Chroma<'a>,
}

impl<'a> Yuv420<'a> {
    /// Checks that every plane is long enough for the size and strides, so
    /// the conversion below cannot index out of bounds.
    pub fn new(
        width: u32,
        height: u32,
        y: &'a [u8],
        y_stride: usize,
        chroma: Chroma<'a>,
    ) -> Result<Self, String> {
        let (w, h) = (width as usize, height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let fits = |len: usize, stride: usize, row: usize, rows: usize| {
            rows == 0 || (stride >= row && len >= stride * (rows - 1) + row)
        };
        if width == 0 || height == 0 {
            return Err(format!("empty frame {width}x{height}"));
        }
        if !fits(y.len(), y_stride, w, h) {
            return Err(format!(
                "luma plane of {} bytes, stride {y_stride}, is too short for {width}x{height}",
                y.len()
            ));
        }
        let chroma_ok = match chroma {
            Chroma::Planar {
                u,
                u_stride,
                v,
                v_stride,
            } => fits(u.len(), u_stride, cw, ch) && fits(v.len(), v_stride, cw, ch),
            Chroma::Interleaved { uv, stride } => fits(uv.len(), stride, cw * 2, ch),
        };
        if !chroma_ok {
            return Err(format!("chroma planes too short for {width}x{height}"));
        }
        Ok(Self {
            width,
            height,
            y,
            y_stride,
            chroma,
        })
    }

    fn y_row(&self, row: usize) -> &'a [u8] {
        let start = row * self.y_stride;
        &self.y[start..start + self.width as usize]
    }

    /// The chroma of one chroma row as (U, V) lookups by chroma column.
    fn chroma_row(&self, crow: usize) -> ChromaRow<'a> {
        let cw = (self.width as usize).div_ceil(2);
        match self.chroma {
            Chroma::Planar {
                u,
                u_stride,
                v,
                v_stride,
            } => ChromaRow::Planar(
                &u[crow * u_stride..crow * u_stride + cw],
                &v[crow * v_stride..crow * v_stride + cw],
            ),
            Chroma::Interleaved { uv, stride } => {
                ChromaRow::Interleaved(&uv[crow * stride..crow * stride + cw * 2])
            }
        }
    }
}

enum ChromaRow<'a> {
    Planar(&'a [u8], &'a [u8]),
    Interleaved(&'a [u8]),
}

impl ChromaRow<'_> {
    #[inline]
    fn at(&self, cx: usize) -> (u8, u8) {
        match self {
            ChromaRow::Planar(u, v) => (u[cx], v[cx]),
            ChromaRow::Interleaved(uv) => (uv[cx * 2], uv[cx * 2 + 1]),
        }
    }
}

/// YCbCr → RGB coefficients, scaled by 256.
///
/// `R = (ym·(Y−y0) + rv·(V−128)) / 256`, `G = (ym·(Y−y0) − gu·(U−128) − gv·(V−128)) / 256`,
/// `B = (ym·(Y−y0) + bu·(U−128)) / 256`, rounded and clamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct YuvMatrix {
    y_offset: i32,
    y_mul: i32,
    rv: i32,
    gu: i32,
    gv: i32,
    bu: i32,
}

impl YuvMatrix {
    /// ITU-R BT.601, limited range (16–235): SD video, most IP cameras' substreams.
    pub const BT601_LIMITED: Self = Self {
        y_offset: 16,
        y_mul: 298,
        rv: 409,
        gu: 100,
        gv: 208,
        bu: 516,
    };
    /// ITU-R BT.709, limited range: HD video.
    pub const BT709_LIMITED: Self = Self {
        y_offset: 16,
        y_mul: 298,
        rv: 459,
        gu: 55,
        gv: 136,
        bu: 541,
    };
    /// BT.601 full range (JPEG).
    pub const BT601_FULL: Self = Self {
        y_offset: 0,
        y_mul: 256,
        rv: 359,
        gu: 88,
        gv: 183,
        bu: 454,
    };
    /// BT.709 full range.
    pub const BT709_FULL: Self = Self {
        y_offset: 0,
        y_mul: 256,
        rv: 403,
        gu: 48,
        gv: 120,
        bu: 475,
    };

    /// One pixel from samples (or box averages of samples).
    #[inline]
    fn rgb(&self, y: i32, u: i32, v: i32) -> [u8; 3] {
        let c = self.y_mul * (y - self.y_offset);
        let d = u - 128;
        let e = v - 128;
        [
            clamp8((c + self.rv * e + 128) >> 8),
            clamp8((c - self.gu * d - self.gv * e + 128) >> 8),
            clamp8((c + self.bu * d + 128) >> 8),
        ]
    }
}

#[inline]
fn clamp8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// Converts the whole frame into `out`, packed RGB rows of `out_stride`
/// bytes (at least `width × 3`).
pub fn yuv_to_rgb(src: &Yuv420<'_>, m: YuvMatrix, out: &mut [u8], out_stride: usize) {
    let w = src.width as usize;
    assert!(out_stride >= w * 3 && out.len() >= out_stride * (src.height as usize - 1) + w * 3);
    for row in 0..src.height as usize {
        let y_row = src.y_row(row);
        let o_row = &mut out[row * out_stride..row * out_stride + w * 3];
        match src.chroma_row(row / 2) {
            ChromaRow::Planar(u, v) => {
                convert_row(&m, y_row, o_row, u.iter().zip(v).map(|(&u, &v)| (u, v)))
            }
            ChromaRow::Interleaved(uv) => {
                convert_row(&m, y_row, o_row, uv.chunks_exact(2).map(|p| (p[0], p[1])))
            }
        }
    }
}

/// One row: the chroma terms are computed once per pair of pixels that
/// share them.
#[inline]
fn convert_row(
    m: &YuvMatrix,
    y_row: &[u8],
    o_row: &mut [u8],
    chroma: impl Iterator<Item = (u8, u8)>,
) {
    for ((ys, px), (u, v)) in y_row.chunks(2).zip(o_row.chunks_mut(6)).zip(chroma) {
        let d = i32::from(u) - 128;
        let e = i32::from(v) - 128;
        let r = m.rv * e + 128;
        let g = 128 - m.gu * d - m.gv * e;
        let b = m.bu * d + 128;
        for (&y, p) in ys.iter().zip(px.chunks_exact_mut(3)) {
            let c = m.y_mul * (i32::from(y) - m.y_offset);
            p[0] = clamp8((c + r) >> 8);
            p[1] = clamp8((c + g) >> 8);
            p[2] = clamp8((c + b) >> 8);
        }
    }
}

/// The output size for a long side of at most `max_side` (aspect kept,
/// never upscaled, never zero).
pub fn scaled_size(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    let long = width.max(height);
    if long <= max_side || max_side == 0 {
        return (width, height);
    }
    let scale = |v: u32| {
        ((u64::from(v) * u64::from(max_side) + u64::from(long) / 2) / u64::from(long)).max(1) as u32
    };
    (scale(width), scale(height))
}

/// Source index ranges `[start, end)` of each output cell, for box averaging.
fn box_ranges(src: usize, dst: usize) -> Vec<(usize, usize)> {
    (0..dst)
        .map(|i| {
            let a = i * src / dst;
            let b = ((i + 1) * src / dst).max(a + 1).min(src);
            (a, b)
        })
        .collect()
}

/// Downscales to `dst_w × dst_h` (each at most the source size) by box
/// averaging Y, U and V over each output pixel's footprint, then converts:
/// every source pixel is read once, no full-size RGB is ever made.
/// `out` is packed RGB, `dst_w × 3` bytes a row.
pub fn yuv_to_rgb_scaled(src: &Yuv420<'_>, m: YuvMatrix, dst_w: u32, dst_h: u32, out: &mut [u8]) {
    let (w, h) = (src.width as usize, src.height as usize);
    let (dw, dh) = (dst_w as usize, dst_h as usize);
    assert!(dw >= 1 && dh >= 1 && dw <= w && dh <= h && out.len() >= dw * dh * 3);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let xs = box_ranges(w, dw);
    let ys = box_ranges(h, dh);
    // Chroma footprint of each luma range: the chroma samples it touches.
    let chroma_range = |(a, b): (usize, usize), len: usize| (a / 2, b.div_ceil(2).min(len));
    let cxs: Vec<_> = xs.iter().map(|&r| chroma_range(r, cw)).collect();
    let mut y_cols = vec![0u32; w];
    let mut u_cols = vec![0u32; cw];
    let mut v_cols = vec![0u32; cw];
    for (oy, &(y0, y1)) in ys.iter().enumerate() {
        y_cols.fill(0);
        u_cols.fill(0);
        v_cols.fill(0);
        for row in y0..y1 {
            for (acc, &p) in y_cols.iter_mut().zip(src.y_row(row)) {
                *acc += u32::from(p);
            }
        }
        let (cy0, cy1) = chroma_range((y0, y1), ch);
        for crow in cy0..cy1 {
            let c = src.chroma_row(crow);
            for cx in 0..cw {
                let (u, v) = c.at(cx);
                u_cols[cx] += u32::from(u);
                v_cols[cx] += u32::from(v);
            }
        }
        let rows = (y1 - y0) as u32;
        let crows = (cy1 - cy0) as u32;
        let o_row = &mut out[oy * dw * 3..(oy + 1) * dw * 3];
        for (px, (&(x0, x1), &(cx0, cx1))) in o_row.chunks_exact_mut(3).zip(xs.iter().zip(&cxs)) {
            let n = rows * (x1 - x0) as u32;
            let cn = crows * (cx1 - cx0) as u32;
            let avg = |sum: u32, n: u32| ((sum + n / 2) / n) as i32;
            let y = avg(y_cols[x0..x1].iter().sum(), n);
            let u = avg(u_cols[cx0..cx1].iter().sum(), cn);
            let v = avg(v_cols[cx0..cx1].iter().sum(), cn);
            px.copy_from_slice(&m.rgb(y, u, v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Floating-point BT.601 limited-range reference.
    fn reference(y: u8, u: u8, v: u8) -> [f32; 3] {
        let c = 1.164 * (f32::from(y) - 16.0);
        let d = f32::from(u) - 128.0;
        let e = f32::from(v) - 128.0;
        [
            (c + 1.596 * e).clamp(0.0, 255.0),
            (c - 0.392 * d - 0.813 * e).clamp(0.0, 255.0),
            (c + 2.017 * d).clamp(0.0, 255.0),
        ]
    }

    fn one_pixel(y: u8, u: u8, v: u8, m: YuvMatrix) -> [u8; 3] {
        let (ys, us, vs) = ([y], [u], [v]);
        let f = Yuv420::new(
            1,
            1,
            &ys,
            1,
            Chroma::Planar {
                u: &us,
                u_stride: 1,
                v: &vs,
                v_stride: 1,
            },
        )
        .unwrap();
        let mut out = [0u8; 3];
        yuv_to_rgb(&f, m, &mut out, 3);
        out
    }

    fn close(a: [u8; 3], b: [u8; 3], tol: i32) -> bool {
        a.iter()
            .zip(b)
            .all(|(&x, y)| (i32::from(x) - i32::from(y)).abs() <= tol)
    }

    #[test]
    fn known_colours_convert_bt601_limited() {
        let m = YuvMatrix::BT601_LIMITED;
        // (Y, U, V) of the BT.601 limited-range colour bars.
        let cases = [
            ((16, 128, 128), [0, 0, 0]),
            ((235, 128, 128), [255, 255, 255]),
            ((126, 128, 128), [128, 128, 128]),
            ((81, 90, 240), [255, 0, 0]),
            ((145, 54, 34), [0, 255, 0]),
            ((41, 240, 110), [0, 0, 255]),
            ((210, 16, 146), [255, 255, 0]),
        ];
        for ((y, u, v), want) in cases {
            let got = one_pixel(y, u, v, m);
            assert!(
                close(got, want, 2),
                "YUV {y},{u},{v}: got {got:?}, want {want:?}"
            );
        }
        // Footroom and headroom clamp instead of wrapping.
        assert_eq!(one_pixel(0, 128, 128, m), [0, 0, 0]);
        assert_eq!(one_pixel(255, 128, 128, m), [255, 255, 255]);
    }

    #[test]
    fn other_matrices_keep_grey_grey_and_differ_on_colour() {
        for m in [
            YuvMatrix::BT601_FULL,
            YuvMatrix::BT709_FULL,
            YuvMatrix::BT709_LIMITED,
        ] {
            let [r, g, b] = one_pixel(128, 128, 128, m);
            assert!(r == g && g == b, "{m:?}");
        }
        assert_eq!(one_pixel(200, 128, 128, YuvMatrix::BT601_FULL), [200; 3]);
        assert_ne!(
            one_pixel(81, 90, 240, YuvMatrix::BT601_LIMITED),
            one_pixel(81, 90, 240, YuvMatrix::BT709_LIMITED)
        );
    }

    /// A deterministic pseudo-random byte stream.
    fn noise(n: usize, seed: u32) -> Vec<u8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 24) as u8
            })
            .collect()
    }

    /// An odd-sized frame (5×3) in padded planes: the padding holds values
    /// that would show up if strides were ignored.
    struct Planes {
        y: Vec<u8>,
        u: Vec<u8>,
        v: Vec<u8>,
        uv: Vec<u8>,
    }

    const W: usize = 5;
    const H: usize = 3;
    const YS: usize = 8;
    const CS: usize = 5;
    const UVS: usize = 7;

    fn padded_planes() -> Planes {
        let (cw, ch) = (W.div_ceil(2), H.div_ceil(2));
        let content = noise(W * H + 2 * cw * ch, 7);
        let mut y = vec![0xEE; YS * H];
        let mut u = vec![0x00; CS * ch];
        let mut v = vec![0xFF; CS * ch];
        let mut uv = vec![0x11; UVS * ch];
        for r in 0..H {
            y[r * YS..r * YS + W].copy_from_slice(&content[r * W..(r + 1) * W]);
        }
        let us = &content[W * H..W * H + cw * ch];
        let vs = &content[W * H + cw * ch..];
        for r in 0..ch {
            for c in 0..cw {
                u[r * CS + c] = us[r * cw + c];
                v[r * CS + c] = vs[r * cw + c];
                uv[r * UVS + 2 * c] = us[r * cw + c];
                uv[r * UVS + 2 * c + 1] = vs[r * cw + c];
            }
        }
        Planes { y, u, v, uv }
    }

    #[test]
    fn odd_sizes_and_padded_strides_match_the_reference_for_i420_and_nv12() {
        let p = padded_planes();
        let i420 = Yuv420::new(
            W as u32,
            H as u32,
            &p.y,
            YS,
            Chroma::Planar {
                u: &p.u,
                u_stride: CS,
                v: &p.v,
                v_stride: CS,
            },
        )
        .unwrap();
        let nv12 = Yuv420::new(
            W as u32,
            H as u32,
            &p.y,
            YS,
            Chroma::Interleaved {
                uv: &p.uv,
                stride: UVS,
            },
        )
        .unwrap();
        // Output with a padded stride too.
        let out_stride = W * 3 + 1;
        let mut a = vec![0u8; out_stride * H];
        let mut b = vec![0u8; out_stride * H];
        yuv_to_rgb(&i420, YuvMatrix::BT601_LIMITED, &mut a, out_stride);
        yuv_to_rgb(&nv12, YuvMatrix::BT601_LIMITED, &mut b, out_stride);
        assert_eq!(a, b, "I420 and NV12 of the same picture differ");
        for r in 0..H {
            for c in 0..W {
                let (u, v) = (p.u[(r / 2) * CS + c / 2], p.v[(r / 2) * CS + c / 2]);
                let want = reference(p.y[r * YS + c], u, v);
                let got = &a[r * out_stride + c * 3..r * out_stride + c * 3 + 3];
                for k in 0..3 {
                    assert!(
                        (f32::from(got[k]) - want[k]).abs() <= 1.5,
                        "pixel ({c},{r}) channel {k}: got {}, want {}",
                        got[k],
                        want[k]
                    );
                }
            }
        }
    }

    #[test]
    fn short_planes_are_refused() {
        let y = [0u8; 14];
        let c = [128u8; 6];
        let planar = Chroma::Planar {
            u: &c,
            u_stride: 3,
            v: &c,
            v_stride: 3,
        };
        assert!(Yuv420::new(5, 3, &y, 5, planar).is_err(), "luma too short");
        assert!(
            Yuv420::new(5, 3, &y, 4, planar).is_err(),
            "stride below width"
        );
        let y = [0u8; 15];
        assert!(Yuv420::new(5, 3, &y, 5, planar).is_ok());
        let uv = [128u8; 11];
        assert!(Yuv420::new(5, 3, &y, 5, Chroma::Interleaved { uv: &uv, stride: 6 }).is_err());
        assert!(Yuv420::new(0, 3, &y, 5, planar).is_err());
    }

    #[test]
    fn scaled_sizes_keep_the_aspect_and_never_upscale() {
        assert_eq!(scaled_size(1920, 1080, 640), (640, 360));
        assert_eq!(scaled_size(1080, 1920, 640), (360, 640));
        assert_eq!(scaled_size(640, 360, 640), (640, 360));
        assert_eq!(scaled_size(320, 240, 640), (320, 240));
        assert_eq!(scaled_size(5, 3, 2), (2, 1));
        assert_eq!(scaled_size(4000, 1, 100), (100, 1));
    }

    #[test]
    fn box_downscale_averages_blocks() {
        // 4×4 luma made of four flat 2×2 blocks; grey chroma.
        let y = [
            20, 20, 100, 100, //
            20, 20, 100, 100, //
            180, 180, 235, 235, //
            180, 180, 235, 235,
        ];
        let c = [128u8; 4];
        let f = Yuv420::new(
            4,
            4,
            &y,
            4,
            Chroma::Planar {
                u: &c,
                u_stride: 2,
                v: &c,
                v_stride: 2,
            },
        )
        .unwrap();
        let mut out = [0u8; 12];
        yuv_to_rgb_scaled(&f, YuvMatrix::BT601_LIMITED, 2, 2, &mut out);
        let want = |luma: u8| one_pixel(luma, 128, 128, YuvMatrix::BT601_LIMITED);
        assert_eq!(&out[0..3], &want(20));
        assert_eq!(&out[3..6], &want(100));
        assert_eq!(&out[6..9], &want(180));
        assert_eq!(&out[9..12], &want(235));
    }

    #[test]
    fn box_downscale_agrees_with_converting_then_averaging() {
        // 1920×1080 → 640×360 is an exact 3:1 box; on smooth content (a
        // gradient with noise, no clipping) averaging YUV first or RGB first
        // agree closely.
        let (w, h) = (96usize, 54usize);
        let n = noise(w * h, 3);
        let y: Vec<u8> = (0..w * h)
            .map(|i| (40 + (i % w) + (i / w) / 2 + usize::from(n[i] % 8)) as u8)
            .collect();
        let (cw, ch) = (w / 2, h / 2);
        let u: Vec<u8> = (0..cw * ch).map(|i| (100 + (i % cw)) as u8).collect();
        let v: Vec<u8> = (0..cw * ch).map(|i| (150 - (i / cw)) as u8).collect();
        let f = Yuv420::new(
            w as u32,
            h as u32,
            &y,
            w,
            Chroma::Planar {
                u: &u,
                u_stride: cw,
                v: &v,
                v_stride: cw,
            },
        )
        .unwrap();
        let mut full = vec![0u8; w * h * 3];
        yuv_to_rgb(&f, YuvMatrix::BT601_LIMITED, &mut full, w * 3);
        let (dw, dh) = (w / 3, h / 3);
        let mut small = vec![0u8; dw * dh * 3];
        yuv_to_rgb_scaled(
            &f,
            YuvMatrix::BT601_LIMITED,
            dw as u32,
            dh as u32,
            &mut small,
        );
        for oy in 0..dh {
            for ox in 0..dw {
                for k in 0..3 {
                    let mut sum = 0u32;
                    for dy in 0..3 {
                        for dx in 0..3 {
                            sum += u32::from(full[((oy * 3 + dy) * w + ox * 3 + dx) * 3 + k]);
                        }
                    }
                    let want = (sum as f32 / 9.0).round();
                    let got = f32::from(small[(oy * dw + ox) * 3 + k]);
                    assert!(
                        (got - want).abs() <= 2.0,
                        "({ox},{oy}) ch {k}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn odd_downscale_covers_every_source_pixel() {
        let p = padded_planes();
        let f = Yuv420::new(
            W as u32,
            H as u32,
            &p.y,
            YS,
            Chroma::Interleaved {
                uv: &p.uv,
                stride: UVS,
            },
        )
        .unwrap();
        let ranges = box_ranges(W, 2);
        assert_eq!(ranges, vec![(0, 2), (2, 5)]);
        let mut out = [0u8; 2 * 3];
        yuv_to_rgb_scaled(&f, YuvMatrix::BT601_LIMITED, 2, 1, &mut out);
        // Same picture through I420: identical result.
        let i420 = Yuv420::new(
            W as u32,
            H as u32,
            &p.y,
            YS,
            Chroma::Planar {
                u: &p.u,
                u_stride: CS,
                v: &p.v,
                v_stride: CS,
            },
        )
        .unwrap();
        let mut out2 = [0u8; 2 * 3];
        yuv_to_rgb_scaled(&i420, YuvMatrix::BT601_LIMITED, 2, 1, &mut out2);
        assert_eq!(out, out2);
    }
}
