//! The in-memory 1:N face index: every active template, L2-normalised, in one
//! contiguous row-major `Vec<f32>`, and again as 4-bit codes that the scan
//! reads first.
//!
//! Why an exhaustive scan and not an approximate index: an estate has
//! thousands to a few ten-thousand templates, and a scan over normalised rows
//! has no build step and supports removal in O(dim). Exactness matters here
//! because a miss turns a resident into a "stranger" alert: the 4-bit pass
//! ([`coarse`]) only decides which rows are rescored with the f32 dot
//! product, with an error margin of 8 standard deviations, so the results
//! are those of the full f32 scan ([`FaceIndex::search_exhaustive`]).
//!
//! Speed: a 704-d template is 352 bytes of codes instead of 2816 bytes of
//! floats; 100k templates are ~35 MB read per search (about 1 ms of one
//! core's memory bandwidth here) instead of 282 MB. See BENCHMARKS.md.
//!
//! Memory per template: `dim × 4` bytes (f32 rows) + `⌈dim/64⌉ × 32` bytes
//! (codes) + 8 bytes (scale, error) + ~150 bytes of bookkeeping when every
//! template is its own owner: 100k × 704-d ≈ 326 MB in all.
//!
//! Search is owner-level: a subject (owner or watch-list entry) scores the best
//! cosine over all of its templates, so enrolling more photos of a person can
//! only help them and never crowds other people out of the top k.

use std::collections::HashMap;

use super::{Subject, SubjectKey};

mod coarse;
use coarse::{CoarseQuery, Kernel};

/// Why the index refused an embedding or a query.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IndexError {
    /// The embedding's length differs from the index's dimension, usually a
    /// template from another model or a misconfigured `dim`.
    #[error(
        "template {template_id}: embedding has {found} values, but the face index holds \
         {expected}-dimensional embeddings; check the embedding model and its dimension in the config"
    )]
    Dimension {
        template_id: i64,
        expected: usize,
        found: usize,
    },
    /// All zeros, NaN or infinite: there is no direction to compare.
    #[error("template {template_id}: embedding is all zeros or holds NaN/infinite values")]
    Degenerate { template_id: i64 },
    /// The query's length differs from the index's dimension.
    #[error(
        "query embedding has {found} values, but the face index holds {expected}-dimensional embeddings"
    )]
    QueryDimension { expected: usize, found: usize },
    /// The query is all zeros, NaN or infinite (a broken model output).
    #[error("query embedding is all zeros or holds NaN/infinite values")]
    DegenerateQuery,
}

/// One search hit: a subject, its best cosine similarity to the query, and the
/// template that gave it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Match {
    pub subject: Subject,
    /// Cosine similarity in [-1, 1].
    pub score: f32,
    pub template_id: i64,
}

/// Per-row bookkeeping, parallel to the rows of `data`.
#[derive(Debug, Clone, Copy)]
struct RowMeta {
    template_id: i64,
    /// Index into `subjects`; a small integer so the top-k bookkeeping
    /// compares integers, not strings.
    slot: u32,
}

#[derive(Debug, Clone)]
struct SubjectEntry {
    subject: Subject,
    /// How many rows point at this slot; the slot is freed at zero.
    templates: usize,
}

/// Exact cosine 1:N index over L2-normalised rows.
#[derive(Clone)]
pub struct FaceIndex {
    dim: usize,
    /// Row-major, `rows.len() * dim` values, each row of unit length.
    data: Vec<f32>,
    /// The same rows as 4-bit codes, `coarse::row_bytes(dim)` bytes a row:
    /// what the scan reads (see [`coarse`]).
    codes: Vec<u8>,
    /// Per row: the codes' scale and the norm of their rounding error.
    code_scales: Vec<f32>,
    code_errors: Vec<f32>,
    /// The largest `code_errors` ever inserted (never lowered on removal,
    /// which only makes the scan's first filter more cautious).
    max_code_error: f32,
    kernel: Kernel,
    rows: Vec<RowMeta>,
    row_of_template: HashMap<i64, usize>,
    subjects: Vec<Option<SubjectEntry>>,
    free_slots: Vec<u32>,
    slot_of_subject: HashMap<SubjectKey, u32>,
}

