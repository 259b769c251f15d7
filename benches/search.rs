//! 1:N search over the in-memory [`FaceIndex`] at 1k, 10k and 100k templates
//! of dimension 704 (the shipped fused template: arcface 512 + mobilefacenet
//! 192), k = 5, one template per owner; and the plain f32 scan of every row
//! (`search_exhaustive`, the search before the 4-bit pass) for comparison.
//!
//! Templates are random unit vectors from a fixed seed, so every run scans
//! the same data. Two probes per size: an enrolled owner seen again (their
//! template plus noise, cosine ≈ 0.7, as a genuine match scores) and a
//! stranger (a fresh random vector). A flat scan costs the same either way;
//! the pair shows that the top-k bookkeeping does not change that.
//!
//! The index's memory is printed before the benches (embedding rows, and the
//! process's resident-memory growth while building, which includes the
//! per-template bookkeeping).
//!
//! Run: `cargo bench --bench search`. See BENCHMARKS.md for the figures;
//! `facegate bench search --templates N` measures the same in the release
//! binary with percentiles.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use facegate::registry::FaceIndex;
use facegate::registry::Subject;
// The same fixed-seed PRNG as `facegate bench`: the same templates every run, no extra crate.
use facegate::bench::{SplitMix64, random_unit};

const DIM: usize = 704;
const K: usize = 5;
const SIZES: [usize; 3] = [1_000, 10_000, 100_000];

fn main() {
    let mut c = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut rng = SplitMix64(0x5eed_face_0001);
    let mut g = c.benchmark_group("search_1n_dim704_k5");
    // The exhaustive scan of 100k rows takes ~13 ms: equal-sized samples keep every size
    // inside its measurement time (criterion's linear ramp would not).
    g.sampling_mode(SamplingMode::Flat);
    for n in SIZES {
        let rss_before = resident_bytes();
        let started = Instant::now();
        let index = build_index(n);
        let built = started.elapsed();
        let rss_growth = resident_bytes()
            .zip(rss_before)
            .map(|(after, before)| after.saturating_sub(before));
        println!(
            "index of {n} templates: built in {:.0} ms; embedding rows {:.1} MB; \
             resident memory grew {} while building",
            built.as_secs_f64() * 1e3,
            index.embedding_bytes() as f64 / 1e6,
            rss_growth.map_or("(unknown)".into(), |b| format!("{:.1} MB", b as f64 / 1e6)),
        );

        let owner = probe_near(&template_of(n / 2, n), &mut rng);
        let stranger = random_unit(&mut rng, DIM);
        check_probe(&index, &owner, n);

        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("owner_probe", n), &owner, |b, q| {
            b.iter(|| index.search(black_box(q), K).expect("search"))
        });
        g.bench_with_input(BenchmarkId::new("stranger_probe", n), &stranger, |b, q| {
            b.iter(|| index.search(black_box(q), K).expect("search"))
        });
        g.bench_with_input(BenchmarkId::new("exhaustive_f32", n), &stranger, |b, q| {
            b.iter(|| index.search_exhaustive(black_box(q), K).expect("search"))
        });
    }
    g.finish();
    c.final_summary();
}

/// Template `i` of an index of `n`: seeded by its position, so the owner
/// probe can be made again without keeping every template around.
fn template_of(i: usize, n: usize) -> Vec<f32> {
    random_unit(&mut SplitMix64((n as u64) << 32 | i as u64), DIM)
}

fn build_index(n: usize) -> FaceIndex {
    let mut index = FaceIndex::new(DIM);
    for i in 0..n {
        let subject = Subject::Owner {
            id: format!("owner-{i:06}"),
            name: format!("Owner {i}"),
        };
        index
            .insert(i as i64, subject, &template_of(i, n))
            .expect("insert a unit vector");
    }
    index
}

/// The enrolled template seen again: mixed with noise to cosine ≈ 0.7.
fn probe_near(template: &[f32], rng: &mut SplitMix64) -> Vec<f32> {
    let noise = random_unit(rng, DIM);
    template
        .iter()
        .zip(&noise)
        .map(|(t, e)| 0.7 * t + 0.714 * e)
        .collect()
}

/// The owner probe must find its owner first, or the bench measures a
/// broken search.
fn check_probe(index: &FaceIndex, probe: &[f32], n: usize) {
    let hits = index.search(probe, K).expect("search");
    let best = hits.first().expect("a hit");
    assert_eq!(
        best.template_id,
        (n / 2) as i64,
        "owner probe found {best:?}"
    );
    assert_eq!(hits.len(), K);
}

/// The process's resident memory (Linux, 4 KiB pages), for the index's real
/// footprint.
fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
