#!/usr/bin/env python3
"""Typical estate camera clip for the ingest bench (issue 11 item 4, BENCHMARKS.md §4 (d)).

    estate_clip.py --out FILE.mp4 [--faces ../shared/faces] [--phase 0] [--seconds 60]
                   [--kbps 3000] [--noise 1.5] [--variant 0]

A 1920x1080, 25 fps H.264 clip of a mostly empty estate path: a procedurally drawn scene (building
wall with windows, paved path, hedge, lamp post; no photos), with per-frame sensor grain (luminance
sigma --noise, a bank of 16 noise fields cycled) and a slow +-3 grey-level light drift (20 s period).
People walk in during 25% of the time: two visits on a 60 s timeline, 4.0-11.0 s and 27.0-35.0 s
(15 s of 60). A visitor walks down the path towards the camera, the face growing from 70 to 190 px
(box width at 1080p; 23 to 63 px at the detector's 640 px), with a torso drawn under the head; the
head is a real photo from FACES/identities (located with the reference YuNet and cut with a
feathered ellipse by benches/walkby/make_walkby.py's head_patch), different people per --variant.
--phase rotates the timeline (frame k shows time (k/25 + phase) mod 60), so streams played from
variants with phases 0/15/30/45 s see people at different times (at most 1 s of overlap between
any two).

Encoded like an IP camera: GStreamer x264enc, main profile, no B-frames (bframes=0), a keyframe every
50 frames (2 s), bitrate=--kbps (default 3000 kbit/s; x264enc's default "cbr" pass caps the rate at it
but, like a camera in VBR mode, does not pad a mostly still scene up to it: the 60 s clips come out at
~1.3 Mbit/s on average, ~1.9 Mbit/s while someone walks), speed-preset=veryfast; frames enter through
rawvideoparse at exactly 25/1, so frame k is at k x 40 ms. The clip is written under target/ by
benches/ingest.sh and never committed; the face photos stay in ../shared/faces.
"""
import argparse
import math
import os
import subprocess
import sys

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "walkby"))
sys.path.insert(0, os.path.join(HERE, "reference"))
import make_walkby as mw  # noqa: E402
import reference_eval as ref  # noqa: E402

W, H, FPS = 1920, 1080, 25
BASE_S = 60.0
# (start, end) seconds of the two visits on the 60 s timeline: 15 s of 60 = 25%.
VISITS = [(4.0, 11.0), (27.0, 35.0)]
FACE_FROM, FACE_TO = 70.0, 190.0


def log(*a):
    print("estate_clip:", *a, file=sys.stderr, flush=True)