/// Sizes only: the rows are face data (and a derived `Debug` would print
/// hundreds of megabytes of floats into a log).
impl std::fmt::Debug for FaceIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaceIndex")
            .field("dim", &self.dim)
            .field("templates", &self.rows.len())
            .field("subjects", &self.slot_of_subject.len())
            .finish_non_exhaustive()
    }
}

impl FaceIndex {
    /// An empty index for `dim`-dimensional embeddings. With `dim == 0`
    /// nothing can be inserted and every search is empty.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            data: Vec::new(),
            codes: Vec::new(),
            code_scales: Vec::new(),
            code_errors: Vec::new(),
            max_code_error: 0.0,
            kernel: Kernel::detect(),
            rows: Vec::new(),
            row_of_template: HashMap::new(),
            subjects: Vec::new(),
            free_slots: Vec::new(),
            slot_of_subject: HashMap::new(),
        }
    }

    /// Builds an index from stored templates; refuses (rather than skips) a
    /// template of the wrong dimension, because skipping would silently make
    /// a person unrecognisable.
    pub fn from_templates(
        dim: usize,
        templates: Vec<super::StoredTemplate>,
    ) -> Result<Self, IndexError> {
        let mut index = Self::new(dim);
        index.data.reserve(templates.len().saturating_mul(dim));
        index
            .codes
            .reserve(templates.len().saturating_mul(coarse::row_bytes(dim)));
        index.rows.reserve(templates.len());
        for template in templates {
            index.insert(template.template_id, template.subject, &template.embedding)?;
        }
        Ok(index)
    }

    /// The embedding dimension this index holds.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of templates (rows).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the index holds no template.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Number of distinct subjects with at least one template.
    pub fn subject_count(&self) -> usize {
        self.slot_of_subject.len()
    }

    /// Whether the template is in the index.
    pub fn contains_template(&self, template_id: i64) -> bool {
        self.row_of_template.contains_key(&template_id)
    }

    /// Bytes held by the embedding rows (the dominant cost): the f32 rows,
    /// their 4-bit codes and per-row scales, for metrics.
    pub fn embedding_bytes(&self) -> usize {
        self.data.len() * std::mem::size_of::<f32>()
            + self.codes.len()
            + (self.code_scales.len() + self.code_errors.len()) * std::mem::size_of::<f32>()
    }

    /// Adds (or replaces) a template. The embedding is L2-normalised on the
    /// way in so that search is a plain dot product.
    ///
    /// On error the index is unchanged.
    pub fn insert(
        &mut self,
        template_id: i64,
        subject: Subject,
        embedding: &[f32],
    ) -> Result<(), IndexError> {
        if embedding.len() != self.dim {
            return Err(IndexError::Dimension {
                template_id,
                expected: self.dim,
                found: embedding.len(),
            });
        }
        let inverse_norm = inverse_norm(embedding).ok_or(IndexError::Degenerate { template_id })?;
        self.remove_template(template_id);

        let slot = self.slot_for(subject);
        let start = self.data.len();
        self.data
            .extend(embedding.iter().map(|value| value * inverse_norm));
        let stride = coarse::row_bytes(self.dim);
        self.codes.resize(self.codes.len() + stride, 0);
        let code_start = self.codes.len() - stride;
        let (scale, error) =
            coarse::quantise_row(&self.data[start..], &mut self.codes[code_start..]);
        self.code_scales.push(scale);
        self.code_errors.push(error);
        self.max_code_error = self.max_code_error.max(error);
        self.rows.push(RowMeta { template_id, slot });
        self.row_of_template
            .insert(template_id, self.rows.len() - 1);
        Ok(())
    }

    /// Removes one template; returns whether it was there. O(dim): the last
    /// row is moved into the hole.
    pub fn remove_template(&mut self, template_id: i64) -> bool {
        let Some(row) = self.row_of_template.remove(&template_id) else {
            return false;
        };
        let last = self.rows.len() - 1;
        if row != last {
            self.data
                .copy_within(last * self.dim..(last + 1) * self.dim, row * self.dim);
        }
        self.data.truncate(last * self.dim);
        let stride = coarse::row_bytes(self.dim);
        if row != last {
            self.codes
                .copy_within(last * stride..(last + 1) * stride, row * stride);
        }
        self.codes.truncate(last * stride);
        self.code_scales.swap_remove(row);
        self.code_errors.swap_remove(row);
        let removed = self.rows.swap_remove(row);
        if let Some(moved) = self.rows.get(row) {
            self.row_of_template.insert(moved.template_id, row);
        }
        self.release_slot(removed.slot);
        true
    }

    /// Removes every template of a subject; returns how many there were.
    pub fn remove_subject(&mut self, key: &SubjectKey) -> usize {
        let Some(&slot) = self.slot_of_subject.get(key) else {
            return 0;
        };
        let doomed: Vec<i64> = self
            .rows
            .iter()
            .filter(|row| row.slot == slot)
            .map(|row| row.template_id)
            .collect();
        for template_id in &doomed {
            self.remove_template(*template_id);
        }
        doomed.len()
    }

    /// Replaces the stored [`Subject`] (say, after a name change) without
    /// touching its templates. Returns whether the subject was present.
    pub fn update_subject(&mut self, subject: Subject) -> bool {
        let Some(&slot) = self.slot_of_subject.get(&subject.key()) else {
            return false;
        };
        match self.subjects.get_mut(slot as usize) {
            Some(Some(entry)) => {
                entry.subject = subject;
                true
            }
            _ => false,
        }
    }

    /// The `k` best subjects for `query`, best first, each scored by its best
    /// template.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<Match>, IndexError> {
        self.search_filtered(query, k, |_| true)
    }

    /// [`search`](Self::search) over only the subjects for which `keep`
    /// returns true (the gallery uses it to hide expired watch-list entries).
    ///
    /// `keep` is consulted only for rows that would enter the current top k,
    /// so a cheap predicate costs nothing on the hot path.
    pub fn search_filtered(
        &self,
        query: &[f32],
        k: usize,
        keep: impl Fn(&Subject) -> bool,
    ) -> Result<Vec<Match>, IndexError> {
        if query.len() != self.dim {
            return Err(IndexError::QueryDimension {
                expected: self.dim,
                found: query.len(),
            });
        }
        let inverse_norm = inverse_norm(query).ok_or(IndexError::DegenerateQuery)?;
        if k == 0 || self.rows.is_empty() {
            return Ok(Vec::new());
        }
        let query: Vec<f32> = query.iter().map(|value| value * inverse_norm).collect();

        let mut top = TopK::new(k.min(self.slot_of_subject.len()));
        // Coarse pass over 4-bit codes in batches (the SIMD kernel runs over
        // a batch); a row is rescored with the exact f32 dot product only
        // when its coarse score plus its error margin could beat the floor.
        let coarse = CoarseQuery::new(&query);
        let widest = coarse.margin(self.max_code_error);
        let stride = coarse::row_bytes(self.dim);
        ESTIMATES.with_borrow_mut(|estimates| {
            // Pass 1: every row's coarse score (the SIMD kernel over batches),
            // noting the best few to seed the floor.
            estimates.clear();
            estimates.reserve(self.rows.len());
            let mut seeds = Seeds::default();
            let mut dots = [0i32; SCAN_BATCH];
            for first in (0..self.rows.len()).step_by(SCAN_BATCH) {
                let n = SCAN_BATCH.min(self.rows.len() - first);
                let codes = &self.codes[first * stride..(first + n) * stride];
                self.kernel.dots(codes, stride, &coarse, &mut dots[..n]);
                // Two loops: the first vectorises, the second rarely acts.
                estimates.extend(
                    dots[..n]
                        .iter()
                        .zip(&self.code_scales[first..first + n])
                        .map(|(&code_dot, &scale)| coarse.score(code_dot, scale)),
                );
                for (offset, &estimate) in estimates[first..].iter().enumerate() {
                    if estimate > seeds.floor || seeds.best.len() < SEEDS {
                        seeds.offer(first + offset, estimate);
                    }
                }
            }
            // The rows that look best, scored exactly first, raise the floor
            // to about its final height before pass 2.
            let rescore = |i: usize, top: &mut TopK| {
                let score = dot(&query, &self.data[i * self.dim..(i + 1) * self.dim]);
                if score <= top.floor {
                    return;
                }
                let row = self.rows[i];
                if self.subject_at(row.slot).is_some_and(&keep) {
                    top.offer(row.slot, row.template_id, score);
                }
            };
            for &(i, _) in &seeds.best {
                rescore(i, &mut top);
            }
            // Pass 2: a row is scored exactly only when its coarse score
            // plus its error margin could beat the floor. Seeds come round
            // again and change nothing (same template, same score).
            for (i, &estimate) in estimates.iter().enumerate() {
                if estimate + widest <= top.floor
                    || estimate + coarse.margin(self.code_errors[i]) <= top.floor
                {
                    continue;
                }
                rescore(i, &mut top);
            }
        });
        Ok(self.matches(top))
    }

    /// [`search`](Self::search) as a plain f32 scan of every row, without
    /// the coarse filter: the reference that tests and `facegate bench
    /// search` hold the fast scan to (identical ids and scores).
    pub fn search_exhaustive(&self, query: &[f32], k: usize) -> Result<Vec<Match>, IndexError> {
        if query.len() != self.dim {
            return Err(IndexError::QueryDimension {
                expected: self.dim,
                found: query.len(),
            });
        }
        let inverse_norm = inverse_norm(query).ok_or(IndexError::DegenerateQuery)?;
        if k == 0 || self.rows.is_empty() {
            return Ok(Vec::new());
        }
        let query: Vec<f32> = query.iter().map(|value| value * inverse_norm).collect();
        let mut top = TopK::new(k.min(self.slot_of_subject.len()));
        for (row, embedding) in self.rows.iter().zip(self.data.chunks_exact(self.dim)) {
            let score = dot(&query, embedding);
            if score > top.floor {
                top.offer(row.slot, row.template_id, score);
            }
        }
        Ok(self.matches(top))
    }

    fn matches(&self, top: TopK) -> Vec<Match> {
        top.into_sorted()
            .into_iter()
            .filter_map(|candidate| {
                self.subject_at(candidate.slot).map(|subject| Match {
                    subject: subject.clone(),
                    score: candidate.score,
                    template_id: candidate.template_id,
                })
            })
            .collect()
    }

    fn subject_at(&self, slot: u32) -> Option<&Subject> {
        self.subjects
            .get(slot as usize)
            .and_then(Option::as_ref)
            .map(|entry| &entry.subject)
    }

    /// The slot of `subject`, allocating one if it is new. The stored subject
    /// is refreshed, so the newest name wins.
    fn slot_for(&mut self, subject: Subject) -> u32 {
        let key = subject.key();
        if let Some(&slot) = self.slot_of_subject.get(&key)
            && let Some(Some(entry)) = self.subjects.get_mut(slot as usize)
        {
            entry.subject = subject;
            entry.templates += 1;
            return slot;
        }
        let entry = Some(SubjectEntry {
            subject,
            templates: 1,
        });
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.subjects[slot as usize] = entry;
                slot
            }
            None => {
                // More than 4 billion subjects would not fit in memory anyway.
                let slot = self.subjects.len() as u32;
                self.subjects.push(entry);
                slot
            }
        };
        self.slot_of_subject.insert(key, slot);
        slot
    }

    fn release_slot(&mut self, slot: u32) {
        let Some(cell) = self.subjects.get_mut(slot as usize) else {
            return;
        };
        let Some(entry) = cell else {
            return;
        };
        entry.templates -= 1;
        if entry.templates == 0 {
            let key = entry.subject.key();
            *cell = None;
            self.slot_of_subject.remove(&key);
            self.free_slots.push(slot);
        }
    }
}

