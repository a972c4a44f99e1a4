"""The `sage-ft` CLI against a real local stack it starts itself (`sage-ft up`): gateway, Celery worker, serving
with vLLM's CPU build, and a private redis-server. The user story first, then every command, then `down`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_stack import CLI
from stack import free_port

pytestmark = pytest.mark.slow
QA_QUESTION = "What does LoRA stand for?"
QA_ANSWER = "Low-Rank Adaptation. It freezes the base model and trains two small low-rank matrices per adapted layer."


def stack_pids(home: Path) -> list[int]:
    path = home / "run" / "stack.json"
    return [c["pid"] for c in json.loads(path.read_text())] if path.exists() else []


def descendants(pids: list[int]) -> list[int]:
    found, frontier = [], set(pids)
    while frontier:
        nxt = set()
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError):
                    continue
                if ppid in frontier:
                    nxt.add(int(proc.name))
        found += sorted(nxt)
        frontier = nxt
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from sage_ft.training.tiny_model import build_tiny_model

    home = tmp_path_factory.mktemp("cli-home")
    build_tiny_model("sage-tiny", models_root=home / "models")
    runner = CLI(home, free_port())
    yield runner
    runner.run("down", timeout=120)


def pause_resume_cancel(cli: CLI, job_id: str) -> str:
    """Pause the job once it runs (it stops after a checkpoint), resume it, cancel it; returns its log."""

    def reach(status: str) -> None:
        deadline = time.monotonic() + 180
        while cli.json("jobs", "show", job_id)["status"] != status:
            assert time.monotonic() < deadline, f"the job did not become {status}"
            time.sleep(0.5)

    for command, status in (("", "running"), ("pause", "paused"), ("resume", "running"), ("cancel", "cancelled")):
        if command:
            cli.ok("jobs", command, job_id)
        reach(status)
    return cli.ok("jobs", "logs", job_id)


def test_up_quickstart_chat_is_the_whole_user_story(cli: CLI) -> None:
    up = cli.ok("up")
    assert "gateway" in up and "worker" in up and "serving" in up
    assert "redis" in up  # no REDIS_URL: a private redis-server was started
    out = cli.run("quickstart", "qa", "--model", "sage-tiny", "--preset", "tiny")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "sage-ft chat qa" in out.stdout and "300/300" in out.stderr and "tok/s" in out.stderr  # the progress bar
    answer = cli.ok("chat", "qa", "--ask", QA_QUESTION).strip()
    assert answer == QA_ANSWER
    results = cli.home / "finetune_output" / "qa"  # the documented place: adapter and TensorBoard logs
    assert (results / "adapter" / "adapter_model.safetensors").is_file()
    assert list((results / "logs").rglob("events.out.tfevents.*"))
    assert f"tensorboard --logdir {results}/logs" in out.stdout


def test_listing_commands_and_json_output(cli: CLI) -> None:
    jobs = cli.json("jobs", "list")["data"]
    assert len(jobs) == 1 and jobs[0]["status"] == "succeeded" and jobs[0]["name"] == "qa"
    job_id = jobs[0]["id"]
    assert cli.json("jobs", "show", job_id)["fine_tuned_model"].startswith("ft:sage-tiny:qa:")
    assert "The job has successfully completed" in cli.ok("jobs", "logs", job_id)
    assert "succeeded" in cli.ok("jobs", "logs", job_id, "-f")  # a finished job's stream ends at once
    models = {m["id"]: m for m in cli.json("models", "list")["data"]}
    tuned = next(m for m in models.values() if "qa" in m["aliases"])
    assert "sage-tiny" in models
    files = cli.json("files", "list")["data"]
    assert files[0]["filename"] == "qa.jsonl" and files[0]["status"] == "processed"
    deps = cli.json("deployments")["data"]
    assert deps[0]["model"] == tuned["id"] and deps[0]["state"] == "ready" and deps[0]["engine"] == "vllm"
    status = cli.json("status")
    assert status["reachable"] and {c["component"]: c["state"] for c in status["components"]} == {
        "redis": "healthy",
        "gateway": "healthy",
        "worker": "healthy",
        "serving": "healthy",
    }
    shown = {row["name"]: row for row in cli.json("config", "show")}
    assert shown["SAGE_FT_GATEWAY_URL"]["source"] == "env"
    assert shown["SAGE_FT_GATEWAY_URL"]["value"] == f"http://127.0.0.1:{cli.port}"
    assert shown["SAGE_CHAT_BACKEND"]["source"] == "default"
    # --json after the subcommand means the same as before it, for every command, nested ones included
    after = json.loads(cli.ok("jobs", "list", "--json"))["data"]
    assert [j["id"] for j in after] == [job_id]
    assert json.loads(cli.ok("models", "list", "--json"))["data"] == cli.json("models", "list")["data"]
    assert {r["name"] for r in json.loads(cli.ok("config", "show", "--json"))} == set(shown)


def test_start_dry_run_shows_the_estimate_and_starts_nothing(cli: CLI, tmp_path: Path) -> None:
    data = tmp_path / "est.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}?", "answer": f"a{i}"}) + "\n" for i in range(6)))
    before = [j["id"] for j in cli.json("jobs", "list")["data"]]
    args = ("start", "--data", str(data), "--model", "sage-tiny", "--preset", "tiny", "--dry-run")
    answer = cli.json(*args)
    est = answer["estimate"]
    assert answer["object"] == "fine_tuning.job.estimate" and est["steps"] == 100  # 6 records, batch 8, 100 epochs
    assert est["tokens_exact"] and est["tokens"] == 100 * est["tokens_per_epoch"]
    assert est["seconds_basis"]["source"] == "history"  # the quickstart job of this model and preset was measured
    shown = cli.ok(*args)
    assert "optimizer steps" in shown and "100 (100 epochs, batch 8)" in shown and "Nothing was started" in shown
    assert [j["id"] for j in cli.json("jobs", "list")["data"]] == before


def test_a_reinforcement_dry_run_counts_rollouts_and_names_a_bad_grader(cli: CLI, tmp_path: Path) -> None:
    data = tmp_path / "prompts.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"q{i}?"}], "answer": f"a{i}"} for i in range(6)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    grader = tmp_path / "grader.json"
    check = {"type": "string_check", "name": "g", "input": "{{sample.output_text}}", "operation": "eq"}
    grader.write_text(json.dumps({**check, "reference": "{{item.answer}}"}))
    args = ("start", "--method", "reinforcement", "--grader", str(grader), "--data", str(data), "--model", "sage-tiny")
    est = cli.json(*args, "--preset", "tiny", "--dry-run")["estimate"]
    assert (
        est["rollouts"] == int(est["records"] * est["epochs"])
        and est["samples"] == 8 * est["rollouts"]
        and est["tokens_upper_bound"]
    )
    grader.write_text(json.dumps({**check, "reference": "{{item.answr}}"}))
    out = cli.run(*args, "--dry-run")
    assert out.returncode != 0 and "answr" in out.stdout + out.stderr
    out = cli.run("start", "--method", "reinforcement", "--data", str(data))
    assert out.returncode != 0 and "--grader" in out.stderr


def test_data_files_and_errors(cli: CLI, tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text('{"question": "a?", "answer": "b"}\n{"instruction": "c", "output": "d"}\n')
    report = cli.json("data", "validate", str(good))
    assert report["ok"] and report["formats"] == {"qa": 1, "alpaca": 1} and report["records"] == 2
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text(
        '{"prompt": "Sky?", "chosen": "Blue, as ever.", "rejected": "Green."}\n'
        '{"prompt": "Sea?", "chosen": "Wet.", "rejected": "Wet."}\n'
    )
    out = cli.run("data", "validate", str(prefs))
    assert out.returncode == 1 and "preference pairs" in out.stdout and "chosen " in out.stdout  # per-side tokens
    assert "line 2" in out.stderr and "rejected" in out.stderr and "same answer" in out.stderr
    report = json.loads(cli.run("--json", "data", "validate", str(prefs)).stdout)
    sides = report["sides"]
    assert not report["ok"] and report["kind"] == "preference" and sides["chosen"]["max"] > sides["rejected"]["max"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a?", "answer": "b"}\n{"question": "c?"}\n')
    out = cli.run("data", "validate", str(bad))
    assert out.returncode == 1 and "line 2" in out.stderr and "answer" in out.stderr
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "a?", "answer": "b"}\n{"question": \n')
    out = cli.run("files", "upload", str(broken))
    assert out.returncode == 1 and "line 2" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1  # one line, no traceback
    out = cli.run("jobs", "show", "ftjob-doesnotexist")
    assert out.returncode == 1 and out.stderr.startswith("error: 404") and "Traceback" not in out.stderr
    out = cli.run("chat", "no-such-model", "--ask", "hi")
    assert out.returncode == 1 and "no-such-model" in out.stderr and "Traceback" not in out.stderr
    out = cli.run("chat", "qaa", "--ask", "hi")
    assert out.returncode == 1 and "Did you mean: qa" in out.stderr  # the closest names
    dead = cli.run("--gateway", f"http://127.0.0.1:{free_port()}", "jobs", "list", SAGE_FT_AUTO_START="false")
    assert dead.returncode == 1 and "no gateway answers" in dead.stderr


def test_merge_deploy_undeploy_and_rm(cli: CLI) -> None:
    merged = cli.json("merge", "qa")
    assert "merged" in merged["parts"]
    assert cli.json("undeploy", "qa")["deleted"]
    assert cli.json("deployments")["data"] == []
    dep = cli.json("deploy", "qa")
    assert dep["state"] == "ready" and dep["engine"] == "vllm"
    assert cli.ok("chat", "qa", "--ask", QA_QUESTION, "--no-stream").strip() == QA_ANSWER


def test_repl_and_the_vllm_backend(cli: CLI) -> None:
    out = cli.run("chat", "qa", stdin=f"{QA_QUESTION}\n/exit\n")
    assert out.returncode == 0, out.stderr
    assert QA_ANSWER in out.stdout  # streamed by default in the REPL
    url = f"http://127.0.0.1:{cli.port}/v1"  # any OpenAI-compatible server will do; ours is one
    assert cli.ok("chat", "qa", "--backend", "vllm", "--base-url", url, "--ask", QA_QUESTION).strip() == QA_ANSWER


def test_start_with_a_config_file_follow_cancel_and_rm(cli: CLI, tmp_path: Path) -> None:
    data = tmp_path / "mini.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}?", "answer": f"a{i}"}) + "\n" for i in range(4)))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("num_train_epochs: 2\nlearning_rate: 0.003\nlora:\n  r: 4\n  lora_alpha: 8\n")
    out = cli.run(
        "start", "--data", str(data), "--model", "sage-tiny", "--config", str(cfg), "--name", "mini", "--follow"
    )
    assert out.returncode == 0, out.stderr
    assert "sage-ft chat mini" in out.stdout
    job = next(j for j in cli.json("jobs", "list")["data"] if j["name"] == "mini")
    assert job["hyperparameters"]["n_epochs"] == 2  # from the config file
    bad = tmp_path / "bad.yaml"
    bad.write_text("num_train_epochs: 2\nlearning_rat: 0.1\n")
    out = cli.run("start", "--data", str(data), "--config", str(bad))
    assert out.returncode == 1 and "bad.yaml" in out.stderr and "learning_rat" in out.stderr
    long = tmp_path / "long.yaml"
    long.write_text("num_train_epochs: 500\n")
    started = cli.json(
        "start", "--task", "qa", "--model", "sage-tiny", "--auto", "--config", str(long), "--name", "long"
    )
    assert "Job resumed" in pause_resume_cancel(cli, started["id"])
    assert "deleted" in cli.ok("models", "rm", "mini")
    assert not any("mini" in m["aliases"] for m in cli.json("models", "list")["data"])


def test_dpo_from_a_fine_tune_follow_pause_and_cancel(cli: CLI, tmp_path: Path) -> None:
    qs = [f"Which colour is item {i}?" for i in range(4)]
    good, bad = ["red", "blue", "green", "gold"], ["grey", "pink", "black", "white"]
    sft = tmp_path / "sft.jsonl"
    sft.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in zip(qs, bad, strict=True)))
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text(
        "".join(
            json.dumps({"prompt": q, "chosen": g, "rejected": b}) + "\n" for q, g, b in zip(qs, good, bad, strict=True)
        )
    )
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("num_train_epochs: 2\nlearning_rate: 0.001\n")
    cli.ok("start", "--data", str(sft), "--model", "sage-tiny", "--config", str(cfg), "--name", "clibase", "--follow")
    out = cli.run(
        "start",
        "--method",
        "dpo",
        "--data",
        str(prefs),
        "--from",
        "clibase",
        "--beta",
        "0.2",
        "--config",
        str(cfg),
        "--name",
        "clidpo",
        "--follow",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "reward acc" in out.stderr and "sage-ft chat clidpo" in out.stdout  # the progress bar shows it
    job = next(j for j in cli.json("jobs", "list")["data"] if j["name"] == "clidpo")
    assert job["method"] == {
        "type": "dpo",
        "dpo": {
            "hyperparameters": {
                "n_epochs": 2,
                "batch_size": job["hyperparameters"]["batch_size"],
                "learning_rate_multiplier": 1.0,
                "beta": 0.2,
            }
        },
    }
    assert job["model"] == "clibase" and job["parent_model"].startswith("ft:sage-tiny:clibase:")
    out = cli.run("start", "--method", "dpo", "--data", str(sft), "--from", "clibase")
    assert out.returncode == 1 and "'supervised', not 'dpo'" in out.stderr
    out = cli.run("start", "--data", str(sft), "--from", "no-such-model")
    assert out.returncode == 1 and "no-such-model" in out.stderr

    long = tmp_path / "long.yaml"
    long.write_text("num_train_epochs: 400\nsave_steps: 20\n")
    job_id = cli.json(
        "start", "--method", "dpo", "--data", str(prefs), "--from", "clidpo", "--config", str(long), "--name", "clilong"
    )["id"]
    logs = pause_resume_cancel(cli, job_id)
    assert "Job resumed" in logs and "Resuming from checkpoint at step" in logs and "reward accuracy=" in logs


def test_chat_environment_variables_set_the_defaults(cli: CLI) -> None:
    env = {"SAGE_CHAT_FINETUNE_MODEL": "qa", "SAGE_CHAT_FINETUNE_PORT": str(cli.port)}
    assert cli.ok("chat", "--ask", QA_QUESTION, **env).strip() == QA_ANSWER  # backend finetune, model from env
    wrong = cli.run(
        "chat", "--ask", QA_QUESTION, SAGE_CHAT_FINETUNE_MODEL="qa", SAGE_CHAT_FINETUNE_PORT=str(free_port())
    )
    assert wrong.returncode == 1 and "not reachable" in wrong.stderr  # the port really is the one used
    mocked = cli.ok("chat", "--ask", "anything", SAGE_CHAT_BACKEND="mock")
    assert mocked.startswith("(mock)")  # no model needed


def test_index_and_mock_chat_with_sources(cli: CLI, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "lora.md").write_text("# LoRA\n\nLoRA freezes the base weights and learns low-rank updates.\n")
    (docs / "cooking.txt").write_text("Boil the pasta for nine minutes in salted water.\n")
    built = cli.json("index", "build", "docs-public", str(docs))
    assert built["files"] == 2 and built["passages"] >= 2
    assert [i["name"] for i in cli.json("index", "list")] == ["docs-public"]
    out = cli.run("chat", "--backend", "mock", "--index", "docs-public", "--ask", "how long to boil pasta?")
    assert out.returncode == 0, out.stderr
    assert "nine minutes" in out.stdout and "cooking.txt" in out.stderr  # the passage, and where it came from
    answer = cli.json("chat", "--backend", "mock", "--index", "docs-public", "--ask", "what does LoRA freeze?")
    assert "base weights" in answer["answer"] and answer["sources"][0].split(":")[0].endswith("lora.md")


def test_down_leaves_no_process_behind(cli: CLI) -> None:
    pids = stack_pids(cli.home)
    everything = pids + descendants(pids)
    assert len(everything) > len(pids)  # the worker's and serving's children (vLLM) were running
    assert "stopped" in cli.ok("down")
    for pid in everything:
        assert not alive(pid), f"process {pid} survived `sage-ft down`"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{cli.port}/healthz", timeout=2)
    # any command that needs the gateway starts the stack again, and the jobs are still there
    again = cli.run("jobs", "list", "--limit", "50")
    assert again.returncode == 0 and "starting the local stack" in again.stderr
    assert "qa" in again.stdout
    cli.ok("down")
