//! Per-person decisions over face tracks: a pure state machine.
//!
//! The pipeline calls [`Decider::on_track`] when a track has new faces and
//! when it ends, with the gallery's best match for the track's embedding.
//! A track is decided once: when it has enough usable faces, when its match
//! is clearly above the threshold, or when it ends. A decision may be
//! updated once the identity gets surer (a stranger turning out to be an
//! owner), never repeated per frame. Unknown faces are remembered (and
//! forgotten after the retention time) so a returning stranger keeps one id;
//! cooldowns stop repeat alerts for the same person at the same camera.

use std::collections::{HashMap, VecDeque};

use crate::config::{CameraRole, DecideConfig};
use crate::events::EventKind;
use crate::registry::{Match, Priority, Subject};
use crate::track::Track;
use crate::vision::embed::cosine;

/// What the pipeline should record and publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub kind: EventKind,
    pub track_id: u64,
    pub subject: Option<Subject>,
    pub score: Option<f32>,
    pub liveness: Option<f32>,
    pub stranger_id: Option<String>,
    pub priority: Option<Priority>,
    /// Send the open command for this camera's gate.
    pub open_gate: bool,
    pub faces: u32,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A new event for the track.
    Emit(Verdict),
    /// The track's event, replaced (same event id, next revision).
    Update(Verdict),
}

/// What a track was decided as.
#[derive(Debug, Clone, PartialEq)]
enum Decided {
    /// An event was emitted (or suppressed by a cooldown) with this kind.
    Kind(EventKind),
    /// An owner on a patrol camera: nothing to report.
    Quiet,
}

#[derive(Debug, Clone)]
struct Stranger {
    id: String,
    embedding: Vec<f32>,
    last_seen: f64,
    /// (time, track id) of the tracks this stranger was seen on.
    tracks: VecDeque<(f64, u64)>,
}

#[derive(Debug)]
pub struct Decider {
    cfg: DecideConfig,
    role: CameraRole,
    threshold: f32,
    decided: HashMap<u64, Decided>,
    strangers: Vec<Stranger>,
    /// Last alert time per (kind, person) at this camera.
    last_alert: HashMap<(EventKind, String), f64>,
    stranger_seq: u64,
    stranger_prefix: String,
}

impl Decider {
    /// `stranger_prefix` makes stranger ids unique across cameras and runs
    /// (e.g. camera name and start time).
    pub fn new(cfg: DecideConfig, role: CameraRole, threshold: f32, stranger_prefix: &str) -> Self {
        Self {
            cfg,
            role,
            threshold,
            decided: HashMap::new(),
            strangers: Vec::new(),
            last_alert: HashMap::new(),
            stranger_seq: 0,
            stranger_prefix: stranger_prefix.to_owned(),
        }
    }

    /// Known strangers (for status and tests).
    pub fn stranger_count(&self) -> usize {
        self.strangers.len()
    }

    /// Decides (or updates) a track. `best` is the gallery's best match for
    /// the track's embedding, if it has one.
    pub fn on_track(
        &mut self,
        t: &Track,
        best: Option<&Match>,
        now: f64,
        ended: bool,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let hit = best.filter(|m| m.score >= self.threshold);
        match self.decided.get(&t.id).cloned() {
            None => {
                if self.role == CameraRole::Gate && t.usable == 0 && t.spoofs > 0 {
                    // One odd frame is not an attack: a spoof needs min_faces.
                    if t.spoofs as usize >= self.cfg.min_faces {
                        self.decided.insert(t.id, Decided::Kind(EventKind::Spoof));
                        let v = Verdict {
                            reason: Some(format!(
                                "{} of {} faces failed the liveness check",
                                t.spoofs, t.frames
                            )),
                            ..self.verdict(EventKind::Spoof, t, None)
                        };
                        if self.cooldown_ok(EventKind::Spoof, "spoof".into(), now) {
                            out.push(Action::Emit(v));
                        }
                    }
                    return out;
                }
                if t.usable == 0 {
                    return out;
                }
                let confident =
                    hit.is_some_and(|m| m.score >= self.threshold + self.cfg.confident_margin);
                if !(ended || confident || t.usable as usize >= self.cfg.min_faces) {
                    return out;
                }
                match hit {
                    Some(m) => self.decide_match(t, m, now, false, &mut out),
                    // A face seen once and gone is more often a false or
                    // partial detection than a person: strangers need two.
                    None if t.usable < 2 && (self.cfg.min_faces >= 2) => {
                        self.decided.insert(t.id, Decided::Quiet);
                    }
                    None => self.decide_stranger(t, now, &mut out),
                }
            }
            Some(Decided::Kind(EventKind::Stranger)) => {
                // Surer now: the stranger is someone registered after all.
                if let Some(m) = hit {
                    self.decide_match(t, m, now, true, &mut out);
                }
            }
            Some(_) => {}
        }
        out
    }