thread_local! {
    /// Pass 1's coarse scores, kept per thread so a search does not
    /// allocate (400 KB at 100k templates).
    static ESTIMATES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// How many of the best coarse scores are rescored before the full pass 2.
const SEEDS: usize = 32;

/// The best [`SEEDS`] coarse scores of pass 1 and their rows.
#[derive(Default)]
struct Seeds {
    best: Vec<(usize, f32)>,
    /// The lowest kept score once full.
    floor: f32,
}

impl Seeds {
    #[inline]
    fn offer(&mut self, row: usize, estimate: f32) {
        if self.best.len() < SEEDS {
            self.best.push((row, estimate));
            if self.best.len() == SEEDS {
                self.floor = self.lowest().1;
            }
        } else if estimate > self.floor {
            let (at, _) = self.lowest();
            self.best[at] = (row, estimate);
            self.floor = self.lowest().1;
        }
    }

    /// Position and score of the lowest kept entry.
    fn lowest(&self) -> (usize, f32) {
        self.best
            .iter()
            .enumerate()
            .map(|(at, &(_, e))| (at, e))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((0, f32::NEG_INFINITY))
    }
}

/// Rows per call of the coarse kernel: large enough to amortise the call,
/// small enough that the scores stay in registers' reach on the stack.
const SCAN_BATCH: usize = 256;

/// `1 / ‖v‖`, or `None` when `v` has no direction (zero, NaN or infinite).
fn inverse_norm(v: &[f32]) -> Option<f32> {
    let norm = dot(v, v).sqrt();
    (norm.is_finite() && norm > 0.0).then(|| 1.0 / norm)
}

/// Dot product written so that LLVM vectorises it: eight independent
/// accumulators over fixed-size chunks break the serial dependency of a naive
/// `sum` (floating-point addition is not associative, so the compiler may not
/// reorder it by itself). Eight lanes fill one AVX register or two SSE/NEON
/// ones.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0.0f32; LANES];
    let a_chunks = a.chunks_exact(LANES);
    let b_chunks = b.chunks_exact(LANES);
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for ((acc, x), y) in acc.iter_mut().zip(x).zip(y) {
            *acc += x * y;
        }
    }
    // A plain sum of the lanes: a hand-written pairwise reduction here makes
    // LLVM's SLP pass split the loop into 2-wide halves (seen in the asm).
    acc.iter().sum::<f32>() + tail
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    slot: u32,
    template_id: i64,
    score: f32,
}

