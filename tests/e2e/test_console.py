"""The web console in a real browser (Debian's chromium, headless, through Playwright) on the real embedded stack
that `sage-ft up` starts: gateway, Celery worker, serving with vLLM's CPU build, a private redis-server.

One user session, in order: a file with a bad line 3 is shown as such; a good file is uploaded and a job started
from the form (with its estimate); the loss chart gains points while the job trains and the job succeeds; the
evaluation shows the fine-tune above its base; the chat playground answers with the trained answer after a cold
start; a second job is cancelled from its page. No console errors, and every page is usable at 1280 and 390 px.
Screenshots go to output/console/.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from browser import Tab, chromium, new_tab
from cli_stack import CLI
from stack import free_port

pytestmark = pytest.mark.slow
RECORDS = 8


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from sage_ft.training.tiny_model import build_tiny_model

    home = tmp_path_factory.mktemp("console-home")
    build_tiny_model("sage-tiny", models_root=home / "models")
    runner = CLI(home, free_port())
    up = runner.ok("up")
    assert f"Console: http://127.0.0.1:{runner.port}/console/" in up
    yield runner
    runner.run("down", timeout=120)


@pytest.fixture(scope="module")
def url(cli: CLI) -> str:
    shown = cli.json("ui", "--no-open")
    assert shown == {"url": f"http://127.0.0.1:{cli.port}/console/", "opened": False}
    return str(shown["url"])


@pytest.fixture(scope="module")
def browser() -> Any:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, qa_records: list[dict]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("console-data")
    good = root / "facts.jsonl"
    good.write_text("".join(json.dumps(r) + "\n" for r in qa_records[:RECORDS]))
    bad = root / "bad.jsonl"
    lines = [json.dumps(r) for r in qa_records[:4]]
    lines[2] = json.dumps({"question": "Where is the answer?"})  # line 3: no answer
    bad.write_text("\n".join(lines) + "\n")
    prefs = root / "prefs.jsonl"
    prefs.write_text(
        "".join(
            json.dumps({"prompt": r["question"], "chosen": r["answer"], "rejected": "I do not know."}) + "\n"
            for r in qa_records[:4]
        )
    )
    return {"good": good, "bad": bad, "prefs": prefs}


def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def start_job(tab: Tab, url: str, good: Path, epochs: int, name: str, batch: int = 4) -> str:
    page = tab.page
    page.goto(url + "#/new")
    page.set_input_files("#upload", str(good))
    page.wait_for_selector("#report h2:has-text('valid')")
    page.fill("#f-model", "sage-tiny")
    page.select_option("#f-preset", "tiny")
    page.fill("#f-epochs", str(epochs))
    page.fill("#f-batch", str(batch))
    page.set_input_files("#validation-upload", str(good))  # answered by both models after training
    page.wait_for_selector("#validation-report")
    page.fill("#f-name", name)
    page.click("#estimate-button")
    page.wait_for_selector("#est-seconds")
    assert re.match(r"0 \(0\.0 %\) over \d+ tokens", page.inner_text("#report-truncated"))  # the share, inline
    page.click("#start")
    page.wait_for_url(re.compile(r"#/jobs/ftjob-[0-9a-f]+$"))
    return page.url.rsplit("/", 1)[-1]


def test_a_fine_tuning_session_in_the_browser(
    cli: CLI, url: str, browser: Any, files: dict[str, Path], qa_records: list[dict]
) -> None:
    tab = new_tab(browser)
    page = tab.page
    page.goto(url)
    page.wait_for_selector("text=Fine-tuning jobs")

    # a bad line is named by its number, and the file cannot start a job
    page.goto(url + "#/new")
    page.set_input_files("#upload", str(files["bad"]))
    report = page.wait_for_selector("#report")
    assert "line 3" in report.inner_text() and "answer" in report.inner_text()
    assert page.is_disabled("#start")

    # a good file: its report, the estimate with the resolved defaults, then the job
    page.set_input_files("#upload", str(files["good"]))
    page.wait_for_selector("#report h2:has-text('valid')")
    assert f"{RECORDS}" in page.inner_text("#report") and "qa" in page.inner_text("#report")
    job_id = start_job(tab, url, files["good"], epochs=25, name="facts")
    assert cli.json("jobs", "show", job_id)["status"] in ("queued", "running")

    # the loss chart gains points while the job trains
    chart = page.locator("#loss-chart")
    first = wait_until(lambda: int(chart.get_attribute("data-points") or 0), 300, "a first loss point")
    status = page.inner_text("#job-status")
    later = wait_until(
        lambda: (n := int(chart.get_attribute("data-points") or 0)) > first and n, 300, "more loss points"
    )
    assert later > first and status in ("running", "queued")
    page.wait_for_selector("#job-status:has-text('succeeded')", timeout=600_000)
    page.wait_for_selector("#events li:has-text('The job has successfully completed')")  # the stream's last events
    assert int(chart.get_attribute("data-points") or 0) >= 25 * RECORDS // 4 * 0.9  # ~every step was plotted
    page.wait_for_selector("#checkpoints table")
    page.wait_for_selector("#evaluation table")
    tab.shot("job-1280")

    # the evaluation: the fine-tune above its base
    tuned = float(page.inner_text("#evaluation tr[data-metric='rouge_l'] td[data-model='tuned']"))
    base = float(page.inner_text("#evaluation tr[data-metric='rouge_l'] td[data-model='base']"))
    assert tuned > base, (tuned, base)
    page.click("text=Every item, side by side")
    page.wait_for_selector("text=items differ")
    assert page.locator("tr.differs").count() >= 1

    # the chat playground: the model is not deployed yet, so the first answer shows the cold start
    question, answer = qa_records[3]["question"], qa_records[3]["answer"]
    page.goto(url + "#/chat?model=facts")
    page.fill("#chat-input", question)
    page.click("#chat-send")
    page.wait_for_selector(".pane .status:has-text('Starting a')", timeout=60_000)
    done = page.wait_for_selector(".msg.assistant.done", timeout=600_000)
    assert done.inner_text().strip() == answer
    assert "cold start" in page.inner_text(".pane .status")

    # two models side by side: the fine-tune and its base answer the same question
    page.fill("#chat-compare", "sage-tiny")
    page.dispatch_event("#chat-compare", "change")
    page.wait_for_selector(".panes.two")
    page.fill("#chat-input", question)
    page.click("#chat-send")
    page.wait_for_function("document.querySelectorAll('.msg.assistant.done').length === 2", timeout=300_000)
    tuned_answer, base_answer = page.locator(".msg.assistant.done").all_inner_texts()
    assert tuned_answer.strip() == answer and base_answer.strip() != answer
    tab.shot("chat-1280")

    # cancel from the job page
    second = start_job(tab, url, files["good"], epochs=50, name="spare", batch=1)  # 400 steps: cancelled long before
    page.wait_for_selector("button[data-action='cancel']:not([disabled])")
    page.click("button[data-action='cancel']")
    page.wait_for_selector("#job-status:has-text('cancelled')", timeout=180_000)
    assert cli.json("jobs", "show", second)["status"] == "cancelled"

    # a DPO job: the preference file picks the method, and the chart adds the reward accuracy
    page.goto(url + "#/new")
    page.set_input_files("#upload", str(files["prefs"]))
    page.wait_for_selector("#report h2:has-text('valid')")
    assert page.input_value("#f-method") == "dpo" and "preference" in page.inner_text("#report")
    page.fill("#f-model", "facts")  # DPO on the SFT model: the lineage shows both
    page.select_option("#f-preset", "tiny")
    page.fill("#f-name", "pref")
    page.fill("#f-epochs", "3")
    page.fill("#f-batch", "2")
    page.click("#start")
    page.wait_for_url(re.compile(r"#/jobs/ftjob-[0-9a-f]+$"))
    page.wait_for_selector("#job-status:has-text('succeeded')", timeout=300_000)
    assert page.locator("#loss-chart").get_attribute("data-series") == "train_loss reward_accuracy"
    tab.shot("job-dpo-1280")

    # models: lineage, deployments, merge, undeploy, delete
    page.goto(url + "#/models")
    row = page.wait_for_selector("#models tr[data-model^='ft:sage-tiny:facts:']")
    facts = str(row.get_attribute("data-model"))
    assert "alias: facts" in row.inner_text()
    dpo = page.wait_for_selector("#models tr[data-model^='ft:sage-tiny:pref:']")
    assert dpo.inner_text().index("sage-tiny") < dpo.inner_text().index(facts)  # base -> SFT parent -> DPO model
    pref = str(dpo.get_attribute("data-model"))
    dep = page.wait_for_selector(f"#deployments tr[data-deployment='{facts}']")
    assert "vllm" in dep.inner_text() and "ready" in dep.inner_text()
    page.click(f"#models tr[data-model='{facts}'] button:has-text('Merge')")
    page.wait_for_selector("#models-message:has-text('done')")

    def merged() -> bool:
        page.reload()
        return "merged" in page.wait_for_selector(f"#models tr[data-model='{facts}'] td:nth-child(3)").inner_text()

    wait_until(merged, 300, "the merged part")
    page.click(f"#models tr[data-model='{facts}'] button:has-text('Undeploy')")
    page.wait_for_selector(f"#deployments tr[data-deployment='{facts}']", state="detached")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f"#models tr[data-model='{pref}'] button:has-text('Delete')")
    page.wait_for_selector(f"#models tr[data-model='{pref}']", state="detached")
    assert cli.run("chat", pref, "--ask", "hi").returncode != 0  # gone for the API too

    # the jobs list, filtered
    page.goto(url + "#/jobs")
    page.wait_for_selector(f"tr[data-job='{job_id}']")
    page.select_option("select[aria-label='status']", "cancelled")
    page.wait_for_selector(f"tr[data-job='{job_id}']", state="detached")
    assert page.locator(f"tr[data-job='{second}']").count() == 1
    assert tab.errors == [], tab.errors

    # every page at phone width: no sideways scrolling, nothing broken
    phone = new_tab(browser, width=390, height=844)
    for route, ready in (
        ("#/jobs", f"tr[data-job='{job_id}']"),
        (f"#/jobs/{job_id}", "#evaluation table"),
        ("#/new", "#job-form"),
        ("#/models", "#deployments"),
        ("#/evals", "table"),
        ("#/chat?model=facts", "#chat-input"),
    ):
        phone.page.goto(url + route)
        phone.page.wait_for_selector(ready)
        assert phone.fits(), f"{route} scrolls sideways at 390 px"
        if route.startswith("#/jobs/"):
            phone.shot("job-390")
    phone.page.fill("#chat-input", question)
    phone.page.click("#chat-send")
    assert phone.page.wait_for_selector(".msg.assistant.done", timeout=120_000).inner_text().strip() == answer
    phone.shot("chat-390")
    assert phone.errors == [], phone.errors
