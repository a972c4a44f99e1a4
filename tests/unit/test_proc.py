"""``sage_ft.proc.call_at_lower_priority``: the worker watches its trainer from a thread that yields CPU to it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sage_ft.proc import call_at_lower_priority

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")


def _my_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@linux_only
def test_the_work_runs_niced_in_another_thread_and_the_caller_keeps_its_priority() -> None:
    before = _my_nice()
    seen = call_at_lower_priority(lambda: (threading.get_native_id(), _my_nice()), nice=7)
    assert seen[0] != threading.get_native_id()
    assert seen[1] == min(19, before + 7)
    assert _my_nice() == before
    # a process the caller starts afterwards (the next trainer) is not niced
    child = subprocess.run([sys.executable, "-c", "import os; print(os.nice(0))"], capture_output=True, text=True)
    assert int(child.stdout) == before


def test_errors_reach_the_caller_and_zero_means_inline() -> None:
    def boom() -> None:
        raise KeyError("lost")

    with pytest.raises(KeyError, match="lost"):
        call_at_lower_priority(boom, nice=5)
    assert call_at_lower_priority(threading.get_native_id, nice=0) == threading.get_native_id()


VLLM_LOG = """INFO 11-29 03:40:11 [api_server.py:1] vLLM API server version 0.32.0
(APIServer pid=12) Traceback (most recent call last):
(APIServer pid=12)   File "/x/vllm/config/model.py", line 2640, in _get_and_verify_max_len
(APIServer pid=12)     raise ValueError(
(APIServer pid=12) pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig
(APIServer pid=12)   Value error, User-specified max_model_len (2048) is greater than the derived max_model_len
(APIServer pid=12) ValueError: User-specified max_model_len (2048) is greater than the derived max_model_len (1024)
INFO 11-29 03:40:12 [launcher.py:9] Shutting down FastAPI HTTP server.
/usr/lib/python3.11/multiprocessing/resource_tracker.py:254: UserWarning: There appear to be 1 leaked semaphore
"""


def test_the_reason_a_server_died_is_its_last_exception_message_not_its_last_line(tmp_path: Path) -> None:
    from sage_ft.proc import failure_reason, last_error_line

    assert last_error_line(VLLM_LOG) == (
        "ValueError: User-specified max_model_len (2048) is greater than the derived max_model_len (1024)"
    )
    log = tmp_path / "server.log"
    log.write_text(VLLM_LOG)
    assert failure_reason(log).startswith("ValueError: User-specified max_model_len (2048)")
    pydantic = "Traceback\n  File x\npydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig\n"
    pydantic += "  Value error, max_model_len (4096) is too long [type=value_error, input_value=1]\n"
    pydantic += "    For further information visit https://errors.pydantic.dev\nINFO shutting down\n"
    assert last_error_line(pydantic) == (
        "ValidationError: 1 validation error for ModelConfig - Value error, max_model_len (4096) is too long"
    )
    log.write_text("starting\nKilled\n")  # no exception at all: the last lines
    assert failure_reason(log) == "starting | Killed"


def test_children_inherit_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from sage_ft.settings import child_environment

    secrets = {"SAGE_STORAGE_S3_SECRET_KEY": "s3cret", "SAGE_REDIS_URL": "redis://:pw@h:6379/0",
               "SAGE_GATEWAY_API_KEYS": "t:abc", "MY_SERVICE_PASSWORD": "pw", "GITHUB_TOKEN": "ghp",
               "HF_TOKEN": "hf_x"}  # fmt: skip
    for name, value in {**secrets, "SAGE_STORAGE_S3_ENDPOINT": "minio:9000", "TOKENIZERS_PARALLELISM": "false"}.items():
        monkeypatch.setenv(name, value)
    env = child_environment({"SAGE_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert not (set(secrets) - {"SAGE_REDIS_URL"}) & set(env)
    assert env["SAGE_REDIS_URL"] == "redis://127.0.0.1:1/0"  # passed explicitly, not inherited
    assert env["SAGE_STORAGE_S3_ENDPOINT"] == "minio:9000" and env["TOKENIZERS_PARALLELISM"] == "false"
    assert child_environment(keep=("HF_TOKEN",))["HF_TOKEN"] == "hf_x"
