"""Graders: the formula evaluator refuses everything but arithmetic, every type checks its fields by name, model
graders read answers from a model, ``multi`` combines, and python graders run in a real sandbox (bubblewrap and
rlimits, or a locked-down container) that keeps the host's environment, files, network and processes out of
reach."""

from __future__ import annotations

import ast
import os
import re
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
# Every escape is tried in each sandbox: ``local`` (what this host picks: bubblewrap's namespaces, Landlock, seccomp and
# rlimits), ``confined`` (Landlock, seccomp and rlimits alone: what a container or Kubernetes pod allows, as Helm's
# graders deployment runs) and ``docker`` (serving's: a locked-down container per call, what compose runs), on the
# real engine.


@pytest.fixture(params=["local", "confined", pytest.param("docker", marks=pytest.mark.slow)])
def sandbox_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "local" and shutil.which("bwrap") is None:
        pytest.fail("bubblewrap is not installed: run `make tools`")
    if request.param == "docker":
        request.getfixturevalue("grader_image")
    return str(request.param)


def sandbox(kind: str, **limits: Any) -> Any:
    from sage_ft.settings import GraderSettings

    if kind == "docker":
        from docker_engine import GRADER_IMAGE

        from sage_ft_serving.sandbox import DockerSandbox

        return DockerSandbox(GraderSettings(python_image=GRADER_IMAGE, **limits), "unix:///var/run/docker.sock")
    if kind == "confined":
        limits["python_isolation"] = "confined"
    return PythonSandbox(GraderSettings(**limits))


def python(kind: str, source: str, **limits: Any) -> Any:
    grader = parse_grader({"type": "python", "name": "py", "source": source}, "g")
    return Grading(sandbox=sandbox(kind, **limits)).run(grader, sample_of("Brightport"), ITEM)


def test_python_graders_score_from_sample_and_item(sandbox_kind: str) -> None:
    result = python(
        sandbox_kind, "def grade(sample, item):\n    return float(sample['output_text'] == item['answer'])\n"
    )
    assert result.reward == 1.0 and result.passed and not result.errors.any
    failed = python(sandbox_kind, "def grade(sample, item):\n    raise ValueError('bad item ' + item['question'])\n")
    assert failed.errors.python_grader_runtime_error and failed.reward == 0.0
    assert failed.errors.python_grader_runtime_error_details == "ValueError: bad item Capital of Oslandia?"
    for source, fragment in (("x = 1\n", "defines no function grade"), ("def grade(s, i):\n    return 'a'", "'a'")):
        assert fragment in str(python(sandbox_kind, source).errors.python_grader_runtime_error_details)


