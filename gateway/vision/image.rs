//! Pixels: decoding photos safely, a borrowed RGB view with a row stride (as
//! GStreamer delivers frames), antialiased resampling, and packing pixels
//! into a model's input tensor.

use std::io::Read;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use crate::config::{Channels, Layout, PixelFormat};

/// Why a photo could not be used. Messages are for the person who gave it.
#[derive(Debug, thiserror::Error)]
pub enum PhotoError {
    #[error("{0}: cannot read: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: empty file")]
    Empty(String),
    #[error("{name}: file is {size} bytes, more than the limit of {limit}")]
    TooLarge { name: String, size: u64, limit: u64 },
    #[error("{0}: not an image (JPEG, PNG or WebP expected)")]
    NotAnImage(String),
    #[error("{name}: {width}x{height} pixels is more than the limit of {limit} pixels")]
    TooManyPixels {
        name: String,
        width: u32,
        height: u32,
        limit: u64,
    },
    #[error("{0}: truncated JPEG (the file ends before the image does); copy it again")]
    Truncated(String),
    #[error("{0}: corrupt image: {1}")]
    Corrupt(String, String),
    #[error(
        "{0}: has transparent pixels; save the photo without transparency (a face behind transparency cannot be checked)"
    )]
    Transparent(String),
}

impl PhotoError {
    /// A decoder's complaint on one line: some (the JPEG decoder's I/O
    /// errors) span several, which breaks one-line CLI errors and logs.
    fn corrupt(name: &str, detail: impl std::fmt::Display) -> Self {
        let detail = detail.to_string();
        PhotoError::Corrupt(
            name.to_owned(),
            detail.split_whitespace().collect::<Vec<_>>().join(" "),
        )
    }
}

/// Limits on what a photo may cost to decode.
#[derive(Debug, Clone, Copy)]
pub struct PhotoLimits {
    pub max_bytes: u64,
    pub max_pixels: u64,
}

/// The default pixel limit: 24 megapixels takes any phone photo at its
/// usual size (12 MP, or 24 MP 6000×4000 cameras) and keeps one decoded
/// photo at 72 MB of RGB.
pub const DEFAULT_MAX_PIXELS: u64 = 24_000_000;

impl Default for PhotoLimits {
    fn default() -> Self {
        Self {
            max_bytes: 20 * 1024 * 1024,
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

/// Photos decoded at once, process-wide. A decode is memory-bound (up to 3
/// bytes per pixel, plus a copy while turning it upright), and this box has
/// few cores: more at once would only add memory, not speed.
pub const MAX_CONCURRENT_DECODES: usize = 2;

/// A counting semaphore for blocking threads (decodes run on the blocking
/// pool, not on the async runtime).
struct DecodeGate {
    busy: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

static DECODES: DecodeGate = DecodeGate {
    busy: std::sync::Mutex::new(0),
    freed: std::sync::Condvar::new(),
};

struct DecodeSlot;

impl DecodeGate {
    fn enter(&'static self) -> DecodeSlot {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        while *busy >= MAX_CONCURRENT_DECODES {
            busy = self.freed.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        *busy += 1;
        DecodeSlot
    }
}

impl Drop for DecodeSlot {
    fn drop(&mut self) {
        let mut busy = DECODES.busy.lock().unwrap_or_else(|p| p.into_inner());
        *busy = busy.saturating_sub(1);
        DECODES.freed.notify_one();
    }
}

/// Reads and decodes a photo file. `name` in errors is the path.
pub fn load_photo(path: &Path, limits: PhotoLimits) -> Result<RgbImage, PhotoError> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| PhotoError::Io(name.clone(), e))?;
    let size = file
        .metadata()
        .map_err(|e| PhotoError::Io(name.clone(), e))?
        .len();
    if size > limits.max_bytes {
        return Err(PhotoError::TooLarge {
            name,
            size,
            limit: limits.max_bytes,
        });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(limits.max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| PhotoError::Io(name.clone(), e))?;
    decode_photo(&bytes, &name, limits)
}

/// Decodes photo bytes (JPEG, PNG or WebP) into RGB, refusing anything that would
/// silently give a wrong picture: truncation, transparency, decompression
/// bombs.
///
/// Memory is bounded: the size is read from the header and checked against
/// `limits.max_pixels` before anything is allocated; at most
/// [`MAX_CONCURRENT_DECODES`] photos are decoded at once (callers wait); and
/// PNGs (the only format here with 16 bits per channel) are decoded row by
/// row straight to 8-bit RGB, so a 16-bit RGBA PNG costs 3 bytes per pixel,
/// not 8 plus a converted copy.
pub fn decode_photo(bytes: &[u8], name: &str, limits: PhotoLimits) -> Result<RgbImage, PhotoError> {
    let name = name.to_owned();
    if bytes.is_empty() {
        return Err(PhotoError::Empty(name));
    }
    if bytes.len() as u64 > limits.max_bytes {
        return Err(PhotoError::TooLarge {
            name,
            size: bytes.len() as u64,
            limit: limits.max_bytes,
        });
    }
    let format = image::guess_format(bytes).map_err(|_| PhotoError::NotAnImage(name.clone()))?;
    if !matches!(
        format,
        image::ImageFormat::Jpeg | image::ImageFormat::Png | image::ImageFormat::WebP
    ) {
        return Err(PhotoError::NotAnImage(name));
    }
    if format == image::ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(PhotoError::Truncated(name));
    }
    let reader = ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| PhotoError::corrupt(&name, e))?;
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(PhotoError::TooManyPixels {
            name,
            width,
            height,
            limit: limits.max_pixels,
        });
    }
    let _slot = DECODES.enter();
    if format == image::ImageFormat::Png {
        return decode_png(bytes, name, limits);
    }
    let mut reader = ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut l = image::Limits::default();
    // JPEG and WebP decode to at most 4 bytes per pixel (CMYK, RGBA).
    l.max_alloc = Some(limits.max_pixels.saturating_mul(4).saturating_add(16 << 20));
    reader.limits(l);
    let corrupt = |e: image::ImageError| PhotoError::corrupt(&name, e);
    // Phones store portrait photos sideways with an EXIF orientation tag;
    // ignoring it hands the detector a face lying on its side.
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    if has_transparency(&img) {
        return Err(PhotoError::Transparent(name));
    }
    // Drop any alpha before turning, so the turn copies 3 bytes a pixel.
    if !matches!(img, DynamicImage::ImageRgb8(_)) {
        img = DynamicImage::ImageRgb8(img.into_rgb8());
    }
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}

