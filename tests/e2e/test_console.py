"""The web console in a real browser (Debian's chromium, headless, through Playwright) on the real embedded stack
that `sage-ft up` starts: gateway, Celery worker, serving with vLLM's CPU build, a private redis-server.

One test per page, each in a tab of its own, over one stack and one fine-tune (``facts``, trained through the API
with a validation file), so a failure on one page hides nothing on another: the new-job form names a bad line and
starts a job whose loss chart grows live until it is cancelled; a finished job shows its checkpoints and evaluation;
the chat playground deploys on demand and compares two models; a preference file starts a DPO job; the models page
merges, undeploys and deletes; the jobs list filters by the statuses the API declares; every page fits a phone. No
console errors on any page. Screenshots go to output/console/.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import openai
import pytest
from browser import Tab, chromium, new_tab
from cli_stack import CLI
from stack import free_port, wait_job

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
    prompts = root / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": r["question"]}], "answer": r["answer"]}) + "\n"
            for r in qa_records[:4]
        )
    )
    return {"good": good, "bad": bad, "prefs": prefs, "prompts": prompts}


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
    page.set_input_files("#validation-upload", str(good))  # its report shows; the job would end with an evaluation
    page.wait_for_selector("#validation-report")
    page.fill("#f-name", name)
    page.click("#estimate-button")
    page.wait_for_selector("#est-seconds")
    assert re.match(r"0 \(0\.0 %\) over \d+ tokens", page.inner_text("#report-truncated"))  # the share, inline
    page.click("#start")
    page.wait_for_url(re.compile(r"#/jobs/ftjob-[0-9a-f]+$"))
    return page.url.rsplit("/", 1)[-1]


@pytest.fixture(scope="module")
def facts(cli: CLI, files: dict[str, Path]) -> dict[str, str]:
    """The fine-tune the pages show: 25 epochs of the facts, with the same file held out, through the API."""
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{cli.port}/v1", api_key="local")
    with files["good"].open("rb") as fh:
        file_id = client.files.create(file=fh, purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model="sage-tiny",
        training_file=file_id,
        validation_file=file_id,
        hyperparameters={"n_epochs": 25, "batch_size": 4},
        extra_body={"preset": "tiny", "name": "facts"},
    )
    done = wait_job(client, job.id, timeout=900)
    assert done.status == "succeeded", done
    return {"job": job.id, "model": str(done.fine_tuned_model)}


@pytest.fixture()
def tab(browser: Any) -> Any:
    tab = new_tab(browser)
    yield tab
    assert tab.errors == [], tab.errors
    tab.page.close()


def test_the_form_names_a_bad_line_and_refuses_to_start(url: str, tab: Tab, files: dict[str, Path]) -> None:
    page = tab.page
    page.goto(url)
    page.wait_for_selector("text=Fine-tuning jobs")
    page.goto(url + "#/new")
    page.set_input_files("#upload", str(files["bad"]))
    report = page.wait_for_selector("#report")
    assert "line 3" in report.inner_text() and "answer" in report.inner_text()
    assert page.is_disabled("#start")
    page.set_input_files("#upload", str(files["good"]))  # a good file: its report, and the form can start
    page.wait_for_selector("#report h2:has-text('valid')")
    assert f"{RECORDS}" in page.inner_text("#report") and "qa" in page.inner_text("#report")
    offered = page.locator("#f-preset option").all_inner_texts()
    assert offered[0] == "auto" and {"tiny", "cpu", "minimal"} <= set(offered)  # from GET /v1/presets


def test_a_job_from_the_form_plots_its_loss_live_until_cancelled(
    cli: CLI, url: str, tab: Tab, files: dict[str, Path]
) -> None:
    page = tab.page
    job_id = start_job(tab, url, files["good"], epochs=50, name="spare", batch=1)  # 400 steps: cancelled long before
    assert cli.json("jobs", "show", job_id)["status"] in ("queued", "running")
    chart = page.locator("#loss-chart")
    first = wait_until(lambda: int(chart.get_attribute("data-points") or 0), 300, "a first loss point")
    later = wait_until(
        lambda: (n := int(chart.get_attribute("data-points") or 0)) > first and n, 300, "more loss points"
    )
    assert later > first and page.inner_text("#job-status") in ("running", "queued")
    page.wait_for_selector("button[data-action='cancel']:not([disabled])")
    page.click("button[data-action='cancel']")
    page.wait_for_selector("#job-status:has-text('cancelled')", timeout=180_000)
    assert cli.json("jobs", "show", job_id)["status"] == "cancelled"


def test_a_finished_job_shows_every_step_its_checkpoints_and_evaluation(
    url: str, tab: Tab, facts: dict[str, str]
) -> None:
    page = tab.page
    page.goto(url + f"#/jobs/{facts['job']}")
    page.wait_for_selector("#job-status:has-text('succeeded')")
    page.wait_for_selector("#events li:has-text('The job has successfully completed')")  # the stream, replayed
    chart = page.locator("#loss-chart")
    wait_until(lambda: int(chart.get_attribute("data-points") or 0) >= 25 * RECORDS // 4 * 0.9, 60, "every step")
    page.wait_for_selector("#checkpoints table")
    page.wait_for_selector("#evaluation table")
    page.click("#training-config summary")  # the config the trainer received, as the job stores it
    shown = page.inner_text("#training-config")
    assert "num_train_epochs" in shown and "lora.r" in shown and "data_path" not in shown
    tab.shot("job-1280")
    tuned = float(page.inner_text("#evaluation tr[data-metric='rouge_l'] td[data-model='tuned']"))
    base = float(page.inner_text("#evaluation tr[data-metric='rouge_l'] td[data-model='base']"))
    assert tuned > base, (tuned, base)  # the fine-tune above its base
    page.click("text=Every item, side by side")
    page.wait_for_selector("text=items differ")
    assert page.locator("tr.differs").count() >= 1


def test_the_chat_playground_deploys_on_demand_and_compares_two_models(
    url: str, tab: Tab, facts: dict[str, str], qa_records: list[dict]
) -> None:
    page = tab.page
    question, answer = qa_records[3]["question"], qa_records[3]["answer"]
    page.goto(url + "#/chat?model=facts")
    page.fill("#chat-input", question)
    page.click("#chat-send")
    page.wait_for_selector(".pane .status:has-text('Starting a')", timeout=60_000)  # not deployed yet: a cold start
    done = page.wait_for_selector(".msg.assistant.done", timeout=600_000)
    assert done.inner_text().strip() == answer
    assert "cold start" in page.inner_text(".pane .status")
    page.fill("#chat-compare", "sage-tiny")  # the fine-tune and its base answer the same question
    page.dispatch_event("#chat-compare", "change")
    page.wait_for_selector(".panes.two")
    page.fill("#chat-input", question)
    page.click("#chat-send")
    page.wait_for_function("document.querySelectorAll('.msg.assistant.done').length === 2", timeout=300_000)
    tuned_answer, base_answer = page.locator(".msg.assistant.done").all_inner_texts()
    assert tuned_answer.strip() == answer and base_answer.strip() != answer
    tab.shot("chat-1280")
    page.fill("#chat-input", question)  # leaving while an answer streams: its stream ends with the page
    page.click("#chat-send")
    page.goto(url + "#/jobs")
    page.wait_for_selector("text=Fine-tuning jobs")


@pytest.fixture(scope="module")
def preference_job(browser: Any, url: str, facts: dict[str, str], files: dict[str, Path]) -> dict[str, Any]:
    """A DPO job started from the form on the preference file, from the facts model (its lineage shows both)."""
    tab = new_tab(browser)
    page = tab.page
    page.goto(url + "#/new")
    page.set_input_files("#upload", str(files["prefs"]))
    page.wait_for_selector("#report h2:has-text('valid')")
    method, report = page.input_value("#f-method"), page.inner_text("#report")
    page.fill("#f-model", "facts")
    page.select_option("#f-preset", "tiny")
    page.fill("#f-name", "pref")
    page.fill("#f-epochs", "3")
    page.fill("#f-batch", "2")
    page.click("#start")
    page.wait_for_url(re.compile(r"#/jobs/ftjob-[0-9a-f]+$"))
    page.wait_for_selector("#job-status:has-text('succeeded')", timeout=300_000)
    series = page.locator("#loss-chart").get_attribute("data-series")
    tab.shot("job-dpo-1280")
    errors = list(tab.errors)
    page.close()
    return {"method": method, "report": report, "series": series, "errors": errors}


def test_a_preference_file_starts_a_dpo_job_charting_its_reward_accuracy(preference_job: dict[str, Any]) -> None:
    assert preference_job["method"] == "dpo" and "preference" in preference_job["report"]
    assert preference_job["series"] == "train_loss reward_accuracy"
    assert preference_job["errors"] == []


def test_a_prompts_file_picks_reinforcement_and_the_grader_is_checked_before_anything_starts(
    url: str, tab: Tab, files: dict[str, Path], facts: dict[str, str]
) -> None:
    page = tab.page
    page.goto(url + "#/new")
    assert not page.is_visible("#f-grader")  # supervised: no grader to give
    page.set_input_files("#upload", str(files["prompts"]))
    page.wait_for_selector("#report h2:has-text('valid')")
    assert page.input_value("#f-method") == "reinforcement" and page.is_visible("#f-grader")
    page.fill("#f-model", "sage-tiny")
    page.select_option("#f-preset", "tiny")
    check = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "operation": "eq"}
    page.fill("#f-grader", json.dumps({**check, "reference": "{{item.answr}}"}))
    page.click("#estimate-button")
    # the estimate made when the file was chosen (no grader yet) may still show: wait for this one's answer
    assert "answr" in page.wait_for_selector("#estimate .error:has-text('answr')").inner_text()
    page.fill("#f-grader", json.dumps({**check, "reference": "{{item.answer}}"}))
    page.click("#estimate-button")
    shown = page.wait_for_selector("#est-rollouts").inner_text()
    assert "answered 8 times" in shown, shown
    # the browser logs the expected 400s of the estimates before (the one made when the file was chosen, without a
    # grader, can land late); none is expected after this
    tab.errors[:] = [e for e in tab.errors if "status of 400" not in e]
    # started from the form on the facts fine-tune (which knows these answers, so rewards are not all 0), it charts
    # its mean reward per step and shows its method, grader and sampled answers with their rewards
    page.fill("#f-model", facts["model"])
    page.fill("#f-epochs", "3")
    page.fill("#f-batch", "4")
    page.fill("#f-name", "rft")
    page.click("#start")
    page.wait_for_url(re.compile(r"#/jobs/ftjob-[0-9a-f]+$"))
    page.wait_for_selector("#job-status:has-text('succeeded')", timeout=300_000)
    chart = page.locator("#loss-chart")
    wait_until(lambda: int(chart.get_attribute("data-points") or 0) >= 3, 30, "three steps plotted")
    assert "train_reward_mean" in str(chart.get_attribute("data-series")).split()
    shown = page.inner_text("body")
    assert "reinforcement" in shown and "exact (string_check)" in shown and facts["model"] in shown, shown[:2000]
    sampled = " ".join(line for line in shown.splitlines() if "Sampled answers at step" in line)
    rewards = re.findall(r"(\d\.\d\d): ['\"]", sampled)
    assert rewards and "1.00" in rewards, shown[-3000:]
    tab.shot("job-rft-1280")


def test_the_jobs_list_filters_by_the_statuses_the_api_declares(url: str, tab: Tab, facts: dict[str, str]) -> None:
    page = tab.page
    page.goto(url + "#/jobs")
    page.wait_for_selector(f"tr[data-job='{facts['job']}']")
    options = page.locator("select[aria-label='status'] option").all_inner_texts()
    assert options[0] == "any status" and {"validating_files", "queued", "succeeded", "cancelled"} <= set(options)
    page.select_option("select[aria-label='status']", "cancelled")
    page.wait_for_selector(f"tr[data-job='{facts['job']}']", state="detached")
    page.select_option("select[aria-label='status']", "succeeded")
    page.wait_for_selector(f"tr[data-job='{facts['job']}']")


def test_every_page_fits_a_phone(browser: Any, url: str, facts: dict[str, str], qa_records: list[dict]) -> None:
    phone = new_tab(browser, width=390, height=844)
    for route, ready in (
        ("#/jobs", f"tr[data-job='{facts['job']}']"),
        (f"#/jobs/{facts['job']}", "#evaluation table"),
        ("#/new", "#job-form"),
        ("#/models", "#deployments"),
        ("#/evals", "table"),
        ("#/webhooks", "#hook-form"),
        ("#/chat?model=facts", "#chat-input"),  # last: the phone then chats
    ):
        phone.page.goto(url + route)
        phone.page.wait_for_selector(ready)
        assert phone.fits(), f"{route} scrolls sideways at 390 px"
        if route.startswith("#/jobs/"):
            phone.shot("job-390")
    question, answer = qa_records[3]["question"], qa_records[3]["answer"]
    phone.page.fill("#chat-input", question)
    phone.page.click("#chat-send")
    assert phone.page.wait_for_selector(".msg.assistant.done", timeout=600_000).inner_text().strip() == answer
    phone.shot("chat-390")
    assert phone.errors == [], phone.errors


def test_the_models_page_shows_lineage_and_merges_undeploys_and_deletes(
    cli: CLI, url: str, tab: Tab, facts: dict[str, str], preference_job: dict[str, Any]
) -> None:
    page = tab.page
    facts_model = facts["model"]
    cli.ok("deploy", facts_model)  # deployed whatever ran before: this page lists it
    page.goto(url + "#/models")
    row = page.wait_for_selector(f"#models tr[data-model='{facts_model}']")
    assert "alias: facts" in row.inner_text()
    dpo = page.wait_for_selector("#models tr[data-model^='ft:sage-tiny:pref:']")
    assert dpo.inner_text().index("sage-tiny") < dpo.inner_text().index(facts_model)  # base -> SFT parent -> DPO
    pref = str(dpo.get_attribute("data-model"))
    dep = page.wait_for_selector(f"#deployments tr[data-deployment='{facts_model}']")
    assert "vllm" in dep.inner_text() and "ready" in dep.inner_text()
    page.click(f"#models tr[data-model='{facts_model}'] button:has-text('Merge')")
    page.wait_for_selector("#models-message:has-text('done')")

    def merged() -> bool:
        page.reload()
        cell = page.wait_for_selector(f"#models tr[data-model='{facts_model}'] td:nth-child(3)")
        return "merged" in cell.inner_text()

    wait_until(merged, 300, "the merged part")
    page.click(f"#models tr[data-model='{facts_model}'] button:has-text('Undeploy')")
    page.wait_for_selector(f"#deployments tr[data-deployment='{facts_model}']", state="detached")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f"#models tr[data-model='{pref}'] button:has-text('Delete')")
    page.wait_for_selector(f"#models tr[data-model='{pref}']", state="detached")
    assert cli.run("chat", pref, "--ask", "hi").returncode != 0  # gone for the API too


def test_the_webhooks_page_adds_an_endpoint_sends_a_test_and_shows_its_deliveries(url: str, tab: Tab) -> None:
    """On the local stack a receiver on this machine is allowed (over http); its secret is shown once and verifies."""
    from receiver import Receiver

    receiver = Receiver().start()
    page = tab.page
    page.goto(url + "#/webhooks")
    page.fill("#hook-name", "local hook")
    page.fill("#hook-url", receiver.url)
    page.click("#hook-add")
    secret = page.wait_for_selector("#hook-secret code").inner_text().strip()
    assert secret.startswith("whsec_")
    row = page.wait_for_selector("tr[data-endpoint]:has-text('local hook')")
    endpoint = row.get_attribute("data-endpoint")
    assert "whsec_" in row.inner_text() and secret not in row.inner_text()  # a hint only, after the first time
    row.query_selector("button.test").click()
    assert "answered 200" in page.wait_for_selector("#hooks-message .ok").inner_text()
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="local", max_retries=0)
    (event,) = receiver.events(client, secret)
    assert event.type == "fine_tuning.job.succeeded"
    page.click(f"tr[data-endpoint='{endpoint}'] button.deliveries")
    delivered = page.wait_for_selector("tr[data-delivery]:has-text('delivered')").inner_text()
    assert event.id in delivered and "200 in" in delivered
    tab.shot("webhooks-1280")
    page.once("dialog", lambda d: d.accept())
    page.click(f"tr[data-endpoint='{endpoint}'] button.danger")
    page.wait_for_selector("text=No endpoint yet")
    receiver.stop()
