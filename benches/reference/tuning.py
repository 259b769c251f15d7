#!/usr/bin/env python3
"""Accuracy-tuning experiments for the surveillance copy (FINDINGS below).

    tuning.py compute DATASET TAG      # detect/align/embed every variant, cache to /tmp/tuning-cache
    tuning.py report TAG [TAG ...]     # evaluate combinations from the caches

Pipeline pieces reuse reference_eval.py (same YuNet decode, NMS, acquisition, Umeyama, protocol).
Variants:
  det  U<t>      : upscale images whose long side < t to long side t (cv2.INTER_LINEAR) before YuNet
       +F<c>     : landmark TTA, detect also on the mirrored image, mirror back x -> (W - c) - x,
                   swap indices (0<->1, 3<->4), average with the original face's points (IoU match)
       +S<t2>    : landmark TTA, second detection scale (upscale to t2), averaged
  align lin/cub/lan/ss/lin+blur/lin+sharp   (warp 112x112 from the ORIGINAL image)
  embed arc (arcface_mbf 512), mfn (mobilefacenet_sirius 192), dlib (128, own template, 150x150),
        each also on the mirrored chip (flip-averaging done at evaluation time).
  align adapt<t> : "lin+blur0.5" when the Umeyama scale hypot(M00, M01) > t (face enlarged), else "lin".
Held-out check: the same protocol on two other degradations made with degrade.py
(--scale 0.30 --quality 40 -> s30q40, --scale 0.42 --quality 60 -> s42q60), run with TUNING_QUICK=1.

FINDINGS (31 ids / 166 photos; 463 genuine pairs, 68 genuine probes, 82 strangers)
------------------------------------------------------------------------------------
TAR1e-3 / DIR@FPIR1% (DIR failures out of 68):
  variant                         clean         surv           s30q40         s42q60
  reference U0 lin arc            .989/1.0 (0)  .855/.912 (6)  .670/.735 (18) .946/.971 (2)
  U0 arc + flip-avg embedding     .989/1.0 (0)  .877/.838 (11) .695/.721 (19) .948/1.0  (0)
  U320 arc                        .989/1.0 (0)  .890/.882 (8)  .728/.794 (14) .961/1.0  (0)
  U0F0 arc (landmark flip TTA)    .994/1.0 (0)  .909/.926 (5)  .737/.735 (18) .957/.956 (3)
  U0F0 adapt1 arc/mfn w=0.8       .991/1.0 (0)  .918/.941 (4)  .724/.735 (18) .959/.956 (3)
* Landmark flip-TTA (F0) is the only change that raises TAR@FAR1e-3 on all four sets.
  Mirror back with x -> W - x (not W - 1 - x). The mean round-trip offset over the 5 points is
  +0.04 px with W - x. With W - 1 - x it would be -1 px, so F1 is biased, and its better DIR on
  surv is luck.
* Flip-averaged embeddings raise TAR a little but lower surv DIR. The cause is one stranger
  whose top score goes from 0.357 to 0.379 (U0). DIR measured at the 2nd-highest stranger
  does not change. Leave it off.
* Bicubic, Lanczos and unsharp-masked chips are worse everywhere. Supersampling equals bilinear on surv.
* Upscaling before detection and the second detection scale help TAR on some sets and lower
  DIR on others. Not robust.
* arc+mfn fusion (w=0.7-0.8) lifts TAR@1e-2 and the mean genuine cosine. It is neutral at 1e-3.
  Adding dlib or the 4-shift multi-crop gives no gain.
* DIR with 82 strangers depends on one score. Each probe is 0.0147 of DIR, and 0.93 needs at
  most 4 failures. No variant meets the DIR goal with margin.
"""
import math
import os
import pickle
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_eval as R  # noqa: E402

MODELS = "/work/main/models"
CACHE = "/tmp/tuning-cache"
DLIB_TEMPLATE = np.array([[47.57, 46.60], [100.48, 46.60], [74.01, 76.56],
                          [50.41, 103.02], [97.61, 103.02]])
SWAP = [1, 0, 2, 4, 3]