/// A PNG, 8 bits per channel out whatever its depth, straight into RGB.
fn decode_png(bytes: &[u8], name: String, limits: PhotoLimits) -> Result<RgbImage, PhotoError> {
    let corrupt = |e: png::DecodingError| PhotoError::corrupt(&name, e);
    let mut decoder = png::Decoder::new_with_limits(
        std::io::Cursor::new(bytes),
        png::Limits {
            // Row buffers and metadata; the picture itself is ours (below).
            bytes: usize::try_from(limits.max_pixels.saturating_mul(4))
                .unwrap_or(usize::MAX)
                .max(64 << 20),
        },
    );
    // 16-bit channels to 8 (STRIP_16), palettes and low bit depths to
    // whole 8-bit samples, tRNS to an alpha channel (EXPAND).
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(corrupt)?;
    let (width, height) = (reader.info().width, reader.info().height);
    let orientation = reader
        .info()
        .exif_metadata
        .as_deref()
        .and_then(image::metadata::Orientation::from_exif_chunk)
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let (color, depth) = reader.output_color_type();
    if depth != png::BitDepth::Eight {
        return Err(PhotoError::Corrupt(
            name,
            format!("PNG of bit depth {depth:?} after conversion to 8 bits"),
        ));
    }
    let channels = color.samples();
    let w = width as usize;
    let mut rgb = vec![0u8; w * height as usize * 3];
    let to_rgb = |src: &[u8], dst: &mut [u8]| -> bool {
        // Returns whether every pixel of the row is opaque.
        let mut opaque = true;
        for (s, d) in src.chunks_exact(channels).zip(dst.chunks_exact_mut(3)) {
            match color {
                png::ColorType::Grayscale => d.fill(s[0]),
                png::ColorType::GrayscaleAlpha => {
                    d.fill(s[0]);
                    opaque &= s[1] == 255;
                }
                png::ColorType::Rgba => {
                    d.copy_from_slice(&s[..3]);
                    opaque &= s[3] == 255;
                }
                _ => d.copy_from_slice(&s[..3]),
            }
        }
        opaque
    };
    if reader.info().interlaced {
        // Adam7 rows come in seven passes; decode the frame whole (8 bits
        // per channel: at most 4 bytes a pixel) and convert it.
        let size = reader
            .output_buffer_size()
            .ok_or_else(|| PhotoError::Corrupt(name.clone(), "PNG too large to decode".into()))?;
        let mut buf = vec![0u8; size];
        let info = reader.next_frame(&mut buf).map_err(corrupt)?;
        for (y, dst) in rgb.chunks_exact_mut(w * 3).enumerate() {
            let src = &buf[y * info.line_size..y * info.line_size + w * channels];
            if !to_rgb(src, dst) {
                return Err(PhotoError::Transparent(name));
            }
        }
    } else {
        for dst in rgb.chunks_exact_mut(w * 3) {
            let row = reader
                .next_row()
                .map_err(corrupt)?
                .ok_or_else(|| PhotoError::Corrupt(name.clone(), "PNG ends early".into()))?;
            if !to_rgb(row.data(), dst) {
                return Err(PhotoError::Transparent(name));
            }
        }
    }
    let img = RgbImage::from_raw(width, height, rgb)
        .ok_or_else(|| PhotoError::Corrupt(name.clone(), "PNG size mismatch".into()))?;
    let mut img = DynamicImage::ImageRgb8(img);
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}

