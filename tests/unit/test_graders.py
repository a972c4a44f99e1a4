"""Graders: the formula evaluator refuses everything but arithmetic, every type checks its fields by name, model
graders read answers from a model, ``multi`` combines, and python graders run in a real sandbox (bubblewrap and
rlimits) that keeps the host's environment, files, network and processes out of reach."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sage_ft.errors import ConfigError
from sage_ft.graders import Grading, ModelCallError, PythonSandbox, parse_grader, sample_of, template_fields
from sage_ft.graders.formula import FormulaError, evaluate, parse
from sage_ft.graders.grading import ChatAnswer, parse_label, parse_score
from sage_ft.graders.model import SamplingParams

ITEM = {"answer": "Brightport", "question": "Capital of Oslandia?"}
CHECK = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}
needs_sandbox = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap comes with make tools")


# -- formula -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("formula", "value"),
    [
        ("0.25 * a + 0.75 * b", 0.65),
        ("a ^ 2 + b ** 2", 0.04 + 0.64),
        ("max(a, b) - min(a, b)", 0.6),
        ("-a + abs(-b) + floor(1.7) + ceil(0.2) + sqrt(4) + exp(0) + log(1)", -0.2 + 0.8 + 1 + 1 + 2 + 1 + 0),
    ],
)
def test_formulas_compute_with_the_documented_operators(formula: str, value: float) -> None:
    assert evaluate(formula, {"a": 0.2, "b": 0.8}) == pytest.approx(value)


@pytest.mark.parametrize(
    ("formula", "fragment"),
    [
        ("__import__('os').system('id')", "only these functions"),
        ("a.__class__", "Attribute is not allowed"),
        ("[x for x in (1, 2)]", "ListComp is not allowed"),
        ("c + 1", "unknown name 'c'"),
        ("a if b else 1", "IfExp is not allowed"),
        ("'text'", "only numbers"),
        ("a +", "not a formula"),
        ("a // b", "FloorDiv is not allowed"),
        ("max(a, key=b)", "only these functions"),
    ],
)
def test_formulas_refuse_anything_but_arithmetic(formula: str, fragment: str) -> None:
    with pytest.raises(FormulaError) as exc:
        parse(formula, ["a", "b"])
    assert fragment in str(exc.value)


def test_arithmetic_errors_and_huge_powers_are_formula_errors() -> None:
    for formula in ("a / (b - b)", "log(a - a)", "b ^ 1000"):
        with pytest.raises(FormulaError):
            evaluate(formula, {"a": 1.0, "b": 2.0})


# -- checking ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "param", "fragment"),
    [
        ({"type": "regex", "name": "x"}, "grader.type", "unsupported grader type 'regex'"),
        ({"name": "x"}, "grader.type", "give a type"),
        ({**CHECK, "operation": "regex"}, "grader.operation", "eq"),
        (
            {"type": "multi", "name": "m", "graders": {"a": {**CHECK, "operation": "x"}}, "calculate_output": "a"},
            "grader.graders.a.operation",
            "eq",
        ),
        ({"type": "multi", "name": "m", "graders": {"a": CHECK}, "calculate_output": "a + b"}, "grader", "'b'"),
        (
            {"type": "multi", "name": "m", "graders": {"a": {"type": "multi"}}, "calculate_output": "a"},
            "grader.graders.a.type",
            "unsupported grader type 'multi'",
        ),
        (
            {"type": "label_model", "name": "l", "model": "m", "input": [{"role": "user", "content": "x"}]}
            | {"labels": ["good", "bad"], "passing_labels": ["great"]},
            "grader",
            "passing_labels",
        ),
        (
            {"type": "score_model", "name": "s", "model": "m", "input": [{"role": "user", "content": "x"}]}
            | {"range": [1, 0]},
            "grader",
            "low < high",
        ),
        (
            {"type": "score_model", "name": "s", "model": "m", "input": [{"role": "user", "content": "{{item.nope}}"}]},
            "grader.input.0.content",
            "nope",
        ),
        (
            {"type": "text_similarity", "name": "t", "input": "a", "reference": "b", "evaluation_metric": "cosine"},
            "grader.evaluation_metric",
            "supported: fuzzy_match",
        ),
        ({"type": "python", "name": "p", "source": "x", "oops": 1}, "grader.oops", "unknown parameter"),
    ],
)
def test_bad_graders_name_the_field(raw: dict[str, Any], param: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_grader(raw, "grader", {"answer", "question"})
    assert exc.value.param == param and fragment in str(exc.value), str(exc.value)


def test_multi_takes_a_map_or_the_one_grader_the_sdk_types() -> None:
    by_map = parse_grader({"type": "multi", "name": "m", "graders": {"exact": CHECK}, "calculate_output": "exact"}, "g")
    single = parse_grader({"type": "multi", "name": "m", "graders": CHECK, "calculate_output": "exact"}, "g")
    assert by_map == single and template_fields(single) == {"answer"}


# -- grading -----------------------------------------------------------------------------------------------------


class Judge:
    """Stands in for a served model (the model is outside what is tested here): answers from a script."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers, self.asked = answers, []

    def chat(self, model: str, messages: list[dict[str, str]], params: SamplingParams | None) -> ChatAnswer:
        self.asked.append((model, messages))
        if model not in self.answers:
            raise ModelCallError(f"no model {model}", not_found=True)
        return ChatAnswer(self.answers[model], tokens=7)


