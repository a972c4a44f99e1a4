"""Filesystem helpers shared by training, merge and storage."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield an empty directory beside ``target``; when the block succeeds it replaces ``target``, when it fails it
    is removed. Readers see the old directory or the complete new one, never a half-written one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_NO_SPACE = ("no space left on device", "os error 28", "errno 28", "disk quota exceeded")
LOW_SPACE_BYTES = 64 * 1024 * 1024  # below this, a failed write is taken for a full disk


def _mentions_no_space(err: BaseException | None, text: str) -> bool:
    seen = text.lower()
    while err is not None:
        if isinstance(err, OSError) and err.errno in (28, 122):  # ENOSPC, EDQUOT
            return True
        seen += " " + str(err).lower()
        err = err.__cause__ or err.__context__
    return any(marker in seen for marker in _NO_SPACE)


def disk_full_reason(directory: Path, err: BaseException | None = None, log_text: str = "") -> str | None:
    """ "no space left on device in <directory> ..." when ``err`` (or the log text) says the disk is full, or a write
    failed while ``directory``'s filesystem has almost nothing left; None when it was something else. Libraries do
    not all raise ``OSError(ENOSPC)``: safetensors says "os error 28", torch "file write failed"."""
    try:
        usage = shutil.disk_usage(directory)
    except OSError:
        usage = None
    said = _mentions_no_space(err, log_text)
    low = usage is not None and usage.free < LOW_SPACE_BYTES
    wrote = "write" in (str(err).lower() + log_text.lower())
    if not (said or (low and wrote)):
        return None
    room = f" ({usage.free / 2**20:.1f} MiB free of {usage.total / 2**20:.0f} MiB)" if usage else ""
    return f"no space left on device in {directory}{room}"
