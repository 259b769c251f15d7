#!/usr/bin/env python3
"""Reference face-recognition pipeline and evaluation protocol for facegate.

    reference_eval.py --dataset DIR [--models DIR] [--split a|b] [--json] [--dump-embeddings FILE.json]

This is the baseline the Rust `facegate eval` is compared against.  It uses ONNX Runtime
(CPU, one intra-op and one inter-op thread, sequential execution, graph optimisation
ORT_ENABLE_ALL), NumPy and OpenCV only.

Pipeline (as /work/shared/models/MODELS.md describes it)
--------------------------------------------------------
decode    cv2.imread(path, IMREAD_COLOR | IMREAD_IGNORE_ORIENTATION): 8-bit BGR, EXIF ignored.

detect    YuNet `yunet_2023mar_dynamic.onnx`.
          * s = min(1, 640 / max(W, H)); if s < 1 the frame is resized to
            (max(1, int(round(W*s))), max(1, int(round(H*s)))) with cv2.resize INTER_AREA
            (see --det-interp; Python's round() = round half to EVEN on the float64
            product: 1280x811 -> 640x406 (405.5), 1280x799 -> 640x400 (399.5));
            detections are mapped back by the per-axis ratios W/w', H/h' (float64).
          * padded right/bottom with 0 to H', W' multiples of 32; float32 BGR 0-255, NCHW.
          * for each stride st in (8, 16, 32), anchor index i = row*(W'/st) + col:
            score = sqrt(clip(cls,0,1) * clip(obj,0,1));
            cx = (col + b0)*st, cy = (row + b1)*st, w = exp(b2)*st, h = exp(b3)*st;
            box = (cx - w/2, cy - h/2, w, h); point k = ((col + k[2k])*st, (row + k[2k+1])*st).
          * keep score >= 0.7, greedy NMS (descending score, stable) dropping a box whose
            IoU with a kept one is > 0.3; IoU = inter / (areaA + areaB - inter), area = w*h.

acquire   the LARGEST kept face by box area w*h (ties: the higher score, i.e. the earlier
          one after NMS).  If there is none, retry once on a canvas of size
          (H + 2*(H//2)) x (W + 2*(W//2)) with the image at offset (W//2, H//2) and black
          (0) elsewhere; detections are shifted back by that offset.  Still none = failure
          to acquire.

align     5 landmarks -> ArcFace 112x112 template by the least-squares similarity transform
          (Umeyama 1991, with reflection guard), cv2.warpAffine(original image, M, (112,112),
          flags=INTER_LINEAR, borderMode=BORDER_CONSTANT, borderValue=0).  With OpenCV 5.0
          this is exact floating-point bilinear sampling of the inverse map (pixel centres at
          integer coordinates, pixels outside the image = 0) rounded to uint8; OpenCV 4.x
          quantises coordinates to 1/32 px and gives slightly different chips (and figures).

embed     `arcface_mbf_faceplugin_512.onnx`: BGR planes, (x - 127) / 128, NCHW float32,
          output [1,512] -> L2-normalised (float64).  Score = cosine = dot product.

Evaluation protocol
-------------------
Images: DIR/<identity>/<n>.<ext>; identities sorted by Python's default str sort, photos
sorted numerically by file-name stem (2.jpg before 10.jpg; non-numeric stems after the
numeric ones, by name).

Quantile rule (shared by FAR and FPIR): given the negative scores n_1..n_N (impostor pair
scores, or stranger probes' best scores) and a target rate r, sort them in descending order
d_0 >= d_1 >= ... >= d_{N-1} and take

    threshold = d_k,   k = floor(r * N)        (k clipped to N-1)

A comparison is accepted iff score > threshold (strict).  At most k <= r*N negatives are
then accepted (exactly k when there are no ties at d_k).

Halves (--split a|b): identities are ranked by fmix64(FNV-1a-64(UTF-8 name)) (MurmurHash3's
64-bit finaliser over the FNV-1a hash; ties by name); the first ceil(n/2) are half "a", the rest
half "b".  The protocol below then runs on that half alone (its identities sorted by name as
usual).  `facegate eval --split` uses the same rule, so both evaluate the same people.

Verification: all pairs (i < j) of acquired photos; genuine = same identity folder.
TAR@FAR r = fraction of genuine pairs with score > threshold(r over impostor scores).

Open-set gate: identities (sorted) with even index 0, 2, 4, ... are enrolled, odd-indexed
ones are strangers.  An enrolled identity's single template is its first ACQUIRED photo in
numeric order (if its first photo failed to acquire, the next one is used; an identity with
no acquired photo is left out of the gallery and contributes no probe).  Probes = the other
acquired photos of enrolled identities (genuine probes) + all acquired photos of strangers.
For each probe: best cosine over the gallery (argmax; ties -> the first enrolled identity in
sorted order).  threshold_fpir = quantile rule with r = 0.01 over the strangers' best scores.
DIR@FPIR 1% = share of genuine probes whose best match is their own identity AND whose best
score > threshold_fpir.

ms_per_image = mean wall time (time.perf_counter) of detect (+ retry) + align + embed over
all photos, decoding excluded.
"""
import argparse
import json
import math
import os
import sys
import time

