#!/usr/bin/python3
"""RTSP server for the ingest bench (BENCHMARKS.md §4 (a')), in its own process
so its CPU is not counted in facegate's or gst-launch's.

    /usr/bin/python3 benches/rtsp_serve.py [--port 8554] NAME=FILE.mp4 ...

serves each H.264 MP4 at rtsp://127.0.0.1:PORT/NAME without re-encoding
(`filesrc ! qtdemux ! h264parse ! rtph264pay`), paced in real time by the
server's sinks. Media are not shared: every client gets its own pipeline
starting at the beginning of the file, so the baseline runs before and after
facegate and facegate itself all receive the same frames. The file is played ONCE per
client (no loop: a segment-seek loop was tried and the client stopped
receiving after the seek), so a client session must be shorter than the file
(the bench media are 67 s and 73 s; a bench connection lasts ~22 s).

Needs the Debian packages python3-gi and gir1.2-gst-rtsp-server-1.0 (use
/usr/bin/python3, which sees them). Listens on 127.0.0.1 only.
"""

import argparse
import os
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


class FileFactory(GstRtspServer.RTSPMediaFactory):
    """One file, not shared: each client gets its own pipeline from 0."""

    def __init__(self, path):
        super().__init__()
        self.set_shared(False)
        self.set_launch(
            f'( filesrc location="{path}" ! qtdemux name=d d.video_0 ! '
            "queue ! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 )"
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", default="8554")
    ap.add_argument("media", nargs="+", help="NAME=FILE.mp4")
    args = ap.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(args.port)
    mounts = server.get_mount_points()
    for m in args.media:
        name, _, path = m.partition("=")
        path = os.path.abspath(path)
        if not os.path.isfile(path):
            sys.exit(f"{path}: no such file")
        mounts.add_factory(f"/{name}", FileFactory(path))
        print(f"# rtsp://127.0.0.1:{args.port}/{name} <- {path}", flush=True)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{args.port}")
    print("# ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