def test_a_python_grader_sees_no_secret_and_no_file_of_the_host(
    sandbox_kind: str, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("SAGE_STORAGE_S3_SECRET_KEY", "hunter2")
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2")
    paths = [str(secret), "/proc/1/environ", f"/proc/{os.getpid()}/environ", os.getcwd(), str(Path.home())]
    source = (
        "import os\n"
        "def grade(sample, item):\n"
        "    seen = {'env': dict(os.environ)}\n"
        f"    for path in {paths!r}:\n"
        "        try:\n"
        "            seen[path] = open(path).read() if os.path.isfile(path) else os.listdir(path)\n"
        "        except OSError as err:\n"
        "            seen[path] = type(err).__name__\n"
        "    raise RuntimeError(repr(seen))\n"
    )
    details = str(python(sandbox_kind, source).errors.python_grader_runtime_error_details)
    assert details.startswith("RuntimeError: {"), details
    seen = ast.literal_eval(details.removeprefix("RuntimeError: "))  # the grader's repr of a dict of strings
    assert "hunter2" not in details and "SAGE_" not in details, seen["env"]
    # the host's files are not there (namespaces, container) or not readable (Landlock): not the secret, not this
    # checkout, not the home of the user who started it, not the environment of this process (the grader's parent)
    unseen = "PermissionError" if sandbox_kind == "confined" else "FileNotFoundError"
    assert seen[str(secret)] == seen[os.getcwd()] == seen[f"/proc/{os.getpid()}/environ"] == unseen, seen
    assert seen[str(Path.home())] in ("FileNotFoundError", [], "PermissionError"), seen
    assert os.environ["SAGE_STORAGE_S3_SECRET_KEY"] == "hunter2"  # it was there to be stolen


def test_a_python_grader_cannot_open_a_connection(sandbox_kind: str) -> None:
    listener = socket.create_server(("0.0.0.0", 0))  # every address of this host, the container bridge's included
    port = listener.getsockname()[1]
    accepted: list[Any] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True)
    thread.start()
    hosts = ["127.0.0.1", socket.gethostbyname(socket.gethostname()), "172.17.0.1"]
    source = (
        "import socket\n"
        "def grade(sample, item):\n"
        "    errors = []\n"
        f"    for host in {hosts!r}:\n"
        "        try:\n"
        f"            socket.create_connection((host, {port}), timeout=3)\n"
        "            errors.append('connected')\n"
        "        except OSError as err:\n"
        "            errors.append(type(err).__name__ + str(err))\n"
        "    raise RuntimeError(repr(errors))\n"
    )
    result = python(sandbox_kind, source)
    listener.close()
    details = str(result.errors.python_grader_runtime_error_details)
    assert result.reward == 0.0 and "connected" not in details and details.count("Error") == len(hosts) + 1, details
    assert not accepted
    outside = python(
        sandbox_kind,
        "import socket\ndef grade(sample, item):\n    socket.create_connection(('1.1.1.1', 53), timeout=3)\n",
    )
    # no route out of an empty network namespace; where seccomp runs too, no socket at all
    assert re.search(
        "Network is unreachable|Permission denied", str(outside.errors.python_grader_runtime_error_details)
    )


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
def test_python_graders_stop_at_their_limits(sandbox_kind: str, source: str, flag: str, fragment: str) -> None:
    """The default time limits are OpenAI's two minutes; shorter ones here show the same mechanism in seconds."""
    before = _leftovers(sandbox_kind)
    result = python(sandbox_kind, source, python_cpu_seconds=3, python_wall_seconds=5)
    assert getattr(result.errors, flag) and result.reward == 0.0, result.errors
    assert fragment in " ".join(result.errors.details), result.errors.details
    assert result.execution_time < 7.0
    deadline = time.monotonic() + 3
    while _leftovers(sandbox_kind) > before and time.monotonic() < deadline:  # the kernel reaps the namespace
        time.sleep(0.1)
    assert _leftovers(sandbox_kind) <= before  # nothing it started outlives it


def test_the_local_sandbox_runs_no_python_between_fork_and_exec(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """Graders run from threads (an RFT reward's concurrent calls, the gateway's requests), and a ``preexec_fn`` runs
    Python in the forked child of a threaded parent, where it can deadlock on a lock another thread held at the fork.
    The rlimits go on the command line instead (``prlimit``); without ``prlimit``, a fresh interpreter sets them."""
    import subprocess as real

    from sage_ft.graders import sandbox as module

    seen: list[dict[str, Any]] = []

    class Recording(real.Popen):  # type: ignore[type-arg]
        def __init__(self, args: list[str], **kwargs: Any) -> None:
            seen.append({"args": args, **kwargs})
            super().__init__(args, **kwargs)

    monkeypatch.setattr(module.subprocess, "Popen", Recording)
    ok = python("local", "def grade(s, i):\n    return 1\n")
    assert ok.reward == 1.0 and seen and all(call.get("preexec_fn") is None for call in seen)
    assert Path(seen[-1]["args"][0]).name == "prlimit" and "--nofile=64:64" in seen[-1]["args"]

    from sage_ft import proc

    request.getfixturevalue("no_prlimit")  # the python fallback
    spin = python("confined", "def grade(s, i):\n    while True:\n        pass\n", python_cpu_seconds=2)
    assert seen[-1]["args"][:2] == [proc.sys.executable, "-I"]
    assert spin.errors.python_grader_server_error and "CPU time limit" in " ".join(spin.errors.details)


def test_an_image_tag_outside_the_allowed_list_is_refused() -> None:
    grader = parse_grader({"type": "python", "name": "p", "source": "x", "image_tag": "evil:latest"}, "g")
    result = Grading().run(grader, sample_of("x"), ITEM)
    assert result.errors.python_grader_server_error_type == "image_not_allowed"
    assert PythonSandbox().image_allowed("2025-05-08") and PythonSandbox().image_allowed(None)


def _leftovers(kind: str) -> int:
    """What a grader could leave running: processes of the sandbox's uids (local), or its containers (docker)."""
    if kind == "docker":
        import subprocess

        out = subprocess.run(
            ["docker", "ps", "-aq", "--filter", "label=sage-ft.managed-by=sage-ft-grader"],
            capture_output=True,
            text=True,
            check=True,
        )
        return len(out.stdout.split())
    return _sandbox_processes()


def _sandbox_processes() -> int:
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            uid = int(Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0])
        except (OSError, IndexError, ValueError):
            continue
        count += 61000 <= uid < 62000
    return count


