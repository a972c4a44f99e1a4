"""``make test`` at two commits, one after the other on this machine, each from a clean clone and a pruned Docker
engine (as CI starts), and their pytest time compared file by file from the JUnit reports.

    python benchmarks/make_test_ab.py BEFORE AFTER [--work /tmp/make-test-ab] [--json out.json]
    python benchmarks/make_test_ab.py --compare before.xml after.xml   # only the comparison, from two reports

A run takes as long as two ``make test`` (about two hours on 2 cores). It answers "did this change make the suite
slower?" with what grew: the whole ``make test`` (install, lint, docs, tests), pytest alone, the tests present at both
commits, and each file whose time moved. The engine is pruned (images, build cache, volumes) before each run, so
neither run reuses the other's image layers.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def prune_engine(work: Path) -> None:
    """Every container, image, volume and build-cache entry removed, with an engine started for it if none answers."""
    from docker_engine import engine

    (work / "dockerd-prune").mkdir(exist_ok=True)
    with engine(work / "dockerd-prune"):
        for args in (
            "docker ps -aq | xargs -r docker rm -f",
            "docker system prune -af --volumes",
            "docker builder prune -af",
        ):
            subprocess.run(args, shell=True, check=True, capture_output=True)


def commit_of(rev: str) -> str:
    """The commit ``rev`` names in this repository, or a one-line error."""
    found = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        raise SystemExit(f"{rev!r} is not a commit of {ROOT}")
    return found.stdout.strip()


def run_make_test(rev: str, work: Path) -> dict[str, Any]:
    clone = work / rev
    shutil.rmtree(clone, ignore_errors=True)  # an earlier run's clone: this one starts clean
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", rev], check=True)
    prune_engine(work)
    report = work / f"{rev}.xml"
    start = time.monotonic()
    with (work / f"{rev}.log").open("wb") as log:
        rc = subprocess.run(
            ["make", "test", f"PYTEST_ARGS=--durations=0 --junitxml={report}"], cwd=clone, stdout=log, stderr=log
        ).returncode
    return {"rev": rev, "rc": rc, "make_test_s": round(time.monotonic() - start), "junit": str(report)}


def per_test(report: Path) -> dict[str, float]:
    """Seconds per test (setup, call and teardown), by node id."""
    try:
        cases = list(ET.parse(report).iter("testcase"))
    except (OSError, ET.ParseError) as err:
        raise SystemExit(f"{report}: not a readable JUnit report ({err})") from None
    return {f"{case.get('classname')}::{case.get('name')}": float(case.get("time") or 0) for case in cases}


def module_of(test_id: str) -> str:
    parts = test_id.split("::")[0].split(".")
    return "/".join(p for p in parts if not p[:1].isupper()) + ".py"


def compare(before: Path, after: Path, threshold: float = 3.0) -> dict[str, Any]:
    a, b = per_test(before), per_test(after)
    by_file: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0, 0])
    for side, tests in ((0, a), (1, b)):
        for test_id, seconds in tests.items():
            row = by_file[module_of(test_id)]
            row[side] += seconds
            row[2 + side] += 1
    common = a.keys() & b.keys()
    moved = {
        name: {"before_s": round(r[0], 1), "tests_before": r[2], "after_s": round(r[1], 1), "tests_after": r[3]}
        for name, r in sorted(by_file.items(), key=lambda kv: kv[1][1] - kv[1][0])
        if abs(r[1] - r[0]) >= threshold
    }
    return {
        "pytest_s": {"before": round(sum(a.values())), "after": round(sum(b.values()))},
        "tests": {"before": len(a), "after": len(b), "in_both": len(common)},
        "tests_in_both_s": {"before": round(sum(a[k] for k in common)), "after": round(sum(b[k] for k in common))},
        "only_before_s": round(sum(v for k, v in a.items() if k not in b)),
        "only_after_s": round(sum(v for k, v in b.items() if k not in a)),
        "files_that_moved": moved,
    }


def show(result: dict[str, Any]) -> None:
    for key in ("make_test_s", "pytest_s", "tests", "tests_in_both_s"):
        if key in result:
            print(f"{key:16s} {result[key]}")
    print(f"{'only_before_s':16s} {result['only_before_s']}    only_after_s {result['only_after_s']}")
    print(f"\n{'file':64s} {'before':>8s} {'after':>8s} {'moved':>8s}")
    for name, r in result["files_that_moved"].items():
        tests = f"({r['tests_before']} -> {r['tests_after']} tests)"
        moved = r["after_s"] - r["before_s"]
        print(f"{name:64s} {r['before_s']:8.1f} {r['after_s']:8.1f} {moved:+8.1f} {tests}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revs", nargs="*", help="BEFORE AFTER (commits)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE_XML", "AFTER_XML"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/make-test-ab"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.compare:
        result = compare(*args.compare)
    elif len(args.revs) == 2:
        for rev in args.revs:  # both checked before the first of two long runs starts
            commit_of(rev)
        args.work.mkdir(parents=True, exist_ok=True)
        runs = [run_make_test(rev, args.work) for rev in args.revs]
        failed = [r for r in runs if r["rc"] != 0]
        if failed:
            raise SystemExit(f"make test failed: {failed} (logs in {args.work})")
        result = compare(Path(runs[0]["junit"]), Path(runs[1]["junit"]))
        result["make_test_s"] = {"before": runs[0]["make_test_s"], "after": runs[1]["make_test_s"]}
    else:
        parser.error("give two commits, or --compare with two JUnit reports")
    show(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
