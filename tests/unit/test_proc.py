"""``sage_ft.proc.call_at_lower_priority``: the worker watches its trainer from a thread that yields CPU to it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

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
