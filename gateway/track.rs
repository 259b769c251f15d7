//! Face tracks per camera: the same person across frames, so that decisions
//! are made per person, not per frame.
//!
//! Association is greedy over (track, face) pairs: box overlap continues a
//! track, and so does a similar embedding when the box jumped (a skipped
//! frame, a fast walker); an overlap whose embedding disagrees with the
//! track's identity does not (two people crossing, or one person taking the
//! place of another at a gate): that face starts a new track, and so a new
//! decision. Faces of decided tracks are only followed by their box between
//! checks; [`Track::needs_check`] says when a face must be analysed and
//! embedded again (at least every `reverify_s`, and whenever the box jumps),
//! so a change of person is caught. Times are seconds on any monotonic
//! clock the caller chooses (video time in replays), so everything here is
//! pure.

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
    /// Whether the face went through the checks (false: a face of a decided
    /// track, only followed by its box).
    pub analysed: bool,
}

impl Face {
    /// A face only followed by its box (not checked, not embedded).
    pub fn followed(det: Detection) -> Self {
        Face {
            det,
            quality: 0.0,
            embedding: None,
            liveness: None,
            rejection: None,
            analysed: false,
        }
    }
}

/// A box this much larger or smaller than at the last check is a jump.
const SIZE_JUMP: f32 = 1.3;
/// A box centre that moved this many box sizes since the last check is a jump.
const PLACE_JUMP: f32 = 0.5;
/// Overlap at which a disagreeing face is in the same spot as a track.
const SAME_SPOT: f32 = 0.5;
/// A similar face continues a track without box overlap only within this
/// many seconds of its last sighting (a skipped frame, a fast walker); after
/// a longer absence elsewhere it is a new visit, with its own decision.
const REJOIN_BY_FACE_S: f64 = 0.6;

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
    /// Faces the liveness check judged live.
    pub live: u32,
    /// Faces rejected as too small or turned away.
    pub too_small: u32,
    pub turned: u32,
    /// Shorter side of the largest usable face, pixels.
    pub best_px: f32,
    /// When a face of this track was last analysed, and its box then.
    pub last_checked: f64,
    pub checked_bbox: [f32; 4],
    /// Another person's face took this track's place (same spot, no face
    /// of its own on that frame): the track ends at once, so whoever comes
    /// next gets a track and a decision of their own.
    pub superseded: bool,
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
            live: 0,
            too_small: 0,
            turned: 0,
            best_px: 0.0,
            last_checked: now,
            checked_bbox: face.det.bbox,
            superseded: false,
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
        if face.analysed {
            self.last_checked = now;
            self.checked_bbox = face.det.bbox;
        }
        if let Some(l) = face.liveness {
            self.liveness_sum += l;
            self.liveness_n += 1;
        }
        match face.rejection {
            Some(Rejection::Spoof { .. }) => self.spoofs += 1,
            Some(Rejection::TooSmall { .. }) => self.too_small += 1,
            Some(Rejection::Profile { .. }) => self.turned += 1,
            None if face.liveness.is_some() => self.live += 1,
            None => {}
        }
        if let Some(e) = &face.embedding {
            self.usable += 1;
            self.best_px = self.best_px.max(face.det.size());
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

    /// Whether a face in `bbox` at `now` must be analysed (checked and
    /// embedded) rather than only followed: the last check is `every_s` old,
    /// or the box jumped in size or place since.
    pub fn needs_check(&self, bbox: &[f32; 4], now: f64, every_s: f64) -> bool {
        if now - self.last_checked >= every_s - 1e-6 {
            return true;
        }
        let size = |b: &[f32; 4]| (b[2] - b[0]).min(b[3] - b[1]).max(1.0);
        let (was, is) = (size(&self.checked_bbox), size(bbox));
        let ratio = is / was;
        if !(1.0 / SIZE_JUMP..=SIZE_JUMP).contains(&ratio) {
            return true;
        }
        let centre = |b: &[f32; 4]| ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
        let ((x0, y0), (x1, y1)) = (centre(&self.checked_bbox), centre(bbox));
        ((x1 - x0).powi(2) + (y1 - y0).powi(2)).sqrt() > PLACE_JUMP * was
    }
}

#[derive(Debug, Clone)]
pub struct TrackerConfig {
    pub iou: f32,
    pub similarity: f32,
    /// A face less similar than this to a track's identity never continues
    /// it, whatever the overlap: another person has taken its place.
    pub change_similarity: f32,
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

    /// The track a box most likely continues (overlap at least `min_iou`;
    /// on equal overlap the one seen last).
    pub fn by_box(&self, bbox: &[f32; 4], min_iou: f32) -> Option<&Track> {
        self.tracks
            .iter()
            .map(|t| (iou(&t.bbox, bbox), t))
            .filter(|(o, _)| *o >= min_iou)
            .max_by(|a, b| {
                a.0.total_cmp(&b.0)
                    .then(a.1.last_seen.total_cmp(&b.1.last_seen))
            })
            .map(|(_, t)| t)
    }

