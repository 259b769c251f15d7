//! One photo in, one decision per face out; and turning enrolment photos
//! into templates. Shared by the command line and (later) the HTTP API.

use serde::Serialize;
use time::OffsetDateTime;

use std::sync::Mutex;

use crate::registry::{FaceTemplate, Gallery, Match, RegistryError, Subject};
use crate::vision::detect::Detection;
use crate::vision::image::RgbView;
use crate::vision::liveness::NotJudged;
use crate::vision::quality::Pose;
use crate::vision::{Checks, FaceEngine, Rejection, VisionError};

/// What the gateway concludes about one face.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// An active, enrolled owner.
    Owner,
    /// Someone on the watch list (a missing person, a banned visitor).
    Watchlist,
    /// A usable face that matches nobody above the threshold.
    Stranger,
    /// The face cannot be judged (too small, turned away, spoof).
    Rejected,
}

/// The best registered person for a face.
#[derive(Debug, Clone, Serialize)]
pub struct BestMatch {
    #[serde(flatten)]
    pub subject: Subject,
    pub score: f32,
}

/// One face of an identified photo.
#[derive(Debug, Clone, Serialize)]
pub struct FaceResult {
    pub bbox: [f32; 4],
    pub landmarks: [[f32; 2]; 5],
    pub detector_score: f32,
    pub size_px: f32,
    pub liveness: Option<f32>,
    /// Why liveness was checked but not judged (too small or soft).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub liveness_not_judged: Option<NotJudged>,
    pub pose: Option<Pose>,
    /// The best candidate even when below the threshold, so staff can see
    /// how close it was; `None` when the face was rejected or nobody is enrolled.
    pub best_match: Option<BestMatch>,
    pub decision: Decision,
    /// Why a face was rejected, in words.
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection: Option<Rejection>,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentifyError {
    #[error(transparent)]
    Vision(#[from] VisionError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Where a face is matched: a [`Gallery`] of one's own (the command line),
/// or the gallery the cameras share, locked for each search only, so the
/// decoding and the models run before any lock is taken.
pub trait Matcher {
    fn best(
        &self,
        query: &[f32],
        k: usize,
        now: OffsetDateTime,
    ) -> Result<Vec<Match>, RegistryError>;
}

impl Matcher for Gallery {
    fn best(
        &self,
        query: &[f32],
        k: usize,
        now: OffsetDateTime,
    ) -> Result<Vec<Match>, RegistryError> {
        self.search(query, k, now)
    }
}

/// A gallery the caller has locked already (it holds the lock throughout).
impl Matcher for std::sync::MutexGuard<'_, Gallery> {
    fn best(
        &self,
        query: &[f32],
        k: usize,
        now: OffsetDateTime,
    ) -> Result<Vec<Match>, RegistryError> {
        self.search(query, k, now)
    }
}

impl Matcher for Mutex<Gallery> {
    fn best(
        &self,
        query: &[f32],
        k: usize,
        now: OffsetDateTime,
    ) -> Result<Vec<Match>, RegistryError> {
        self.lock()
            .map_err(|_| RegistryError::Invalid("the face gallery's lock is poisoned".into()))?
            .search(query, k, now)
    }
}

/// Decides for a face given its rejection (if any) and best match.
pub fn decide(rejection: Option<&Rejection>, best: Option<&BestMatch>, threshold: f32) -> Decision {
    if rejection.is_some() {
        return Decision::Rejected;
    }
    match best {
        Some(m) if m.score >= threshold => match m.subject {
            Subject::Owner { .. } => Decision::Owner,
            Subject::Watch { .. } => Decision::Watchlist,
        },
        _ => Decision::Stranger,
    }
}

/// Detects, checks, embeds and matches every face of an image; the gallery
/// is consulted only after the models ran.
pub fn identify(
    engine: &mut FaceEngine,
    gallery: &impl Matcher,
    img: RgbView<'_>,
    checks: Checks,
    threshold: f32,
    now: OffsetDateTime,
) -> Result<Vec<FaceResult>, IdentifyError> {
    let faces = engine.analyze(img, checks)?;
    let mut out = Vec::with_capacity(faces.len());
    for f in faces {
        let best = match &f.embedding {
            Some(e) => gallery
                .best(e, 1, now)?
                .into_iter()
                .next()
                .map(|m| BestMatch {
                    subject: m.subject,
                    score: m.score,
                }),
            None => None,
        };
        let decision = decide(f.rejection.as_ref(), best.as_ref(), threshold);
        out.push(FaceResult {
            bbox: f.detection.bbox,
            landmarks: f.detection.landmarks,
            detector_score: f.detection.score,
            size_px: f.size_px,
            liveness: f.liveness,
            liveness_not_judged: f.liveness_not_judged,
            pose: f.pose,
            best_match: best,
            decision,
            reason: f.rejection.as_ref().map(ToString::to_string),
            rejection: f.rejection,
        });
    }
    Ok(out)
}

/// Why an enrolment photo was refused.
#[derive(Debug, thiserror::Error)]
pub enum EnrolPhotoError {
    #[error("{photo}: no face found")]
    NoFace { photo: String },
    #[error("{photo}: {count} faces found; an enrolment photo must show one person only")]
    SeveralFaces { photo: String, count: usize },
    #[error("{photo}: {reason}")]
    Unusable { photo: String, reason: Rejection },
    #[error(
        "{photo}: this face is already enrolled as {who} (similarity {score:.2}); remove that enrolment first or add the photo to that owner"
    )]
    AlreadyEnrolled {
        photo: String,
        who: String,
        /// The owner the face belongs to.
        owner_id: String,
        score: f32,
    },
    #[error(transparent)]
    Photo(#[from] crate::vision::image::PhotoError),
    #[error(transparent)]
    Vision(#[from] VisionError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Makes a template from one enrolment photo: exactly one usable face
/// (faces below the minimum size are background and do not count, unless
/// no face is big enough), frontal enough; liveness is not checked (staff
/// took the photo; a photo of a photo is still a photo).
pub fn enrolment_template(
    engine: &mut FaceEngine,
    img: RgbView<'_>,
    photo: &str,
) -> Result<(Detection, FaceTemplate), EnrolPhotoError> {
    // The models yield to the cameras (no lock is held here).
    let _bg = crate::sched::background();
    let dets = engine.detect_with_border(img)?;
    if dets.is_empty() {
        return Err(EnrolPhotoError::NoFace {
            photo: photo.to_owned(),
        });
    }
    let checks = Checks {
        liveness: false,
        pose: true,
    };
    // Size first: tiny faces in the background are not "several faces".
    let mut usable = Vec::new();
    let mut first_rejection = None;
    for d in &dets {
        match engine
            .check(
                img,
                d,
                Checks {
                    pose: false,
                    ..checks
                },
            )?
            .rejection
        {
            None => usable.push(*d),
            Some(r) => {
                first_rejection.get_or_insert(r);
            }
        }
    }
    if usable.len() > 1 {
        return Err(EnrolPhotoError::SeveralFaces {
            photo: photo.to_owned(),
            count: usable.len(),
        });
    }
    let Some(det) = usable.pop() else {
        return Err(EnrolPhotoError::Unusable {
            photo: photo.to_owned(),
            reason: first_rejection.unwrap_or(Rejection::TooSmall {
                size_px: 0.0,
                min_px: 0,
            }),
        });
    };
    if let Some(reason) = engine.check(img, &det, checks)?.rejection {
        return Err(EnrolPhotoError::Unusable {
            photo: photo.to_owned(),
            reason,
        });
    }
    let embedding = engine.embed(img, &det)?;
    Ok((
        det,
        FaceTemplate {
            model_id: engine.model_id().to_owned(),
            embedding,
            quality: det.score,
            photo: None,
        },
    ))
}

/// Refuses a template that already belongs to someone other than `owner_id`.
pub fn check_not_enrolled_elsewhere(
    gallery: &impl Matcher,
    template: &FaceTemplate,
    owner_id: Option<&str>,
    threshold: f32,
    photo: &str,
    now: OffsetDateTime,
) -> Result<(), EnrolPhotoError> {
    for m in gallery.best(&template.embedding, 3, now)? {
        if m.score < threshold {
            break;
        }
        let same = matches!(&m.subject, Subject::Owner { id, .. } if Some(id.as_str()) == owner_id);
        if !same && let Subject::Owner { id, name } = &m.subject {
            return Err(EnrolPhotoError::AlreadyEnrolled {
                photo: photo.to_owned(),
                who: format!("owner {id} ({name})"),
                owner_id: id.clone(),
                score: m.score,
            });
        }
    }
    Ok(())
}

/// One enrolment photo as received: a name for messages and its bytes.
pub struct PhotoUpload {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// What enrolment checks photos against.
#[derive(Debug, Clone, Copy)]
pub struct EnrolRules {
    pub limits: crate::vision::image::PhotoLimits,
    pub threshold: f32,
    /// Keep the photo with its template (`privacy.store_enrolment_photos`).
    pub keep_photo: bool,
}

/// A template for every photo, or the first photo's error (so nothing is
/// written): each must decode, show exactly one usable face, and not be
/// someone other than `owner_id` already. With a shared gallery, each check
/// locks it for one search; the caller repeats the checks with
/// [`recheck_not_enrolled_elsewhere`] under the lock it writes with.
pub fn enrolment_templates(
    engine: &mut FaceEngine,
    gallery: &impl Matcher,
    photos: Vec<PhotoUpload>,
    owner_id: Option<&str>,
    rules: EnrolRules,
    now: OffsetDateTime,
) -> Result<Vec<FaceTemplate>, EnrolPhotoError> {
    let mut out = Vec::with_capacity(photos.len());
    for p in photos {
        let (_, mut t) = {
            let _bg = crate::sched::background();
            let img = crate::vision::image::decode_photo(&p.bytes, &p.name, rules.limits)?;
            enrolment_template(engine, RgbView::from_image(&img), &p.name)?
        };
        // Normal priority again: the search below locks the gallery.
        check_not_enrolled_elsewhere(gallery, &t, owner_id, rules.threshold, &p.name, now)?;
        if rules.keep_photo {
            t.photo = Some(p.bytes);
        }
        out.push(t);
    }
    Ok(out)
}

/// [`check_not_enrolled_elsewhere`] for templates made earlier from
/// `photos` (their names, in the same order), against the gallery as it is
/// now: someone may have enrolled the same face while the models ran.
pub fn recheck_not_enrolled_elsewhere(
    gallery: &Gallery,
    templates: &[FaceTemplate],
    photos: &[String],
    owner_id: Option<&str>,
    threshold: f32,
    now: OffsetDateTime,
) -> Result<(), EnrolPhotoError> {
    for (t, photo) in templates.iter().zip(photos) {
        check_not_enrolled_elsewhere(gallery, t, owner_id, threshold, photo, now)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Priority;

    fn m(subject: Subject, score: f32) -> BestMatch {
        BestMatch { subject, score }
    }

    #[test]
    fn decisions_follow_rejection_then_threshold_then_kind() {
        let owner = Subject::Owner {
            id: "A-1".into(),
            name: "Li".into(),
        };
        let watch = Subject::Watch {
            id: 3,
            name: "Wang".into(),
            priority: Priority::High,
        };
        let spoof = Rejection::Spoof {
            liveness: 0.1,
            threshold: 0.5,
        };
        assert_eq!(
            decide(None, Some(&m(owner.clone(), 0.6)), 0.4),
            Decision::Owner
        );
        assert_eq!(decide(None, Some(&m(watch, 0.6)), 0.4), Decision::Watchlist);
        assert_eq!(
            decide(None, Some(&m(owner.clone(), 0.3)), 0.4),
            Decision::Stranger
        );
        assert_eq!(decide(None, None, 0.4), Decision::Stranger);
        assert_eq!(
            decide(Some(&spoof), Some(&m(owner, 0.9)), 0.4),
            Decision::Rejected
        );
    }
}
