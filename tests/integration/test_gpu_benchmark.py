"""``benchmarks/gpu_train.py --shape tiny``: the GPU benchmark's every cell, run on a CPU as CI can, so the script
cannot rot between the sessions that have a GPU. Each cell runs in its own process, trains its steps and reports
what the issue's figures are made of; the layouts are what the defaults and the knobs promise: uniform records
padded (nothing to save), mixed records padding-free by default with no padding at all, packed rows with none
either, and the padded path grouped by length so it pads less than the bare loop's random batches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_every_cell_runs_and_reports_on_the_tiny_shape(tmp_path: Path) -> None:
    out = tmp_path / "gpu_train.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_train.py", "--shape", "tiny", "--work", str(tmp_path), "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(out.read_text())
    cells = {c["cell"]: c for c in summary["cells"]}
    assert set(cells) == {
        "uniform/sage",
        "uniform/bare",
        "uniform/sage-no-liger",
        "mixed/sage-packed",
        "mixed/sage-auto",
        "mixed/sage-padded",
        "mixed/bare",
        "qlora/sage",
    }
    assert cells["uniform/sage-no-liger"]["skipped"]  # Liger is CUDA-only
    ran = {name: c for name, c in cells.items() if not c["skipped"]}
    assert len(ran) == 7
    for name, cell in ran.items():
        assert cell["steps"] == summary["sizes"]["steps"], name
        assert cell["tokens_per_second"] > 0 and cell["tflops"] > 0 and cell["peak_memory_bytes"] > 0, name
    layouts = {name: cell["layout"] for name, cell in ran.items()}
    assert layouts == {
        "uniform/sage": "padded",
        "uniform/bare": "padded",
        "mixed/sage-packed": "packed",
        "mixed/sage-auto": "padding_free",
        "mixed/sage-padded": "padded",
        "mixed/bare": "padded",
        "qlora/sage": "padded",
    }
    assert ran["mixed/sage-auto"]["attention"] == ran["mixed/sage-packed"]["attention"] == "sdpa"  # per sequence
    assert ran["mixed/sage-auto"]["padding_share"] == ran["mixed/sage-packed"]["padding_share"] == 0
    assert 0 < ran["mixed/sage-padded"]["padding_share"] < ran["mixed/bare"]["padding_share"]  # grouped by length
    for name in ("uniform/sage", "mixed/sage-packed", "mixed/sage-auto", "mixed/sage-padded", "qlora/sage"):
        estimate = ran[name]["estimate"]
        assert estimate["worst_step"]["step_tokens"] >= estimate["largest_step_seen"]["step_tokens"] > 0, name
        assert estimate["largest_step_seen"]["peak_memory_bytes"] > 0, name
    ratios = summary["ratios"]["tiny"]
    assert {
        "uniform_sage_over_bare",
        "mixed_packed_over_bare",
        "mixed_auto_over_bare",
        "mixed_padded_over_bare",
        "mixed_packed_over_uniform",
    } <= set(ratios)
    assert "| tiny | mixed/sage-auto | padding_free |" in done.stdout  # the table a person reads