/// Bounded best-k selection with one entry per subject.
///
/// Exact despite being bounded: a subject is evicted only when k others score
/// above it, and the floor (the k-th best score) never falls, so a later row
/// of that subject can re-enter only with a score above everything it had.
struct TopK {
    k: usize,
    items: Vec<Candidate>,
    /// The score a new row must beat: the worst kept score once full.
    floor: f32,
}

impl TopK {
    fn new(k: usize) -> Self {
        Self {
            k,
            items: Vec::with_capacity(k),
            floor: if k == 0 {
                f32::INFINITY
            } else {
                f32::NEG_INFINITY
            },
        }
    }

    fn offer(&mut self, slot: u32, template_id: i64, score: f32) {
        if let Some(kept) = self.items.iter_mut().find(|c| c.slot == slot) {
            if score > kept.score {
                kept.score = score;
                kept.template_id = template_id;
                self.refresh_floor();
            }
            return;
        }
        let candidate = Candidate {
            slot,
            template_id,
            score,
        };
        if self.items.len() < self.k {
            self.items.push(candidate);
        } else if let Some(worst) = self
            .items
            .iter_mut()
            .min_by(|a, b| a.score.total_cmp(&b.score))
        {
            *worst = candidate;
        }
        self.refresh_floor();
    }