/// A JPEG ends with the EOI marker (possibly followed by padding); a file
/// cut short does not, and decoders fill the rest with grey without an error.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(64)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

fn has_transparency(img: &DynamicImage) -> bool {
    match img {
        DynamicImage::ImageLumaA8(i) => i.pixels().any(|p| p.0[1] < 255),
        DynamicImage::ImageRgba8(i) => i.pixels().any(|p| p.0[3] < 255),
        DynamicImage::ImageLumaA16(i) => i.pixels().any(|p| p.0[1] < u16::MAX),
        DynamicImage::ImageRgba16(i) => i.pixels().any(|p| p.0[3] < u16::MAX),
        DynamicImage::ImageRgba32F(i) => i.pixels().any(|p| p.0[3] < 1.0),
        _ => false,
    }
}

/// Borrowed packed RGB pixels with a row stride in bytes.
#[derive(Debug, Clone, Copy)]
pub struct RgbView<'a> {
    pub width: u32,
    pub height: u32,
    pub stride: usize,
    pub data: &'a [u8],
}

impl<'a> RgbView<'a> {
    /// A view over a frame; `None` when the buffer is too short for the size.
    pub fn new(width: u32, height: u32, stride: usize, data: &'a [u8]) -> Option<Self> {
        let needed = if height == 0 {
            0
        } else {
            stride * (height as usize - 1) + width as usize * 3
        };
        (stride >= width as usize * 3 && data.len() >= needed).then_some(Self {
            width,
            height,
            stride,
            data,
        })
    }

    pub fn from_image(img: &'a RgbImage) -> Self {
        Self {
            width: img.width(),
            height: img.height(),
            stride: img.width() as usize * 3,
            data: img.as_raw(),
        }
    }

    #[inline]
    pub fn row(&self, y: usize) -> &'a [u8] {
        let start = y * self.stride;
        &self.data[start..start + self.width as usize * 3]
    }

    /// The sub-rectangle `[x0, x1) × [y0, y1)`, clipped to the image.
    pub fn crop(&self, x0: u32, y0: u32, x1: u32, y1: u32) -> RgbView<'a> {
        let x1 = x1.min(self.width);
        let y1 = y1.min(self.height);
        let x0 = x0.min(x1);
        let y0 = y0.min(y1);
        let start = y0 as usize * self.stride + x0 as usize * 3;
        RgbView {
            width: x1 - x0,
            height: y1 - y0,
            stride: self.stride,
            data: if y1 > y0 { &self.data[start..] } else { &[] },
        }
    }

    pub fn to_image(&self) -> RgbImage {
        let mut out = Vec::with_capacity(self.width as usize * self.height as usize * 3);
        for y in 0..self.height as usize {
            out.extend_from_slice(self.row(y));
        }
        RgbImage::from_raw(self.width, self.height, out).unwrap_or_default()
    }
}

/// Per-output-sample source range and weights of a 1-D resampling.
struct Taps {
    start: Vec<usize>,
    len: Vec<usize>,
    weights: Vec<f32>,
    width: usize,
}

