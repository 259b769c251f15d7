//! Accuracy on a labelled folder `DIR/<identity>/*.jpg`, with the protocol
//! the reference pipeline uses, so figures are comparable:
//!
//! - *acquisition*: the largest face of each photo; if none, one retry with
//!   a 50% black border; still none = failure to acquire.
//! - *verification*: all pairs of acquired photos; TAR at FAR 1e-2 and 1e-3.
//! - *open-set gate*: identities sorted by name; even-indexed ones are
//!   enrolled from their first acquired photo (file names sorted
//!   numerically), odd-indexed ones are strangers. Probes are the other
//!   photos of enrolled identities and all photos of strangers. DIR at FPIR
//!   1% = share of enrolled probes whose best match is the right identity
//!   above the threshold at which 1% of stranger probes are accepted.
//!
//! Halves (`--split a|b`): identities are ranked by [`split_key`] of their
//! name (FNV-1a 64 of the UTF-8 bytes, mixed by MurmurHash3's `fmix64`; ties
//! by name); the first `ceil(n/2)` form half `a`, the rest half `b`, and the
//! protocol above runs on that half alone. `reference_eval.py --split` uses
//! the same rule, so tuning on one half and reporting on the other compares
//! the same people in both pipelines.
//!
//! Failures to acquire are reported by cause ([`FailCause`]): a face the
//! detector does not find at the image's own scale but does find on a 2×
//! enlarged copy is `too_small_for_detector` (the detector's input scaling
//! is the cause); one found at neither scale is `no_face`.
//!
//! Thresholds: for a false-accept rate `r` over `n` negative scores sorted
//! descending, the threshold is the negative score at index `floor(r·n)`, and
//! a score is accepted when it is strictly above it (so at most `r·n`
//! negatives are accepted).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::vision::embed::cosine;
use crate::vision::image::{PhotoError, PhotoLimits, RgbView, load_photo};
use crate::vision::{FaceEngine, VisionError};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("dataset {0}: {1}")]
    Dataset(PathBuf, String),
    #[error(transparent)]
    Photo(#[from] PhotoError),
    #[error(transparent)]
    Vision(#[from] VisionError),
}

/// One half of the identities: tune on one, report on the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    A,
    B,
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "a" | "A" => Ok(Split::A),
            "b" | "B" => Ok(Split::B),
            _ => Err(format!("split must be a or b, not {s:?}")),
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Split::A => "a",
            Split::B => "b",
        })
    }
}

/// The rank of an identity in the split: `fmix64(FNV-1a-64(name))`. Spelled
/// out so the Python reference computes the same (`split_key` there).
pub fn split_key(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The samples of one half of the identities (see the module doc).
pub fn select_half(samples: Vec<Sample>, half: Split) -> Vec<Sample> {
    let mut ids: Vec<&str> = samples.iter().map(|s| s.identity.as_str()).collect();
    ids.dedup();
    let mut ranked: Vec<(u64, &str)> = ids.iter().map(|n| (split_key(n), *n)).collect();
    ranked.sort();
    let k = ranked.len().div_ceil(2);
    let chosen: Vec<String> = match half {
        Split::A => &ranked[..k],
        Split::B => &ranked[k..],
    }
    .iter()
    .map(|(_, n)| n.to_string())
    .collect();
    samples
        .into_iter()
        .filter(|s| chosen.contains(&s.identity))
        .collect()
}

/// One labelled photo of the dataset.
#[derive(Debug, Clone)]
pub struct Sample {
    pub identity: String,
    pub path: PathBuf,
}

/// Lists `DIR/<identity>/*.{jpg,jpeg,png}`: identities by name, photos by
/// the number in their file name (2.jpg before 10.jpg), then by name.
pub fn list_dataset(dir: &Path) -> Result<Vec<Sample>, EvalError> {
    let read = |p: &Path| {
        std::fs::read_dir(p)
            .map_err(|e| EvalError::Dataset(dir.to_owned(), format!("{}: {e}", p.display())))
    };
    let mut ids: Vec<(String, PathBuf)> = read(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    ids.sort();
    let mut out = Vec::new();
    for (id, p) in ids {
        let mut photos: Vec<PathBuf> = read(&p)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|f| {
                f.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                    matches!(x.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png")
                })
            })
            .collect();
        photos.sort_by_key(|f| {
            let stem = f
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            (stem.parse::<u64>().unwrap_or(u64::MAX), stem)
        });
        out.extend(photos.into_iter().map(|path| Sample {
            identity: id.clone(),
            path,
        }));
    }
    if out.is_empty() {
        return Err(EvalError::Dataset(
            dir.to_owned(),
            "no photos found (expected DIR/<identity>/*.jpg)".into(),
        ));
    }
    Ok(out)
}

