"""Auth on: API keys (stored hashed) bind callers to tenants, and each tenant sees only its own things."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from stack import LEARN, Stack, auth_env, qa_lines, wait_job

from sage_ft.settings import StorageSettings
from sage_ft.storage import make_store

pytestmark = pytest.mark.slow
KEYS = {"acme": "sk-acme-secret-1", "globex": "sk-globex-secret-2"}


@pytest.fixture(scope="module")
def stack(make_stack: Any) -> Stack:
    st: Stack = make_stack(**auth_env(KEYS))
    st.start_gateway()
    st.start_worker("w1")
    return st


def clients(stack: Stack) -> dict[str, openai.OpenAI]:
    return {t: openai.OpenAI(base_url=f"{stack.url}/v1", api_key=k, max_retries=0) for t, k in KEYS.items()}


def test_each_tenant_sees_only_its_own_files_jobs_and_models(stack: Stack, qa_records: list[dict]) -> None:
    c = clients(stack)
    acme_file = c["acme"].files.create(file=("a.jsonl", qa_lines(qa_records[:4])), purpose="fine-tune")
    job = c["acme"].fine_tuning.jobs.create(
        model="sage-tiny", training_file=acme_file.id, suffix="acme", hyperparameters={"n_epochs": 2}, extra_body=LEARN
    )
    done = wait_job(c["acme"], job.id)
    assert done.status == "succeeded" and done.organization_id == "acme"

    assert [f.id for f in c["acme"].files.list().data] == [acme_file.id]
    assert c["globex"].files.list().data == []
    assert c["globex"].fine_tuning.jobs.list().data == []
    assert done.fine_tuned_model in {m.id for m in c["acme"].models.list().data}
    assert done.fine_tuned_model not in {m.id for m in c["globex"].models.list().data}
    # globex sees the installation's base models (those under the models root), and nothing acme trained
    seen = {(m.id, m.owned_by) for m in c["globex"].models.list().data}
    assert seen == {(m.id, m.owned_by) for m in c["acme"].models.list().data if m.owned_by == "base"}
    assert ("sage-tiny", "base") in seen
    for call in (
        lambda: c["globex"].fine_tuning.jobs.retrieve(job.id),
        lambda: c["globex"].fine_tuning.jobs.cancel(job.id),
        lambda: c["globex"].fine_tuning.jobs.list_events(job.id),
        lambda: c["globex"].files.retrieve(acme_file.id),
        lambda: c["globex"].files.content(acme_file.id),
        lambda: c["globex"].files.delete(acme_file.id),
        lambda: c["globex"].models.retrieve(done.fine_tuned_model),
        lambda: c["globex"].models.delete(done.fine_tuned_model),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    with pytest.raises(openai.APIStatusError) as exc:  # another tenant's file cannot be trained on
        c["globex"].fine_tuning.jobs.create(model="sage-tiny", training_file=acme_file.id)
    assert exc.value.status_code in (400, 404)
    globex_file = c["globex"].files.create(file=("g.jsonl", qa_lines(qa_records[4:8])), purpose="fine-tune")
    for extra in (
        {"model": done.fine_tuned_model},
        {"model": "sage-tiny", "extra_body": {"from_checkpoint": f"ftckpt-{job.id.split('-', 1)[1]}-5"}},
    ):
        with pytest.raises(openai.NotFoundError):  # nor continue another tenant's fine-tune or checkpoint
            c["globex"].fine_tuning.jobs.create(training_file=globex_file.id, **extra)
    keys = [
        o.key
        for o in make_store(
            StorageSettings(backend="local", local_root=Path(stack.env["SAGE_STORAGE_LOCAL_ROOT"]))
        ).list_objects("tenants/globex/")
    ]
    assert keys == [f"tenants/globex/files/{globex_file.id}"]

    # object keys are scoped: acme's artifacts live under tenants/acme/
    store = make_store(StorageSettings(backend="local", local_root=Path(stack.env["SAGE_STORAGE_LOCAL_ROOT"])))
    keys = [o.key for o in store.list_objects("")]
    assert keys and all(k.startswith(("tenants/acme/", "tenants/globex/files/")) for k in keys), keys


def test_missing_or_wrong_keys_are_401(stack: Stack) -> None:
    assert httpx.get(f"{stack.url}/v1/files", timeout=5).status_code == 401
    resp = httpx.get(f"{stack.url}/v1/files", headers={"Authorization": "Bearer sk-wrong"}, timeout=5)
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{stack.url}/healthz", timeout=5).status_code == 200  # probes need no key
    logs = (stack.gateway.tail(500) if stack.gateway else "") + "".join(w.tail(500) for w in stack.workers)
    assert not any(k in logs for k in KEYS.values())


def test_with_redis_down_readyz_is_503_and_calls_get_a_503_not_a_500(stack: Stack) -> None:
    """Runs last in this module: it stops the stack's Redis."""
    stack.redis.stop()
    ready = httpx.get(f"{stack.url}/readyz", timeout=30)
    assert ready.status_code == 503 and ready.json()["checks"]["redis"].startswith("unreachable")
    assert ready.json()["checks"]["object_store"] == "ok"
    resp = httpx.get(
        f"{stack.url}/v1/fine_tuning/jobs", headers={"Authorization": f"Bearer {KEYS['acme']}"}, timeout=30
    )
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "jobstore_unavailable"
    assert httpx.get(f"{stack.url}/healthz", timeout=5).status_code == 200
