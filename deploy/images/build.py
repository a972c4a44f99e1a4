"""Build every image the compose stack runs, with the classic builder (or BuildKit), offline where need be.

Why a script and not `docker compose build`: on machines without a registry the base image and the third-party
services need local stand-ins, torch must come from a local wheel, and the build and size of every image are
recorded (docs/deploy.md). Users with a registry can still run `docker compose build`; the Dockerfiles are the same.

    python deploy/images/build.py                       # base (debootstrap), sage-ft images, test stand-ins
    python deploy/images/build.py --only gateway,worker # some of them
    python deploy/images/build.py --buildkit            # the same Dockerfiles through BuildKit (needs buildx)
    python deploy/images/build.py --json times.json     # seconds and size per image
    python deploy/images/build.py --jobs 1              # one build at a time (default: two side by side)

torch: ``--wheels DIR`` (default: the directory pip's find-links setting names, where this machine keeps the CPU
wheel) is served on 127.0.0.1 for the length of the build and passed as ``TORCH_FIND_LINKS``; builds use the host's
network, so pip inside them reaches PyPI exactly as the host does. Without a wheel directory the Dockerfiles' default
index is used.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BASE = "sage-ft/base:bookworm-py311"
VERSION = "0.1.0"  # compose's default SAGE_VERSION; --version tags another
REGISTRY = "ghcr.io/sage-ft"  # the names compose and the Helm chart run (tests/deploy checks they agree)
STANDIN_TAG = "test"
WHEELS_PORT = 17781


@dataclass
class Image:
    name: str
    tag: str
    dockerfile: Path
    context: Path
    args: dict[str, str] = field(default_factory=dict)
    wants_torch: bool = False


def images(version: str = VERSION) -> list[Image]:
    svc = ROOT / "services"
    standins = HERE / "standins"
    ours = [
        Image("gateway", f"{REGISTRY}/gateway:{version}", svc / "gateway" / "Dockerfile", ROOT),
        Image("serving", f"{REGISTRY}/serving:{version}", svc / "serving" / "Dockerfile", ROOT),
        Image(
            "worker",
            f"{REGISTRY}/worker:{version}-cpu",
            svc / "worker" / "Dockerfile",
            ROOT,
            {"VARIANT": "cpu"},
            wants_torch=True,
        ),
        Image("cli", f"{REGISTRY}/cli:{version}", svc / "cli" / "Dockerfile", ROOT),
    ]
    theirs = [
        Image(
            f"standin-{name}",
            f"sage-ft-standin/{name}:{STANDIN_TAG}",
            standins / name / "Dockerfile",
            standins / name,
            wants_torch=name == "vllm",
        )
        for name in ("redis", "minio", "prometheus", "grafana", "vllm")
    ]
    return ours + theirs


def default_wheels() -> Path | None:
    """The directory pip's find-links setting names on this machine (the local CPU torch wheel lives there)."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    # pip's own view of the setting: its environment variable (":env:.find-links") and its config files alike
    values = [line.split("=", 1)[1].strip("'\"") for line in listed.splitlines() if ".find-links=" in line]
    for candidate in " ".join(values).split():
        if Path(candidate).is_dir() and any(Path(candidate).glob("torch-*.whl")):
            return Path(candidate)
    return None


