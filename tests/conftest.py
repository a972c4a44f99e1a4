"""Shared fixtures: an isolated SAGE_HOME, the offline tiny model, and small datasets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CODE_WORDS = [
    "apple river",
    "blue stone",
    "cold fire",
    "dark moon",
    "eager fox",
    "fast wind",
    "green hill",
    "high tower",
    "iron gate",
    "jolly king",
    "kind heart",
    "lost road",
    "magic lamp",
    "noble tree",
    "open sea",
    "pale rose",
    "quiet lake",
    "red sun",
    "silver bird",
    "tall grass",
]


@pytest.fixture(scope="session", autouse=True)
def sage_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point SAGE_HOME at a temporary directory so tests never touch ~/.sage."""
    home = tmp_path_factory.mktemp("sage-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("SAGE_HOME", str(home))
    from sage_ft.settings import path_settings

    path_settings.cache_clear()
    yield home
    mp.undo()
    path_settings.cache_clear()


@pytest.fixture(scope="session")
def tiny_model(sage_home: Path) -> Path:
    pytest.importorskip("torch")
    from sage_ft.training.tiny_model import build_tiny_model

    return build_tiny_model("sage-tiny")


@pytest.fixture
def wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """W&B in offline mode writing under this test's directory; returns where its runs go.

    wandb keeps its settings (the run directory among them) in a process-wide singleton made at the first
    ``wandb.init``, so a second test in the same pytest worker would write into the first one's directory:
    the singleton is torn down before and after.
    """
    wandb = pytest.importorskip("wandb")
    wandb.teardown()
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(key, value)
    yield tmp_path / "wandb"
    wandb.teardown()


@pytest.fixture
def no_prlimit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host without util-linux's ``prlimit`` (everything else on PATH is still found)."""
    import shutil

    which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **kw: None if name == "prlimit" else which(name, *a, **kw))


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def qa_records() -> list[dict]:
    return [{"question": f"What is the code word number {i}?", "answer": a} for i, a in enumerate(CODE_WORDS)]


@pytest.fixture(scope="session")
def qa_file(tmp_path_factory: pytest.TempPathFactory, qa_records: list[dict]) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "qa.jsonl", qa_records)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real S3-protocol server: SAGE_TEST_S3_ENDPOINT (+ _ACCESS_KEY, _SECRET_KEY) if set, else moto_server."""
    import os
    import socket
    import subprocess
    import sys
    import time

    if os.environ.get("SAGE_TEST_S3_ENDPOINT"):
        yield {
            "endpoint": os.environ["SAGE_TEST_S3_ENDPOINT"],
            "access_key": os.environ.get("SAGE_TEST_S3_ACCESS_KEY", "minioadmin"),
            "secret_key": os.environ.get("SAGE_TEST_S3_SECRET_KEY", "minioadmin"),
        }
        return
    port = _free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    server = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {proc.returncode}") from None
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("moto_server did not start within 30 s")
    try:
        yield {"endpoint": f"127.0.0.1:{port}", "access_key": "testing", "secret_key": "testing"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Docker engine (the one that answers, or dockerd started for the session and stopped after it)."""
    from docker_engine import engine

    with engine(tmp_path_factory.mktemp("dockerd")) as url:
        yield url


@pytest.fixture(scope="session")
def grader_image(docker_engine: str) -> str:
    """The image of serving's python-grader sandbox: the offline base image, built when it is missing (the image
    build makes it first anyway)."""
    import subprocess

    from docker_engine import GRADER_IMAGE, ROOT

    proc = subprocess.run(
        [str(ROOT / "deploy" / "images" / "build-base.sh"), GRADER_IMAGE], capture_output=True, text=True, timeout=1200
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return GRADER_IMAGE


@pytest.fixture(scope="session")
def built_images(docker_engine: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every image, built with the classic builder; seconds and bytes per image (docs/deploy.md)."""
    import subprocess
    import sys

    from docker_engine import ROOT

    out = tmp_path_factory.mktemp("images")
    report = out / "images.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "deploy" / "images" / "build.py"),
            "--json",
            str(report),
            "--log",
            str(out / "build.log"),
        ],
        capture_output=True,
        text=True,
        timeout=2400,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    print(proc.stdout)
    times: dict[str, Any] = json.loads(report.read_text())
    return times