/// Triangle ("bilinear") filter widened by the scale factor when shrinking,
/// as Pillow does: no aliasing when faces are scaled down, plain bilinear
/// when they are scaled up.
fn taps(src: usize, dst: usize) -> Taps {
    let scale = src as f64 / dst as f64;
    let support = scale.max(1.0);
    let width = (support.ceil() as usize) * 2 + 1;
    let mut start = Vec::with_capacity(dst);
    let mut len = Vec::with_capacity(dst);
    let mut weights = vec![0f32; dst * width];
    for i in 0..dst {
        let center = (i as f64 + 0.5) * scale;
        let lo = ((center - support).floor().max(0.0)) as usize;
        let hi = ((center + support).ceil() as usize).min(src);
        let n = hi.saturating_sub(lo).min(width);
        let w = &mut weights[i * width..i * width + n];
        let mut sum = 0.0;
        for (k, wk) in w.iter_mut().enumerate() {
            let x = ((lo + k) as f64 + 0.5 - center) / support;
            let t = (1.0 - x.abs()).max(0.0);
            *wk = t as f32;
            sum += t;
        }
        if sum > 0.0 {
            for wk in w.iter_mut() {
                *wk = (*wk as f64 / sum) as f32;
            }
        } else if n > 0 {
            w[0] = 1.0;
        }
        start.push(lo);
        len.push(n);
    }
    Taps {
        start,
        len,
        weights,
        width,
    }
}

/// One horizontal pass over a row of vertical sums (`f32`, 3 per pixel):
/// each output's taps summed in tap order, the channels in three running
/// sums, rounded into `out` (`outputs × 3` bytes). With `mirror`, the row is
/// read right to left (pixel `i` is pixel `w − 1 − i`), which gives the pass
/// of the mirrored row without copying it.
fn horizontal_pass(t: &Taps, row: &[f32], out: &mut [u8], mirror: bool) {
    let last = (row.len() / 3).saturating_sub(1);
    for (x, o) in out.chunks_exact_mut(3).enumerate() {
        let (s, n) = (t.start[x], t.len[x]);
        let w = &t.weights[x * t.width..x * t.width + n];
        let (mut r, mut g, mut b) = (0f32, 0f32, 0f32);
        if mirror {
            for (k, wk) in w.iter().enumerate() {
                let i = (last - (s + k)) * 3;
                let p = &row[i..i + 3];
                r += wk * p[0];
                g += wk * p[1];
                b += wk * p[2];
            }
        } else {
            let px = &row[s * 3..(s + n) * 3];
            for (wk, p) in w.iter().zip(px.chunks_exact(3)) {
                r += wk * p[0];
                g += wk * p[1];
                b += wk * p[2];
            }
        }
        o[0] = round_to_u8(r);
        o[1] = round_to_u8(g);
        o[2] = round_to_u8(b);
    }
}

/// `v.round().clamp(0.0, 255.0) as u8`, inlined (`round` is a libm call
/// on baseline x86-64): for `c` in [0, 255], `c - trunc(c)` is exact, and
/// round-half-away-from-zero adds one when it is at least 0.5.
#[inline]
pub(crate) fn round_to_u8(v: f32) -> u8 {
    let c = v.clamp(0.0, 255.0);
    if c.is_nan() {
        return 0;
    }
    let t = c as u32;
    (t + u32::from(c - t as f32 >= 0.5)) as u8
}

/// Resamples an RGB view to `dst_w × dst_h` (packed RGB out).
pub fn resize(src: RgbView<'_>, dst_w: u32, dst_h: u32) -> RgbImage {
    resize_impl(src, dst_w, dst_h, false)
}

/// [`resize`] of the view mirrored left to right, byte for byte, without
/// making the mirror image first (the landmark-flip detector pass).
pub fn resize_mirrored(src: RgbView<'_>, dst_w: u32, dst_h: u32) -> RgbImage {
    resize_impl(src, dst_w, dst_h, true)
}

/// Writes `row` mirrored left to right (pixel order reversed) into `out`.
fn mirror_row(row: &[u8], out: &mut [u8]) {
    for (d, s) in out.chunks_exact_mut(3).zip(row.chunks_exact(3).rev()) {
        d.copy_from_slice(s);
    }
}

/// Source row `y`, mirrored into `line` when `mirror`.
#[inline]
fn source_row<'r, 'a: 'r>(
    src: &RgbView<'a>,
    y: usize,
    mirror: bool,
    line: &'r mut [u8],
) -> &'r [u8] {
    let row = src.row(y);
    if mirror {
        mirror_row(row, line);
        line
    } else {
        row
    }
}