/// Why a photo gave no face.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailCause {
    /// Not found at the image's scale (nor with the border retry), but found
    /// on a 2× enlarged copy: the face is too small for the detector's input.
    TooSmallForDetector,
    /// Not found at either scale.
    NoFace,
}

/// The largest face of one photo, embedded.
#[derive(Debug, Clone)]
pub struct Acquired {
    pub embedding: Vec<f32>,
    /// Found only on the bordered canvas.
    pub retried: bool,
    /// Shorter side of the face box, image pixels.
    pub size_px: f32,
}

/// The embedding of one photo's largest face, if any.
pub fn acquire(engine: &mut FaceEngine, path: &Path) -> Result<Option<Vec<f32>>, EvalError> {
    let img = load_photo(path, PhotoLimits::default())?;
    Ok(acquire_image(engine, &img)?.map(|a| a.embedding))
}

/// The largest face of a photo (detection with the border retry, as
/// enrolment and identify do), embedded.
pub fn acquire_image(
    engine: &mut FaceEngine,
    img: &image::RgbImage,
) -> Result<Option<Acquired>, EvalError> {
    let view = RgbView::from_image(img);
    let (dets, retried) = engine.detect_with_border_retried(view)?;
    let Some(best) = dets.iter().max_by(|a, b| a.area().total_cmp(&b.area())) else {
        return Ok(None);
    };
    Ok(Some(Acquired {
        embedding: engine.embed(view, best)?,
        retried,
        size_px: best.size(),
    }))
}

/// Diagnoses a failure: does the detector find a face on a 2× copy?
fn fail_cause(engine: &mut FaceEngine, img: &image::RgbImage) -> Result<FailCause, EvalError> {
    let found = !engine
        .detector()
        .detect_at(RgbView::from_image(img), 2.0)?
        .is_empty();
    Ok(if found {
        FailCause::TooSmallForDetector
    } else {
        FailCause::NoFace
    })
}

/// The threshold at which at most `rate` of `negatives` are accepted
/// (accepted = strictly above). `negatives` need not be sorted.
pub fn threshold_at(negatives: &[f32], rate: f64) -> f32 {
    if negatives.is_empty() {
        return f32::NEG_INFINITY;
    }
    let mut s = negatives.to_vec();
    s.sort_by(|a, b| b.total_cmp(a));
    let idx = ((rate * s.len() as f64).floor() as usize).min(s.len() - 1);
    s[idx]
}

fn share_above(scores: &[f32], threshold: f32) -> f64 {
    if scores.is_empty() {
        return 0.0;
    }
    scores.iter().filter(|s| **s > threshold).count() as f64 / scores.len() as f64
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub dataset: String,
    pub model: String,
    pub identities: usize,
    /// `a` or `b` when one half of the identities was evaluated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    pub images: usize,
    pub failed_to_acquire: usize,
    /// Failures to acquire by cause.
    pub failed_by_cause: BTreeMap<FailCause, usize>,
    /// The photos that failed (`identity/file`) and why.
    pub failed: Vec<(String, FailCause)>,
    /// Acquired only with the border retry.
    pub retried: usize,
    /// Acquired faces smaller than `vision.quality.min_face_px`: the eval
    /// uses them (as the reference does), enrolment and identify refuse them.
    pub below_min_face_px: usize,
    pub genuine_pairs: usize,
    pub impostor_pairs: usize,
    #[serde(rename = "tar_at_far_1e-2")]
    pub tar_at_far_1e2: f64,
    #[serde(rename = "tar_at_far_1e-3")]
    pub tar_at_far_1e3: f64,
    #[serde(rename = "threshold_far_1e-3")]
    pub threshold_far_1e3: f32,
    pub enrolled: usize,
    pub enrolled_probes: usize,
    pub stranger_probes: usize,
    #[serde(rename = "dir_at_fpir_1e-2")]
    pub dir_at_fpir_1e2: f64,
    #[serde(rename = "threshold_fpir_1e-2")]
    pub threshold_fpir_1e2: f32,
    /// Detect + align + embed, wall time over the photos, milliseconds
    /// (decoding excluded); with several workers, the inverse of throughput.
    pub ms_per_image: f64,
    /// Photos per second through detect + align + embed (decoding excluded).
    pub images_per_s: f64,
    /// CPU time of the whole process (every engine's thread) during
    /// detect + align + embed, per photo, milliseconds: the work a photo
    /// costs, less sensitive than wall time to other load on the box.
    pub cpu_ms_per_image: f64,
    /// Face engines that shared the work (`vision.workers`).
    pub workers: usize,
}