    fn refresh_floor(&mut self) {
        if self.items.len() == self.k {
            self.floor = self
                .items
                .iter()
                .map(|c| c.score)
                .fold(f32::INFINITY, f32::min);
        }
    }

    fn into_sorted(mut self) -> Vec<Candidate> {
        self.items.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(a.template_id.cmp(&b.template_id))
        });
        self.items
    }
}

#[cfg(test)]
mod tests {
    use super::super::Priority;
    use super::*;

    fn owner(id: &str) -> Subject {
        Subject::Owner {
            id: id.to_owned(),
            name: format!("name of {id}"),
        }
    }

    fn owner_key(id: &str) -> SubjectKey {
        SubjectKey::Owner(id.to_owned())
    }

    /// A unit vector along axis `i` blended towards axis `j` by `t`.
    fn blend(dim: usize, i: usize, j: usize, t: f32) -> Vec<f32> {
        let mut v = vec![0.0; dim];
        v[i] = 1.0 - t;
        v[j] += t;
        v
    }

    fn ids(matches: &[Match]) -> Vec<SubjectKey> {
        matches.iter().map(|m| m.subject.key()).collect()
    }

    /// A small deterministic generator, so tests need no rand crate.
    struct Lcg(u64);
    impl Lcg {
        fn next_f32(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
        fn vector(&mut self, dim: usize) -> Vec<f32> {
            (0..dim).map(|_| self.next_f32()).collect()
        }
    }