fn resize_impl(src: RgbView<'_>, dst_w: u32, dst_h: u32, mirror: bool) -> RgbImage {
    let (sw, sh) = (src.width as usize, src.height as usize);
    let (dw, dh) = (dst_w.max(1) as usize, dst_h.max(1) as usize);
    if sw == 0 || sh == 0 {
        return RgbImage::new(dw as u32, dh as u32);
    }
    if sw == dw && sh == dh {
        let mut line = vec![0u8; if mirror { sw * 3 } else { 0 }];
        let mut out = Vec::with_capacity(sw * sh * 3);
        for y in 0..sh {
            out.extend_from_slice(source_row(&src, y, mirror, &mut line));
        }
        return RgbImage::from_raw(dw as u32, dh as u32, out).unwrap_or_default();
    }
    let tx = taps(sw, dw);
    let ty = taps(sh, dh);
    // Vertical pass first, into one row of sums per output row: it runs over
    // whole source rows (a plain multiply-add the compiler vectorises), and
    // the scalar horizontal pass then runs on `dh` rows instead of `sh`
    // (a 1200-row photo shrunk to 640 rows: half the horizontal work).
    let mut sums = vec![0f32; sw * 3];
    let mut out = vec![0u8; dw * dh * 3];
    for y in 0..dh {
        let (s, n) = (ty.start[y], ty.len[y]);
        let w = &ty.weights[y * ty.width..y * ty.width + n];
        sums.fill(0.0);
        for (k, wk) in w.iter().enumerate() {
            for (a, v) in sums.iter_mut().zip(src.row(s + k)) {
                *a += wk * *v as f32;
            }
        }
        horizontal_pass(&tx, &sums, &mut out[y * dw * 3..(y + 1) * dw * 3], mirror);
    }
    RgbImage::from_raw(dw as u32, dh as u32, out).unwrap_or_default()
}

/// Writes an RGB view into a model input of `tensor_w × tensor_h` (the image
/// at the top left, the rest black), converting channel order, layout and
/// normalisation as the model wants. `out` must hold `3·tensor_w·tensor_h`.
pub fn pack_tensor(
    src: RgbView<'_>,
    fmt: &PixelFormat,
    tensor_w: usize,
    tensor_h: usize,
    out: &mut [f32],
) {
    pack_tensor_impl(src, fmt, tensor_w, tensor_h, out, false);
}

/// [`pack_tensor`] of the view mirrored left to right (same values as
/// packing the mirror image).
pub fn pack_tensor_mirrored(
    src: RgbView<'_>,
    fmt: &PixelFormat,
    tensor_w: usize,
    tensor_h: usize,
    out: &mut [f32],
) {
    pack_tensor_impl(src, fmt, tensor_w, tensor_h, out, true);
}

