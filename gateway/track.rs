//! Face tracks per camera: the same person across frames, so that decisions
//! are made per person, not per frame.
//!
//! Association is greedy over (track, face) pairs: box overlap continues a
//! track, and so does a similar embedding when the box jumped (a skipped
//! frame, a fast walker); an overlap whose embeddings clearly disagree does
//! not (two people crossing). Times are seconds on any monotonic clock the
//! caller chooses (video time in replays), so everything here is pure.

use crate::vision::Rejection;
use crate::vision::detect::{Detection, iou};
use crate::vision::embed::cosine;

/// One face seen on one frame, analysed.
#[derive(Debug, Clone)]
pub struct Face {
    pub det: Detection,
    /// How good this view is for recognition (detector score × size × frontalness).
    pub quality: f32,
    /// `None` when the face was rejected.
    pub embedding: Option<Vec<f32>>,
    pub liveness: Option<f32>,
    pub rejection: Option<Rejection>,
}

/// Embeddings this dissimilar never continue a track, whatever the overlap.
const DIFFERENT_PERSON: f32 = 0.15;

#[derive(Debug, Clone)]
pub struct Track {
    pub id: u64,
    pub first_seen: f64,
    pub last_seen: f64,
    pub bbox: [f32; 4],
    /// Frames the track was seen on.
    pub frames: u32,
    /// Faces with an embedding.
    pub usable: u32,
    /// Faces rejected by the liveness check.
    pub spoofs: u32,
    /// Best faces kept: (quality, unit embedding), best first.
    best: Vec<(f32, Vec<f32>)>,
    pub liveness_sum: f32,
    pub liveness_n: u32,
    /// Quality of the best face seen, and whether it arrived with the last update.
    pub best_quality: f32,
    pub improved: bool,
}

impl Track {
    fn new(id: u64, now: f64, face: &Face) -> Self {
        let mut t = Track {
            id,
            first_seen: now,
            last_seen: now,
            bbox: face.det.bbox,
            frames: 0,
            usable: 0,
            spoofs: 0,
            best: Vec::new(),
            liveness_sum: 0.0,
            liveness_n: 0,
            best_quality: 0.0,
            improved: false,
        };
        t.add(now, face, 5);
        t
    }

    fn add(&mut self, now: f64, face: &Face, keep: usize) {
        self.last_seen = now;
        self.bbox = face.det.bbox;
        self.frames += 1;
        self.improved = false;
        if let Some(l) = face.liveness {
            self.liveness_sum += l;
            self.liveness_n += 1;
        }
        if matches!(face.rejection, Some(Rejection::Spoof { .. })) {
            self.spoofs += 1;
        }
        if let Some(e) = &face.embedding {
            self.usable += 1;
            if face.quality > self.best_quality {
                self.best_quality = face.quality;
                self.improved = true;
            }
            let pos = self.best.partition_point(|(q, _)| *q >= face.quality);
            if pos < keep {
                self.best.insert(pos, (face.quality, e.clone()));
                self.best.truncate(keep);
            }
        }
    }

    /// Quality-weighted mean of the best faces' embeddings, unit length.
    pub fn embedding(&self) -> Option<Vec<f32>> {
        let (_, first) = self.best.first()?;
        let mut sum = vec![0f32; first.len()];
        for (q, e) in &self.best {
            let w = q.max(1e-3);
            sum.iter_mut().zip(e).for_each(|(s, x)| *s += w * x);
        }
        let n = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
        if n <= f32::EPSILON || !n.is_finite() {
            return None;
        }
        sum.iter_mut().for_each(|x| *x /= n);
        Some(sum)
    }

    pub fn mean_liveness(&self) -> Option<f32> {
        (self.liveness_n > 0).then(|| self.liveness_sum / self.liveness_n as f32)
    }
}

#[derive(Debug, Clone)]
pub struct TrackerConfig {
    pub iou: f32,
    pub similarity: f32,
    pub timeout_s: f64,
    pub keep_best: usize,
}

#[derive(Debug)]
pub struct Tracker {
    cfg: TrackerConfig,
    tracks: Vec<Track>,
    next_id: u64,
}

impl Tracker {
    pub fn new(cfg: TrackerConfig) -> Self {
        Self {
            cfg,
            tracks: Vec::new(),
            next_id: 1,
        }
    }

    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    pub fn get(&self, id: u64) -> Option<&Track> {
        self.tracks.iter().find(|t| t.id == id)
    }