    #[test]
    fn dot_matches_the_naive_sum_for_odd_lengths() {
        let mut rng = Lcg(7);
        for len in [0, 1, 7, 8, 9, 13, 64, 515] {
            let a = rng.vector(len);
            let b = rng.vector(len);
            let naive: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let fast = dot(&a, &b) as f64;
            assert!((naive - fast).abs() < 1e-4, "len {len}: {naive} vs {fast}");
        }
    }

    #[test]
    fn owner_is_scored_by_its_best_template() {
        let dim = 4;
        let mut index = FaceIndex::new(dim);
        // Owner a: one poor template (10) and one near-perfect one (11).
        index
            .insert(10, owner("a"), &blend(dim, 1, 0, 0.1))
            .unwrap();
        index
            .insert(11, owner("a"), &blend(dim, 0, 1, 0.05))
            .unwrap();
        // Owner b: one medium template.
        index
            .insert(20, owner("b"), &blend(dim, 0, 2, 0.4))
            .unwrap();
        // Owner c: far away.
        index
            .insert(30, owner("c"), &blend(dim, 3, 2, 0.0))
            .unwrap();

        let query = blend(dim, 0, 1, 0.0);
        let hits = index.search(&query, 2).unwrap();
        assert_eq!(ids(&hits), vec![owner_key("a"), owner_key("b")]);
        assert_eq!(hits[0].template_id, 11, "the better template must win");
        let expected = 0.95 / (0.95f32 * 0.95 + 0.05 * 0.05).sqrt();
        assert!((hits[0].score - expected).abs() < 1e-6);
        assert!(hits[0].score > hits[1].score);
    }