import cv2
import numpy as np
import onnxruntime as ort

ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
INTERP = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "nearest": cv2.INTER_NEAREST,
          "cubic": cv2.INTER_CUBIC}


THREADS = 1  # --threads: 1 as documented above; 0 = ONNX Runtime's defaults


def make_session(path):
    so = ort.SessionOptions()
    if THREADS > 0:
        so.intra_op_num_threads = THREADS
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------- detection
class YuNet:
    def __init__(self, path, score_threshold=0.7, nms_iou=0.3, max_side=640, interp="area"):
        self.sess = make_session(path)
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.max_side = max_side
        self.interp = INTERP[interp]

    def detect(self, img):
        """Return a list of (score, box[x,y,w,h], kps[5,2]) in img's coordinates, after NMS."""
        h0, w0 = img.shape[:2]
        s = min(1.0, self.max_side / max(w0, h0))
        if s < 1.0:
            rw = max(1, int(round(w0 * s)))
            rh = max(1, int(round(h0 * s)))
            small = cv2.resize(img, (rw, rh), interpolation=self.interp)
        else:
            rw, rh, small = w0, h0, img
        fx, fy = w0 / rw, h0 / rh
        H = (rh + 31) // 32 * 32
        W = (rw + 31) // 32 * 32
        blob = np.zeros((1, 3, H, W), dtype=np.float32)
        blob[0, :, :rh, :rw] = small.transpose(2, 0, 1)
        outs = self.sess.run(None, {"input": blob})
        names = [o.name for o in self.sess.get_outputs()]
        o = dict(zip(names, outs))

        scores, boxes, kpss = [], [], []
        for st in (8, 16, 32):
            cols, rows = W // st, H // st
            cls = np.clip(o[f"cls_{st}"][0, :, 0].astype(np.float64), 0, 1)
            obj = np.clip(o[f"obj_{st}"][0, :, 0].astype(np.float64), 0, 1)
            sc = np.sqrt(cls * obj)
            keep = np.nonzero(sc >= self.score_threshold)[0]
            if keep.size == 0:
                continue
            bb = o[f"bbox_{st}"][0, keep].astype(np.float64)
            kp = o[f"kps_{st}"][0, keep].astype(np.float64)
            r = (keep // cols).astype(np.float64)
            c = (keep % cols).astype(np.float64)
            cx = (c + bb[:, 0]) * st
            cy = (r + bb[:, 1]) * st
            bw = np.exp(bb[:, 2]) * st
            bh = np.exp(bb[:, 3]) * st
            box = np.stack([(cx - bw / 2) * fx, (cy - bh / 2) * fy, bw * fx, bh * fy], axis=1)
            pts = np.empty((keep.size, 5, 2))
            for k in range(5):
                pts[:, k, 0] = (c + kp[:, 2 * k]) * st * fx
                pts[:, k, 1] = (r + kp[:, 2 * k + 1]) * st * fy
            scores.append(sc[keep])
            boxes.append(box)
            kpss.append(pts)
        if not scores:
            return []
        scores = np.concatenate(scores)
        boxes = np.concatenate(boxes)
        kpss = np.concatenate(kpss)
        return [(float(scores[i]), boxes[i], kpss[i]) for i in nms(boxes, scores, self.nms_iou)]


def nms(boxes, scores, iou_thr):
    order = np.argsort(-scores, kind="stable")
    kept = []
    for i in order:
        ok = True
        for j in kept:
            if iou(boxes[i], boxes[j]) > iou_thr:
                ok = False
                break
        if ok:
            kept.append(i)
    return kept


def iou(a, b):
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2 = min(a[0] + a[2], b[0] + b[2])
    y2 = min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


# --------------------------------------------------------------------------- alignment
def umeyama(src, dst):
    """Least-squares similarity transform (2x3) mapping src points onto dst points."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n = src.shape[0]
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    var_s = (sc ** 2).sum() / n
    cov = dc.T @ sc / n
    U, S, Vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[1] = -1
    R = U @ np.diag(d) @ Vt
    scale = (S * d).sum() / var_s
    t = mu_d - scale * R @ mu_s
    M = np.empty((2, 3))
    M[:, :2] = scale * R
    M[:, 2] = t
    return M


def align(img, kps, size=112):
    M = umeyama(kps, ARCFACE_TEMPLATE)
    return cv2.warpAffine(img, M, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


# --------------------------------------------------------------------------- embedding
class ArcFace:
    def __init__(self, path):
        self.sess = make_session(path)

    def embed(self, chip):
        x = (chip.astype(np.float32) - 127.0) / 128.0
        x = x.transpose(2, 0, 1)[None].copy()
        e = self.sess.run(None, {"input": x})[0][0].astype(np.float64)
        return e / np.linalg.norm(e)


# --------------------------------------------------------------------------- acquisition
def largest(dets):
    best = None
    for d in dets:  # dets are in NMS order (descending score): first wins ties
        if best is None or d[1][2] * d[1][3] > best[1][2] * best[1][3]:
            best = d
    return best


def acquire(det, img):
    """Return (score, box, kps, retried) of the largest face, or None."""
    d = largest(det.detect(img))
    if d is not None:
        return d[0], d[1], d[2], False
    h, w = img.shape[:2]
    py, px = h // 2, w // 2
    canvas = np.zeros((h + 2 * py, w + 2 * px, 3), dtype=img.dtype)
    canvas[py:py + h, px:px + w] = img
    d = largest(det.detect(canvas))
    if d is None:
        return None
    box = d[1].copy()
    box[0] -= px
    box[1] -= py
    kps = d[2] - np.array([px, py], dtype=np.float64)
    return d[0], box, kps, True


# --------------------------------------------------------------------------- protocol
def stem_key(name):
    stem = os.path.splitext(name)[0]
    try:
        return (0, int(stem), name)
    except ValueError:
        return (1, 0, name)


def list_dataset(root):
    idents = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    out = []
    for ident in idents:
        files = [f for f in os.listdir(os.path.join(root, ident))
                 if os.path.splitext(f)[1].lower() in IMAGE_EXTS]
        out.append((ident, sorted(files, key=stem_key)))
    return out


_M64 = (1 << 64) - 1


def split_key(name):
    """fmix64(FNV-1a-64(name)): the rank that assigns an identity to half a or b."""
    h = 0xCBF29CE484222325
    for b in name.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & _M64
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _M64
    h ^= h >> 33
    return h


def split_identities(names, half):
    """The identities of half "a" (first ceil(n/2) by split_key) or "b" (the rest), sorted."""
    ranked = sorted(names, key=lambda n: (split_key(n), n))
    k = (len(ranked) + 1) // 2
    return sorted(ranked[:k] if half == "a" else ranked[k:])


def threshold_at(neg_scores, rate):
    """Quantile rule: descending sort, threshold = d[floor(rate*N)]; accept iff score > thr."""
    d = np.sort(np.asarray(neg_scores, dtype=np.float64))[::-1]
    if d.size == 0:
        return float("nan")
    k = min(int(math.floor(rate * d.size)), d.size - 1)
    return float(d[k])


def evaluate(records, identities):
    """records: list of dict(ident, path, emb or None) in dataset order."""
    acq = [r for r in records if r["emb"] is not None]
    E = np.stack([r["emb"] for r in acq]) if acq else np.zeros((0, 512))
    lab = np.array([r["ident"] for r in acq])
    S = E @ E.T
    iu = np.triu_indices(len(acq), k=1)
    same = lab[iu[0]] == lab[iu[1]]
    sc = S[iu]
    gen, imp = sc[same], sc[~same]

    res = {
        "identities": len(identities),
        "images": len(records),
        "failed_to_acquire": len(records) - len(acq),
        "genuine_pairs": int(gen.size),
        "impostor_pairs": int(imp.size),
    }
    for name, far in (("1e-2", 1e-2), ("1e-3", 1e-3)):
        t = threshold_at(imp, far)
        res[f"tar_at_far_{name}"] = float((gen > t).mean()) if gen.size else float("nan")
        res[f"threshold_far_{name}"] = t

    # open-set gate
    enrolled = [ident for i, ident in enumerate(identities) if i % 2 == 0]
    stranger = set(ident for i, ident in enumerate(identities) if i % 2 == 1)
    gallery_ids, gallery, used = [], [], set()
    for ident in enrolled:
        for k, r in enumerate(acq):
            if r["ident"] == ident:
                gallery_ids.append(ident)
                gallery.append(r["emb"])
                used.add(k)
                break
    G = np.stack(gallery) if gallery else np.zeros((0, 512))
    gal_set = set(gallery_ids)
    gen_best, gen_ok, str_best = [], [], []
    for k, r in enumerate(acq):
        if k in used:
            continue
        if r["ident"] in stranger:
            s = G @ r["emb"]
            str_best.append(float(s.max()))
        elif r["ident"] in gal_set:
            s = G @ r["emb"]
            j = int(np.argmax(s))
            gen_best.append(float(s[j]))
            gen_ok.append(gallery_ids[j] == r["ident"])
    t = threshold_at(str_best, 1e-2)
    gen_best, gen_ok = np.array(gen_best), np.array(gen_ok, dtype=bool)
    res["dir_at_fpir_1e-2"] = float((gen_ok & (gen_best > t)).mean()) if gen_best.size else float("nan")
    res["threshold_fpir_1e-2"] = t
    res["gallery"] = len(gallery_ids)
    res["genuine_probes"] = int(gen_best.size)
    res["stranger_probes"] = len(str_best)
    res["rank1_genuine_probes"] = float(gen_ok.mean()) if gen_ok.size else float("nan")
    res["genuine_mean_cosine"] = float(gen.mean()) if gen.size else float("nan")
    res["impostor_mean_cosine"] = float(imp.mean()) if imp.size else float("nan")
    return res, gen, imp, np.array(str_best)


def default_models_dir():
    for d in ("/work/main/models", "/work/shared/models"):
        if os.path.isfile(os.path.join(d, "yunet_2023mar_dynamic.onnx")) and \
                os.path.isfile(os.path.join(d, "arcface_mbf_faceplugin_512.onnx")):
            return d
    return "/work/shared/models"


def main(argv=None):
    ap = argparse.ArgumentParser(description="facegate reference pipeline + evaluation")
    ap.add_argument("--dataset", required=True, help="folder DIR/<identity>/<n>.jpg")
    ap.add_argument("--models", default=None,
                    help="model folder (default /work/main/models, falling back to /work/shared/models)")
    ap.add_argument("--json", action="store_true", help="print one JSON object only")
    ap.add_argument("--dump-embeddings", metavar="FILE.json",
                    help="write {relative path: {embedding, box, landmarks, score, retried}}")
    ap.add_argument("--det-interp", default="area", choices=sorted(INTERP),
                    help="interpolation for the detector's downscale to <=640 (default area; "
                         "the expected figures need area)")
    ap.add_argument("--split", choices=("a", "b"),
                    help="evaluate one half of the identities (split by a hash of the name)")
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads per session (default 1); 0 = ONNX Runtime's default "
                         "threading (one thread per physical core), for throughput comparisons")
    args = ap.parse_args(argv)
    global THREADS
    THREADS = args.threads

    models = args.models or default_models_dir()
    det = YuNet(os.path.join(models, "yunet_2023mar_dynamic.onnx"), interp=args.det_interp)
    emb = ArcFace(os.path.join(models, "arcface_mbf_faceplugin_512.onnx"))

    data = list_dataset(args.dataset)
    if args.split:
        keep = set(split_identities([d[0] for d in data], args.split))
        data = [d for d in data if d[0] in keep]
    identities = [d[0] for d in data]
    records, dump, total_t = [], {}, 0.0
    for ident, files in data:
        for f in files:
            rel = f"{ident}/{f}"
            img = cv2.imread(os.path.join(args.dataset, ident, f),
                             cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
            if img is None:
                raise RuntimeError(f"cannot decode {rel}")
            t0 = time.perf_counter()
            a = acquire(det, img)
            e = None
            if a is not None:
                e = emb.embed(align(img, a[2]))
            total_t += time.perf_counter() - t0
            records.append({"ident": ident, "path": rel, "emb": e})
            if a is None:
                dump[rel] = None
                if not args.json:
                    print(f"failed to acquire: {rel}", file=sys.stderr)
            else:
                dump[rel] = {
                    "embedding": [float(v) for v in e],
                    "box": [float(v) for v in a[1]],
                    "landmarks": [[float(x), float(y)] for x, y in a[2]],
                    "score": float(a[0]),
                    "retried": bool(a[3]),
                    "image_size": [int(img.shape[1]), int(img.shape[0])],
                }

    res, gen, imp, strb = evaluate(records, identities)
    res["ms_per_image"] = 1000.0 * total_t / max(1, len(records))
    res["images_per_s"] = len(records) / total_t if total_t > 0 else 0.0
    res["threads"] = args.threads
    res["retried"] = sum(1 for v in dump.values() if v is not None and v["retried"])
    res["failed"] = sorted(k for k, v in dump.items() if v is None)
    res["onnxruntime"] = ort.__version__
    res["opencv"] = cv2.__version__

    if args.dump_embeddings:
        with open(args.dump_embeddings, "w") as fh:
            json.dump(dump, fh)
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        for k, v in res.items():
            print(f"{k:24s} {v}")


if __name__ == "__main__":
    main()
