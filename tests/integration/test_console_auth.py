"""The web console with auth on, in a real browser: it asks for an API key once, keeps it for the tab, and each
tenant sees only its own jobs (tenant B's key shows none of tenant A's)."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from browser import chromium, new_tab
from stack import Stack, auth_env, qa_lines

pytestmark = pytest.mark.slow
KEYS = {"acme": "sk-acme-console-1", "globex": "sk-globex-console-2"}


@pytest.fixture(scope="module")
def stack(make_stack: Any) -> Stack:
    st: Stack = make_stack(**auth_env(KEYS))
    st.start_gateway()  # no worker: the jobs stay queued, which is all this test needs
    return st


def sign_in(page: Any, key: str) -> None:
    page.wait_for_selector("dialog#auth[open]")
    page.fill("#auth-key", key)
    page.click("#auth-form button[type=submit]")


def test_each_tenant_sees_only_its_own_jobs(stack: Stack, qa_records: list[dict]) -> None:
    acme = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=KEYS["acme"], max_retries=0)
    file = acme.files.create(file=("a.jsonl", qa_lines(qa_records[:4])), purpose="fine-tune")
    job = acme.fine_tuning.jobs.create(model="sage-tiny", training_file=file.id, suffix="acme")

    with chromium() as browser:
        tab = new_tab(browser)
        page = tab.page
        page.goto(f"{stack.url}/console/")
        sign_in(page, "sk-wrong")
        page.wait_for_selector("#auth-error:has-text('Incorrect API key')")  # refused: asked again, with why
        page.fill("#auth-key", KEYS["globex"])
        page.click("#auth-form button[type=submit]")
        page.wait_for_selector("text=No jobs yet")
        assert page.locator(f"tr[data-job='{job.id}']").count() == 0
        page.goto(f"{stack.url}/console/#/jobs/{job.id}")  # B cannot open A's job by its id either
        assert "no fine-tuning job found" in page.wait_for_selector("[role=alert]").inner_text().lower()
        page.goto(f"{stack.url}/console/#/new")
        page.wait_for_selector("#job-form")
        assert not page.is_visible("dialog#auth[open]")  # the key is kept for the tab: asked once

        with page.expect_navigation():
            page.click("#signout")  # a new tenant in the same tab: the key goes, the page reloads
        sign_in(page, KEYS["acme"])
        page.goto(f"{stack.url}/console/#/jobs")
        page.wait_for_selector(f"tr[data-job='{job.id}']")
        page.goto(f"{stack.url}/console/#/jobs/{job.id}")
        page.wait_for_selector("#job-status:has-text('queued')")
        # what the browser logged is the refused requests themselves, nothing else
        assert [e for e in tab.errors if "401" not in e and "404" not in e] == []


def test_the_job_page_resumes_its_event_stream_across_a_gateway_restart(stack: Stack, qa_records: list[dict]) -> None:
    """A rollout restarts the gateway under an open job page: the stream ends with a frame to resume from, the page
    reconnects with Last-Event-ID, and what happens next (pause, then resume, from the page's buttons) arrives once,
    with nothing shown twice."""
    acme = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=KEYS["acme"], max_retries=0)
    file = acme.files.create(file=("b.jsonl", qa_lines(qa_records[:4])), purpose="fine-tune")
    job = acme.fine_tuning.jobs.create(model="sage-tiny", training_file=file.id, suffix="restart")
    with chromium() as browser:
        page = new_tab(browser).page
        page.goto(f"{stack.url}/console/#/jobs/{job.id}")
        sign_in(page, KEYS["acme"])
        before = len(acme.fine_tuning.jobs.list_events(job.id).data)
        page.wait_for_function(f"document.querySelectorAll('#events li').length === {before}")
        assert stack.gateway is not None
        stack.gateway.stop()
        stack.start_gateway()
        page.click("button[data-action='pause']")  # the page's own buttons, through the restarted gateway
        page.wait_for_selector("#job-status:has-text('paused')")
        page.wait_for_selector("#events li:has-text('paused')")
        page.click("button[data-action='resume']")
        page.wait_for_selector("#job-status:has-text('queued')")
        page.wait_for_selector("#events li:has-text('resumed')")
        assert acme.fine_tuning.jobs.retrieve(job.id).status == "queued"
        events = acme.fine_tuning.jobs.list_events(job.id, limit=100).data
        page.wait_for_function(f"document.querySelectorAll('#events li').length >= {len(events)}")
        shown = page.locator("#events li").all_inner_texts()
        assert len(shown) == len(events) > before  # each event once: the stream resumed after the last one shown