    #[test]
    fn k_larger_than_subjects_returns_each_subject_once() {
        let dim = 3;
        let mut index = FaceIndex::new(dim);
        index.insert(1, owner("a"), &[1.0, 0.0, 0.0]).unwrap();
        index.insert(2, owner("a"), &[0.9, 0.1, 0.0]).unwrap();
        index.insert(3, owner("b"), &[0.0, 1.0, 0.0]).unwrap();
        let hits = index.search(&[1.0, 0.2, 0.0], 10).unwrap();
        assert_eq!(ids(&hits), vec![owner_key("a"), owner_key("b")]);
    }

    #[test]
    fn empty_index_and_zero_k_find_nothing() {
        let index = FaceIndex::new(3);
        assert!(index.is_empty());
        assert!(index.search(&[1.0, 0.0, 0.0], 5).unwrap().is_empty());

        let mut index = FaceIndex::new(3);
        index.insert(1, owner("a"), &[1.0, 0.0, 0.0]).unwrap();
        assert!(index.search(&[1.0, 0.0, 0.0], 0).unwrap().is_empty());
    }

    #[test]
    fn removed_templates_and_subjects_are_not_found() {
        let dim = 3;
        let mut index = FaceIndex::new(dim);
        index.insert(1, owner("a"), &[1.0, 0.0, 0.0]).unwrap();
        index.insert(2, owner("a"), &[0.0, 0.0, 1.0]).unwrap();
        index.insert(3, owner("b"), &[0.8, 0.2, 0.0]).unwrap();

        assert!(index.remove_template(1));
        assert!(!index.remove_template(1), "already gone");
        let hits = index.search(&[1.0, 0.0, 0.0], 1).unwrap();
        assert_eq!(ids(&hits), vec![owner_key("b")]);

        assert_eq!(index.remove_subject(&owner_key("b")), 1);
        let hits = index.search(&[1.0, 0.0, 0.0], 5).unwrap();
        assert_eq!(ids(&hits), vec![owner_key("a")]);
        assert_eq!(hits[0].template_id, 2);
        assert_eq!(index.len(), 1);
        assert_eq!(index.subject_count(), 1);
    }

    #[test]
    fn swap_remove_keeps_moved_rows_addressable() {
        let dim = 2;
        let mut index = FaceIndex::new(dim);
        index.insert(1, owner("a"), &[1.0, 0.0]).unwrap();
        index.insert(2, owner("b"), &[0.0, 1.0]).unwrap();
        index.insert(3, owner("c"), &[-1.0, 0.0]).unwrap();
        // Row 0 is replaced by template 3; it must still be found and removable.
        index.remove_template(1);
        let hits = index.search(&[-1.0, 0.0], 1).unwrap();
        assert_eq!((hits[0].template_id, hits[0].score), (3, 1.0));
        assert!(index.remove_template(3));
        assert_eq!(index.len(), 1);
        let hits = index.search(&[-1.0, 0.0], 5).unwrap();
        assert_eq!(ids(&hits), vec![owner_key("b")]);
    }

    #[test]
    fn reinserting_a_template_replaces_it() {
        let mut index = FaceIndex::new(2);
        index.insert(1, owner("a"), &[1.0, 0.0]).unwrap();
        index.insert(1, owner("a"), &[0.0, 1.0]).unwrap();
        assert_eq!(index.len(), 1);
        let hits = index.search(&[0.0, 1.0], 1).unwrap();
        assert!((hits[0].score - 1.0).abs() < 1e-6);
    }

    #[test]
    fn wrong_dimension_and_degenerate_vectors_are_refused() {
        let mut index = FaceIndex::new(3);
        assert_eq!(
            index.insert(5, owner("a"), &[1.0, 0.0]),
            Err(IndexError::Dimension {
                template_id: 5,
                expected: 3,
                found: 2
            })
        );
        assert_eq!(
            index.insert(6, owner("a"), &[0.0, 0.0, 0.0]),
            Err(IndexError::Degenerate { template_id: 6 })
        );
        assert_eq!(
            index.insert(7, owner("a"), &[f32::NAN, 1.0, 0.0]),
            Err(IndexError::Degenerate { template_id: 7 })
        );
        assert!(index.is_empty());
        assert_eq!(
            index.search(&[1.0], 1),
            Err(IndexError::QueryDimension {
                expected: 3,
                found: 1
            })
        );
        assert_eq!(
            index.search(&[0.0, 0.0, 0.0], 1),
            Err(IndexError::DegenerateQuery)
        );
    }

