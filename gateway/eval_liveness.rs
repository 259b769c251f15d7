//! Liveness on a folder of live and attack photos, one photo at a time,
//! with facegate's own detection and verdict (`facegate eval-liveness`).
//!
//! Layout (`../shared/faces/liveness`): `nuaa_live/` (bona fide) and
//! `nuaa_print/` (printed-photo attacks), NUAA file names starting with the
//! 4-digit subject id; `silentface_samples/` with `*T<n>*` live and
//! `*F<n>*` attack images (no subject: they count only when no subject
//! filter is given).
//!
//! Per photo: the largest face found (with the black-border retry for
//! tight crops); no face, or a face the liveness check does not judge (too
//! small or soft), is *not judged* and counted apart: it is neither an
//! accepted attack nor a rejected live face. Over judged faces, in
//! ISO/IEC 30107-3 terms: APCER = attacks scored at or above the threshold
//! / attacks; BPCER = live faces scored below it / live faces.
//!
//! `threshold_at_bpcer5`: for `n` live scores sorted ascending, the score at
//! index `floor(0.05·n)`; faces strictly below it are rejected, so at most
//! 5% of live faces are.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::vision::image::{PhotoError, PhotoLimits, RgbView, load_photo, resize};
use crate::vision::{FaceEngine, VisionError};

#[derive(Debug, thiserror::Error)]
pub enum EvalLivenessError {
    #[error("dataset {0}: {1}")]
    Dataset(PathBuf, String),
    #[error("liveness is disabled in the config (vision.liveness.enabled = false)")]
    Disabled,
    #[error(transparent)]
    Photo(#[from] PhotoError),
    #[error(transparent)]
    Vision(#[from] VisionError),
}

/// One labelled photo.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub path: PathBuf,
    pub live: bool,
    /// NUAA subject id; `None` for the Silent-Face samples.
    pub subject: Option<u32>,
}

/// Which subjects to use; `None` everywhere = all samples.
#[derive(Debug, Clone, Default)]
pub struct SubjectFilter {
    pub only: Option<Vec<u32>>,
    pub exclude: Vec<u32>,
}

impl SubjectFilter {
    /// `a` = subjects 1–4, `b` = subjects 5–8 and 16 (16 has prints only).
    pub fn split(half: &str) -> Option<Self> {
        let only = match half {
            "a" => vec![1, 2, 3, 4],
            "b" => vec![5, 6, 7, 8, 16],
            _ => return None,
        };
        Some(Self {
            only: Some(only),
            exclude: Vec::new(),
        })
    }

    /// Parses "1-4,7" into subject ids.
    pub fn parse_ids(s: &str) -> Result<Vec<u32>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let num = |t: &str| {
                t.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("'{t}' is not a subject number"))
            };
            match part.split_once('-') {
                Some((a, b)) => out.extend(num(a)?..=num(b)?),
                None => out.push(num(part)?),
            }
        }
        Ok(out)
    }

    fn is_filtering(&self) -> bool {
        self.only.is_some() || !self.exclude.is_empty()
    }

    fn keeps(&self, s: &Sample) -> bool {
        match s.subject {
            None => !self.is_filtering(),
            Some(id) => {
                self.only.as_ref().is_none_or(|o| o.contains(&id)) && !self.exclude.contains(&id)
            }
        }
    }
}