@pytest.mark.slow
def test_a_sandbox_image_the_engine_cannot_get_is_a_server_error(grader_image: str) -> None:
    """Serving pulls a missing sandbox image on first use; one it cannot get is a grader error naming the setting."""
    from sage_ft.settings import GraderSettings
    from sage_ft_serving.sandbox import DockerSandbox

    missing = DockerSandbox(GraderSettings(python_image="sage-ft/no-such-image:1"), "unix:///var/run/docker.sock")
    grader = parse_grader({"type": "python", "name": "p", "source": "def grade(s, i):\n    return 1\n"}, "g")
    result = Grading(sandbox=missing).run(grader, sample_of("x"), ITEM)
    assert result.errors.python_grader_server_error_type == "sandbox_unavailable", result.errors
    assert "SAGE_GRADER_PYTHON_IMAGE" in " ".join(result.errors.details)


def test_serving_runs_python_graders_in_containers_under_its_docker_launcher() -> None:
    """What each side picks: serving follows its launcher unless told; the gateway and workers follow
    SAGE_GRADER_PYTHON_SANDBOX, and ``serving`` without serving's address is a configuration error."""
    from sage_ft.graders import python_sandbox
    from sage_ft.graders.serving import ServingSandbox
    from sage_ft.settings import GraderSettings
    from sage_ft_serving.sandbox import DockerSandbox, grader_sandbox
    from sage_ft_serving.settings import ServingSettings, Settings

    def picked(**serving: Any) -> type:
        return type(grader_sandbox(Settings(serving=ServingSettings(**serving))))

    assert picked(launcher="docker") is DockerSandbox and picked(launcher="process") is PythonSandbox
    assert picked(launcher="kubernetes") is PythonSandbox
    assert picked(launcher="process", grader_sandbox="docker") is DockerSandbox
    assert isinstance(python_sandbox(GraderSettings()), PythonSandbox)
    remote = GraderSettings(python_sandbox="serving")
    assert isinstance(python_sandbox(remote, "http://serving:8090"), ServingSandbox)
    with pytest.raises(ValueError, match="serving's URL"):
        python_sandbox(remote)
    graders = python_sandbox(GraderSettings(python_sandbox="serving", python_sandbox_url="http://graders:8090"))
    assert isinstance(graders, ServingSandbox) and graders.base_url == "http://graders:8090"  # Helm's graders pod


def test_the_graders_only_service_runs_calls_and_is_unready_where_no_sandbox_can_run(monkeypatch: Any) -> None:
    """``sage-ft-serving graders`` (Helm's graders deployment): the sandbox route and probes, nothing else."""
    from fastapi.testclient import TestClient

    from sage_ft.settings import GraderSettings
    from sage_ft_serving.app import create_grader_app
    from sage_ft_serving.settings import ServingSettings, Settings

    def settings(isolation: str) -> Settings:
        graders = GraderSettings(python_isolation=isolation)
        return Settings(serving=ServingSettings(grader_sandbox="process"), graders=graders)

    app = create_grader_app(settings("confined"))
    assert [p for p in app.openapi()["paths"] if p.startswith("/v1/")] == ["/v1/graders/python"]  # no chat, no deploy
    with TestClient(app) as client:
        assert client.get("/readyz").text == "ok"
        call = {"source": "def grade(s, i):\n    return float(s['output_text'] == i)\n", "sample": {"output_text": "a"}}
        answer = client.post("/v1/graders/python", json={**call, "item": "a"}).json()
        assert answer["score"] == 1.0 and answer["error"] is None, answer
        refused = client.post("/v1/graders/python", json={**call, "image_tag": "evil:1"})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "image_tag"
    monkeypatch.setenv("PATH", "/nonexistent")  # no bubblewrap here, and only namespaces allowed
    with TestClient(create_grader_app(settings("namespaces"))) as client:
        unready = client.get("/readyz")
        assert unready.status_code == 503 and "bubblewrap (bwrap) is not installed" in unready.text
        answer = client.post("/v1/graders/python", json={**call, "item": "a"}).json()
        assert answer["score"] is None and answer["error"] == "sandbox_unavailable", answer