    fn verdict(&self, kind: EventKind, t: &Track, m: Option<&Match>) -> Verdict {
        Verdict {
            kind,
            track_id: t.id,
            subject: m.map(|m| m.subject.clone()),
            score: m.map(|m| m.score),
            liveness: t.mean_liveness(),
            stranger_id: None,
            priority: None,
            open_gate: false,
            faces: t.usable,
            reason: None,
        }
    }

    fn decide_match(
        &mut self,
        t: &Track,
        m: &Match,
        now: f64,
        update: bool,
        out: &mut Vec<Action>,
    ) {
        let (kind, key, priority) = match &m.subject {
            Subject::Owner { id, .. } => {
                if self.role == CameraRole::Patrol {
                    self.decided.insert(t.id, Decided::Quiet);
                    return;
                }
                (EventKind::OwnerPass, id.clone(), None)
            }
            Subject::Watch { id, priority, .. } => {
                (EventKind::Watchlist, format!("watch:{id}"), Some(*priority))
            }
        };
        self.decided.insert(t.id, Decided::Kind(kind));
        let v = Verdict {
            priority,
            open_gate: kind == EventKind::OwnerPass,
            ..self.verdict(kind, t, Some(m))
        };
        let cooldown = if kind == EventKind::OwnerPass {
            self.cfg.pass_cooldown_s
        } else {
            self.cfg.cooldown_s
        };
        if update {
            // The track already has an event: always correct it.
            out.push(Action::Update(v));
        } else if self.cooldown_ok_for(kind, key, now, cooldown) {
            out.push(Action::Emit(v));
        }
    }

    fn decide_stranger(&mut self, t: &Track, now: f64, out: &mut Vec<Action>) {
        self.decided
            .insert(t.id, Decided::Kind(EventKind::Stranger));
        let Some(e) = t.embedding() else { return };
        let sid = self.remember_stranger(t.id, &e, now);
        let v = Verdict {
            stranger_id: Some(sid.clone()),
            priority: Some(Priority::Normal),
            ..self.verdict(EventKind::Stranger, t, None)
        };
        if self.cooldown_ok(EventKind::Stranger, sid.clone(), now) {
            out.push(Action::Emit(v.clone()));
        }
        let window = self.cfg.loiter_window_s as f64;
        let seen = self.strangers.iter().find(|s| s.id == sid).map_or(0, |s| {
            s.tracks.iter().filter(|(at, _)| now - at <= window).count()
        });
        if seen >= self.cfg.loiter_tracks
            && self.cooldown_ok(EventKind::Loitering, sid.clone(), now)
        {
            out.push(Action::Emit(Verdict {
                kind: EventKind::Loitering,
                priority: Some(Priority::High),
                reason: Some(format!(
                    "seen on {seen} separate occasions within {:.0} minutes",
                    window / 60.0
                )),
                ..v
            }));
        }
    }

    /// The stranger id for an unknown face: a remembered one if similar, else new.
    fn remember_stranger(&mut self, track_id: u64, e: &[f32], now: f64) -> String {
        let best = self
            .strangers
            .iter_mut()
            .map(|s| (cosine(&s.embedding, e), s))
            .filter(|(sim, _)| *sim >= self.cfg.stranger_match)
            .max_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((_, s)) = best {
            // Running mean, renormalised: the memory follows the person.
            s.embedding.iter_mut().zip(e).for_each(|(a, b)| *a += b);
            let n = s
                .embedding
                .iter()
                .map(|x| x * x)
                .sum::<f32>()
                .sqrt()
                .max(1e-6);
            s.embedding.iter_mut().for_each(|x| *x /= n);
            s.last_seen = now;
            // A visit is a track well apart from the last one: a track split
            // by an occlusion or a turned head is the same visit.
            let gap = self.cfg.visit_gap_s as f64;
            match s.tracks.back_mut() {
                Some(last) if now - last.0 < gap => *last = (now, track_id),
                _ => {
                    s.tracks.push_back((now, track_id));
                    if s.tracks.len() > 64 {
                        s.tracks.pop_front();
                    }
                }
            }
            return s.id.clone();
        }
        self.stranger_seq += 1;
        let id = format!("S-{}-{}", self.stranger_prefix, self.stranger_seq);
        self.strangers.push(Stranger {
            id: id.clone(),
            embedding: e.to_vec(),
            last_seen: now,
            tracks: VecDeque::from([(now, track_id)]),
        });
        id
    }

    fn cooldown_ok(&mut self, kind: EventKind, who: String, now: f64) -> bool {
        self.cooldown_ok_for(kind, who, now, self.cfg.cooldown_s)
    }