# ------------------------------------------------------------------ detection variants
class Det(R.YuNet):
    def detect_t(self, img, target, up_interp=cv2.INTER_LINEAR):
        """Like YuNet.detect, but images with long side < target are enlarged to target."""
        h0, w0 = img.shape[:2]
        long = max(w0, h0)
        if long > self.max_side:
            s, interp = self.max_side / long, cv2.INTER_AREA
        elif target and long < target:
            s, interp = target / long, up_interp
        else:
            s, interp = 1.0, None
        if interp is not None:
            rw, rh = max(1, int(round(w0 * s))), max(1, int(round(h0 * s)))
            small = cv2.resize(img, (rw, rh), interpolation=interp)
        else:
            rw, rh, small = w0, h0, img
        # reuse the reference decode on the already-resized frame (its own s == 1 then)
        dets = R.YuNet.detect(self, small)
        fx, fy = w0 / rw, h0 / rh
        out = []
        for sc, box, kps in dets:
            b = box.copy()
            b[[0, 2]] *= fx
            b[[1, 3]] *= fy
            k = kps.copy()
            k[:, 0] *= fx
            k[:, 1] *= fy
            out.append((sc, b, k))
        return out, (fx, fy)


def mirror_det(d, W, c):
    sc, box, kps = d
    b = box.copy()
    b[0] = W - box[0] - box[2]
    k = kps[SWAP].copy()
    k[:, 0] = (W - c) - k[:, 0]
    return sc, b, k


def best_match(dets, box):
    best, bi = None, 0.0
    for d in dets:
        v = R.iou(d[1], box)
        if v > bi:
            best, bi = d, v
    return best if bi >= 0.3 else None


def acquire_variant(det, img, target, flip_c=None, scale2=None):
    """Returns (kps, box, retried, extra) or None. extra = dict of raw landmark sets."""
    dets, _ = det.detect_t(img, target)
    base, off = img, (0, 0)
    if not dets:
        h, w = img.shape[:2]
        py, px = h // 2, w // 2
        canvas = np.zeros((h + 2 * py, w + 2 * px, 3), dtype=img.dtype)
        canvas[py:py + h, px:px + w] = img
        dets, _ = det.detect_t(canvas, target)
        base, off = canvas, (px, py)
        if not dets:
            return None
    d0 = R.largest(dets)
    sets = {"orig": d0[2]}
    W = base.shape[1]
    if flip_c is not None:
        fd, _ = det.detect_t(cv2.flip(base, 1), target)
        m = best_match([mirror_det(d, W, flip_c) for d in fd], d0[1])
        if m is not None:
            sets["flip"] = m[2]
    if scale2 is not None:
        sd, _ = det.detect_t(base, scale2)
        m = best_match(sd, d0[1])
        if m is not None:
            sets["s2"] = m[2]
        if flip_c is not None:
            fd, _ = det.detect_t(cv2.flip(base, 1), scale2)
            m = best_match([mirror_det(d, W, flip_c) for d in fd], d0[1])
            if m is not None:
                sets["s2flip"] = m[2]
    o = np.array(off, dtype=np.float64)
    kps = np.mean([v for v in sets.values()], axis=0) - o
    box = d0[1].copy()
    box[:2] -= o
    return kps, box, off != (0, 0), {k: v - o for k, v in sets.items()}


