//! The coarse pass of the 1:N scan: every template also kept as 4-bit codes
//! (a per-row scale, one nibble a value), scanned with integer SIMD against
//! an 8-bit copy of the query. The scan reads 352 bytes a 704-d template
//! instead of 2816, which is what makes 100k templates fit in ~1 ms of
//! memory bandwidth on one core.
//!
//! The coarse score is only a filter: a row is rescored with the exact f32
//! dot product whenever its coarse score plus a margin could beat the
//! current k-th best, so the returned scores are the f32 ones. The margin
//! is [`MARGIN_SIGMAS`] standard deviations of the quantisation error
//! (rounding errors are bounded and independent of the query's direction,
//! so their projection on the query is a sum of many small independent
//! terms; `coarse_error_stays_far_inside_the_margin` measures how far
//! inside the margin the real error stays).
//!
//! Kernels: AVX2 on x86_64 when the CPU has it (runtime detection), NEON on
//! aarch64 (always present there), and a scalar fallback. All three compute
//! the same integers.
//!
//! Layout: a row is `padded_dim / 2` bytes in blocks of 32 bytes for 64
//! values; byte `b` of block `k` holds value `64k + b` in its low nibble and
//! value `64k + 32 + b` in its high nibble, so the query's 8-bit values are
//! read in their natural order. A code is `round(x / scale) + 8` in 1..=15;
//! padding is 8 (zero).

/// Values per block of 32 code bytes.
pub(super) const BLOCK: usize = 64;

/// How many standard deviations of the coarse error a row's coarse score
/// may be below the k-th best and still be rescored exactly.
pub(super) const MARGIN_SIGMAS: f32 = 8.0;

/// Headroom for f32 rounding in the exact and coarse sums.
const ROUNDING_SLACK: f32 = 1e-4;

/// `dim` rounded up to whole blocks.
pub(super) fn padded(dim: usize) -> usize {
    dim.div_ceil(BLOCK) * BLOCK
}

/// Code bytes per row for `dim`-dimensional templates.
pub(super) fn row_bytes(dim: usize) -> usize {
    padded(dim) / 2
}

/// Quantises a unit row into `out` (`row_bytes(x.len())` bytes); returns
/// the scale and the norm of the rounding error `‖x − scale·(code − 8)‖`.
pub(super) fn quantise_row(x: &[f32], out: &mut [u8]) -> (f32, f32) {
    let max = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let scale = if max > 0.0 { max / 7.0 } else { 1.0 };
    out.fill(0x88);
    let mut err2 = 0.0f32;
    for (j, &v) in x.iter().enumerate() {
        let q = (v / scale).round().clamp(-7.0, 7.0);
        err2 += (v - q * scale).powi(2);
        let code = (q as i32 + 8) as u8;
        let (block, within) = (j / BLOCK, j % BLOCK);
        let byte = &mut out[block * 32 + within % 32];
        if within < 32 {
            *byte = (*byte & 0xF0) | code;
        } else {
            *byte = (*byte & 0x0F) | (code << 4);
        }
    }
    (scale, err2.sqrt())
}

/// The query as 8-bit values, with what the margin needs.
pub(super) struct CoarseQuery {
    /// `padded(dim)` values in -127..=127, zero in the padding.
    values: Vec<i8>,
    /// `8 × Σ values`: subtracted from the code dot to undo the +8 offset.
    offset: i32,
    /// The query's scale: `q ≈ scale × values`.
    pub scale: f32,
    /// `‖q − scale × values‖`.
    pub error_norm: f32,
    /// `‖scale × values‖`.
    pub norm: f32,
    /// `1 / √dim`: the error's spread per unit of norm.
    inv_sqrt_dim: f32,
}

impl CoarseQuery {
    /// `q` must be of unit length and non-degenerate.
    pub fn new(q: &[f32]) -> Self {
        let max = q.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        let mut values = vec![0i8; padded(q.len())];
        let (mut err2, mut norm2, mut sum) = (0.0f32, 0.0f32, 0i32);
        for (slot, &v) in values.iter_mut().zip(q) {
            let d = (v / scale).round().clamp(-127.0, 127.0);
            err2 += (v - d * scale).powi(2);
            norm2 += (d * scale).powi(2);
            sum += d as i32;
            *slot = d as i8;
        }
        Self {
            values,
            offset: 8 * sum,
            scale,
            error_norm: err2.sqrt(),
            norm: norm2.sqrt(),
            inv_sqrt_dim: 1.0 / (q.len().max(1) as f32).sqrt(),
        }
    }

    /// The coarse cosine of a row from its code dot product and scale.
    #[inline]
    pub fn score(&self, code_dot: i32, row_scale: f32) -> f32 {
        (code_dot - self.offset) as f32 * row_scale * self.scale
    }