    /// Adds one frame's faces; returns the track id of each face, in order.
    pub fn update(&mut self, now: f64, faces: &[Face]) -> Vec<u64> {
        // Score every live pair; higher is a better continuation.
        let mut pairs = Vec::new();
        // (track, face) in the same spot whose embeddings disagree.
        let mut changed = Vec::new();
        for (ti, t) in self.tracks.iter().enumerate() {
            let te = t.embedding();
            for (fi, f) in faces.iter().enumerate() {
                let overlap = iou(&t.bbox, &f.det.bbox);
                let sim = match (&te, &f.embedding) {
                    (Some(a), Some(b)) => Some(cosine(a, b)),
                    _ => None,
                };
                if sim.is_some_and(|s| s < self.cfg.change_similarity) {
                    if overlap >= SAME_SPOT {
                        changed.push((ti, fi));
                    }
                    continue;
                }
                let by_box = overlap >= self.cfg.iou;
                let by_face = sim.is_some_and(|s| s >= self.cfg.similarity)
                    && now - t.last_seen <= REJOIN_BY_FACE_S;
                if by_box || by_face {
                    pairs.push((overlap + sim.unwrap_or(0.0), t.last_seen, ti, fi));
                }
            }
        }
        // Best continuation first; on a tie the track seen last (after a
        // change of person, the new person's track, not the old one's).
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.total_cmp(&a.1)));
        let mut track_of = vec![None; faces.len()];
        let mut taken = vec![false; self.tracks.len()];
        for (_, _, ti, fi) in pairs {
            if taken[ti] || track_of[fi].is_some() {
                continue;
            }
            taken[ti] = true;
            track_of[fi] = Some(ti);
        }
        for (ti, fi) in changed {
            if !taken[ti] && track_of[fi] != Some(ti) {
                self.tracks[ti].superseded = true;
            }
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

    /// Removes and returns the tracks not seen for `timeout_s`, and those
    /// whose place another person took.
    pub fn ended(&mut self, now: f64) -> Vec<Track> {
        let timeout = self.cfg.timeout_s;
        let (done, live): (Vec<Track>, Vec<Track>) = std::mem::take(&mut self.tracks)
            .into_iter()
            .partition(|t| t.superseded || now - t.last_seen > timeout);
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
            analysed: true,
        }
    }

    fn tracker() -> Tracker {
        Tracker::new(TrackerConfig {
            iou: 0.2,
            similarity: 0.5,
            change_similarity: 0.3,
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

    #[test]
    fn a_decided_face_is_checked_again_after_reverify_s_or_a_jump() {
        let mut t = tracker();
        t.update(0.0, &[face(100.0, Some([1.0, 0.0]), 0.5)]);
        // Followed only (not analysed): the check time stays.
        let mut f = Face::followed(face(102.0, None, 0.0).det);
        f.liveness = None;
        t.update(0.1, std::slice::from_ref(&f));
        let tr = t.get(1).unwrap();
        assert_eq!(tr.last_checked, 0.0);
        let b = [102.0, 0.0, 152.0, 50.0];
        assert!(!tr.needs_check(&b, 0.4, 0.5), "0.4 s: still fresh");
        assert!(tr.needs_check(&b, 0.5, 0.5), "0.5 s: due");
        assert!(
            tr.needs_check(&[100.0, 0.0, 170.0, 70.0], 0.2, 0.5),
            "40% larger: a jump"
        );
        assert!(
            tr.needs_check(&[130.0, 0.0, 180.0, 50.0], 0.2, 0.5),
            "moved 30 px of a 50 px face: a jump"
        );
        // An analysed face resets the clock.
        t.update(0.6, &[face(104.0, Some([1.0, 0.0]), 0.5)]);
        assert!(!t.get(1).unwrap().needs_check(&b, 0.9, 0.5));
    }

    #[test]
    fn after_a_change_of_person_the_box_follows_the_new_track() {
        let mut t = tracker();
        t.update(0.0, &[face(0.0, Some([1.0, 0.0]), 0.5)]);
        assert_eq!(t.update(0.1, &[face(0.0, Some([0.0, 1.0]), 0.5)]), vec![2]);
        // Same box, same overlap with both: the newer track.
        let b = [0.0, 0.0, 50.0, 50.0];
        assert_eq!(t.by_box(&b, 0.5).map(|t| t.id), Some(2));
        assert_eq!(
            t.update(0.2, &[Face::followed(face(0.0, None, 0.0).det)]),
            vec![2]
        );
        assert!(t.by_box(&[300.0, 0.0, 350.0, 50.0], 0.5).is_none());
        // The first person's track lost its place: it ends now, not after
        // the timeout, so their return is a new track.
        let done = t.ended(0.2);
        assert_eq!(done.iter().map(|t| t.id).collect::<Vec<_>>(), vec![1]);
        assert_eq!(t.update(0.3, &[face(0.0, Some([1.0, 0.0]), 0.5)]), vec![3]);
    }

    #[test]
    fn a_face_back_elsewhere_after_an_absence_is_a_new_visit() {
        let mut t = tracker();
        t.update(0.0, &[face(0.0, Some([1.0, 0.0]), 0.5)]);
        // Elsewhere after a skipped frame: the same track.
        assert_eq!(
            t.update(0.3, &[face(300.0, Some([1.0, 0.0]), 0.5)]),
            vec![1]
        );
        // Elsewhere again after 1.5 s unseen (within the track timeout): a
        // new visit, so a new decision.
        assert_eq!(t.update(1.8, &[face(0.0, Some([1.0, 0.0]), 0.5)]), vec![2]);
    }

    #[test]
    fn two_people_side_by_side_keep_their_tracks() {
        let mut t = tracker();
        t.update(
            0.0,
            &[
                face(0.0, Some([1.0, 0.0]), 0.5),
                face(30.0, Some([0.0, 1.0]), 0.5),
            ],
        );
        // Overlapping boxes, each face still on its own track.
        let ids = t.update(
            0.1,
            &[
                face(2.0, Some([1.0, 0.0]), 0.5),
                face(28.0, Some([0.0, 1.0]), 0.5),
            ],
        );
        assert_eq!(ids, vec![1, 2]);
        assert!(t.ended(0.2).is_empty());
    }
}