def background():
    """An estate path by day: wall with windows, hedge, paved path in perspective, a lamp post."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    bg = np.zeros((H, W, 3), np.float32)
    horizon = 430
    bg[:] = np.array([175, 170, 160], np.float32) * (0.85 + 0.2 * yy[..., None] / horizon)
    for wx in range(80, W - 150, 260):  # windows in two rows
        for wy in (90, 250):
            bg[wy:wy + 110, wx:wx + 150] = (95, 85, 70)
            bg[wy + 52:wy + 58, wx:wx + 150] = (200, 200, 195)
            bg[wy:wy + 110, wx + 72:wx + 78] = (200, 200, 195)
    g = yy >= horizon
    depth = (yy - horizon + 1) / (H - horizon)
    bg[g] = (np.array([120, 125, 128], np.float32) * (0.8 + 0.4 * depth[..., None]))[g]
    slabs = g & ((np.abs(((xx - W / 2) / np.maximum(depth, 1e-3)) % 260) < 4) |
                 ((np.sqrt(np.maximum(depth, 1e-3)) * 40) % 4 < 0.25))
    bg[slabs] *= 0.8
    hedge = (yy >= horizon - 120) & (yy < horizon) & ((xx < 560) | (xx > 1360))
    bg[hedge] = (40, 95, 45)
    bg[hedge] += rng.normal(0, 18, (int(hedge.sum()), 1)).astype(np.float32)
    bg[150:horizon + 260, 1580:1596] = (60, 60, 60)  # lamp post
    cv2.circle(bg, (1588, 140), 26, (210, 235, 245), -1)
    bg += rng.normal(0, 5, (H, W, 1)).astype(np.float32)
    bg = cv2.GaussianBlur(bg, (0, 0), 1.0)
    return bg


def paste(frame, patch, mask, x, y):
    h, w = mask.shape
    fx0, fy0, fx1, fy1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if fx1 <= fx0 or fy1 <= fy0:
        return
    m = mask[fy0 - y:fy1 - y, fx0 - x:fx1 - x, None]
    region = frame[fy0:fy1, fx0:fx1]
    region *= 1.0 - m
    region += patch[fy0 - y:fy1 - y, fx0 - x:fx1 - x] * m


def visitor(t):
    """(visit index, face px, centre x, centre y) at base time t, or None."""
    for i, (a, b) in enumerate(VISITS):
        if a <= t < b:
            u = (t - a) / (b - a)
            size = FACE_FROM + (FACE_TO - FACE_FROM) * u
            x = (0.42 + 0.16 * i) * W + (0.08 if i == 0 else -0.08) * W * u
            y = 330 + 300 * u + 0.05 * size * math.sin(2 * math.pi * 1.8 * t)
            return i, size, x, y
    return None


def heads(faces, variant):
    """Two head patches (one per visit) of identities chosen by the variant."""
    det = ref.YuNet(os.path.join(ref.default_models_dir(), "yunet_2023mar_dynamic.onnx"))
    root = os.path.join(faces, "identities")
    names = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    out = []
    k = 2 * variant
    while len(out) < len(VISITS) and k < 2 * variant + len(names):
        name = names[k % len(names)]
        k += 1
        located = mw.locate_faces(det, root, name)
        if located:
            out.append(located[0]["head"])
            log(f"visit {len(out)}: {name} ({located[0]['path']})")
    if len(out) < len(VISITS):
        sys.exit(f"{root}: not enough photos with a face")
    return out


def frames(bg, hs, args):
    rng = np.random.default_rng(11 + args.variant)
    noise = [rng.normal(0, args.noise, (H, W, 1)).astype(np.float32) for _ in range(16)]
    n = int(round(args.seconds * FPS))
    for k in range(n):
        t = (k / FPS + args.phase) % BASE_S
        frame = bg * (1.0 + 0.02 * math.sin(2 * math.pi * t / 20.0))
        v = visitor(t)
        if v is not None:
            i, size, cx, cy = v
            patch, mask, bw, (fcx, fcy) = hs[i]
            s = size / bw
            side = max(2, int(round(patch.shape[0] * s)))
            interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
            p = cv2.resize(patch, (side, side), interpolation=interp)
            m = cv2.resize(mask, (side, side), interpolation=interp)
            col = [(60, 50, 40), (40, 40, 110)][i]
            cv2.ellipse(frame, (int(cx), int(cy + 2.4 * size)), (int(1.5 * size), int(1.7 * size)),
                        0, 0, 360, col, -1, cv2.LINE_AA)
            paste(frame, p, m, int(round(cx - fcx * s)), int(round(cy - fcy * s)))
        frame += noise[k % len(noise)]
        yield np.clip(frame, 0, 255).astype(np.uint8)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--faces", default=os.path.join(HERE, "..", "..", "shared", "faces"))
    ap.add_argument("--phase", type=float, default=0.0)
    ap.add_argument("--variant", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=BASE_S)
    ap.add_argument("--kbps", type=int, default=3000)
    ap.add_argument("--noise", type=float, default=1.5)
    ap.add_argument("--sample", help="also write the frame at this clip second as PNG (target/ only)")
    args = ap.parse_args()
    bg = background()
    hs = heads(args.faces, args.variant)
    tmp = args.out + ".tmp"
    cmd = ["gst-launch-1.0", "-q", "fdsrc", "fd=0", "blocksize=%d" % (W * H * 3), "!",
           "rawvideoparse", f"width={W}", f"height={H}", "format=bgr", f"framerate={FPS}/1", "!",
           "videoconvert", "!", "video/x-raw,format=I420", "!",
           "x264enc", f"bitrate={args.kbps}", "speed-preset=veryfast", "key-int-max=50",
           "bframes=0", "b-adapt=false", "!", "video/x-h264,profile=main", "!",
           "h264parse", "!", "mp4mux", "!", "filesink", f"location={tmp}"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    sample = None if args.sample is None else int(float(args.sample) * FPS)
    for k, f in enumerate(frames(bg, hs, args)):
        proc.stdin.write(f.tobytes())
        if k == sample:
            cv2.imwrite(os.path.splitext(args.out)[0] + f"-sample{k}.png", f)
    proc.stdin.close()
    if proc.wait() != 0:
        sys.exit(f"gst-launch failed ({proc.returncode}): {' '.join(cmd)}")
    os.replace(tmp, args.out)
    log(f"{args.out}: {int(round(args.seconds * FPS))} frames, phase {args.phase} s")


if __name__ == "__main__":
    main()