/// Lists the samples of a liveness folder, sorted by path.
pub fn list_samples(dir: &Path) -> Result<Vec<Sample>, EvalLivenessError> {
    let bad = |m: String| EvalLivenessError::Dataset(dir.to_owned(), m);
    let mut out = Vec::new();
    for (folder, live) in [
        ("nuaa_live", Some(true)),
        ("nuaa_print", Some(false)),
        ("silentface_samples", None),
    ] {
        let d = dir.join(folder);
        if !d.is_dir() {
            continue;
        }
        let entries = std::fs::read_dir(&d).map_err(|e| bad(format!("{folder}: {e}")))?;
        for e in entries.filter_map(Result::ok) {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let ext = path.extension().and_then(|x| x.to_str()).unwrap_or("");
            if !["jpg", "jpeg", "png"].contains(&ext.to_ascii_lowercase().as_str()) {
                continue;
            }
            let (live, subject) = match live {
                Some(l) => (l, name.get(..4).and_then(|s| s.parse::<u32>().ok())),
                None if name.contains("_T") => (true, None),
                None if name.contains("_F") => (false, None),
                None => continue,
            };
            out.push(Sample {
                path,
                live,
                subject,
            });
        }
    }
    if out.is_empty() {
        return Err(bad(
            "no nuaa_live/, nuaa_print/ or silentface_samples/ images".into(),
        ));
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// One photo at one scale.
#[derive(Debug, Clone, Serialize)]
pub struct Observation {
    pub file: String,
    pub live: bool,
    pub subject: Option<u32>,
    pub scale: f32,
    /// Shorter side of the face box; `None` when no face was found.
    pub size_px: Option<f32>,
    /// Why it was not judged (no face, too small, too soft); `None` = judged.
    pub not_judged: Option<String>,
    /// Each model's live probability (config order), when a face was found.
    pub scores: Vec<f32>,
    /// The ensemble's score, when a face was found.
    pub ensemble: Option<f32>,
}

/// Error rates of one scorer (a model or the ensemble) on judged faces.
#[derive(Debug, Clone, Serialize)]
pub struct Rates {
    pub name: String,
    pub live: usize,
    pub attacks: usize,
    pub apcer: f32,
    pub bpcer: f32,
    pub threshold_at_bpcer5: f32,
    pub apcer_at_bpcer5: f32,
    pub auc: f32,
}

/// All scorers at one scale.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    pub scale: f32,
    pub median_face_px: f32,
    pub min_face_px: f32,
    pub live_not_judged: usize,
    pub attacks_not_judged: usize,
    pub rates: Vec<Rates>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dataset: String,
    pub threshold: f32,
    pub models: Vec<String>,
    /// Mean model time per face, ms, in config order (`session.run` with
    /// crop and packing).
    pub ms_per_face: Vec<f32>,
    pub scales: Vec<ScaleReport>,
    /// Each scorer over the judged faces of all scales together.
    pub pooled: Vec<Rates>,
    /// The ensemble's threshold for a few BPCER targets, all scales
    /// pooled: tune on one subject half, pass it with `--threshold` to a
    /// run on the other half.
    pub targets: Vec<TargetPoint>,
    pub observations: Vec<Observation>,
}

/// The ensemble's operating point for one BPCER target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetPoint {
    pub bpcer_target: f32,
    /// Live faces strictly below it are rejected: at most the target share.
    pub threshold: f32,
    pub apcer: f32,
    pub bpcer: f32,
}

/// BPCER targets reported in [`Report::targets`].
pub const BPCER_TARGETS: [f32; 3] = [0.05, 0.08, 0.10];

/// For `live` scores, the lowest threshold rejecting at most `target` of
/// them: the sorted score at index `floor(target·n)`.
pub fn threshold_at(live: &[f32], target: f32) -> f32 {
    let mut sorted = live.to_vec();
    sorted.sort_by(f32::total_cmp);
    sorted
        .get((target * sorted.len() as f32).floor() as usize)
        .copied()
        .unwrap_or(0.0)
}

/// APCER and BPCER at `t` (score < t = attack), the threshold for BPCER ≤
/// 5% with its APCER, and the AUC.
pub fn rates(name: &str, live: &[f32], attacks: &[f32], t: f32) -> Rates {
    let frac = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f32 / d as f32 };
    let apcer_at = |t: f32| frac(attacks.iter().filter(|&&s| s >= t).count(), attacks.len());
    let t5 = threshold_at(live, 0.05);
    let mut wins = 0f64;
    for l in live {
        for a in attacks {
            wins += if l > a {
                1.0
            } else if l == a {
                0.5
            } else {
                0.0
            };
        }
    }
    let pairs = (live.len() * attacks.len()).max(1) as f64;
    Rates {
        name: name.to_owned(),
        live: live.len(),
        attacks: attacks.len(),
        apcer: apcer_at(t),
        bpcer: frac(live.iter().filter(|&&s| s < t).count(), live.len()),
        threshold_at_bpcer5: t5,
        apcer_at_bpcer5: apcer_at(t5),
        auc: (wins / pairs) as f32,
    }
}

fn median(v: &mut [f32]) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f32::total_cmp);
    v[v.len() / 2]
}