/// Scores already-embedded samples (`None` = failed to acquire).
pub fn score(samples: &[Sample], embeddings: &[Option<Vec<f32>>]) -> EvalReport {
    let acquired: Vec<(&str, &[f32], usize)> = samples
        .iter()
        .zip(embeddings)
        .enumerate()
        .filter_map(|(i, (s, e))| e.as_deref().map(|e| (s.identity.as_str(), e, i)))
        .collect();
    let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
    for i in 0..acquired.len() {
        for j in i + 1..acquired.len() {
            let s = cosine(acquired[i].1, acquired[j].1);
            if acquired[i].0 == acquired[j].0 {
                genuine.push(s);
            } else {
                impostor.push(s);
            }
        }
    }
    let t2 = threshold_at(&impostor, 1e-2);
    let t3 = threshold_at(&impostor, 1e-3);

    let mut identities: Vec<&str> = samples.iter().map(|s| s.identity.as_str()).collect();
    identities.dedup();
    let mut gallery: Vec<(&str, &[f32], usize)> = Vec::new();
    for (k, id) in identities.iter().enumerate() {
        if k % 2 == 0
            && let Some(first) = acquired.iter().find(|a| a.0 == *id)
        {
            gallery.push(*first);
        }
    }
    let enrolled: Vec<&str> = gallery.iter().map(|g| g.0).collect();
    let (mut known, mut strangers) = (Vec::new(), Vec::new());
    for a in &acquired {
        if gallery.iter().any(|g| g.2 == a.2) {
            continue;
        }
        let best = gallery
            .iter()
            .map(|g| (g.0, cosine(g.1, a.1)))
            .max_by(|x, y| x.1.total_cmp(&y.1));
        let Some((who, s)) = best else { continue };
        if enrolled.contains(&a.0) {
            known.push((who == a.0, s));
        } else {
            strangers.push(s);
        }
    }
    let tf = threshold_at(&strangers, 1e-2);
    let dir = if known.is_empty() {
        0.0
    } else {
        known.iter().filter(|(ok, s)| *ok && *s > tf).count() as f64 / known.len() as f64
    };
    EvalReport {
        dataset: String::new(),
        model: String::new(),
        identities: identities.len(),
        split: None,
        images: samples.len(),
        failed_to_acquire: samples.len() - acquired.len(),
        failed_by_cause: BTreeMap::new(),
        failed: Vec::new(),
        retried: 0,
        below_min_face_px: 0,
        genuine_pairs: genuine.len(),
        impostor_pairs: impostor.len(),
        tar_at_far_1e2: share_above(&genuine, t2),
        tar_at_far_1e3: share_above(&genuine, t3),
        threshold_far_1e3: t3,
        enrolled: gallery.len(),
        enrolled_probes: known.len(),
        stranger_probes: strangers.len(),
        dir_at_fpir_1e2: dir,
        threshold_fpir_1e2: tf,
        ms_per_image: 0.0,
        images_per_s: 0.0,
        cpu_ms_per_image: 0.0,
        workers: 1,
    }
}

/// Runs the whole protocol over a dataset folder, or over one half of its
/// identities, on one engine.
pub fn run(
    engine: &mut FaceEngine,
    dir: &Path,
    split: Option<Split>,
) -> Result<EvalReport, EvalError> {
    run_on(std::slice::from_mut(engine), dir, split)
}

/// Photos decoded ahead of the timed work, at most (per worker), and at
/// most this many bytes of RGB held at once.
const AHEAD_PER_WORKER: usize = 16;
const AHEAD_BYTES: usize = 256 << 20;