    /// How far below its exact score a row's coarse score can plausibly be,
    /// for a row whose rounding error has norm `row_error`: the standard
    /// deviation of `(q − q̂)·x + q̂·(x − x̂)` for a unit `x`, times
    /// [`MARGIN_SIGMAS`], plus rounding slack.
    #[inline]
    pub fn margin(&self, row_error: f32) -> f32 {
        let spread = (self.error_norm * self.error_norm
            + self.norm * self.norm * row_error * row_error)
            .sqrt()
            * self.inv_sqrt_dim;
        MARGIN_SIGMAS * spread + ROUNDING_SLACK
    }
}

/// Which kernel this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kernel {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl Kernel {
    /// The fastest kernel this CPU supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Self::Avx2;
        }
        #[cfg(target_arch = "aarch64")]
        return Self::Neon;
        #[allow(unreachable_code)]
        Self::Scalar
    }

    /// Code dot products of consecutive rows: `out[r]` for the row at
    /// `codes[r × stride..]`, where `stride = row_bytes(dim)` and
    /// `codes.len() ≥ out.len() × stride`.
    pub fn dots(self, codes: &[u8], stride: usize, query: &CoarseQuery, out: &mut [i32]) {
        assert!(codes.len() >= out.len() * stride && query.values.len() == stride * 2);
        match self {
            Self::Scalar => dots_scalar(codes, stride, &query.values, out),
            // SAFETY: `Avx2` is only returned by `detect` when the CPU has
            // AVX2; the lengths were checked above.
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => unsafe { dots_avx2(codes, stride, &query.values, out) },
            // SAFETY: NEON is part of the aarch64 baseline; lengths checked.
            #[cfg(target_arch = "aarch64")]
            Self::Neon => unsafe { dots_neon(codes, stride, &query.values, out) },
        }
    }
}

fn dots_scalar(codes: &[u8], stride: usize, q: &[i8], out: &mut [i32]) {
    for (r, o) in out.iter_mut().enumerate() {
        let row = &codes[r * stride..(r + 1) * stride];
        let mut acc = 0i32;
        for (bytes, qs) in row.chunks_exact(32).zip(q.chunks_exact(BLOCK)) {
            for (b, &byte) in bytes.iter().enumerate() {
                acc += i32::from(byte & 0x0F) * i32::from(qs[b])
                    + i32::from(byte >> 4) * i32::from(qs[32 + b]);
            }
        }
        *o = acc;
    }
}

/// # Safety
/// The CPU must support AVX2; `codes` holds `out.len()` rows of `stride`
/// bytes and `q` holds `2 × stride` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dots_avx2(codes: &[u8], stride: usize, q: &[i8], out: &mut [i32]) {
    use std::arch::x86_64::*;
    let mask = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let blocks = stride / 32;
    for (r, o) in out.iter_mut().enumerate() {
        // SAFETY: row r spans codes[r·stride..(r+1)·stride] (caller's
        // contract), block k reads 32 bytes at 32k < stride and 32 query
        // values at 64k and 64k + 32 < 2·stride.
        unsafe {
            let row = codes.as_ptr().add(r * stride);
            let mut acc = _mm256_setzero_si256();
            for k in 0..blocks {
                let v = _mm256_loadu_si256(row.add(32 * k).cast());
                let lo = _mm256_and_si256(v, mask);
                let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
                let ql = _mm256_loadu_si256(q.as_ptr().add(BLOCK * k).cast());
                let qh = _mm256_loadu_si256(q.as_ptr().add(BLOCK * k + 32).cast());
                // Codes ≤ 15 and |q| ≤ 127: each 16-bit pair sum ≤ 3810,
                // the two added ≤ 7620, far from saturation.
                let pairs =
                    _mm256_add_epi16(_mm256_maddubs_epi16(lo, ql), _mm256_maddubs_epi16(hi, qh));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
            }
            let sum = _mm_add_epi32(
                _mm256_castsi256_si128(acc),
                _mm256_extracti128_si256(acc, 1),
            );
            let sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0b01_00_11_10));
            let sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0b10_11_00_01));
            *o = _mm_cvtsi128_si32(sum);
        }
    }
}

