#!/usr/bin/env python3
"""The Python reference on a walk-up video: decisions as facegate-shaped JSON lines (issue 9, item 4).

    reference_walkby.py TRUTH.json [--video V.mp4] [--models DIR] [--threshold 0.40] > events.jsonl

Pipeline: the video decoded with OpenCV; YuNet (benches/reference/reference_eval.py, same decoding
and thresholds) on every 2nd frame; every face kept by NMS is a detection. Tracks by box overlap:
a detection continues the track it overlaps most with IoU >= 0.3 (greedy, best pairs first), a track
unseen for more than 2 s ends. Undecided tracks embed their faces (5-point Umeyama alignment to the
ArcFace template, ArcFace MBF 512, exactly as reference_eval.py) and are decided ONCE, after 3 faces,
on the L2-normalised mean embedding: owner_pass for the best enrolled owner if cosine >= threshold,
else stranger. A track that ends with fewer than 3 faces is decided on what it has when it ends.
Owners are enrolled from truth["enrolments"][*]["photo"] (largest face, as reference_eval acquires).

Events: {kind, id, revision 0, track_id, subject {kind: "owner", id, name} | null, score, faces,
video_t, seen_for_s}; video_t = frame index / fps of the frame where the decision was taken.
Timing goes to stderr.
"""
import argparse
import json
import os
import sys
import time

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import reference_eval as ref  # noqa: E402

IOU_CONTINUE = 0.3
TIMEOUT_S = 2.0
MIN_FACES = 3
DETECT_EVERY = 2


class Track:
    def __init__(self, tid, box, t):
        self.id, self.box, self.first_t, self.last_t = tid, box, t, t
        self.embs = []
        self.decided = False


def enrol(det, emb, enrolments):
    ids, names, G = [], [], []
    for en in enrolments:
        img = cv2.imread(en["photo"], cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        a = ref.acquire(det, img) if img is not None else None
        if a is None:
            print(f"reference: no face in enrolment photo {en['photo']}: {en['owner_id']} not enrolled",
                  file=sys.stderr)
            continue
        ids.append(en["owner_id"])
        names.append(en["name"])
        G.append(emb.embed(ref.align(img, a[2])))
    return ids, names, (np.stack(G) if G else np.zeros((0, 512)))


def decide(track, t, gallery, threshold):
    ids, names, G = gallery
    m = np.mean(track.embs, axis=0)
    m = m / np.linalg.norm(m)
    s = G @ m if len(ids) else np.zeros(0)
    j = int(np.argmax(s)) if s.size else -1
    best = float(s[j]) if j >= 0 else None
    ev = {"kind": "stranger", "id": f"ref-{track.id}", "revision": 0, "track_id": track.id,
          "subject": None, "score": best, "faces": len(track.embs), "video_t": round(t, 3),
          "seen_for_s": round(t - track.first_t, 3), "reason": None}
    if best is not None and best >= threshold:
        ev["kind"] = "owner_pass"
        ev["subject"] = {"kind": "owner", "id": ids[j], "name": names[j]}
    track.decided = True
    return ev


def match(tracks, dets):
    """Greedy IoU assignment, best pairs first; returns {det index: track}."""
    pairs = []
    for di, d in enumerate(dets):
        for tr in tracks:
            v = ref.iou(d[1], tr.box)
            if v >= IOU_CONTINUE:
                pairs.append((v, di, tr.id, tr))
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    out, used = {}, set()
    for _, di, tid, tr in pairs:
        if di in out or tid in used:
            continue
        out[di] = tr
        used.add(tid)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description="walk-up reference decisions")
    ap.add_argument("truth")
    ap.add_argument("--video", default=None, help="default: the truth's video")
    ap.add_argument("--models", default=None)
    ap.add_argument("--threshold", type=float, default=0.40)
    args = ap.parse_args(argv)
    with open(args.truth) as fh:
        truth = json.load(fh)
    models = args.models or ref.default_models_dir()
    det = ref.YuNet(os.path.join(models, "yunet_2023mar_dynamic.onnx"))
    emb = ref.ArcFace(os.path.join(models, "arcface_mbf_faceplugin_512.onnx"))
    gallery = enrol(det, emb, truth["enrolments"])
    fps = float(truth.get("fps", 10))

    cap = cv2.VideoCapture(args.video or truth["video"])
    if not cap.isOpened():
        raise SystemExit(f"reference: cannot open {args.video or truth['video']}")
    t0 = time.perf_counter()
    tracks, next_id, i, processed, n_faces, n_embeds = [], 1, -1, 0, 0, 0
    out = sys.stdout
    t = 0.0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        i += 1
        if i % DETECT_EVERY:
            continue
        t = i / fps
        processed += 1
        for tr in [x for x in tracks if t - x.last_t > TIMEOUT_S]:
            tracks.remove(tr)
            if not tr.decided and tr.embs:
                print(json.dumps(decide(tr, t, gallery, args.threshold)), file=out)
        dets = det.detect(frame)
        n_faces += len(dets)
        assigned = match(tracks, dets)
        for di, d in enumerate(dets):
            tr = assigned.get(di)
            if tr is None:
                tr = Track(next_id, d[1], t)
                next_id += 1
                tracks.append(tr)
            tr.box, tr.last_t = d[1], t
            if tr.decided:
                continue
            tr.embs.append(emb.embed(ref.align(frame, d[2])))
            n_embeds += 1
            if len(tr.embs) >= MIN_FACES:
                print(json.dumps(decide(tr, t, gallery, args.threshold)), file=out)
    end_t = t + TIMEOUT_S
    for tr in tracks:
        if not tr.decided and tr.embs:
            print(json.dumps(decide(tr, end_t, gallery, args.threshold)), file=out)
    el = time.perf_counter() - t0
    print(f"reference: {i + 1} frames, {processed} processed, {n_faces} faces, {n_embeds} embedded, "
          f"{next_id - 1} tracks, {len(gallery[0])} enrolled, {el:.1f} s "
          f"({1000 * el / max(1, processed):.1f} ms per processed frame)", file=sys.stderr)


if __name__ == "__main__":
    main()