/// [`run`] with the photos spread over several engines, one thread each
/// (`FaceEngine::pool`). Every photo's outcome is the one a single engine
/// gives (each photo is handled whole by one engine), so the figures do not
/// depend on the number of engines; only the time does.
///
/// Timing: photos are decoded in groups, untimed; the wall time of
/// detect + align + embed over each group, all engines at work, is summed.
/// `ms_per_image` is that time over the number of photos: with one engine
/// the mean time per photo, with several the inverse of the throughput.
pub fn run_on(
    engines: &mut [FaceEngine],
    dir: &Path,
    split: Option<Split>,
) -> Result<EvalReport, EvalError> {
    if engines.is_empty() {
        return Err(EvalError::Dataset(
            dir.to_owned(),
            "no face engine to run the eval on (vision.workers)".into(),
        ));
    }
    let mut samples = list_dataset(dir)?;
    if let Some(half) = split {
        samples = select_half(samples, half);
    }
    let workers = engines.len();
    let (mut elapsed, mut cpu) = (0.0, 0.0);
    let mut outcomes: Vec<Option<Acquired>> = Vec::with_capacity(samples.len());
    let mut next = 0;
    while next < samples.len() {
        // Decode a group (untimed, as the reference does not time decoding).
        let mut images: Vec<image::RgbImage> = Vec::new();
        let mut bytes = 0;
        while next < samples.len()
            && images.len() < AHEAD_PER_WORKER * workers
            && bytes < AHEAD_BYTES
        {
            let end = (next + workers).min(samples.len());
            let decoded = parallel_map(workers, &samples[next..end], |_, s| {
                load_photo(&s.path, PhotoLimits::default()).map_err(EvalError::from)
            })?;
            bytes += decoded.iter().map(|i| i.as_raw().len()).sum::<usize>();
            images.extend(decoded);
            next = end;
        }
        let start = Instant::now();
        let cpu_start = process_cpu_ms();
        let mut slots: Vec<&mut FaceEngine> = engines.iter_mut().collect();
        let got = parallel_map_with(&mut slots, &images, |engine, img| {
            acquire_image(engine, img)
        })?;
        elapsed += start.elapsed().as_secs_f64() * 1000.0;
        cpu += process_cpu_ms() - cpu_start;
        outcomes.extend(got);
    }
    // Diagnose failures (untimed; rare).
    let mut causes: Vec<Option<FailCause>> = vec![None; samples.len()];
    for (i, o) in outcomes.iter().enumerate() {
        if o.is_none() {
            let img = load_photo(&samples[i].path, PhotoLimits::default())?;
            causes[i] = Some(fail_cause(&mut engines[0], &img)?);
        }
    }
    let embeddings: Vec<Option<Vec<f32>>> = outcomes
        .iter()
        .map(|o| o.as_ref().map(|a| a.embedding.clone()))
        .collect();
    let mut report = score(&samples, &embeddings);
    let min_px = engines[0].min_face_px() as f32;
    for ((s, o), cause) in samples.iter().zip(&outcomes).zip(&causes) {
        match (o, cause) {
            (Some(a), _) => {
                report.retried += usize::from(a.retried);
                report.below_min_face_px += usize::from(a.size_px < min_px);
            }
            (None, Some(cause)) => {
                *report.failed_by_cause.entry(*cause).or_default() += 1;
                let file = s.path.file_name().unwrap_or_default().to_string_lossy();
                report
                    .failed
                    .push((format!("{}/{file}", s.identity), *cause));
            }
            (None, None) => {}
        }
    }
    report.split = split.map(|h| h.to_string());
    report.workers = workers;
    report.ms_per_image = elapsed / samples.len().max(1) as f64;
    report.cpu_ms_per_image = cpu / samples.len().max(1) as f64;
    report.images_per_s = if elapsed > 0.0 {
        samples.len() as f64 * 1000.0 / elapsed
    } else {
        0.0
    };
    report.dataset = dir.display().to_string();
    report.model = engines[0].model_id().to_owned();
    Ok(report)
}

/// CPU time used so far by this process, all threads, milliseconds.
fn process_cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill; the clock id is a constant.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

/// `f` over `items` on `threads` scoped threads; results in input order,
/// the first error (in input order) wins.
fn parallel_map<T: Sync, R: Send>(
    threads: usize,
    items: &[T],
    f: impl Fn(usize, &T) -> Result<R, EvalError> + Sync,
) -> Result<Vec<R>, EvalError> {
    let mut units: Vec<usize> = (0..threads.max(1)).collect();
    let mut slots: Vec<&mut usize> = units.iter_mut().collect();
    parallel_map_with(&mut slots, items, |w, item| f(*w, item))
}