    /// Adds one frame's faces; returns the track id of each face, in order.
    pub fn update(&mut self, now: f64, faces: &[Face]) -> Vec<u64> {
        // Score every live pair; higher is a better continuation.
        let mut pairs = Vec::new();
        for (ti, t) in self.tracks.iter().enumerate() {
            let te = t.embedding();
            for (fi, f) in faces.iter().enumerate() {
                let overlap = iou(&t.bbox, &f.det.bbox);
                let sim = match (&te, &f.embedding) {
                    (Some(a), Some(b)) => Some(cosine(a, b)),
                    _ => None,
                };
                if sim.is_some_and(|s| s < DIFFERENT_PERSON) {
                    continue;
                }
                let by_box = overlap >= self.cfg.iou;
                let by_face = sim.is_some_and(|s| s >= self.cfg.similarity);
                if by_box || by_face {
                    pairs.push((overlap + sim.unwrap_or(0.0), ti, fi));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut track_of = vec![None; faces.len()];
        let mut taken = vec![false; self.tracks.len()];
        for (_, ti, fi) in pairs {
            if taken[ti] || track_of[fi].is_some() {
                continue;
            }
            taken[ti] = true;
            track_of[fi] = Some(ti);
        }
        let keep = self.cfg.keep_best;
        let mut ids = Vec::with_capacity(faces.len());
        for (fi, f) in faces.iter().enumerate() {
            match track_of[fi] {
                Some(ti) => {
                    self.tracks[ti].add(now, f, keep);
                    ids.push(self.tracks[ti].id);
                }
                None => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.tracks.push(Track::new(id, now, f));
                    ids.push(id);
                }
            }
        }
        ids
    }

    /// Removes and returns the tracks not seen for `timeout_s`.
    pub fn ended(&mut self, now: f64) -> Vec<Track> {
        let timeout = self.cfg.timeout_s;
        let (done, live): (Vec<Track>, Vec<Track>) = std::mem::take(&mut self.tracks)
            .into_iter()
            .partition(|t| now - t.last_seen > timeout);
        self.tracks = live;
        done
    }

    /// Removes and returns every track (end of stream, shutdown).
    pub fn drain(&mut self) -> Vec<Track> {
        std::mem::take(&mut self.tracks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(x: f32, e: Option<[f32; 2]>, q: f32) -> Face {
        Face {
            det: Detection {
                bbox: [x, 0.0, x + 50.0, 50.0],
                score: 0.9,
                landmarks: [[0.0; 2]; 5],
            },
            quality: q,
            embedding: e.map(|v| v.to_vec()),
            liveness: Some(0.9),
            rejection: None,
        }
    }

    fn tracker() -> Tracker {
        Tracker::new(TrackerConfig {
            iou: 0.2,
            similarity: 0.5,
            timeout_s: 2.0,
            keep_best: 3,
        })
    }

    #[test]
    fn a_face_moving_a_little_stays_one_track_and_two_people_are_two() {
        let mut t = tracker();
        let a = t.update(
            0.0,
            &[
                face(0.0, Some([1.0, 0.0]), 0.5),
                face(200.0, Some([0.0, 1.0]), 0.5),
            ],
        );
        assert_eq!(a, vec![1, 2]);
        let b = t.update(
            0.2,
            &[
                face(205.0, Some([0.0, 1.0]), 0.6),
                face(5.0, Some([1.0, 0.0]), 0.7),
            ],
        );
        assert_eq!(b, vec![2, 1]);
        assert_eq!(t.get(1).unwrap().frames, 2);
        assert!(t.get(1).unwrap().improved);
    }

    #[test]
    fn same_face_after_a_jump_continues_but_a_different_face_in_place_does_not() {
        let mut t = tracker();
        t.update(0.0, &[face(0.0, Some([1.0, 0.0]), 0.5)]);
        // Jumped far, same person: continues by embedding.
        assert_eq!(
            t.update(0.3, &[face(400.0, Some([0.99, 0.1]), 0.5)]),
            vec![1]
        );
        // Same place, clearly another person: a new track.
        assert_eq!(
            t.update(0.6, &[face(400.0, Some([0.0, 1.0]), 0.5)]),
            vec![2]
        );
    }

    #[test]
    fn tracks_end_after_the_timeout_and_the_embedding_weights_quality() {
        let mut t = tracker();
        t.update(0.0, &[face(0.0, Some([1.0, 0.0]), 0.9)]);
        t.update(0.1, &[face(2.0, Some([0.6, 0.8]), 0.1)]);
        let e = t.get(1).unwrap().embedding().unwrap();
        assert!(e[0] > 0.9, "{e:?}");
        assert!(t.ended(1.0).is_empty());
        let done = t.ended(2.5);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].usable, 2);
        assert!(t.tracks().is_empty());
    }

    #[test]
    fn rejected_faces_count_frames_but_not_usable_faces() {
        let mut t = tracker();
        let mut f = face(0.0, None, 0.5);
        f.rejection = Some(Rejection::Spoof {
            liveness: 0.1,
            threshold: 0.5,
        });
        t.update(0.0, &[f.clone()]);
        t.update(0.1, &[f]);
        let tr = t.get(1).unwrap();
        assert_eq!((tr.frames, tr.usable, tr.spoofs), (2, 0, 2));
        assert!(tr.embedding().is_none());
    }
}