/// Runs every kept sample at every scale. `threshold` overrides the
/// configured one (to apply a threshold tuned on the other half).
pub fn run(
    engine: &mut FaceEngine,
    dir: &Path,
    scales: &[f32],
    filter: &SubjectFilter,
    threshold: Option<f32>,
) -> Result<Report, EvalLivenessError> {
    let samples: Vec<Sample> = list_samples(dir)?
        .into_iter()
        .filter(|s| filter.keeps(s))
        .collect();
    let (models, t) = {
        let l = engine.liveness().ok_or(EvalLivenessError::Disabled)?;
        (l.names(), threshold.unwrap_or(l.threshold()))
    };
    let mut ms = vec![0f64; models.len()];
    let mut timed = 0usize;
    let mut observations = Vec::new();
    for &scale in scales {
        for s in &samples {
            let full = load_photo(&s.path, PhotoLimits::default())?;
            let img = if (scale - 1.0).abs() < 1e-6 {
                full
            } else {
                let w = ((full.width() as f32 * scale).round() as u32).max(1);
                let h = ((full.height() as f32 * scale).round() as u32).max(1);
                resize(RgbView::from_image(&full), w, h)
            };
            let view = RgbView::from_image(&img);
            let dets = engine.detect_with_border(view)?;
            let face = dets
                .into_iter()
                .max_by(|a, b| a.area().total_cmp(&b.area()));
            let file = s
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut o = Observation {
                file,
                live: s.live,
                subject: s.subject,
                scale,
                size_px: None,
                not_judged: Some("no face found".into()),
                scores: Vec::new(),
                ensemble: None,
            };
            if let Some(d) = face {
                let l = engine.liveness().ok_or(EvalLivenessError::Disabled)?;
                o.size_px = Some(d.size());
                o.not_judged = l.not_judged(view, &d).map(|n| n.to_string());
                // Each model alone (timed), then the ensemble through the
                // same code the gate runs.
                for (i, m) in ms.iter_mut().enumerate() {
                    let start = Instant::now();
                    let v = l.scores_of(i, view, &d)?;
                    *m += start.elapsed().as_secs_f64() * 1e3;
                    o.scores.push(v);
                }
                timed += 1;
                o.ensemble = Some(l.combine(&o.scores));
            }
            observations.push(o);
        }
    }
    let all: Vec<&Observation> = observations.iter().collect();
    let pooled = scorer_rates(&all, &models, t);
    let ensemble = |live: bool| -> Vec<f32> {
        all.iter()
            .filter(|o| o.not_judged.is_none() && o.live == live)
            .map(|o| o.ensemble.unwrap_or(0.0))
            .collect()
    };
    let (live, attacks) = (ensemble(true), ensemble(false));
    let targets = BPCER_TARGETS
        .iter()
        .map(|&bpcer_target| {
            let threshold = threshold_at(&live, bpcer_target);
            let r = rates("ensemble", &live, &attacks, threshold);
            TargetPoint {
                bpcer_target,
                threshold,
                apcer: r.apcer,
                bpcer: r.bpcer,
            }
        })
        .collect();
    let mut reports = Vec::new();
    for &scale in scales {
        let obs: Vec<&Observation> = observations.iter().filter(|o| o.scale == scale).collect();
        let rs = scorer_rates(&obs, &models, t);
        let mut sizes: Vec<f32> = obs.iter().filter_map(|o| o.size_px).collect();
        let min_face_px = sizes.iter().copied().fold(f32::INFINITY, f32::min);
        reports.push(ScaleReport {
            scale,
            median_face_px: median(&mut sizes),
            min_face_px: if min_face_px.is_finite() {
                min_face_px
            } else {
                0.0
            },
            live_not_judged: obs
                .iter()
                .filter(|o| o.live && o.not_judged.is_some())
                .count(),
            attacks_not_judged: obs
                .iter()
                .filter(|o| !o.live && o.not_judged.is_some())
                .count(),
            rates: rs,
        });
    }
    Ok(Report {
        dataset: dir.display().to_string(),
        threshold: t,
        models,
        ms_per_face: ms
            .iter()
            .map(|m| (m / timed.max(1) as f64) as f32)
            .collect(),
        scales: reports,
        pooled,
        targets,
        observations,
    })
}