/// `f(worker, item)` over `items`, each worker (an engine) on its own scoped
/// thread taking the next item as it is free; results in input order.
fn parallel_map_with<W: Send, T: Sync, R: Send>(
    workers: &mut [&mut W],
    items: &[T],
    f: impl Fn(&mut W, &T) -> Result<R, EvalError> + Sync,
) -> Result<Vec<R>, EvalError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    if workers.len() <= 1 || items.len() <= 1 {
        let Some(w) = workers.first_mut() else {
            return Ok(Vec::new());
        };
        return items.iter().map(|item| f(w, item)).collect();
    }
    let next = AtomicUsize::new(0);
    let done: Vec<Vec<(usize, Result<R, EvalError>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = workers
            .iter_mut()
            .map(|w| {
                let (next, f) = (&next, &f);
                scope.spawn(move || {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        let r = f(w, item);
                        let failed = r.is_err();
                        out.push((i, r));
                        if failed {
                            break;
                        }
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut slots: Vec<Option<Result<R, EvalError>>> = (0..items.len()).map(|_| None).collect();
    for (i, r) in done.into_iter().flatten() {
        slots[i] = Some(r);
    }
    let mut out = Vec::with_capacity(items.len());
    for slot in slots {
        match slot {
            Some(r) => out.push(r?),
            // Only after an earlier error stopped a worker.
            None => {
                return Err(EvalError::Dataset(
                    PathBuf::new(),
                    "a worker stopped early".into(),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_accepts_at_most_the_rate() {
        let neg: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
        let t = threshold_at(&neg, 1e-2);
        let accepted = neg.iter().filter(|s| **s > t).count();
        assert!(accepted <= 10, "{accepted}");
        assert!(accepted >= 9, "{accepted}");
    }

    #[test]
    fn perfect_embeddings_score_perfectly_and_swapped_ones_do_not() {
        let e = |k: usize| {
            let mut v = vec![0f32; 4];
            v[k] = 1.0;
            Some(v)
        };
        let samples: Vec<Sample> = ["a", "a", "b", "b", "c", "c"]
            .iter()
            .map(|id| Sample {
                identity: id.to_string(),
                path: PathBuf::new(),
            })
            .collect();
        let good = vec![e(0), e(0), e(1), e(1), e(2), e(2)];
        let r = score(&samples, &good);
        assert_eq!(r.tar_at_far_1e3, 1.0);
        assert_eq!(r.dir_at_fpir_1e2, 1.0);
        assert_eq!(
            (r.enrolled, r.enrolled_probes, r.stranger_probes),
            (2, 2, 2)
        );
        // "c" probes look like "a": a's second photo is now matched to nobody right.
        let bad = vec![e(0), e(3), e(1), e(1), e(2), e(2)];
        let r = score(&samples, &bad);
        assert!(r.tar_at_far_1e3 < 1.0);
        assert!(r.dir_at_fpir_1e2 < 1.0);
        let missing = vec![None, e(0), e(1), e(1), e(2), e(2)];
        assert_eq!(score(&samples, &missing).failed_to_acquire, 1);
    }

    #[test]
    fn halves_are_disjoint_balanced_and_fixed_by_name() {
        let samples: Vec<Sample> = ["ann", "bob", "bob", "cy", "dee", "eve"]
            .iter()
            .map(|id| Sample {
                identity: id.to_string(),
                path: PathBuf::new(),
            })
            .collect();
        let ids = |v: Vec<Sample>| {
            let mut v: Vec<String> = v.into_iter().map(|s| s.identity).collect();
            v.dedup();
            v
        };
        let a = ids(select_half(samples.clone(), Split::A));
        let b = ids(select_half(samples.clone(), Split::B));
        // The same halves and keys as reference_eval.py's split_identities / split_key.
        assert_eq!(a, ["ann", "cy", "dee"]);
        assert_eq!(b, ["bob", "eve"]);
        assert_eq!(split_key(""), 0xefd0_1f60_ba99_2926);
        assert_eq!(split_key("Barack_Obama"), 0xea1f_dde7_2b1e_1b79);
    }
}