def test_multi_combines_its_graders_with_the_formula() -> None:
    grader = parse_grader(
        {
            "type": "multi",
            "name": "both",
            "graders": {
                "exact": CHECK,
                "close": {
                    "type": "text_similarity",
                    "name": "close",
                    "input": "{{sample.output_text}}",
                    "reference": "{{item.answer}}",
                    "evaluation_metric": "fuzzy_match",
                },
            },
            "calculate_output": "0.25 * exact + 0.75 * close",
        },
        "grader",
    )
    right = Grading().run(grader, sample_of("Brightport"), ITEM)
    near = Grading().run(grader, sample_of("Brightpart"), ITEM)
    assert right.reward == pytest.approx(1.0) and right.sub_rewards == {"exact": 1.0, "close": 1.0}
    assert near.sub_rewards["exact"] == 0.0 and near.reward == pytest.approx(0.75 * 0.9)


def test_a_template_naming_a_missing_field_is_an_invalid_variable_error() -> None:
    result = Grading().run(parse_grader(CHECK, "g"), sample_of("x"), {"question": "no answer field"})
    assert result.errors.invalid_variable_error and result.reward == 0.0 and "answer" in result.errors.details[0]


def test_score_model_reads_the_score_clamps_it_and_reports_the_model() -> None:
    grader = parse_grader(
        {
            "type": "score_model",
            "name": "judge",
            "model": "judge-a",
            "input": [{"role": "user", "content": "Q: {{item.question}} A: {{sample.output_text}} Score 0-10."}],
            "range": [0, 10],
        },
        "g",
    )
    judge = Judge({"judge-a": '{"result": 7.5, "steps": []}'})
    result = Grading(judge).run(grader, sample_of("Brightport"), ITEM)
    assert result.reward == 7.5 and result.passed and result.sampled_model_name == "judge-a"
    assert result.token_usage == {"judge-a": 7}
    assert judge.asked[0][1][0]["content"] == "Q: Capital of Oslandia? A: Brightport Score 0-10."
    assert parse_score("I'd say 12 out of 10") == 12.0 and parse_score("no idea") is None
    high = Grading(Judge({"judge-a": "12"})).run(grader, sample_of("x"), ITEM)
    assert high.reward == 10.0  # clamped to the range
    broken = Grading(Judge({"judge-a": "no idea"})).run(grader, sample_of("x"), ITEM)
    assert broken.errors.model_grader_parse_error and broken.reward == 0.0
    gone = Grading(Judge({})).run(grader, sample_of("x"), ITEM)
    assert gone.errors.model_grader_server_error and "no model judge-a" in str(
        gone.errors.model_grader_server_error_details
    )


def test_label_model_passes_on_a_passing_label_only() -> None:
    grader = parse_grader(
        {
            "type": "label_model",
            "name": "tone",
            "model": "judge-b",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "{{sample.output_text}}"}]}],
            "labels": ["polite", "rude"],
            "passing_labels": ["polite"],
        },
        "g",
    )
    assert Grading(Judge({"judge-b": "Polite."})).run(grader, sample_of("x"), ITEM).passed
    assert not Grading(Judge({"judge-b": '{"result": "rude"}'})).run(grader, sample_of("x"), ITEM).passed
    assert parse_label("it is rude, not polite", ["polite", "rude"]) is None  # names both: no verdict
    unclear = Grading(Judge({"judge-b": "maybe"})).run(grader, sample_of("x"), ITEM)
    assert unclear.errors.model_grader_parse_error


# -- the python sandbox --------------------------------------------------------------------------------------------


def python(source: str, **limits: Any) -> Any:
    from sage_ft.settings import GraderSettings

    grader = parse_grader({"type": "python", "name": "py", "source": source}, "g")
    sandbox = PythonSandbox(GraderSettings(**limits))
    return Grading(sandbox=sandbox).run(grader, sample_of("Brightport"), ITEM)


