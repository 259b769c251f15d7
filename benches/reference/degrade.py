#!/usr/bin/env python3
"""Make the "surveillance copy" of a face dataset.

    degrade.py SRC DST [--scale 0.35] [--quality 50]

SRC is a folder laid out as SRC/<identity>/*.jpg.  Every image is

  * decoded with cv2.imread(IMREAD_COLOR | IMREAD_IGNORE_ORIENTATION) (8-bit BGR, EXIF
    orientation ignored, as the Rust decoder does),
  * scaled by --scale with cv2.resize(..., interpolation=cv2.INTER_AREA); the new size is
    (max(1, int(round(w * scale))), max(1, int(round(h * scale)))), Python's round(), i.e.
    round half to EVEN on the float64 product (750 * 0.35 = 262.5 -> 262, 250 * 0.35 = 87.5
    -> 88; a Rust port needs f64::round_ties_even, not f64::round),
  * written to DST/<identity>/<same name> with cv2.imwrite(..., [IMWRITE_JPEG_QUALITY, quality]).

The output is deterministic (OpenCV 5.0.0.93 and 4.14.0.94 wheels give byte-identical
files).  Only .jpg/.jpeg/.png inputs are read; the output is always JPEG, a .png input is
written as <stem>.jpg.
"""
import argparse
import os
import sys

import cv2

IMAGE_EXTS = (".jpg", ".jpeg", ".png")


def degrade_image(src_path, dst_path, scale, quality):
    img = cv2.imread(src_path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        raise RuntimeError(f"cannot decode {src_path}")
    h, w = img.shape[:2]
    nw = max(1, int(round(w * scale)))
    nh = max(1, int(round(h * scale)))
    small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    if not cv2.imwrite(dst_path, small, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)]):
        raise RuntimeError(f"cannot write {dst_path}")
    return (w, h), (nw, nh)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--scale", type=float, default=0.35)
    ap.add_argument("--quality", type=int, default=50)
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)

    if not os.path.isdir(args.src):
        sys.exit(f"not a folder: {args.src}")
    n = 0
    for ident in sorted(os.listdir(args.src)):
        sdir = os.path.join(args.src, ident)
        if not os.path.isdir(sdir):
            continue
        ddir = os.path.join(args.dst, ident)
        os.makedirs(ddir, exist_ok=True)
        for name in sorted(os.listdir(sdir)):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in IMAGE_EXTS:
                continue
            out_name = name if ext.lower() in (".jpg", ".jpeg") else stem + ".jpg"
            (w, h), (nw, nh) = degrade_image(
                os.path.join(sdir, name), os.path.join(ddir, out_name), args.scale, args.quality
            )
            n += 1
            if not args.quiet:
                print(f"{ident}/{name}: {w}x{h} -> {nw}x{nh}")
    print(f"{n} images written to {args.dst}", file=sys.stderr)


if __name__ == "__main__":
    main()