/// # Safety
/// `codes` holds `out.len()` rows of `stride` bytes and `q` holds
/// `2 × stride` values.
#[cfg(target_arch = "aarch64")]
unsafe fn dots_neon(codes: &[u8], stride: usize, q: &[i8], out: &mut [i32]) {
    use std::arch::aarch64::*;
    let blocks = stride / 32;
    for (r, o) in out.iter_mut().enumerate() {
        // SAFETY: as for the AVX2 kernel, in 16-byte halves.
        unsafe {
            let mask = vdupq_n_u8(0x0F);
            let row = codes.as_ptr().add(r * stride);
            let mut acc = vdupq_n_s32(0);
            for k in 0..blocks {
                for h in 0..2 {
                    let v = vld1q_u8(row.add(32 * k + 16 * h));
                    let lo = vreinterpretq_s8_u8(vandq_u8(v, mask));
                    let hi = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
                    let ql = vld1q_s8(q.as_ptr().add(BLOCK * k + 16 * h));
                    let qh = vld1q_s8(q.as_ptr().add(BLOCK * k + 32 + 16 * h));
                    // Four products of ≤ 15 × 127 per lane: ≤ 7620.
                    let mut p = vmull_s8(vget_low_s8(lo), vget_low_s8(ql));
                    p = vmlal_high_s8(p, lo, ql);
                    p = vmlal_s8(p, vget_low_s8(hi), vget_low_s8(qh));
                    p = vmlal_high_s8(p, hi, qh);
                    acc = vpadalq_s16(acc, p);
                }
            }
            *o = vaddvq_s32(acc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Lcg(u64);
    impl Lcg {
        fn next_f32(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
        fn unit(&mut self, dim: usize) -> Vec<f32> {
            let v: Vec<f32> = (0..dim).map(|_| self.next_f32()).collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter().map(|x| x / n).collect()
        }
    }

    fn encode(rows: &[Vec<f32>], dim: usize) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
        let stride = row_bytes(dim);
        let mut codes = vec![0u8; rows.len() * stride];
        let (mut scales, mut errors) = (Vec::new(), Vec::new());
        for (row, out) in rows.iter().zip(codes.chunks_exact_mut(stride)) {
            let (s, e) = quantise_row(row, out);
            scales.push(s);
            errors.push(e);
        }
        (codes, scales, errors)
    }

    /// Every kernel this CPU has gives the scalar kernel's integers, for
    /// dimensions with and without padding.
    #[test]
    fn simd_kernel_matches_scalar() {
        let mut rng = Lcg(3);
        for dim in [1, 63, 64, 65, 192, 512, 704] {
            let rows: Vec<Vec<f32>> = (0..37).map(|_| rng.unit(dim)).collect();
            let (codes, _, _) = encode(&rows, dim);
            let q = CoarseQuery::new(&rng.unit(dim));
            let mut want = vec![0; rows.len()];
            dots_scalar(&codes, row_bytes(dim), &q.values, &mut want);
            let mut got = vec![0; rows.len()];
            Kernel::detect().dots(&codes, row_bytes(dim), &q, &mut got);
            assert_eq!(got, want, "dim {dim}, kernel {:?}", Kernel::detect());
        }
    }

    /// The coarse score is the dot product of the dequantised vectors.
    #[test]
    fn coarse_score_is_the_dequantised_dot() {
        let mut rng = Lcg(5);
        let dim = 130;
        let rows: Vec<Vec<f32>> = (0..5).map(|_| rng.unit(dim)).collect();
        let (codes, scales, errors) = encode(&rows, dim);
        let qv = rng.unit(dim);
        let q = CoarseQuery::new(&qv);
        let mut dots = vec![0; rows.len()];
        Kernel::detect().dots(&codes, row_bytes(dim), &q, &mut dots);
        for (r, row) in rows.iter().enumerate() {
            let exact: f32 = row.iter().zip(&qv).map(|(a, b)| a * b).sum();
            let coarse = q.score(dots[r], scales[r]);
            // Cauchy–Schwarz: a hard bound on the error.
            let bound = q.error_norm + q.norm * errors[r] + 1e-5;
            assert!((exact - coarse).abs() <= bound, "{exact} {coarse} {bound}");
        }
    }

    /// The margin rests on the rounding errors behaving like independent
    /// noise: over many rows and queries (random, and rows that are noisy
    /// copies of the query, as a returning resident's are) the real error
    /// stays well inside [`MARGIN_SIGMAS`] standard deviations.
    #[test]
    fn coarse_error_stays_far_inside_the_margin() {
        let mut rng = Lcg(11);
        let dim = 704;
        let queries: Vec<Vec<f32>> = (0..20).map(|_| rng.unit(dim)).collect();
        let mut rows: Vec<Vec<f32>> = (0..2000).map(|_| rng.unit(dim)).collect();
        for q in &queries {
            let noise = rng.unit(dim);
            let near: Vec<f32> = q.iter().zip(&noise).map(|(a, b)| a + 0.3 * b).collect();
            let n = near.iter().map(|x| x * x).sum::<f32>().sqrt();
            rows.push(near.iter().map(|x| x / n).collect());
        }
        let (codes, scales, errors) = encode(&rows, dim);
        let mut worst = 0.0f32;
        for qv in &queries {
            let q = CoarseQuery::new(qv);
            let mut dots = vec![0; rows.len()];
            Kernel::detect().dots(&codes, row_bytes(dim), &q, &mut dots);
            for (r, row) in rows.iter().enumerate() {
                let exact: f32 = row.iter().zip(qv).map(|(a, b)| a * b).sum();
                let sigma = (q.margin(errors[r]) - ROUNDING_SLACK) / MARGIN_SIGMAS;
                worst = worst.max((exact - q.score(dots[r], scales[r])).abs() / sigma);
            }
        }
        // 40k row-query pairs: a Gaussian's largest |z| would be about 4.3.
        assert!(worst < 5.5, "coarse error reached {worst} sigmas");
        assert!(worst > 1.0, "the margin is far too wide to filter: {worst}");
    }
}