@contextlib.contextmanager
def serve_directory(path: Path) -> Iterator[str]:
    """``path`` over HTTP on a free loopback port, for pip's --find-links inside a host-network build."""
    handler = functools.partial(_QuietHandler, directory=str(path))
    try:  # a fixed port keeps TORCH_FIND_LINKS, and so the builder's layer cache, the same from build to build
        server = http.server.ThreadingHTTPServer(("127.0.0.1", WHEELS_PORT), handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def image_size(tag: str) -> int:
    out = subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", tag], capture_output=True, text=True)
    return int(out.stdout.strip() or 0)


def buildkit_cli() -> str:
    """A docker CLI that builds with BuildKit: any with the buildx plugin, or a 20.10 one (Debian's docker.io), whose
    built-in BuildKit client talks to the engine's embedded BuildKit. Newer CLIs without buildx refuse."""
    if subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode == 0:
        return "docker"
    legacy = Path("/usr/bin/docker")
    if legacy.exists():
        out = subprocess.run([str(legacy), "version", "-f", "{{.Client.Version}}"], capture_output=True, text=True)
        if out.stdout.startswith("20."):
            return str(legacy)
    raise SystemExit("BuildKit needs the buildx plugin (or Debian's docker.io 20.10 CLI)")


def build(image: Image, *, base: str, find_links: str | None, buildkit: bool, log: Path, suffix: str = "") -> float:
    """Build one image, its output in ``log`` (a file of its own: builds run side by side)."""
    args = {"PYTHON_IMAGE": base, "BASE_IMAGE": base, **image.args}
    if image.wants_torch and find_links:
        args["TORCH_FIND_LINKS"] = find_links
    cli = buildkit_cli() if buildkit else "docker"
    cmd = [cli, "build", "--network", "host", "-f", str(image.dockerfile), "-t", image.tag + suffix]
    for key, value in args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    env = {**os.environ, "DOCKER_BUILDKIT": "1" if buildkit else "0"}
    start = time.monotonic()
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(cmd)} {image.context}\n".encode())
        out.flush()
        proc = subprocess.run([*cmd, str(image.context)], stdout=out, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        raise SystemExit(f"building {image.tag} failed (log: {log}):\n" + "\n".join(tail))
    return time.monotonic() - start


def build_all(todo: list[Image], jobs: int, log: Path, **options: Any) -> dict[str, dict[str, float]]:
    """Build ``todo``, ``jobs`` at a time, the torch images first (the longest: the rest fill in beside them).
    Builds spend most of their time on pip's downloads and unpacking, not on the CPU, so two side by side take about
    the time of the longer one on two cores. Each build's output goes to the main log whole, when it ends."""
    log.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, dict[str, float]] = {}  # seconds and bytes, by image
    lock = threading.Lock()

    def one(image: Image) -> None:
        own = log.with_name(f"{log.name}.{image.name}")
        own.unlink(missing_ok=True)
        try:
            took = build(image, log=own, **options)
        finally:
            with lock, log.open("ab") as out:
                out.write(own.read_bytes() if own.exists() else b"")
            own.unlink(missing_ok=True)
        tag = image.tag + options.get("suffix", "")
        size = image_size(tag)
        with lock:
            report[image.name] = {"seconds": round(took, 1), "bytes": size}
            print(f"{tag:<40} {took:7.1f} s {size / 1e6:8.0f} MB", flush=True)

    ordered = sorted(todo, key=lambda i: not i.wants_torch)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(one, image) for image in ordered]
        try:
            for future in futures:
                future.result()  # the first failure ends the script (SystemExit, with that build's tail)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # the builds not started are not started
            raise
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", default=VERSION, help="tag of the sage-ft images (compose's SAGE_VERSION)")
    parser.add_argument("--only", default="", help="comma-separated names (gateway, worker, standin-vllm, ...)")
    parser.add_argument("--base", default=BASE, help="base image; built with debootstrap when it is missing")
    parser.add_argument("--wheels", type=Path, default=None, help="directory holding the torch wheel")
    parser.add_argument("--buildkit", action="store_true", help="build with BuildKit instead of the classic builder")
    parser.add_argument("--suffix", default="", help="appended to every tag (keeps a second build's images apart)")
    parser.add_argument("--jobs", type=int, default=2, help="builds side by side (default 2; 1: one at a time)")
    parser.add_argument("--json", type=Path, default=None, help="write seconds and bytes per image here")
    parser.add_argument("--log", type=Path, default=Path(tempfile.gettempdir()) / "sage-ft-build.log")
    opts = parser.parse_args(argv)

    wanted = {n for n in opts.only.split(",") if n}
    todo = [i for i in images(opts.version) if not wanted or i.name in wanted]
    if unknown := wanted - {i.name for i in images(opts.version)}:
        parser.error(f"unknown image(s): {', '.join(sorted(unknown))}")
    report: dict[str, dict[str, float]] = {}
    start = time.monotonic()
    if opts.base == BASE:
        subprocess.run([str(HERE / "build-base.sh"), BASE], check=True)
        report["base"] = {"seconds": round(time.monotonic() - start, 1), "bytes": image_size(BASE)}
    wheels = opts.wheels or default_wheels()
    with contextlib.ExitStack() as stack:
        find_links = stack.enter_context(serve_directory(wheels)) if wheels else None
        options = {"base": opts.base, "find_links": find_links, "buildkit": opts.buildkit, "suffix": opts.suffix}
        report.update(build_all(todo, opts.jobs, opts.log, **options))
    print(f"all images in {time.monotonic() - start:.0f} s")
    if opts.json:
        opts.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
