"""A real Docker engine for the tests: the one that answers, or one started here and stopped afterwards.

`make tools` installs Debian's dockerd (with containerd, runc and iptables). When no daemon answers on the default
socket, ``engine()`` starts ``dockerd`` with its log in a file, waits for it, and at the end stops exactly the
process it started (by pid). A machine where the engine cannot start fails the test with dockerd's own last lines;
it is never skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / ".tools" / "bin" / "docker-compose"
# the image python graders run in under serving's docker sandbox: the offline base (python3, nothing else)
GRADER_IMAGE = "sage-ft/base:bookworm-py311"


def docker_cli() -> str:
    path = shutil.which("docker")
    if not path:
        pytest.fail("the docker CLI is not installed: run `make tools`")
    return path


def answers() -> bool:
    try:
        return subprocess.run([docker_cli(), "info"], capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@contextlib.contextmanager
def engine(log_dir: Path) -> Iterator[str]:
    """Yield the Docker host URL; start dockerd for the duration if none answers."""
    if answers():
        yield "unix:///var/run/docker.sock"
        return
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    if not Path(dockerd).exists():
        pytest.fail("no Docker engine answers and dockerd is not installed: run `make tools`")
    if os.geteuid() != 0:
        pytest.fail("no Docker engine answers, and starting dockerd needs root")
    log_path = log_dir / "dockerd.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen([dockerd], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
                pytest.fail(f"the Docker engine did not start (exit {proc.poll()}); dockerd's log:\n{tail}")
            time.sleep(0.5)
        yield "unix:///var/run/docker.sock"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