    fn cooldown_ok_for(&mut self, kind: EventKind, who: String, now: f64, cooldown: f32) -> bool {
        let key = (kind, who);
        if let Some(last) = self.last_alert.get(&key)
            && now - last < cooldown as f64
        {
            return false;
        }
        self.last_alert.insert(key, now);
        true
    }

    /// Whether a track's decision can no longer change (everything but a
    /// stranger, who may yet turn out to be registered): its faces need no
    /// more embedding, which is most of the work on a busy camera.
    pub fn is_final(&self, track_id: u64) -> bool {
        matches!(self.decided.get(&track_id), Some(d) if *d != Decided::Kind(EventKind::Stranger))
    }

    /// Whether a track was decided as a stranger (whose identity may still
    /// get surer, so its faces are re-checked now and then).
    pub fn is_stranger(&self, track_id: u64) -> bool {
        self.decided.get(&track_id) == Some(&Decided::Kind(EventKind::Stranger))
    }

    /// Forgets an ended track's decision.
    pub fn forget(&mut self, track_id: u64) {
        self.decided.remove(&track_id);
    }

    /// Drops strangers not seen within the retention time (privacy) and old cooldowns.
    pub fn expire(&mut self, now: f64) {
        let keep = self.cfg.stranger_retention_s as f64;
        self.strangers.retain(|s| now - s.last_seen <= keep);
        let longest = self.cfg.cooldown_s.max(self.cfg.pass_cooldown_s) as f64;
        self.last_alert.retain(|_, at| now - *at <= longest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::{Face, Tracker, TrackerConfig};
    use crate::vision::Rejection;
    use crate::vision::detect::Detection;

    fn cfg() -> DecideConfig {
        DecideConfig {
            min_faces: 3,
            confident_margin: 0.15,
            cooldown_s: 60.0,
            pass_cooldown_s: 10.0,
            loiter_tracks: 3,
            loiter_window_s: 600.0,
            stranger_retention_s: 3600.0,
            stranger_match: 0.45,
            visit_gap_s: 30.0,
            ..DecideConfig::default()
        }
    }

    fn tracker() -> Tracker {
        Tracker::new(TrackerConfig {
            iou: 0.2,
            similarity: 0.5,
            timeout_s: 2.0,
            keep_best: 5,
        })
    }

    fn face(e: [f32; 2], spoof: bool) -> Face {
        Face {
            det: Detection {
                bbox: [0.0, 0.0, 50.0, 50.0],
                score: 0.9,
                landmarks: [[0.0; 2]; 5],
            },
            quality: 0.5,
            embedding: (!spoof).then(|| e.to_vec()),
            liveness: Some(if spoof { 0.1 } else { 0.9 }),
            rejection: spoof.then_some(Rejection::Spoof {
                liveness: 0.1,
                threshold: 0.5,
            }),
        }
    }

    fn owner(score: f32) -> Match {
        Match {
            subject: Subject::Owner {
                id: "A-1".into(),
                name: "Li".into(),
            },
            score,
            template_id: 1,
        }
    }

    /// Feeds `n` frames of one face; returns all actions.
    fn feed(
        d: &mut Decider,
        t: &mut Tracker,
        start: f64,
        n: usize,
        e: [f32; 2],
        spoof: bool,
        m: Option<Match>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        for i in 0..n {
            let now = start + i as f64 * 0.1;
            let id = t.update(now, &[face(e, spoof)])[0];
            let tr = t.get(id).unwrap().clone();
            out.extend(d.on_track(&tr, m.as_ref(), now, false));
        }
        out
    }

    fn end_all(d: &mut Decider, t: &mut Tracker, now: f64, m: Option<Match>) -> Vec<Action> {
        let mut out = Vec::new();
        for tr in t.ended(now) {
            out.extend(d.on_track(&tr, m.as_ref(), now, true));
            d.forget(tr.id);
        }
        out
    }

    fn kinds(a: &[Action]) -> Vec<EventKind> {
        a.iter()
            .map(|a| match a {
                Action::Emit(v) | Action::Update(v) => v.kind,
            })
            .collect()
    }

    #[test]
    fn an_owner_at_the_gate_gives_one_pass_and_an_open_not_one_per_frame() {
        let mut d = Decider::new(cfg(), CameraRole::Gate, 0.4, "t");
        let mut t = tracker();
        let a = feed(&mut d, &mut t, 0.0, 20, [1.0, 0.0], false, Some(owner(0.5)));
        assert_eq!(kinds(&a), [EventKind::OwnerPass]);
        let Action::Emit(v) = &a[0] else { panic!() };
        assert!(v.open_gate);
        assert_eq!(v.faces, 3, "decided after min_faces");
        assert!(end_all(&mut d, &mut t, 10.0, Some(owner(0.5))).is_empty());
    }

    #[test]
    fn a_clear_match_is_decided_on_the_first_face() {
        let mut d = Decider::new(cfg(), CameraRole::Gate, 0.4, "t");
        let mut t = tracker();
        let a = feed(&mut d, &mut t, 0.0, 1, [1.0, 0.0], false, Some(owner(0.7)));
        assert_eq!(kinds(&a), [EventKind::OwnerPass]);
    }

    #[test]
    fn owners_on_patrol_cameras_are_quiet_and_watch_list_hits_alert_with_priority() {
        let mut d = Decider::new(cfg(), CameraRole::Patrol, 0.4, "t");
        let mut t = tracker();
        assert!(feed(&mut d, &mut t, 0.0, 5, [1.0, 0.0], false, Some(owner(0.6))).is_empty());
        let w = Match {
            subject: Subject::Watch {
                id: 9,
                name: "Zhang".into(),
                priority: Priority::Critical,
            },
            score: 0.6,
            template_id: 2,
        };
        assert!(end_all(&mut d, &mut t, 50.0, None).is_empty());
        let a = feed(&mut d, &mut t, 100.0, 5, [0.0, 1.0], false, Some(w));
        assert_eq!(kinds(&a), [EventKind::Watchlist]);
        let Action::Emit(v) = &a[0] else { panic!() };
        assert_eq!(v.priority, Some(Priority::Critical));
        assert!(!v.open_gate);
    }

    #[test]
    fn a_spoof_at_the_gate_alerts_and_never_opens() {
        let mut d = Decider::new(cfg(), CameraRole::Gate, 0.4, "t");
        let mut t = tracker();
        let a = feed(&mut d, &mut t, 0.0, 10, [1.0, 0.0], true, Some(owner(0.9)));
        assert_eq!(kinds(&a), [EventKind::Spoof]);
        assert!(
            a.iter()
                .all(|a| matches!(a, Action::Emit(v) if !v.open_gate))
        );
    }

    #[test]
    fn a_stranger_keeps_one_id_gets_cooldown_and_loiters_on_the_third_track() {
        let mut d = Decider::new(cfg(), CameraRole::Patrol, 0.4, "t");
        let mut t = tracker();
        let mut all = Vec::new();
        for visit in 0..3 {
            let start = visit as f64 * 100.0;
            all.extend(feed(&mut d, &mut t, start, 5, [1.0, 0.0], false, None));
            all.extend(end_all(&mut d, &mut t, start + 50.0, None));
        }
        // Visits 100 s apart, cooldown 60 s: an alert each time, one stranger id.
        let strangers: Vec<&Verdict> = all
            .iter()
            .filter_map(|a| match a {
                Action::Emit(v) if v.kind == EventKind::Stranger => Some(v),
                _ => None,
            })
            .collect();
        assert_eq!(
            strangers.len(),
            3,
            "three visits, 100 s apart, cooldown 60 s"
        );
        assert!(
            strangers
                .iter()
                .all(|v| v.stranger_id == strangers[0].stranger_id)
        );
        assert_eq!(
            kinds(&all)
                .iter()
                .filter(|k| **k == EventKind::Loitering)
                .count(),
            1
        );
        assert_eq!(d.stranger_count(), 1);
        // Within the cooldown a fourth visit gives no new stranger alert.
        let again = feed(&mut d, &mut t, 255.0, 5, [1.0, 0.0], false, None);
        assert!(again.is_empty(), "{again:?}");
        // Retention: forgotten after an hour unseen.
        d.expire(255.0 + 3601.0);
        assert_eq!(d.stranger_count(), 0);
    }

    #[test]
    fn a_stranger_track_that_becomes_an_owner_is_updated_not_duplicated() {
        let mut d = Decider::new(cfg(), CameraRole::Gate, 0.4, "t");
        let mut t = tracker();
        let a = feed(&mut d, &mut t, 0.0, 3, [1.0, 0.0], false, Some(owner(0.3)));
        assert_eq!(kinds(&a), [EventKind::Stranger]);
        let b = feed(&mut d, &mut t, 0.3, 3, [1.0, 0.0], false, Some(owner(0.45)));
        assert_eq!(b.len(), 1);
        assert!(
            matches!(&b[0], Action::Update(v) if v.kind == EventKind::OwnerPass && v.open_gate)
        );
        assert!(feed(&mut d, &mut t, 0.6, 3, [1.0, 0.0], false, Some(owner(0.5))).is_empty());
    }

    #[test]
    fn a_short_track_is_decided_when_it_ends() {
        let mut d = Decider::new(cfg(), CameraRole::Gate, 0.4, "t");
        let mut t = tracker();
        assert!(feed(&mut d, &mut t, 0.0, 1, [1.0, 0.0], false, Some(owner(0.45))).is_empty());
        let a = end_all(&mut d, &mut t, 5.0, Some(owner(0.45)));
        assert_eq!(kinds(&a), [EventKind::OwnerPass]);
    }
}