/// Each model's and the ensemble's rates over the judged faces of `obs`.
fn scorer_rates(obs: &[&Observation], models: &[String], t: f32) -> Vec<Rates> {
    let judged: Vec<&&Observation> = obs.iter().filter(|o| o.not_judged.is_none()).collect();
    let pick = |live: bool, f: &dyn Fn(&Observation) -> f32| -> Vec<f32> {
        judged
            .iter()
            .filter(|o| o.live == live)
            .map(|o| f(o))
            .collect()
    };
    let mut rs = Vec::new();
    for (i, name) in models.iter().enumerate() {
        let f = |o: &Observation| o.scores[i];
        rs.push(rates(name, &pick(true, &f), &pick(false, &f), t));
    }
    let f = |o: &Observation| o.ensemble.unwrap_or(0.0);
    rs.push(rates("ensemble", &pick(true, &f), &pick(false, &f), t));
    rs
}

/// The readable summary: one line per scale and scorer.
pub fn summary(r: &Report) -> String {
    let mut out = format!(
        "{}: threshold {:.3}; ms/face {}\n{:>5} {:>6} {:>8}  {:<16} {:>4} {:>4} {:>6} {:>6} {:>7} {:>8} {:>5}\n",
        r.dataset,
        r.threshold,
        r.models
            .iter()
            .zip(&r.ms_per_face)
            .map(|(n, m)| format!("{n} {m:.1}"))
            .collect::<Vec<_>>()
            .join(", "),
        "scale",
        "face",
        "notjudg",
        "scorer",
        "live",
        "atk",
        "APCER",
        "BPCER",
        "t@B5%",
        "APCER@t",
        "AUC"
    );
    let pooled = ScaleReport {
        scale: 0.0,
        median_face_px: 0.0,
        min_face_px: 0.0,
        live_not_judged: r.scales.iter().map(|s| s.live_not_judged).sum(),
        attacks_not_judged: r.scales.iter().map(|s| s.attacks_not_judged).sum(),
        rates: r.pooled.clone(),
    };
    for s in r.scales.iter().chain(std::iter::once(&pooled)) {
        for x in &s.rates {
            out.push_str(&format!(
                "{:>5.2} {:>6.0} {:>3}L/{:<3}A  {:<16} {:>4} {:>4} {:>6.3} {:>6.3} {:>7.3} {:>8.3} {:>5.3}\n",
                s.scale,
                s.median_face_px,
                s.live_not_judged,
                s.attacks_not_judged,
                x.name,
                x.live,
                x.attacks,
                x.apcer,
                x.bpcer,
                x.threshold_at_bpcer5,
                x.apcer_at_bpcer5,
                x.auc
            ));
        }
    }
    out.push_str("(scale 0 = all scales pooled)\nensemble, all scales pooled:");
    for p in &r.targets {
        out.push_str(&format!(
            " BPCER<={:.2}: threshold {:.4} (APCER {:.3}, BPCER {:.3});",
            p.bpcer_target, p.threshold, p.apcer, p.bpcer
        ));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_follow_the_iso_definitions() {
        let live = [0.9, 0.8, 0.7, 0.2];
        let attacks = [0.1, 0.3, 0.6];
        let r = rates("m", &live, &attacks, 0.5);
        assert_eq!((r.apcer, r.bpcer), (1.0 / 3.0, 0.25));
        // 5% of 4 live faces = 0: the lowest live score, nobody rejected.
        assert_eq!(r.threshold_at_bpcer5, 0.2);
        assert_eq!(r.apcer_at_bpcer5, 2.0 / 3.0);
        // Pairs won: 0.9, 0.8, 0.7 beat all 3; 0.2 beats 1: 10 of 12.
        assert!((r.auc - 10.0 / 12.0).abs() < 1e-6);
        // 8% of 25 live faces = 2: the third lowest; two are below it.
        let live: Vec<f32> = (0..25).map(|i| i as f32 / 25.0).collect();
        assert_eq!(threshold_at(&live, 0.08), 2.0 / 25.0);
        assert_eq!(threshold_at(&[], 0.05), 0.0);
    }

    #[test]
    fn subject_ranges_and_splits() {
        assert_eq!(SubjectFilter::parse_ids("1-3,8").unwrap(), vec![1, 2, 3, 8]);
        assert!(SubjectFilter::parse_ids("x").is_err());
        let a = SubjectFilter::split("a").unwrap();
        let s = |subject| Sample {
            path: PathBuf::new(),
            live: true,
            subject,
        };
        assert!(a.keeps(&s(Some(4))) && !a.keeps(&s(Some(5))) && !a.keeps(&s(None)));
        assert!(SubjectFilter::default().keeps(&s(None)));
        assert!(SubjectFilter::split("c").is_none());
    }
}
