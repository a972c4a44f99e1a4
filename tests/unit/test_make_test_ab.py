"""benchmarks/make_test_ab.py's comparison of two JUnit reports: per file, tests at both commits, tests at one."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import pytest
from make_test_ab import commit_of, compare


def junit(path: Path, cases: list[tuple[str, str, float]]) -> Path:
    rows = "".join(f'<testcase classname="{cls}" name="{name}" time="{t}"/>' for cls, name, t in cases)
    path.write_text(f'<?xml version="1.0"?><testsuites><testsuite name="pytest">{rows}</testsuite></testsuites>')
    return path


def test_files_that_moved_tests_in_both_and_tests_at_one_commit(tmp_path: Path) -> None:
    before = junit(
        tmp_path / "a.xml",
        [
            ("tests.unit.test_x", "test_same", 1.0),
            ("tests.unit.test_x", "test_gone", 4.0),
            ("tests.integration.test_y.TestGroup", "test_slower", 10.0),
        ],
    )
    after = junit(
        tmp_path / "b.xml",
        [
            ("tests.unit.test_x", "test_same", 1.5),
            ("tests.integration.test_y.TestGroup", "test_slower", 20.0),
            ("tests.integration.test_y.TestGroup", "test_new[2]", 7.0),
        ],
    )
    result = compare(before, after, threshold=3.0)
    assert result["pytest_s"] == {"before": 15, "after": 28}
    assert result["tests"] == {"before": 3, "after": 3, "in_both": 2}
    assert result["tests_in_both_s"] == {"before": 11, "after": 22}
    assert (result["only_before_s"], result["only_after_s"]) == (4, 7)
    # a test class is not a file; test_x moved by 3.5 s (lost a test), test_y by 17 s (a new one, one slower)
    assert list(result["files_that_moved"]) == ["tests/unit/test_x.py", "tests/integration/test_y.py"]
    assert result["files_that_moved"]["tests/integration/test_y.py"] == {
        "before_s": 10.0,
        "tests_before": 1,
        "after_s": 27.0,
        "tests_after": 2,
    }


def test_a_missing_or_broken_report_and_an_unknown_commit_are_one_line_errors(tmp_path: Path) -> None:
    good = junit(tmp_path / "a.xml", [("tests.unit.test_x", "test_same", 1.0)])
    (tmp_path / "broken.xml").write_text("<testsuites><testsuite>")
    for before, after, named in (
        (good, tmp_path / "missing.xml", "missing.xml"),
        (good, tmp_path / "broken.xml", "broken.xml"),
    ):
        with pytest.raises(SystemExit, match=f"{named}: not a readable JUnit report"):
            compare(before, after)
    with pytest.raises(SystemExit, match="'no-such-rev' is not a commit"):
        commit_of("no-such-rev")
    assert len(commit_of("HEAD")) == 40