# ------------------------------------------------------------------ alignment variants
def warp(img, M, size, interp):
    return cv2.warpAffine(img, M, (size, size), flags=interp,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def align_variant(img, kps, mode, template=R.ARCFACE_TEMPLATE, size=112):
    M = R.umeyama(kps, template)
    base = mode.split("+")[0]
    if base == "lin":
        chip = warp(img, M, size, cv2.INTER_LINEAR)
    elif base == "cub":
        chip = warp(img, M, size, cv2.INTER_CUBIC)
    elif base == "lan":
        chip = warp(img, M, size, cv2.INTER_LANCZOS4)
    elif base == "ss":  # Rust: n x n bilinear supersampling when shrinking, n = ceil(1/scale) <= 4
        scale = math.hypot(M[0, 0], M[0, 1])
        n = min(4, math.ceil(1.0 / scale - 1e-9)) if scale < 1 else 1
        if n <= 1:
            chip = warp(img, M, size, cv2.INTER_LINEAR)
        else:
            Mf = M * n
            Mf[:, 2] += (n - 1) / 2.0
            big = warp(img, Mf, size * n, cv2.INTER_LINEAR).astype(np.float64)
            chip = np.clip(np.round(big.reshape(size, n, size, n, 3).mean((1, 3))), 0, 255).astype(np.uint8)
    else:
        raise ValueError(mode)
    for post in mode.split("+")[1:]:
        if post.startswith("blur"):
            sg = float(post[4:])
            chip = cv2.GaussianBlur(chip, (0, 0), sg)
        elif post.startswith("sharp"):
            a = float(post[5:])
            bl = cv2.GaussianBlur(chip, (0, 0), 1.0).astype(np.float32)
            chip = np.clip(np.round(chip.astype(np.float32) * (1 + a) - a * bl), 0, 255).astype(np.uint8)
        elif post.startswith("shift"):
            pass  # handled by caller
    return chip


# ------------------------------------------------------------------ embedders
class Emb:
    def __init__(self):
        self.arc = R.make_session(os.path.join(MODELS, "arcface_mbf_faceplugin_512.onnx"))
        self.mfn = R.make_session(os.path.join(MODELS, "mobilefacenet_sirius_192.onnx"))
        self.dlib = R.make_session(os.path.join(MODELS, "dlib_resnet_v1_128.onnx"))
        self.mfn_in = self.mfn.get_inputs()[0].name
        self.dlib_in = self.dlib.get_inputs()[0].name

    def e_arc(self, chip):
        x = ((chip.astype(np.float32) - 127.0) / 128.0).transpose(2, 0, 1)[None].copy()
        return self.arc.run(None, {"input": x})[0][0].astype(np.float64)

    def e_mfn(self, chip):
        x = ((chip[:, :, ::-1].astype(np.float32) - 127.5) / 128.0)[None].copy()
        return self.mfn.run(None, {self.mfn_in: x})[0][0].astype(np.float64)

    def e_dlib(self, chip150):
        x = (chip150[:, :, ::-1].astype(np.float32) - np.array([122.782, 117.001, 104.298], np.float32)) / 256.0
        x = x.transpose(2, 0, 1)[None].copy()
        return self.dlib.run(None, {self.dlib_in: x})[0][0].astype(np.float64)


def nrm(v):
    return v / np.linalg.norm(v)


# ------------------------------------------------------------------ compute stage
DET_VARIANTS = {
    # name: (target, flip_c, scale2)
    "U0": (0, None, None),
    "U320": (320, None, None),
    "U480": (480, None, None),
    "U640": (640, None, None),
    "U0F0": (0, 0.0, None),
    "U0F1": (0, 1.0, None),
    "U320F0": (320, 0.0, None),
    "U480F0": (480, 0.0, None),
    "U640F0": (640, 0.0, None),
    "U0S480": (0, None, 480),
    "U0F0S480": (0, 0.0, 480),
    "U320F0S640": (320, 0.0, 640),
}
ALIGN_FULL = ["lin", "cub", "lan", "ss", "lin+blur0.5", "cub+sharp0.5"]
ALIGN_DETS = {"U0", "U320", "U0F0", "U320F0", "U0F0S480"}  # all align modes on these; others: lin, cub


def compute(dataset, tag):
    """TUNING_QUICK=1 restricts to the short-listed variants (for held-out degradations)."""
    global DET_VARIANTS, ALIGN_FULL
    if os.environ.get("TUNING_QUICK"):
        DET_VARIANTS = {k: v for k, v in DET_VARIANTS.items() if k in ("U0", "U0F0", "U320", "U320F0")}
        ALIGN_FULL = ["lin", "lin+blur0.5"]
    os.makedirs(CACHE, exist_ok=True)
    det = Det(os.path.join(MODELS, "yunet_2023mar_dynamic.onnx"))
    em = Emb()
    data = R.list_dataset(dataset)
    idents = [d[0] for d in data]
    items = []
    tdet = {k: 0.0 for k in DET_VARIANTS}
    t_embed = {}
    for ident, files in data:
        for f in files:
            rel = f"{ident}/{f}"
            img = cv2.imread(os.path.join(dataset, ident, f), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
            rec = {"ident": ident, "path": rel, "size": img.shape[:2], "det": {}, "emb": {}}
            for dname, (t, fc, s2) in DET_VARIANTS.items():
                t0 = time.perf_counter()
                a = acquire_variant(det, img, t, fc, s2)
                tdet[dname] += time.perf_counter() - t0
                rec["det"][dname] = a
                if a is None:
                    continue
                modes = ALIGN_FULL if dname in ALIGN_DETS else ["lin", "cub"]
                if os.environ.get("TUNING_QUICK"):
                    modes = ALIGN_FULL
                for mode in modes:
                    t0 = time.perf_counter()
                    chip = align_variant(img, a[0], mode)
                    ta = time.perf_counter() - t0
                    fl = cv2.flip(chip, 1)
                    for mname, fn in (("arc", em.e_arc), ("mfn", em.e_mfn)):
                        t0 = time.perf_counter()
                        e = fn(chip)
                        te = time.perf_counter() - t0
                        ef = fn(fl)
                        rec["emb"][(dname, mode, mname)] = (e, ef)
                        t_embed.setdefault((mode, mname), []).append(ta + te)
                    if mode in ("lin", "cub") and dname in ALIGN_DETS and not os.environ.get("TUNING_QUICK"):
                        c150 = align_variant(img, a[0], mode, DLIB_TEMPLATE, 150)
                        t0 = time.perf_counter()
                        rec["emb"][(dname, mode, "dlib")] = (em.e_dlib(c150), em.e_dlib(cv2.flip(c150, 1)))
                        t_embed.setdefault((mode, "dlib"), []).append(time.perf_counter() - t0)
                    # multi-crop: +-0.5 px shifts in chip space (4 crops) for arc, on lin only
                    if mode == "lin" and dname in ALIGN_DETS and not os.environ.get("TUNING_QUICK"):
                        M = R.umeyama(a[0], R.ARCFACE_TEMPLATE)
                        es = []
                        for dx, dy in ((0.5, 0.5), (-0.5, 0.5), (0.5, -0.5), (-0.5, -0.5)):
                            Ms = M.copy()
                            Ms[:, 2] += (dx, dy)
                            es.append(nrm(em.e_arc(warp(img, Ms, 112, cv2.INTER_LINEAR))))
                        rec["emb"][(dname, "lin", "arcshift")] = (np.sum(es, 0), None)
            items.append(rec)
    n = len(items)
    timing = {"det_ms": {k: 1000 * v / n for k, v in tdet.items()},
              "embed_ms": {f"{k[0]}/{k[1]}": 1000 * float(np.mean(v)) for k, v in t_embed.items()}}
    with open(os.path.join(CACHE, f"{tag}.pkl"), "wb") as fh:
        pickle.dump({"idents": idents, "items": items, "timing": timing}, fh)
    print(tag, "done", timing)


# ------------------------------------------------------------------ evaluation
def embedding_for(rec, dname, mode, spec):
    """spec: dict model->weight plus 'flip' bool. Returns fused unit vector or None."""
    if rec["det"].get(dname) is None:
        return None
    parts = []
    if mode.startswith("adapt"):  # blur only when the warp enlarges by more than `thr`
        thr = float(mode[5:] or 1.0)
        M = R.umeyama(rec["det"][dname][0], R.ARCFACE_TEMPLATE)
        mode = "lin+blur0.5" if math.hypot(M[0, 0], M[0, 1]) > thr else "lin"
    for mname, w in spec["w"].items():
        if w <= 0:
            continue
        key = (dname, mode, mname)
        if key not in rec["emb"]:
            return "missing"
        e, ef = rec["emb"][key]
        v = nrm(e) + (nrm(ef) if spec["flip"] and ef is not None else 0)
        parts.append(math.sqrt(w) * nrm(v))
    return np.concatenate(parts)


def run_eval(cache, dname, mode, spec):
    recs = []
    for rec in cache["items"]:
        e = embedding_for(rec, dname, mode, spec)
        if isinstance(e, str):
            return None
        recs.append({"ident": rec["ident"], "path": rec["path"], "emb": e})
    res, gen, imp, strb = R.evaluate(recs, cache["idents"])
    # margin diagnostics for the open-set gate
    res["dir_fail"] = int(round(res["genuine_probes"] * (1 - res["dir_at_fpir_1e-2"])))
    return res


def ms_for(cache, dname, mode, spec):
    t = cache["timing"]
    ms = t["det_ms"][dname]
    mode = "lin" if mode.startswith("adapt") else mode
    for mname, w in spec["w"].items():
        if w > 0:
            ms += t["embed_ms"].get(f"{mode}/{'arc' if mname == 'arcshift' else mname}", 0) * (
                (2 if spec["flip"] else 1) if mname != "arcshift" else 4)
    return ms


def report(tags, rows=None):
    caches = {t: pickle.load(open(os.path.join(CACHE, f"{t}.pkl"), "rb")) for t in tags}
    if rows is None:
        rows = default_rows()
    hdr = "| variant | " + " | ".join(
        f"{t} TAR1e-2 | {t} TAR1e-3 | {t} DIR | {t} fail | {t} gen/imp cos | {t} ms" for t in tags) + " |"
    print(hdr)
    print("|" + "---|" * (1 + 6 * len(tags)))
    out = []
    for name, dname, mode, spec in rows:
        cells, vals = [], {}
        for t in tags:
            r = run_eval(caches[t], dname, mode, spec)
            if r is None:
                cells.append("n/a | " * 5 + "n/a")
                continue
            vals[t] = r
            cells.append(f"{r['tar_at_far_1e-2']:.3f} | {r['tar_at_far_1e-3']:.3f} | {r['dir_at_fpir_1e-2']:.3f} | "
                         f"{r['dir_fail']} | {r['genuine_mean_cosine']:.3f}/{r['impostor_mean_cosine']:.3f} | "
                         f"{ms_for(caches[t], dname, mode, spec):.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
        out.append((name, vals))
    return out


def S(flip=False, arc=1.0, mfn=0.0, dlib=0.0, arcshift=0.0):
    return {"flip": flip, "w": {"arc": arc, "mfn": mfn, "dlib": dlib, "arcshift": arcshift}}


def default_rows():
    rows = [("ref (U0 lin arc)", "U0", "lin", S())]
    for d in DET_VARIANTS:
        rows.append((f"{d} lin arc", d, "lin", S()))
        rows.append((f"{d} lin arc+flip", d, "lin", S(True)))
    for d in sorted(ALIGN_DETS):
        for m in ALIGN_FULL:
            rows.append((f"{d} {m} arc+flip", d, m, S(True)))
    for d in ("U0", "U320", "U0F0", "U320F0", "U0F0S480"):
        for m in ("lin", "cub"):
            rows.append((f"{d} {m} mfn+flip", d, m, S(True, 0, 1)))
            for w in (0.5, 0.6, 0.7, 0.8):
                rows.append((f"{d} {m} arc/mfn w={w} +flip", d, m, S(True, w, 1 - w)))
                rows.append((f"{d} {m} arc/mfn w={w}", d, m, S(False, w, 1 - w)))
            rows.append((f"{d} {m} arc/mfn/dlib .6/.3/.1 +flip", d, m, S(True, 0.6, 0.3, 0.1)))
        rows.append((f"{d} lin arcshift4", d, "lin", S(False, 0, 0, 0, 1)))
    return rows


if __name__ == "__main__":
    if sys.argv[1] == "compute":
        compute(sys.argv[2], sys.argv[3])
    else:
        report(sys.argv[2:])
