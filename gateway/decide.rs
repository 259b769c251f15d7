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
    /// Seconds from the track's first sighting to this decision.
    pub seen_for_s: f32,
    /// Within the repeat-alert cooldown of the same decision for the same
    /// person: recorded, not alerted, never an open.
    pub repeat: bool,
}

/// Whether a track has the evidence for a pass; if not, why (the words
/// are only made when a track ends undecided, not on every frame).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ready {
    Yes,
    Wait(Why),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Why {
    NoMatch,
    Ambiguous {
        best: f32,
        second: f32,
    },
    LivenessUncertain,
    FacesTooSmall,
    NearThreshold {
        score: f32,
        needed: f32,
        faces: u32,
        px: f32,
    },
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Why::NoMatch => f.write_str("no match"),
            Why::Ambiguous { best, second } => {
                write!(f, "two enrolled people match ({best:.3} and {second:.3})")
            }
            Why::LivenessUncertain => f.write_str("liveness uncertain"),
            Why::FacesTooSmall => f.write_str("faces too small"),
            Why::NearThreshold {
                score,
                needed,
                faces,
                px,
            } => write!(
                f,
                "match near the threshold ({score:.3}, needs {needed:.3} on {faces} faces of {px:.0} px)"
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The track's event (its primary one): later decisions on the track
    /// update it.
    Emit(Verdict),
    /// A further event about the track's person (loitering), next to the
    /// track's own: a new event, never updated.
    Also(Verdict),
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
    /// A gate pass needs faces judged live (the camera runs the liveness check).
    require_liveness: bool,
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
            require_liveness: false,
            decided: HashMap::new(),
            strangers: Vec::new(),
            last_alert: HashMap::new(),
            stranger_seq: 0,
            stranger_prefix: stranger_prefix.to_owned(),
        }
    }

    /// At a gate, a pass needs a majority of judged faces live (set when the
    /// camera runs the liveness check).
    pub fn with_liveness(mut self, required: bool) -> Self {
        self.require_liveness = required;
        self
    }

    /// Known strangers (for status and tests).
    pub fn stranger_count(&self) -> usize {
        self.strangers.len()
    }

    /// Decides (or updates) a track. `matches` are the gallery's best
    /// subjects for the track's embedding, best first (empty when it has
    /// none).
    ///
    /// Evidence is weighed against risk: a pass needs a score above the
    /// threshold by a margin that grows as the track's best face gets
    /// smaller, `min_faces` usable faces (or a confident match), no second
    /// enrolled person close behind, and at a gate with liveness on, a
    /// majority of judged faces live. A stranger alert waits for enough
    /// faces of a large enough size (or the track's end, or `decide_within_s`
    /// of sight), so that an owner still far away is not alerted first. A
    /// track that ends with `min_faces` detections but without the evidence
    /// for either gets an `undecided` event with its reason.
    pub fn on_track(&mut self, t: &Track, matches: &[Match], now: f64, ended: bool) -> Vec<Action> {
        let mut out = Vec::new();
        match self.decided.get(&t.id).cloned() {
            None => self.decide_new(t, matches, now, ended, &mut out),
            Some(Decided::Kind(EventKind::Stranger)) => {
                // Surer now: the stranger is someone registered after all.
                if let Some(m) = matches.first()
                    && self.pass_ready(t, matches) == Ready::Yes
                {
                    self.decide_match(t, m, now, true, &mut out);
                }
            }
            Some(_) => {}
        }
        out
    }

    fn decide_new(
        &mut self,
        t: &Track,
        matches: &[Match],
        now: f64,
        ended: bool,
        out: &mut Vec<Action>,
    ) {
        let min_faces = self.cfg.min_faces.max(1) as u32;
        // Liveness evidence at a gate: a majority of judged faces failed.
        if self.role == CameraRole::Gate && t.spoofs >= min_faces && t.spoofs > t.live {
            self.decided.insert(t.id, Decided::Kind(EventKind::Spoof));
            let v = Verdict {
                reason: Some(format!(
                    "{} of {} faces failed the liveness check",
                    t.spoofs, t.frames
                )),
                ..self.verdict(EventKind::Spoof, t, None, now)
            };
            // One cooldown for every spoof at this camera.
            let repeat = !self.cooldown_ok(EventKind::Spoof, String::new(), now);
            out.push(Action::Emit(Verdict { repeat, ..v }));
            return;
        }
        let best = matches.first().filter(|_| t.usable > 0);
        let hit = best.filter(|m| m.score >= self.threshold);
        if let Some(m) = hit {
            match self.pass_ready(t, matches) {
                Ready::Yes => return self.decide_match(t, m, now, false, out),
                Ready::Wait(_) if ended && t.frames < min_faces => {
                    self.decided.insert(t.id, Decided::Quiet);
                    return;
                }
                Ready::Wait(why) if ended => {
                    return self.undecided(t, Some(m), why.to_string(), now, out);
                }
                Ready::Wait(_) => return,
            }
        }
        if t.usable < min_faces {
            if ended && t.frames >= min_faces {
                let why = if t.too_small * 2 >= t.frames {
                    "faces too small".to_owned()
                } else if t.turned * 2 >= t.frames {
                    "faces turned away".to_owned()
                } else if t.spoofs > 0 {
                    "liveness uncertain".to_owned()
                } else {
                    format!("only {} usable faces", t.usable)
                };
                self.undecided(t, best, why, now, out);
            } else if ended {
                // A face seen once or twice and gone is more often a false
                // or partial detection than a person.
                self.decided.insert(t.id, Decided::Quiet);
            }
            return;
        }
        // No registered person (yet): a stranger, once the evidence is there.
        if t.best_px < self.cfg.min_decide_px {
            if ended {
                self.undecided(t, best, "faces too small".into(), now, out);
            }
            return;
        }
        let good_view = t.usable as usize >= self.cfg.stranger_min_faces
            && t.best_px >= self.cfg.stranger_min_px;
        if ended {
            // A short track of small faces (a false detection, a face in
            // the background) is not evidence enough for an alarm.
            if t.usable as usize >= self.cfg.stranger_min_faces
                || t.best_px >= self.cfg.stranger_min_px
            {
                return self.decide_stranger(t, now, out);
            }
            let why = format!(
                "too little evidence ({} faces, largest {:.0} px)",
                t.usable, t.best_px
            );
            return self.undecided(t, best, why, now, out);
        }
        let clear = best.is_none_or(|m| m.score < self.threshold - self.cfg.stranger_margin);
        let waited = now - t.first_seen >= self.cfg.decide_within_s as f64;
        if clear && (good_view || waited) {
            self.decide_stranger(t, now, out);
        }
    }

    /// Whether a track whose best match is above the threshold has the
    /// evidence for a pass (or a watch-list hit), and if not, why.
    fn pass_ready(&self, t: &Track, matches: &[Match]) -> Ready {
        let Some(m) = matches.first() else {
            return Ready::Wait(Why::NoMatch);
        };
        let c = &self.cfg;
        if let Some(second) = matches.get(1)
            && second.score >= self.threshold
            && m.score - second.score < c.ambiguity_margin
        {
            return Ready::Wait(Why::Ambiguous {
                best: m.score,
                second: second.score,
            });
        }
        if self.role == CameraRole::Gate && self.require_liveness && t.live <= t.spoofs {
            return Ready::Wait(Why::LivenessUncertain);
        }
        if m.score >= self.threshold + c.confident_margin {
            return Ready::Yes;
        }
        let needed = self.threshold + self.small_face_margin(t.best_px);
        if t.usable as usize >= c.min_faces && m.score >= needed {
            return Ready::Yes;
        }
        if t.best_px < c.min_decide_px {
            return Ready::Wait(Why::FacesTooSmall);
        }
        Ready::Wait(Why::NearThreshold {
            score: m.score,
            needed,
            faces: t.usable,
            px: t.best_px,
        })
    }

    /// The extra score a pass needs when the best face is small: nothing at
    /// `small_face_px` and above, `small_face_margin` at `min_decide_px` and
    /// below, linear between.
    fn small_face_margin(&self, best_px: f32) -> f32 {
        let c = &self.cfg;
        let span = (c.small_face_px - c.min_decide_px).max(1.0);
        let small = ((c.small_face_px - best_px) / span).clamp(0.0, 1.0);
        small * c.small_face_margin
    }

    fn undecided(
        &mut self,
        t: &Track,
        m: Option<&Match>,
        reason: String,
        now: f64,
        out: &mut Vec<Action>,
    ) {
        self.decided
            .insert(t.id, Decided::Kind(EventKind::Undecided));
        out.push(Action::Emit(Verdict {
            reason: Some(reason),
            // The score says how near it was; the candidate is not named.
            score: m.map(|m| m.score),
            ..self.verdict(EventKind::Undecided, t, None, now)
        }));
    }

    fn verdict(&self, kind: EventKind, t: &Track, m: Option<&Match>, now: f64) -> Verdict {
        Verdict {
            seen_for_s: (now - t.first_seen).max(0.0) as f32,
            repeat: false,
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
            ..self.verdict(kind, t, Some(m), now)
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
        } else {
            out.push(Action::Emit(Verdict {
                repeat: true,
                open_gate: false,
                ..v
            }));
        }
    }

    fn decide_stranger(&mut self, t: &Track, now: f64, out: &mut Vec<Action>) {
        self.decided
            .insert(t.id, Decided::Kind(EventKind::Stranger));
        let Some(e) = t.embedding() else { return };
        let sid = self.remember_stranger(t.id, &e, now);
        let v = Verdict {
            stranger_id: Some(sid.clone()),
            priority: Some(EventKind::Stranger.default_priority()),
            ..self.verdict(EventKind::Stranger, t, None, now)
        };
        let repeat = !self.cooldown_ok(EventKind::Stranger, sid.clone(), now);
        out.push(Action::Emit(Verdict {
            repeat,
            ..v.clone()
        }));
        let window = self.cfg.loiter_window_s as f64;
        let seen = self.strangers.iter().find(|s| s.id == sid).map_or(0, |s| {
            s.tracks.iter().filter(|(at, _)| now - at <= window).count()
        });
        if seen >= self.cfg.loiter_tracks
            && self.cooldown_ok(EventKind::Loitering, sid.clone(), now)
        {
            out.push(Action::Also(Verdict {
                kind: EventKind::Loitering,
                priority: Some(EventKind::Loitering.default_priority()),
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

    /// Whether a track is decided: its faces are then only followed by
    /// their box between re-verifications, which is most of the work saved
    /// on a busy camera.
    pub fn is_decided(&self, track_id: u64) -> bool {
        self.decided.contains_key(&track_id)
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
            change_similarity: 0.3,
            timeout_s: 2.0,
            keep_best: 5,
        })
    }

    fn face(e: [f32; 2], spoof: bool) -> Face {
        face_px(e, spoof, 50.0)
    }

    fn face_px(e: [f32; 2], spoof: bool, px: f32) -> Face {
        Face {
            det: Detection {
                bbox: [0.0, 0.0, px, px],
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
            analysed: true,
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
            out.extend(d.on_track(&tr, m.as_slice(), now, false));
        }
        out
    }

    fn end_all(d: &mut Decider, t: &mut Tracker, now: f64, m: Option<Match>) -> Vec<Action> {
        let mut out = Vec::new();
        for tr in t.ended(now) {
            out.extend(d.on_track(&tr, m.as_slice(), now, true));
            d.forget(tr.id);
        }
        out
    }

    fn kinds(a: &[Action]) -> Vec<EventKind> {
        a.iter()
            .map(|a| match a {
                Action::Emit(v) | Action::Also(v) | Action::Update(v) => v.kind,
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
        assert!(end_all(&mut d, &mut t, 4.0, Some(owner(0.5))).is_empty());
        // Back within the pass cooldown (a split track): recorded as a
        // repeat, no second open.
        let again = feed(&mut d, &mut t, 4.5, 5, [1.0, 0.0], false, Some(owner(0.5)));
        assert_eq!(kinds(&again), [EventKind::OwnerPass]);
        assert!(matches!(&again[0], Action::Emit(v) if v.repeat && !v.open_gate));
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
        // Loitering is a further event next to the track's stranger event,
        // never the track's own (which later decisions update).
        assert!(all.iter().any(|a| matches!(a, Action::Also(v)
            if v.kind == EventKind::Loitering && v.priority == Some(Priority::High))));
        assert!(!all.iter().any(
            |a| matches!(a, Action::Emit(v) | Action::Update(v) if v.kind == EventKind::Loitering)
        ));
        assert_eq!(d.stranger_count(), 1);
        // Within the cooldown a fourth visit is recorded as a repeat, not
        // alerted again.
        let mut again = feed(&mut d, &mut t, 255.0, 5, [1.0, 0.0], false, None);
        again.extend(end_all(&mut d, &mut t, 258.0, None));
        assert_eq!(kinds(&again), [EventKind::Stranger], "{again:?}");
        assert!(matches!(&again[0], Action::Emit(v) if v.repeat));
        assert!(
            strangers.iter().all(|v| !v.repeat),
            "the first three were alerts"
        );
        // Retention: forgotten after an hour unseen.
        d.expire(258.0 + 3601.0);
        assert_eq!(d.stranger_count(), 0);
    }

    #[test]
    fn a_stranger_track_that_becomes_an_owner_is_updated_not_duplicated() {
        let mut d = Decider::new(cfg(), CameraRole::Gate, 0.4, "t");
        let mut t = tracker();
        let a = feed(&mut d, &mut t, 0.0, 6, [1.0, 0.0], false, Some(owner(0.3)));
        assert_eq!(kinds(&a), [EventKind::Stranger]);
        let b = feed(&mut d, &mut t, 0.6, 3, [1.0, 0.0], false, Some(owner(0.45)));
        assert_eq!(b.len(), 1);
        assert!(
            matches!(&b[0], Action::Update(v) if v.kind == EventKind::OwnerPass && v.open_gate)
        );
        assert!(feed(&mut d, &mut t, 0.9, 3, [1.0, 0.0], false, Some(owner(0.5))).is_empty());
    }

    /// Feeds `n` frames of one face of `px` pixels, 0.1 s apart.
    #[allow(clippy::too_many_arguments)]
    fn feed_px(
        d: &mut Decider,
        t: &mut Tracker,
        start: f64,
        n: usize,
        e: [f32; 2],
        px: f32,
        spoof: bool,
        m: &[Match],
    ) -> Vec<Action> {
        let mut out = Vec::new();
        for i in 0..n {
            let now = start + i as f64 * 0.1;
            let id = t.update(now, &[face_px(e, spoof, px)])[0];
            let tr = t.get(id).unwrap().clone();
            out.extend(d.on_track(&tr, m, now, false));
        }
        out
    }

    fn end_with(d: &mut Decider, t: &mut Tracker, now: f64, m: &[Match]) -> Vec<Action> {
        let mut out = Vec::new();
        for tr in t.ended(now) {
            out.extend(d.on_track(&tr, m, now, true));
            d.forget(tr.id);
        }
        out
    }

    fn reason(a: &Action) -> String {
        match a {
            Action::Emit(v) | Action::Also(v) | Action::Update(v) => {
                v.reason.clone().unwrap_or_default()
            }
        }
    }

    #[test]
    fn a_glimpse_gives_nothing_but_a_confident_match_passes_at_once() {
        let mut d = Decider::new(cfg(), CameraRole::Gate, 0.4, "t");
        let mut t = tracker();
        assert!(feed(&mut d, &mut t, 0.0, 2, [1.0, 0.0], false, Some(owner(0.45))).is_empty());
        assert!(end_all(&mut d, &mut t, 5.0, Some(owner(0.45))).is_empty());
        let a = feed(&mut d, &mut t, 10.0, 1, [1.0, 0.0], false, Some(owner(0.6)));
        assert_eq!(kinds(&a), [EventKind::OwnerPass]);
        let Action::Emit(v) = &a[0] else { panic!() };
        assert_eq!(v.faces, 1);
    }

    #[test]
    fn a_match_near_the_threshold_on_small_faces_never_passes() {
        // 30 px faces: a pass needs 0.40 + 0.08 * (48-30)/(48-24) = 0.46.
        let mut d = Decider::new(cfg(), CameraRole::Gate, 0.4, "t");
        let mut t = tracker();
        let m = [owner(0.43)];
        let a = feed_px(&mut d, &mut t, 0.0, 20, [1.0, 0.0], 30.0, false, &m);
        assert!(a.is_empty(), "{a:?}");
        let end = end_with(&mut d, &mut t, 10.0, &m);
        assert_eq!(kinds(&end), [EventKind::Undecided]);
        assert!(reason(&end[0]).contains("near the threshold"), "{end:?}");
        let Action::Emit(v) = &end[0] else { panic!() };
        assert!(!v.open_gate && v.subject.is_none());
        // The same score on a large face is a pass.
        let mut d = Decider::new(cfg(), CameraRole::Gate, 0.4, "t");
        let a = feed_px(&mut d, &mut t, 20.0, 3, [1.0, 0.0], 60.0, false, &m);
        assert_eq!(kinds(&a), [EventKind::OwnerPass]);
    }

    #[test]
    fn tiny_faces_end_undecided_and_a_stranger_waits_for_a_good_view() {
        let mut d = Decider::new(cfg(), CameraRole::Gate, 0.4, "t");
        let mut t = tracker();
        let a = feed_px(&mut d, &mut t, 0.0, 10, [1.0, 0.0], 22.0, false, &[]);
        assert!(a.is_empty());
        let end = end_with(&mut d, &mut t, 10.0, &[]);
        assert_eq!(kinds(&end), [EventKind::Undecided]);
        assert_eq!(reason(&end[0]), "faces too small");
        // A stranger: nothing on three small faces, an alert once the face
        // is large and there are enough of them.
        let m = [owner(0.2)];
        let small = feed_px(&mut d, &mut t, 20.0, 3, [0.0, 1.0], 30.0, false, &m);
        assert!(small.is_empty(), "{small:?}");
        let big = feed_px(&mut d, &mut t, 20.3, 3, [0.0, 1.0], 45.0, false, &m);
        assert_eq!(kinds(&big), [EventKind::Stranger]);
        // A stranger who stays small is alerted after decide_within_s.
        let mut d = Decider::new(cfg(), CameraRole::Gate, 0.4, "u");
        let a = feed_px(&mut d, &mut t, 40.0, 45, [0.6, 0.8], 30.0, false, &m);
        assert_eq!(kinds(&a), [EventKind::Stranger]);
    }

    #[test]
    fn two_enrolled_people_close_in_score_give_no_pass() {
        let mut d = Decider::new(cfg(), CameraRole::Gate, 0.4, "t");
        let mut t = tracker();
        let other = Match {
            subject: Subject::Owner {
                id: "B-2".into(),
                name: "Wang".into(),
            },
            score: 0.49,
            template_id: 2,
        };
        let m = [owner(0.5), other];
        assert!(feed_px(&mut d, &mut t, 0.0, 10, [1.0, 0.0], 60.0, false, &m).is_empty());
        let end = end_with(&mut d, &mut t, 10.0, &m);
        assert_eq!(kinds(&end), [EventKind::Undecided]);
        assert!(reason(&end[0]).contains("two enrolled people"), "{end:?}");
    }

    #[test]
    fn at_a_gate_with_liveness_a_pass_needs_live_faces_and_spoofs_need_a_majority() {
        let mut d = Decider::new(cfg(), CameraRole::Gate, 0.4, "t").with_liveness(true);
        let mut t = tracker();
        let m = [owner(0.7)];
        // Two spoof frames, then live ones: no spoof alert, a pass once
        // live faces outnumber spoofed ones.
        let a = feed_px(&mut d, &mut t, 0.0, 2, [1.0, 0.0], 60.0, true, &m);
        assert!(a.is_empty());
        let b = feed_px(&mut d, &mut t, 0.2, 2, [1.0, 0.0], 60.0, false, &m);
        assert!(b.is_empty(), "2 live vs 2 spoofed: wait");
        let c = feed_px(&mut d, &mut t, 0.4, 1, [1.0, 0.0], 60.0, false, &m);
        assert_eq!(kinds(&c), [EventKind::OwnerPass]);
        assert!(end_with(&mut d, &mut t, 10.0, &m).is_empty());
        // Faces never judged (too small for the liveness model): no pass,
        // and at the end "liveness uncertain".
        let mut d = Decider::new(cfg(), CameraRole::Gate, 0.4, "u").with_liveness(true);
        let mut f = face_px([0.0, 1.0], false, 60.0);
        f.liveness = None;
        let mut out = Vec::new();
        for i in 0..10 {
            let now = 20.0 + i as f64 * 0.1;
            let id = t.update(now, std::slice::from_ref(&f))[0];
            let tr = t.get(id).unwrap().clone();
            out.extend(d.on_track(&tr, &m, now, false));
        }
        assert!(out.is_empty(), "{out:?}");
        let end = end_with(&mut d, &mut t, 30.0, &m);
        assert_eq!(kinds(&end), [EventKind::Undecided]);
        assert_eq!(reason(&end[0]), "liveness uncertain");
    }

    #[test]
    fn another_person_in_the_same_place_gets_a_new_track_and_decision() {
        // An owner decided at the gate, then a stranger steps into the same
        // box with no gap: the stranger's faces start a new track.
        let mut d = Decider::new(cfg(), CameraRole::Gate, 0.4, "t");
        let mut t = tracker();
        let owner_m = [owner(0.6)];
        let a = feed_px(&mut d, &mut t, 0.0, 10, [1.0, 0.0], 60.0, false, &owner_m);
        assert_eq!(kinds(&a), [EventKind::OwnerPass]);
        let stranger_m = [owner(0.1)];
        let b = feed_px(
            &mut d,
            &mut t,
            1.0,
            10,
            [0.0, 1.0],
            60.0,
            false,
            &stranger_m,
        );
        assert_eq!(kinds(&b), [EventKind::Stranger]);
        let (Action::Emit(p), Action::Emit(s)) = (&a[0], &b[0]) else {
            panic!()
        };
        assert_ne!(p.track_id, s.track_id);
        // And the other way round: a stranger, then an owner in the same
        // place with no gap (later, past the pass cooldown).
        assert!(end_with(&mut d, &mut t, 50.0, &[]).is_empty());
        let mut t = tracker();
        let c = feed_px(
            &mut d,
            &mut t,
            100.0,
            10,
            [0.0, -1.0],
            60.0,
            false,
            &stranger_m,
        );
        assert_eq!(kinds(&c), [EventKind::Stranger]);
        let e = feed_px(&mut d, &mut t, 101.0, 5, [1.0, 0.0], 60.0, false, &owner_m);
        assert_eq!(
            kinds(&e),
            [EventKind::OwnerPass],
            "not an update of the stranger's event"
        );
        let (Action::Emit(s2), Action::Emit(o)) = (&c[0], &e[0]) else {
            panic!()
        };
        assert_ne!(o.track_id, s2.track_id);
    }
}