@needs_sandbox
def test_python_graders_score_from_sample_and_item() -> None:
    result = python("def grade(sample, item):\n    return float(sample['output_text'] == item['answer'])\n")
    assert result.reward == 1.0 and result.passed and not result.errors.any
    failed = python("def grade(sample, item):\n    raise ValueError('bad item ' + item['question'])\n")
    assert failed.errors.python_grader_runtime_error and failed.reward == 0.0
    assert failed.errors.python_grader_runtime_error_details == "ValueError: bad item Capital of Oslandia?"
    for source, fragment in (("x = 1\n", "defines no function grade"), ("def grade(s, i):\n    return 'a'", "'a'")):
        assert fragment in str(python(source).errors.python_grader_runtime_error_details)


@needs_sandbox
def test_a_python_grader_sees_no_secret_and_no_file_of_the_host(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("SAGE_STORAGE_S3_SECRET_KEY", "hunter2")
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2")
    source = (
        "import os\n"
        "def grade(sample, item):\n"
        "    seen = repr(dict(os.environ))\n"
        f"    for path in ({str(secret)!r}, '/proc/1/environ', '/etc/passwd', {os.getcwd()!r}):\n"
        "        try:\n"
        "            seen += open(path).read() if os.path.isfile(path) else str(os.listdir(path))\n"
        "        except OSError as err:\n"
        "            seen += type(err).__name__\n"
        "    raise RuntimeError(seen)\n"
    )
    seen = str(python(source).errors.python_grader_runtime_error_details)
    assert "hunter2" not in seen and "SAGE_" not in seen and seen.count("FileNotFoundError") == 3, seen
    assert os.environ["SAGE_STORAGE_S3_SECRET_KEY"] == "hunter2"  # it was there to be stolen


@needs_sandbox
def test_a_python_grader_cannot_open_a_connection() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[Any] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True)
    thread.start()
    source = (
        "import socket\n"
        "def grade(sample, item):\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
        "    return 1.0\n"
    )
    result = python(source)
    listener.close()
    assert result.reward == 0.0 and "ConnectionRefusedError" in str(result.errors.python_grader_runtime_error_details)
    assert not accepted
    outside = python(
        "import socket\ndef grade(sample, item):\n    socket.create_connection(('1.1.1.1', 53), timeout=3)\n"
    )
    assert "Network is unreachable" in str(outside.errors.python_grader_runtime_error_details)


@needs_sandbox
@pytest.mark.parametrize(
    ("source", "flag", "fragment"),
    [
        ("def grade(s, i):\n    while True:\n        pass\n", "python_grader_server_error", "CPU time limit"),
        ("import time\ndef grade(s, i):\n    time.sleep(60)\n", "unresponsive_reward_error", "wall"),
        ("def grade(s, i):\n    return len(bytearray(3 * 1024**3))\n", "python_grader_server_error", "memory"),
        ("import os\ndef grade(s, i):\n    while True:\n        os.fork()\n", "python_grader_server_error", "process"),
        ("def grade(s, i):\n    while True:\n        print('x' * 4096)\n", "truncated_observation_error", "output"),
    ],
    ids=["cpu", "wall", "memory", "fork-bomb", "output"],
)
def test_python_graders_stop_at_their_limits(source: str, flag: str, fragment: str) -> None:
    """The default time limits are OpenAI's two minutes; shorter ones here show the same mechanism in seconds."""
    before = _sandbox_processes()
    result = python(source, python_cpu_seconds=3, python_wall_seconds=5)
    assert getattr(result.errors, flag) and result.reward == 0.0, result.errors
    assert fragment in " ".join(result.errors.details), result.errors.details
    assert result.execution_time < 7.0
    deadline = time.monotonic() + 3
    while _sandbox_processes() > before and time.monotonic() < deadline:  # the kernel reaps the namespace
        time.sleep(0.1)
    assert _sandbox_processes() <= before  # nothing it started outlives it


@needs_sandbox
def test_an_image_tag_outside_the_allowed_list_is_refused() -> None:
    grader = parse_grader({"type": "python", "name": "p", "source": "x", "image_tag": "evil:latest"}, "g")
    result = Grading().run(grader, sample_of("x"), ITEM)
    assert result.errors.python_grader_server_error_type == "image_not_allowed"
    assert PythonSandbox().image_allowed("2025-05-08") and PythonSandbox().image_allowed(None)


def _sandbox_processes() -> int:
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            uid = int(Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0])
        except (OSError, IndexError, ValueError):
            continue
        count += 61000 <= uid < 62000
    return count
