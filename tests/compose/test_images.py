"""The images as built: every module imports (a dependency missing from a pyproject.toml fails here, not in
production), no torch in the gateway or serving, non-root with a health check, a source change reuses every dependency
layer, and every Dockerfile builds with BuildKit as well as with the classic builder, to the same result."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from compose_stack import TAGS, docker
from docker_engine import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

# Parts of the shared library that need what only some services install: the train extra (torch) is the worker's,
# FastAPI the HTTP services'. Every other module of the library and of the service must import.
TORCH_EXTRA = ("sage_ft.training", "sage_ft.demo")
HTTP_ONLY = ("sage_ft.api_errors",)
MAY_FAIL = {"gateway": TORCH_EXTRA, "serving": TORCH_EXTRA, "worker": HTTP_ONLY, "cli": TORCH_EXTRA + HTTP_ONLY}
INSPECT = """
import hashlib, importlib, importlib.metadata as md, importlib.util, json, pathlib, pkgutil
failed, digest = {}, hashlib.sha256()
for pkg in ("sage_ft", "sage_ft_%s"):
    root = importlib.import_module(pkg)
    for path in sorted(pathlib.Path(root.__path__[0]).rglob("*.py")):
        digest.update(path.read_bytes())
    for mod in pkgutil.walk_packages(root.__path__, pkg + "."):
        if mod.name.endswith(".__main__"):  # an entry point: importing it runs the program
            continue
        try:
            importlib.import_module(mod.name)
        except Exception as err:
            failed[mod.name] = repr(err)
print(json.dumps({"failed": failed, "torch": importlib.util.find_spec("torch") is not None,
                  "dists": sorted({d.metadata["Name"].lower() for d in md.distributions()}),
                  "source": digest.hexdigest()}))
"""


def inspect_image(tag: str, service: str) -> dict[str, Any]:
    out = docker("run", "--rm", "--entrypoint", "python", tag, "-c", INSPECT % service)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("service", list(TAGS))
def test_every_module_imports_and_only_the_worker_has_torch(service: str, built_images: Any) -> None:
    found = inspect_image(TAGS[service], service)
    failed = {m: e for m, e in found["failed"].items() if not m.startswith(MAY_FAIL[service])}
    assert not failed, failed
    assert found["torch"] is (service == "worker")


@pytest.mark.parametrize("service", list(TAGS))
def test_images_run_as_a_user_with_a_health_check(service: str, built_images: Any) -> None:
    config = json.loads(docker("image", "inspect", TAGS[service]))[0]["Config"]
    assert config["User"] == "10001:10001"
    assert config["Healthcheck"]["Test"][0] == "CMD"


def test_a_source_change_reuses_every_dependency_layer(built_images: Any, tmp_path: Path) -> None:
    """The same Dockerfile on a context that differs only in one source line: the dependency steps come from the
    cache and only the source layer is built (what makes a source change rebuild in seconds)."""
    context = tmp_path / "ctx"
    for part in ("shared", "services"):
        shutil.copytree(ROOT / part, context / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (context / "deploy" / "images").mkdir(parents=True)
    shutil.copy(ROOT / "deploy" / "images" / "pydeps.py", context / "deploy" / "images")
    shutil.copy(ROOT / ".dockerignore", context)
    with (context / "shared" / "src" / "sage_ft" / "errors.py").open("a") as f:
        f.write("# a source change\n")
    tag = "sage-ft-test/rebuild:test"
    cmd = [
        "docker",
        "build",
        "--network",
        "host",
        "--build-arg",
        "PYTHON_IMAGE=sage-ft/base:bookworm-py311",
        "-f",
        str(context / "services" / "gateway" / "Dockerfile"),
        "-t",
        tag,
        str(context),
    ]
    # the CLI build.py used: two CLI versions tar a context differently, and the classic cache is keyed on that tar
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    try:
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        lines = out.stdout.splitlines()

        def cached(marker: str) -> bool:
            step = next(i for i, line in enumerate(lines) if line.startswith("Step ") and marker in line)
            return "Using cache" in lines[step + 1]

        assert cached("pip install -r /tmp/requirements.txt")  # no dependency is downloaded or installed again
        assert not cached("--no-deps")  # the changed source is built
    finally:
        docker("rmi", "-f", tag, check=False)


def test_every_dockerfile_builds_with_buildkit_to_the_same_image(built_images: Any, tmp_path: Path) -> None:
    """Users have BuildKit; these machines have the classic builder in the current CLI and BuildKit in the engine
    (through Debian's 20.10 CLI). Same context, same installed distributions, same sources, same user and checks."""
    build = [
        sys.executable,
        str(ROOT / "deploy" / "images" / "build.py"),
        "--buildkit",
        "--suffix=-buildkit",
        "--only",
        ",".join(TAGS),
        "--log",
        str(tmp_path / "buildkit.log"),
    ]
    out = subprocess.run(build, capture_output=True, text=True, timeout=2400)
    try:
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
        for service, tag in TAGS.items():
            classic, buildkit = inspect_image(tag, service), inspect_image(tag + "-buildkit", service)
            assert buildkit["source"] == classic["source"], service  # the same files reached the image
            assert buildkit["dists"] == classic["dists"], service
            keys = ("User", "Entrypoint", "Healthcheck", "ExposedPorts")
            configs = [json.loads(docker("image", "inspect", t))[0]["Config"] for t in (tag, tag + "-buildkit")]
            assert {k: configs[0].get(k) for k in keys} == {k: configs[1].get(k) for k in keys}
    finally:
        for tag in TAGS.values():
            docker("rmi", "-f", tag + "-buildkit", check=False)