    #[test]
    fn filter_hides_a_subject_even_when_it_is_the_best() {
        let mut index = FaceIndex::new(2);
        let watch = Subject::Watch {
            id: 9,
            name: "w".into(),
            priority: Priority::High,
        };
        index.insert(1, watch, &[1.0, 0.0]).unwrap();
        index.insert(2, owner("a"), &[0.7, 0.7]).unwrap();
        let hits = index
            .search_filtered(&[1.0, 0.0], 5, |s| !matches!(s, Subject::Watch { .. }))
            .unwrap();
        assert_eq!(ids(&hits), vec![owner_key("a")]);
    }

    #[test]
    fn debug_output_shows_sizes_not_vectors() {
        let mut index = FaceIndex::new(2);
        index.insert(1, owner("a"), &[0.6, 0.8]).unwrap();
        let text = format!("{index:?}");
        assert!(text.contains("templates: 1"), "{text}");
        assert!(!text.contains("0.6") && !text.contains("0.8"), "{text}");
    }

    #[test]
    fn update_subject_renames_without_touching_templates() {
        let mut index = FaceIndex::new(2);
        index.insert(1, owner("a"), &[1.0, 0.0]).unwrap();
        let renamed = Subject::Owner {
            id: "a".into(),
            name: "new name".into(),
        };
        assert!(index.update_subject(renamed.clone()));
        let hits = index.search(&[1.0, 0.0], 1).unwrap();
        assert_eq!(hits[0].subject, renamed);
        assert!(!index.update_subject(owner("nobody")));
    }

    /// The bounded selection against a brute force over many subjects with
    /// several templates each, after some removals.
    #[test]
    fn search_agrees_with_brute_force() {
        let dim = 19;
        let mut rng = Lcg(42);
        let mut index = FaceIndex::new(dim);
        let mut all: Vec<(i64, String, Vec<f32>)> = Vec::new();
        for t in 0..600i64 {
            let subject = format!("s{}", t % 97);
            let v = rng.vector(dim);
            index.insert(t, owner(&subject), &v).unwrap();
            all.push((t, subject, v));
        }
        for t in (0..600i64).step_by(7) {
            index.remove_template(t);
        }
        all.retain(|(t, _, _)| t % 7 != 0);

        for _ in 0..20 {
            let q = rng.vector(dim);
            let qn = 1.0 / dot(&q, &q).sqrt();
            let mut best: HashMap<String, (f32, i64)> = HashMap::new();
            for (t, s, v) in &all {
                let score = dot(&q, v) * qn / dot(v, v).sqrt();
                let entry = best.entry(s.clone()).or_insert((f32::MIN, *t));
                if score > entry.0 {
                    *entry = (score, *t);
                }
            }
            let mut expected: Vec<(String, f32, i64)> = best
                .into_iter()
                .map(|(s, (score, t))| (s, score, t))
                .collect();
            expected.sort_by(|a, b| b.1.total_cmp(&a.1));
            expected.truncate(5);

            let hits = index.search(&q, 5).unwrap();
            assert_eq!(hits, index.search_exhaustive(&q, 5).unwrap());
            assert_eq!(hits.len(), 5);
            for (hit, (subject, score, template)) in hits.iter().zip(&expected) {
                assert_eq!(hit.subject.key(), owner_key(subject));
                assert_eq!(hit.template_id, *template);
                assert!((hit.score - score).abs() < 1e-5);
            }
        }
    }
}
