"""The warm trainer: a real ``trainer_main --spare`` process imports the training stack, takes a job through its
standard input, trains it (loss falls), and is used once; the job's secrets reach its environment and not its log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from stack import wait_for

from sage_ft import TrainingConfig
from sage_ft.proc import wait_exit
from sage_ft_worker.spare import SPARE_LOG, SpareTrainer, start_trainer
from sage_ft_worker.trainer_files import EVENTS, RESULT

pytestmark = pytest.mark.slow


def job_dir(root: Path, name: str, tiny_model: Path, data: Path) -> Path:
    workdir = root / name
    workdir.mkdir(parents=True)
    TrainingConfig(
        model_name=str(tiny_model),
        data_path=str(data),
        output_dir=str(workdir / "out"),
        max_steps=12,
        learning_rate=5e-3,
        logging_steps=1,
        save_steps=100,
        report_to="none",
        max_length=128,
        lora={"r": 8, "lora_alpha": 16, "lora_dropout": 0.0},
    ).save(workdir / "config.yaml")
    return workdir


def test_a_spare_trains_one_job_and_is_replaced(tiny_model: Path, qa_file: Path, tmp_path: Path) -> None:
    spare = SpareTrainer(tmp_path / "worker")
    spare.start()
    first = spare.pid
    assert first is not None
    wait_for(lambda: "ready" in (tmp_path / "worker" / SPARE_LOG).read_text(), 120, "spare ready")

    workdir = job_dir(tmp_path, "job-1", tiny_model, qa_file)
    proc = start_trainer(spare, 1, workdir, {"WANDB_API_KEY": "secret-value-123"})
    assert proc.pid == first and spare.pid is None  # the spare became this job's trainer, and is spent
    while not wait_exit(proc, 1.0):
        pass
    assert proc.returncode == 0
    result = json.loads((workdir / RESULT).read_text())
    assert result["status"] == "completed" and result["global_step"] == 12
    losses = [e["loss"] for e in map(json.loads, (workdir / EVENTS).read_text().splitlines()) if e.get("loss")]
    assert losses[-1] < losses[0]  # it trained
    assert (workdir / "out" / "adapter" / "adapter_model.safetensors").exists()
    log = (workdir / "trainer.log").read_text()
    assert "a spare, warm for" in log and "WANDB_API_KEY" in log and "secret-value-123" not in log

    spare.start()  # the replacement: a new process for the next job
    assert spare.pid not in (None, first)
    second = spare.pid
    spare.close()
    assert spare.pid is None
    other = job_dir(tmp_path, "job-2", tiny_model, qa_file)
    cold = start_trainer(spare, 1, other, {})  # no spare left: a process started now, for this job alone
    assert cold.pid not in (first, second)
    while not wait_exit(cold, 1.0):
        pass
    assert cold.returncode == 0 and json.loads((other / RESULT).read_text())["status"] == "completed"


def test_a_disabled_spare_starts_nothing(tmp_path: Path) -> None:
    spare = SpareTrainer(tmp_path / "worker", enabled=False)
    spare.start()
    assert spare.pid is None and not (tmp_path / "worker" / SPARE_LOG).exists()


def test_a_warm_worker_trains_a_job_in_its_spare(make_stack, qa_records: list[dict]) -> None:  # type: ignore[no-untyped-def]
    """Through the gateway and a real worker (the production default): the job runs in the spare the worker
    started when it came up, succeeds, and the worker starts a new spare for the next job."""
    import openai
    from stack import LEARN, qa_lines, wait_job

    stack = make_stack(SAGE_WORKER_SPARE_TRAINER="true")
    stack.start_gateway()
    stack.start_worker("warm")
    spare_log = stack.dir / "work-warm" / SPARE_LOG
    wait_for(lambda: spare_log.exists() and "ready" in spare_log.read_text(), 120, "spare ready")
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="x", max_retries=0)
    file_id = client.files.create(file=("qa.jsonl", qa_lines(qa_records[:8])), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model="sage-tiny", training_file=file_id, extra_body={**LEARN, "max_steps": 6})
    done = wait_job(client, job.id, stack=stack)
    assert done.status == "succeeded" and done.fine_tuned_model
    # the job's trainer was the first spare (the job's work directory is gone; the spare's log names the job), and a
    # fresh spare replaced it
    first = next(line.split()[2] for line in spare_log.read_text().splitlines() if "ready in" in line)
    assert f"spare trainer {first} takes {job.id}" in spare_log.read_text()
    wait_for(lambda: spare_log.read_text().count("ready in") == 2, 120, "a new spare")
    pids = [line.split()[2] for line in spare_log.read_text().splitlines() if "ready in" in line]
    assert pids[0] == first != pids[1]