fn pack_tensor_impl(
    src: RgbView<'_>,
    fmt: &PixelFormat,
    tensor_w: usize,
    tensor_h: usize,
    out: &mut [f32],
    mirror: bool,
) {
    let plane = tensor_w * tensor_h;
    debug_assert!(out.len() >= plane * 3);
    let order: [usize; 3] = match fmt.channels {
        Channels::Rgb => [0, 1, 2],
        Channels::Bgr => [2, 1, 0],
    };
    let scale = [1.0 / fmt.std[0], 1.0 / fmt.std[1], 1.0 / fmt.std[2]];
    let bias = [
        -fmt.mean[0] * scale[0],
        -fmt.mean[1] * scale[1],
        -fmt.mean[2] * scale[2],
    ];
    let w = (src.width as usize).min(tensor_w);
    let h = (src.height as usize).min(tensor_h);
    // Padding (right of the image, below it) is black (0) in pixel units,
    // normalised like any other pixel; the image's pixels are written below,
    // so each value is written once.
    match fmt.layout {
        Layout::Nchw => {
            for (c, v) in bias.iter().enumerate() {
                let p = &mut out[c * plane..(c + 1) * plane];
                for y in 0..h {
                    p[y * tensor_w + w..(y + 1) * tensor_w].fill(*v);
                }
                p[h * tensor_w..].fill(*v);
            }
        }
        Layout::Nhwc => {
            for y in 0..tensor_h {
                let x0 = if y < h { w } else { 0 };
                for px in out[(y * tensor_w + x0) * 3..(y + 1) * tensor_w * 3].chunks_exact_mut(3) {
                    px.copy_from_slice(&bias);
                }
            }
        }
    }
    let mut line = vec![0u8; if mirror { src.width as usize * 3 } else { 0 }];
    for y in 0..h {
        let row = &source_row(&src, y, mirror, &mut line)[..w * 3];
        match fmt.layout {
            Layout::Nchw => {
                for (c, &sc) in order.iter().enumerate() {
                    let dst = &mut out[c * plane + y * tensor_w..c * plane + y * tensor_w + w];
                    for (d, px) in dst.iter_mut().zip(row.chunks_exact(3)) {
                        *d = px[sc] as f32 * scale[c] + bias[c];
                    }
                }
            }
            Layout::Nhwc => {
                let dst = &mut out[y * tensor_w * 3..y * tensor_w * 3 + w * 3];
                for (d, px) in dst.chunks_exact_mut(3).zip(row.chunks_exact(3)) {
                    for c in 0..3 {
                        d[c] = px[order[c]] as f32 * scale[c] + bias[c];
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_keeps_a_flat_colour_and_shrinks_without_overshoot() {
        let img = RgbImage::from_pixel(100, 60, image::Rgb([10, 200, 30]));
        for (w, h) in [(33, 20), (250, 150), (100, 60)] {
            let out = resize(RgbView::from_image(&img), w, h);
            assert_eq!(out.dimensions(), (w, h));
            assert!(out.pixels().all(|p| p.0 == [10, 200, 30]), "{w}x{h}");
        }
    }

    #[test]
    fn shrinking_averages_fine_detail_instead_of_aliasing() {
        // One-pixel stripes shrunk 4x must come out mid-grey, not stripes.
        let img = RgbImage::from_fn(64, 8, |x, _| {
            if x % 2 == 0 {
                image::Rgb([0; 3])
            } else {
                image::Rgb([255; 3])
            }
        });
        let out = resize(RgbView::from_image(&img), 16, 2);
        for p in out.pixels() {
            assert!((100..=155).contains(&p.0[0]), "{:?}", p.0);
        }
    }

    #[test]
    fn pack_converts_order_layout_and_normalisation() {
        let img = RgbImage::from_pixel(2, 1, image::Rgb([10, 20, 30]));
        let fmt = PixelFormat {
            channels: Channels::Bgr,
            layout: Layout::Nchw,
            mean: [127.0; 3],
            std: [128.0; 3],
        };
        let mut out = vec![0f32; 3 * 3 * 2];
        pack_tensor(RgbView::from_image(&img), &fmt, 3, 2, &mut out);
        // channel 0 is blue
        assert!((out[0] - (30.0 - 127.0) / 128.0).abs() < 1e-6);
        // padding column is black
        assert!((out[2] - (0.0 - 127.0) / 128.0).abs() < 1e-6);
        let nhwc = PixelFormat {
            layout: Layout::Nhwc,
            channels: Channels::Rgb,
            ..fmt
        };
        pack_tensor(RgbView::from_image(&img), &nhwc, 3, 2, &mut out);
        assert!((out[0] - (10.0 - 127.0) / 128.0).abs() < 1e-6);
        assert!((out[1] - (20.0 - 127.0) / 128.0).abs() < 1e-6);
    }

    #[test]
    fn views_with_stride_crop_correctly() {
        let data: Vec<u8> = (0..(4 * 8)).map(|v| v as u8).collect(); // 2 rows, stride 16? no: 4 rows of 8
        let v = RgbView::new(2, 4, 8, &data).unwrap();
        assert_eq!(v.row(1), &data[8..14]);
        let c = v.crop(1, 1, 2, 3);
        assert_eq!((c.width, c.height), (1, 2));
        assert_eq!(c.row(0), &data[11..14]);
        assert!(RgbView::new(3, 4, 8, &data).is_none());
    }

    fn png_bytes(img: DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn pngs_of_every_depth_and_colour_come_out_as_8_bit_rgb() {
        let l = PhotoLimits::default();
        let rgba16 = image::ImageBuffer::from_fn(5, 3, |x, _| {
            image::Rgba([x as u16 * 0x1000 + 0x80, 0x4000, 0xFFFF, u16::MAX])
        });
        let out = decode_photo(&png_bytes(DynamicImage::ImageRgba16(rgba16)), "a", l).unwrap();
        assert_eq!(out.dimensions(), (5, 3));
        assert_eq!(out.get_pixel(2, 1).0, [0x20, 0x40, 0xFF]);
        let grey16 = image::ImageBuffer::from_pixel(4, 4, image::Luma([0x8000u16]));
        let out = decode_photo(&png_bytes(DynamicImage::ImageLuma16(grey16)), "a", l).unwrap();
        assert_eq!(out.get_pixel(3, 3).0, [0x80; 3]);
        let rgb8 = RgbImage::from_pixel(3, 2, image::Rgb([1, 2, 3]));
        let out = decode_photo(&png_bytes(DynamicImage::ImageRgb8(rgb8.clone())), "a", l).unwrap();
        assert_eq!(out, rgb8);
        // Transparency is refused at any depth.
        let clear = image::ImageBuffer::from_pixel(4, 4, image::Rgba([0u16, 0, 0, 0x7FFF]));
        assert!(matches!(
            decode_photo(&png_bytes(DynamicImage::ImageRgba16(clear)), "a", l),
            Err(PhotoError::Transparent(_))
        ));
        let clear = image::ImageBuffer::from_pixel(4, 4, image::LumaA([9u8, 200]));
        assert!(matches!(
            decode_photo(&png_bytes(DynamicImage::ImageLumaA8(clear)), "a", l),
            Err(PhotoError::Transparent(_))
        ));
        // The pixel limit is checked from the header.
        let small = PhotoLimits {
            max_pixels: 14,
            ..l
        };
        assert!(decode_photo(&png_bytes(DynamicImage::ImageRgb8(rgb8)), "a", small).is_ok());
        let grey = image::ImageBuffer::from_pixel(4, 4, image::Luma([0u8]));
        assert!(matches!(
            decode_photo(&png_bytes(DynamicImage::ImageLuma8(grey)), "a", small),
            Err(PhotoError::TooManyPixels { .. })
        ));
    }

    #[test]
    fn bad_bytes_get_clear_errors() {
        let l = PhotoLimits::default();
        assert!(matches!(
            decode_photo(b"", "a", l),
            Err(PhotoError::Empty(_))
        ));
        assert!(matches!(
            decode_photo(b"hello world, not an image", "a", l),
            Err(PhotoError::NotAnImage(_))
        ));
        let mut jpeg = Vec::new();
        RgbImage::from_pixel(64, 64, image::Rgb([100, 50, 20]))
            .write_to(
                &mut std::io::Cursor::new(&mut jpeg),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        assert!(decode_photo(&jpeg, "a", l).is_ok());
        let cut = &jpeg[..jpeg.len() / 2];
        assert!(matches!(
            decode_photo(cut, "a", l),
            Err(PhotoError::Truncated(_))
        ));
        let small = PhotoLimits {
            max_pixels: 100,
            ..l
        };
        assert!(matches!(
            decode_photo(&jpeg, "a", small),
            Err(PhotoError::TooManyPixels { .. })
        ));
    }

    /// A noisy image (a fixed-seed xorshift), so that any change in the
    /// order of the arithmetic shows in the rounding somewhere.
    fn noise(w: u32, h: u32, seed: u64) -> RgbImage {
        let mut x = seed;
        RgbImage::from_fn(w, h, |_, _| {
            let mut px = [0u8; 3];
            for p in &mut px {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *p = (x >> 24) as u8;
            }
            image::Rgb(px)
        })
    }

    fn mirrored(img: &RgbImage) -> RgbImage {
        let w = img.width();
        RgbImage::from_fn(w, img.height(), |x, y| *img.get_pixel(w - 1 - x, y))
    }

    #[test]
    fn mirrored_resize_and_packing_equal_those_of_the_mirror_image_byte_for_byte() {
        let fmt = PixelFormat {
            channels: Channels::Bgr,
            layout: Layout::Nchw,
            mean: [127.0, 120.0, 110.0],
            std: [128.0, 64.0, 32.0],
        };
        for (w, h, dw, dh, seed) in [
            (250, 250, 250, 250, 1),
            (1200, 800, 640, 427, 2),
            (970, 2204, 282, 640, 3),
            (101, 77, 333, 254, 4),
        ] {
            let img = noise(w, h, seed);
            let m = mirrored(&img);
            let view = RgbView::from_image(&img);
            assert_eq!(
                resize_mirrored(view, dw, dh),
                resize(RgbView::from_image(&m), dw, dh),
                "{w}x{h} -> {dw}x{dh}"
            );
            for layout in [Layout::Nchw, Layout::Nhwc] {
                let fmt = PixelFormat {
                    layout,
                    ..fmt.clone()
                };
                let (tw, th) = (
                    (w as usize).div_ceil(32) * 32,
                    (h as usize).div_ceil(32) * 32,
                );
                let mut a = vec![0f32; 3 * tw * th];
                let mut b = vec![1f32; 3 * tw * th];
                pack_tensor_mirrored(view, &fmt, tw, th, &mut a);
                pack_tensor(RgbView::from_image(&m), &fmt, tw, th, &mut b);
                assert!(a == b, "{w}x{h} {layout:?}");
                // The last value (channel 2 in both layouts) is padding
                // (every size here is padded): black, normalised.
                let black = -fmt.mean[2] * (1.0 / fmt.std[2]);
                assert_eq!(a[a.len() - 1], black, "{w}x{h} {layout:?} padding");
            }
        }
    }

    /// `resize` as it was before the tap-major pass and the row ring (one
    /// sum per output, a full intermediate, horizontal pass first): the
    /// reference the vertical-first version is checked against.
    fn resize_before(src: RgbView<'_>, dst_w: u32, dst_h: u32) -> RgbImage {
        let (sw, sh) = (src.width as usize, src.height as usize);
        let (dw, dh) = (dst_w.max(1) as usize, dst_h.max(1) as usize);
        if sw == 0 || sh == 0 {
            return RgbImage::new(dw as u32, dh as u32);
        }
        if sw == dw && sh == dh {
            return src.to_image();
        }
        let tx = taps(sw, dw);
        let ty = taps(sh, dh);
        // Horizontal pass, only over the source rows the vertical pass reads.
        let mut tmp = vec![0f32; sh * dw * 3];
        for y in 0..sh {
            let row = src.row(y);
            let out = &mut tmp[y * dw * 3..(y + 1) * dw * 3];
            for x in 0..dw {
                let (s, n) = (tx.start[x], tx.len[x]);
                let w = &tx.weights[x * tx.width..x * tx.width + n];
                let (mut r, mut g, mut b) = (0f32, 0f32, 0f32);
                for (k, wk) in w.iter().enumerate() {
                    let p = &row[(s + k) * 3..(s + k) * 3 + 3];
                    r += wk * p[0] as f32;
                    g += wk * p[1] as f32;
                    b += wk * p[2] as f32;
                }
                out[x * 3] = r;
                out[x * 3 + 1] = g;
                out[x * 3 + 2] = b;
            }
        }
        let mut out = vec![0u8; dw * dh * 3];
        for y in 0..dh {
            let (s, n) = (ty.start[y], ty.len[y]);
            let w = &ty.weights[y * ty.width..y * ty.width + n];
            let dst = &mut out[y * dw * 3..(y + 1) * dw * 3];
            let mut acc = vec![0f32; dw * 3];
            for (k, wk) in w.iter().enumerate() {
                let row = &tmp[(s + k) * dw * 3..(s + k + 1) * dw * 3];
                for (a, v) in acc.iter_mut().zip(row) {
                    *a += wk * v;
                }
            }
            for (d, a) in dst.iter_mut().zip(&acc) {
                *d = a.round().clamp(0.0, 255.0) as u8;
            }
        }
        RgbImage::from_raw(dw as u32, dh as u32, out).unwrap_or_default()
    }

    /// The vertical-first pass sums the same products in another order:
    /// the same filter, so a byte differs only where the exact value is
    /// within float rounding of a half, by one, and rarely.
    #[test]
    fn resize_vertical_first_matches_the_horizontal_first_version() {
        for (w, h, dw, dh, seed) in [
            (1200, 800, 640, 427, 5),
            (970, 2204, 282, 640, 6),
            (250, 250, 112, 112, 7),
            (101, 77, 333, 254, 8),
            (640, 480, 641, 479, 9),
            (3, 2, 1, 1, 10),
            (1, 5, 7, 2, 11),
        ] {
            let img = noise(w, h, seed);
            let v = RgbView::from_image(&img);
            let (a, b) = (resize(v, dw, dh), resize_before(v, dw, dh));
            assert_eq!(a.dimensions(), b.dimensions());
            let off: Vec<i16> = a
                .as_raw()
                .iter()
                .zip(b.as_raw())
                .map(|(x, y)| *x as i16 - *y as i16)
                .filter(|d| *d != 0)
                .collect();
            assert!(
                off.iter().all(|d| d.abs() == 1) && off.len() * 1000 <= a.as_raw().len(),
                "{w}x{h} -> {dw}x{dh}: {} of {} bytes differ ({:?}...)",
                off.len(),
                a.as_raw().len(),
                &off[..off.len().min(8)]
            );
        }
        // Extremes of the rounding: values near .5 and outside [0, 255].
        for v in [
            -3.0f32, -0.5, -0.0, 0.49999997, 0.5, 1.5, 2.5, 254.49998, 254.5, 255.0, 300.0,
        ] {
            assert_eq!(round_to_u8(v), v.round().clamp(0.0, 255.0) as u8, "{v}");
        }
    }
}
