"""Webhooks on the real stack, driven and verified by the unchanged ``openai`` client: endpoints per tenant, signed
deliveries of exactly the subscribed events (``client.webhooks.unwrap``), retries while the receiver is down with one
``webhook-id`` per event, nothing lost when the gateway, the worker and Redis are killed or restarted, a rotation's
overlap, and refused addresses and redirects. The receivers are real HTTP servers on loopback, which the operator
allows here (``SAGE_WEBHOOK_ALLOW_HTTP``, ``SAGE_WEBHOOK_ALLOW_PRIVATE_ADDRESSES``); one gateway runs with the
defaults to show what they refuse."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import openai
import pytest
from cryptography.fernet import Fernet
from receiver import Receiver
from stack import Stack, auth_env, qa_lines, wait_for, wait_job

pytestmark = pytest.mark.slow
KEYS = {"acme": "sk-acme-hooks-1", "globex": "sk-globex-hooks-2"}
JOB_EVENTS = ["fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled"]
FAST = {  # what a test can wait for: retries within seconds, not minutes
    "SAGE_WEBHOOK_ALLOW_HTTP": "true",
    "SAGE_WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "true",
    "SAGE_WEBHOOK_BACKOFF_SECONDS": "0.5",
    "SAGE_WEBHOOK_BACKOFF_MAX_SECONDS": "1",
    "SAGE_WEBHOOK_POLL_SECONDS": "0.2",
}


@pytest.fixture(scope="module")
def stack(make_stack: Any) -> Stack:
    st: Stack = make_stack(persist=True, SAGE_SECRETS_KEY=Fernet.generate_key().decode(), **auth_env(KEYS), **FAST)
    st.start_gateway()
    return st


@pytest.fixture(scope="module")
def clients(stack: Stack) -> dict[str, openai.OpenAI]:
    return {t: openai.OpenAI(base_url=f"{stack.url}/v1", api_key=k, max_retries=0) for t, k in KEYS.items()}


@pytest.fixture(scope="module")
def training_file(clients: dict[str, openai.OpenAI], qa_records: list[dict]) -> str:
    return clients["acme"].files.create(file=("qa.jsonl", qa_lines(qa_records[:8])), purpose="fine-tune").id


def _job(client: openai.OpenAI, file_id: str, **config: Any) -> Any:
    extra: dict[str, Any] = {"preset": "tiny"}
    if config:
        extra["config"] = config
    return client.fine_tuning.jobs.create(
        model="sage-tiny", training_file=file_id, hyperparameters={"n_epochs": 1, "batch_size": 4}, extra_body=extra
    )


def _eval_run(client: openai.OpenAI) -> Any:
    schema = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    check = {
        "type": "string_check",
        "name": "c",
        "input": "{{sample.output_text}}",
        "reference": "x",
        "operation": "eq",
    }
    ev = client.evals.create(
        name="hooks", data_source_config={"type": "custom", "item_schema": schema}, testing_criteria=[check]
    )
    source = {"type": "file_content", "content": [{"item": {"q": "hello"}}]}
    data_source = {
        "type": "completions",
        "model": "sage-tiny",
        "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{item.q}}"}]},
        "source": source,
    }
    return ev, client.evals.runs.create(ev.id, name="r", data_source=data_source)  # type: ignore[arg-type]


def test_endpoints_are_shown_once_listed_updated_and_deleted_within_their_tenant(
    clients: dict[str, openai.OpenAI],
) -> None:
    acme, globex = clients["acme"], clients["globex"]
    assert set(acme.webhooks.event_types.list().data) == {
        *JOB_EVENTS,
        *(f"eval.run.{s}" for s in ("succeeded", "failed", "canceled")),
    }
    made = acme.webhooks.create(name="ops", url="http://127.0.0.1:9/x", event_types=["fine_tuning.job.succeeded"])
    assert made.signing_secret.startswith("whsec_") and made.signing_secret_hint.endswith(made.signing_secret[-4:])
    shown = acme.webhooks.retrieve(made.id)
    assert "signing_secret" not in shown.model_dump(exclude_none=True) and shown.url == made.url  # only once
    assert [e.id for e in acme.webhooks.list()] == [made.id] and list(globex.webhooks.list()) == []
    for call in (
        lambda: globex.webhooks.retrieve(made.id),
        lambda: globex.webhooks.update(made.id, name="mine"),
        lambda: globex.webhooks.delete(made.id),
        lambda: globex.webhooks.test(made.id, event_type="fine_tuning.job.succeeded"),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    renamed = acme.webhooks.update(made.id, name="ops-2", event_types=JOB_EVENTS)
    assert renamed.name == "ops-2" and renamed.event_types == JOB_EVENTS and renamed.updated_at
    with pytest.raises(openai.BadRequestError) as bad:
        acme.webhooks.create(name="x", url="http://127.0.0.1:9/", event_types=["batch.completed"])  # not ours
    assert bad.value.body["param"] == "event_types.0" and "fine_tuning.job.succeeded" in bad.value.body["message"]
    with pytest.raises(openai.BadRequestError) as bad:
        acme.webhooks.create(name="x", url="ftp://example.com/", event_types=JOB_EVENTS)
    assert bad.value.body["param"] == "url"
    assert acme.webhooks.delete(made.id).deleted
    with pytest.raises(openai.NotFoundError):
        acme.webhooks.retrieve(made.id)


def test_jobs_and_runs_deliver_exactly_the_subscribed_events_signed(
    stack: Stack, clients: dict[str, openai.OpenAI], training_file: str
) -> None:
    acme, globex = clients["acme"], clients["globex"]
    everything, failures = Receiver().start(), Receiver().start()
    other_tenant = Receiver().start()
    runs = ["eval.run.failed", "eval.run.canceled"]
    a = acme.webhooks.create(name="all", url=everything.url, event_types=[*JOB_EVENTS, *runs])
    b = acme.webhooks.create(name="failures", url=failures.url, event_types=["fine_tuning.job.failed"])
    c = globex.webhooks.create(name="theirs", url=other_tenant.url, event_types=[*JOB_EVENTS, *runs])
    ev, run = _eval_run(acme)
    acme.evals.runs.cancel(run.id, eval_id=ev.id)  # no worker yet: it is still queued
    if not stack.workers:
        stack.start_worker("w1")
    good = _job(acme, training_file)
    assert wait_job(acme, good.id, stack=stack).status == "succeeded"
    bad = _job(acme, training_file, lora={"target_modules": ["no_such_proj"]})
    assert wait_job(acme, bad.id, stack=stack).status == "failed"
    stopped = _job(acme, training_file)
    acme.fine_tuning.jobs.cancel(stopped.id)
    assert wait_job(acme, stopped.id, stack=stack).status == "cancelled"
    wait_for(lambda: len(everything.got) >= 4 and failures.got, 30, "the subscribed events")
    time.sleep(1.5)  # anything more would have come by now
    events = everything.events(acme, a.signing_secret)
    assert sorted((e.type, e.data.id) for e in events) == sorted(
        [
            ("eval.run.canceled", run.id),
            ("fine_tuning.job.succeeded", good.id),
            ("fine_tuning.job.failed", bad.id),
            ("fine_tuning.job.cancelled", stopped.id),
        ]
    )
    assert all(e.object == "event" and e.id.startswith("evt_") for e in events)
    assert [(e.type, e.data.id) for e in failures.events(acme, b.signing_secret)] == [
        ("fine_tuning.job.failed", bad.id)
    ]
    assert other_tenant.got == []  # events never cross tenants
    with pytest.raises(openai.InvalidWebhookSignatureError):  # another endpoint's secret does not verify
        acme.webhooks.unwrap(failures.got[0]["body"], failures.got[0]["headers"], secret=a.signing_secret)
    log = acme.get(f"/webhook_endpoints/{a.id}/deliveries", cast_to=object)
    assert {d["status"] for d in log["data"]} == {"delivered"} and len(log["data"]) == 4  # type: ignore[index]
    assert all(len(d["attempts"]) == 1 and d["attempts"][0]["status_code"] == 200 for d in log["data"])  # type: ignore[index]
    for receiver in (everything, failures, other_tenant):
        receiver.stop()
    for endpoint, client in ((a, acme), (b, acme), (c, globex)):
        client.webhooks.delete(endpoint.id)


def test_a_receiver_that_is_down_gets_each_event_once_it_is_back_with_one_webhook_id(
    stack: Stack, clients: dict[str, openai.OpenAI], training_file: str
) -> None:
    acme = clients["acme"]
    receiver = Receiver()  # not listening yet: connections are refused
    hook = acme.webhooks.create(name="flaky", url=receiver.url, event_types=["fine_tuning.job.cancelled"])
    job = _job(acme, training_file)
    acme.fine_tuning.jobs.cancel(job.id)
    path = f"/webhook_endpoints/{hook.id}/deliveries"

    def attempts() -> list[dict[str, Any]]:
        data = acme.get(path, cast_to=object)["data"]  # type: ignore[index]
        return data[0]["attempts"] if data else []

    wait_for(lambda: len(attempts()) >= 2, 30, "two refused attempts")
    receiver.answers = [500, 500]  # then it answers, but fails twice
    receiver.start()
    wait_for(lambda: acme.get(path, cast_to=object)["data"][0]["status"] == "delivered", 30, "the delivery")  # type: ignore[index]
    tries = attempts()
    assert [t["status_code"] for t in tries[-3:]] == [500, 500, 200] and tries[0]["status_code"] is None
    assert "Connect" in tries[0]["error"] or "refused" in tries[0]["error"], tries[0]
    assert len(receiver.got) == 3 and len({g["headers"]["webhook-id"] for g in receiver.got}) == 1
    (event,) = {json.dumps(e.model_dump(), sort_keys=True) for e in receiver.events(acme, hook.signing_secret)}
    assert json.loads(event)["data"]["id"] == job.id
    receiver.stop()
    acme.webhooks.delete(hook.id)


def test_a_gateway_killed_mid_attempt_holds_its_delivery_back_seconds_not_the_attempt_timeout(
    stack: Stack, clients: dict[str, openai.OpenAI], training_file: str
) -> None:
    """The receiver takes the connection and never answers, so the gateway's attempt is in flight (for up to its
    10 s timeout) when the gateway is SIGKILLed. The next gateway sends the event once the dead one's short lease
    has run out: seconds, where a lease as long as the attempt's timeout held it back 50 s."""
    from sage_ft_gateway.services.deliveries import LEASE_S

    acme = clients["acme"]
    silent = socket.create_server(("127.0.0.1", 0))
    silent.settimeout(120)
    receiver = Receiver(port=silent.getsockname()[1])
    hook = acme.webhooks.create(name="mid", url=receiver.url, event_types=["fine_tuning.job.succeeded"])
    if not stack.workers:
        stack.start_worker("w1")
    job = _job(acme, training_file)
    connection, _ = silent.accept()  # the attempt is under way: the gateway holds the delivery's lease
    assert stack.gateway is not None
    stack.gateway.kill9()
    killed = time.monotonic()
    connection.close()
    silent.close()
    receiver.start()
    stack.start_gateway()
    wait_for(lambda: receiver.got, LEASE_S + 15, "the event after the gateway's restart")
    assert time.monotonic() - killed < LEASE_S + 15
    (event,) = receiver.events(acme, hook.signing_secret)
    assert (event.type, event.data.id) == ("fine_tuning.job.succeeded", job.id)
    receiver.stop()
    acme.webhooks.delete(hook.id)


def test_events_survive_killed_processes_and_a_redis_restart(
    stack: Stack, clients: dict[str, openai.OpenAI], training_file: str
) -> None:
    """The receiver is down when the job ends; the gateway and the worker are SIGKILLed, Redis restarts (its
    append-only file), and the event still arrives once they are back."""
    acme = clients["acme"]
    receiver = Receiver()
    hook = acme.webhooks.create(name="late", url=receiver.url, event_types=["fine_tuning.job.succeeded"])
    if not stack.workers:
        stack.start_worker("w1")
    job = _job(acme, training_file)
    assert wait_job(acme, job.id, stack=stack).status == "succeeded"
    assert stack.gateway is not None
    stack.gateway.kill9()
    for worker in stack.workers:
        worker.kill9()
    stack.workers.clear()
    stack.restart_redis(0.5)
    receiver.start()
    stack.start_gateway()
    stack.start_worker("w2")
    wait_for(lambda: receiver.got, 30, "the event after the restarts")
    time.sleep(1)
    (event,) = receiver.events(acme, hook.signing_secret)
    assert (event.type, event.data.id) == ("fine_tuning.job.succeeded", job.id)
    receiver.stop()
    acme.webhooks.delete(hook.id)


def test_a_rotation_signs_with_both_secrets_during_its_overlap_and_then_with_the_new_only(make_stack: Any) -> None:
    """The overlap is OpenAI's 24 hours by default; this gateway's is 3 s, so its end can be waited for."""
    st: Stack = make_stack(
        SAGE_SECRETS_KEY=Fernet.generate_key().decode(), SAGE_WEBHOOK_ROTATION_OVERLAP_SECONDS="3", **FAST
    )
    st.start_gateway()
    client = openai.OpenAI(base_url=f"{st.url}/v1", api_key="local", max_retries=0)
    receiver = Receiver().start()
    hook = client.webhooks.create(name="rotating", url=receiver.url, event_types=JOB_EVENTS)
    first = hook.signing_secret
    rotated = client.webhooks.rotate_secret(hook.id, keep_old_secret_active_for_24_hours=True)
    assert rotated.signing_secret != first and rotated.signing_secret_hint != hook.signing_secret_hint
    result = client.webhooks.test(hook.id, event_type="fine_tuning.job.succeeded")
    assert result.success and result.status_code == 200 and result.webhook_endpoint_id == hook.id

    def verifies(sent: dict[str, Any], secret: str) -> bool:
        try:
            client.webhooks.unwrap(sent["body"], sent["headers"], secret=secret)
        except openai.InvalidWebhookSignatureError:
            return False
        return True

    during = receiver.got[-1]
    assert verifies(during, first) and verifies(during, rotated.signing_secret)  # both, during the overlap
    time.sleep(3.5)
    client.webhooks.test(hook.id, event_type="fine_tuning.job.cancelled")
    ended = receiver.got[-1]
    assert verifies(ended, rotated.signing_secret) and not verifies(ended, first)  # the new only, after it
    last = client.webhooks.rotate_secret(hook.id)  # no overlap asked: the previous secret stops at once
    client.webhooks.test(hook.id, event_type="fine_tuning.job.failed")
    after = receiver.got[-1]
    assert verifies(after, last.signing_secret) and not verifies(after, rotated.signing_secret)
    assert client.webhooks.unwrap(after["body"], after["headers"], secret=last.signing_secret).type == (
        "fine_tuning.job.failed"
    )
    receiver.stop()


def test_a_redirect_is_not_followed(clients: dict[str, openai.OpenAI]) -> None:
    acme = clients["acme"]
    target = Receiver().start()
    hop = Receiver().start()
    hop.redirect = target.url
    hook = acme.webhooks.create(name="hop", url=hop.url, event_types=JOB_EVENTS)
    with pytest.raises(openai.BadRequestError) as err:
        acme.webhooks.test(hook.id, event_type="fine_tuning.job.succeeded")
    assert "redirect" in err.value.body["message"] and "not followed" in err.value.body["message"]
    assert len(hop.got) == 1 and target.got == []
    log = acme.get(f"/webhook_endpoints/{hook.id}/deliveries", cast_to=object)["data"]  # type: ignore[index]
    assert log[0]["status"] == "failed" and log[0]["attempts"][0]["status_code"] == 302
    for r in (target, hop):
        r.stop()
    acme.webhooks.delete(hook.id)


def test_by_default_private_and_metadata_addresses_and_plain_http_are_refused(make_stack: Any) -> None:
    st: Stack = make_stack(SAGE_SECRETS_KEY=Fernet.generate_key().decode())  # the operator allows nothing more
    st.start_gateway()
    client = openai.OpenAI(base_url=f"{st.url}/v1", api_key="local", max_retries=0)
    for url, fragment in (
        ("https://169.254.169.254/latest/meta-data", "not a public address"),  # cloud metadata
        ("https://10.1.2.3/hooks", "not a public address"),
        ("https://[::1]:8443/hooks", "not a public address"),
        ("http://example.com/hooks", "must be https"),
    ):
        with pytest.raises(openai.BadRequestError) as err:
            client.webhooks.create(name="x", url=url, event_types=JOB_EVENTS)
        assert err.value.body["param"] == "url" and fragment in err.value.body["message"], (url, err.value.body)
    receiver = Receiver().start()
    # a name that resolves to loopback is checked where it counts, on the address it resolves to when sent
    hook = client.webhooks.create(name="sly", url=f"https://localhost:{receiver.port}/hooks", event_types=JOB_EVENTS)
    with pytest.raises(openai.BadRequestError) as err:
        client.webhooks.test(hook.id, event_type="fine_tuning.job.succeeded")
    assert "resolves to 127.0.0.1" in err.value.body["message"] or "resolves to ::1" in err.value.body["message"]
    assert receiver.got == []
    receiver.stop()


def test_the_cli_creates_tests_lists_shows_deliveries_and_deletes(stack: Stack) -> None:
    import subprocess
    import sys

    env = {**stack.env, "SAGE_FT_GATEWAY_URL": stack.url, "SAGE_FT_API_KEY": KEYS["acme"]}
    exe = str(Path(sys.executable).parent / "sage-ft")

    def cli(*args: str) -> Any:
        out = subprocess.run([exe, "--json", *args], capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    receiver = Receiver().start()
    made = cli("webhooks", "create", receiver.url, "--event", "fine_tuning.job.succeeded")
    assert made["signing_secret"].startswith("whsec_") and made["event_types"] == ["fine_tuning.job.succeeded"]
    assert made["id"] in [e["id"] for e in cli("webhooks", "list")["data"]]
    sent = cli("webhooks", "test", made["id"])
    assert sent["success"] and sent["status_code"] == 200 and len(receiver.got) == 1
    log = cli("webhooks", "deliveries", made["id"])["data"]
    assert [(d["event_type"], d["status"]) for d in log] == [("fine_tuning.job.succeeded", "delivered")]
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=KEYS["acme"], max_retries=0)
    assert client.webhooks.unwrap(receiver.got[0]["body"], receiver.got[0]["headers"], secret=made["signing_secret"])
    human = subprocess.run([exe, "webhooks", "deliveries", made["id"]], capture_output=True, text=True, env=env)
    assert "delivered" in human.stdout and "200 in" in human.stdout, human.stdout
    assert cli("webhooks", "delete", made["id"])["deleted"]
    receiver.stop()


class Hanging:
    """A receiver that accepts connections and never answers (each attempt waits out the timeout)."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[Any] = []
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def stop(self) -> None:
        import socket

        self.running = False
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept, so the port is free at once
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_a_dead_receiver_holds_up_no_other_and_is_disabled_until_a_person_re_enables_it(
    make_stack: Any, qa_records: list[dict]
) -> None:
    limits = {"SAGE_WEBHOOK_TIMEOUT_SECONDS": "1", "SAGE_WEBHOOK_DISABLE_AFTER_FAILURES": "3"}
    st: Stack = make_stack(SAGE_SECRETS_KEY=Fernet.generate_key().decode(), **FAST, **limits)
    st.start_gateway()  # no worker: cancelling queued jobs makes the events
    client = openai.OpenAI(base_url=f"{st.url}/v1", api_key="local", max_retries=0)
    file_id = client.files.create(file=("qa.jsonl", qa_lines(qa_records[:8])), purpose="fine-tune").id
    dead, alive = Hanging(), Receiver().start()
    kinds = ["fine_tuning.job.cancelled"]
    stuck = client.webhooks.create(name="dead", url=f"http://127.0.0.1:{dead.port}/hooks", event_types=kinds)
    fine = client.webhooks.create(name="alive", url=alive.url, event_types=kinds)
    jobs = [_job(client, file_id) for _ in range(6)]
    for job in jobs:
        client.fine_tuning.jobs.cancel(job.id)
    started = time.monotonic()
    wait_for(lambda: len(alive.got) == len(jobs), 15, "every event at the live receiver")
    assert time.monotonic() - started < 10  # not behind the dead one's timeouts (6 events x 1 s each, one at a time)
    assert {e.data.id for e in alive.events(client, fine.signing_secret)} == {j.id for j in jobs}
    wait_for(lambda: client.webhooks.retrieve(stuck.id).status == "disabled", 30, "the dead endpoint disabled")
    disabled = client.webhooks.retrieve(stuck.id)
    assert "3 attempts in a row failed" in str(disabled.disabled_reason) and "no answer within 1 s" in str(
        disabled.disabled_reason
    )
    dead.stop()
    back = Receiver(port=dead.port).start()  # the receiver is fixed; deliveries wait until a person re-enables
    time.sleep(2)
    assert back.got == []
    again = client.webhooks.update(stuck.id, extra_body={"enabled": True})
    assert again.status == "enabled" and again.disabled_reason is None
    wait_for(lambda: len({g["headers"]["webhook-id"] for g in back.got}) == len(jobs), 15, "the held events, at once")
    assert {e.data.id for e in back.events(client, stuck.signing_secret)} == {j.id for j in jobs}
    for r in (alive, back):
        r.stop()


def test_a_dead_endpoints_backlog_does_not_hide_others_deliveries(tmp_path: Any) -> None:
    """600 overdue deliveries to a hanging receiver sit ahead of one to a live receiver in the due order; one pass
    of the delivery loop still starts the live one (the dead one's slots are full, so its backlog is skipped)."""
    import asyncio

    from pydantic import SecretStr
    from stack import start_redis

    from sage_ft.jobs.model import now
    from sage_ft.settings import JobSettings
    from sage_ft.webhooks.store import Delivery, Endpoint
    from sage_ft_gateway.services.deliveries import Deliverer
    from sage_ft_gateway.settings import Settings, WebhookSettings
    from sage_ft_gateway.state import GatewayState

    redis_proc, url = start_redis(tmp_path)
    dead, alive = Hanging(), Receiver().start()
    try:
        key = Fernet.generate_key().decode()
        hooks = WebhookSettings(allow_http=True, allow_private_addresses=True, timeout_seconds=5)
        state = GatewayState(
            Settings(jobs=JobSettings(redis_url=SecretStr(url), secrets_key=SecretStr(key)), webhooks=hooks)
        )
        sealed = state.secrets.seal({"s": "whsec_" + "A" * 44}, "s")["s"]
        for ident, target in (("we_dead", f"http://127.0.0.1:{dead.port}/h"), ("we_live", alive.url)):
            state.webhooks.put(
                Endpoint(
                    id=ident,
                    tenant="local",
                    name=ident,
                    url=target,
                    event_types=list(JOB_EVENTS),
                    created_at=int(now()),
                    secret=sealed,
                    hint="h",
                )
            )
        body = '{"id":"evt_x"}'
        for i in range(600):
            state.webhooks.add_delivery(
                Delivery(
                    id=f"evt_{i}.we_dead",
                    endpoint_id="we_dead",
                    event_id=f"evt_{i}",
                    event_type=JOB_EVENTS[0],
                    body=body,
                    created_at=now() - 100,
                    next_attempt_at=now() - 100 + i * 0.01,
                )
            )
        state.webhooks.add_delivery(
            Delivery(
                id="evt_live.we_live",
                endpoint_id="we_live",
                event_id="evt_live",
                event_type=JOB_EVENTS[0],
                body=body,
                created_at=now(),
                next_attempt_at=now(),
            )
        )

        async def one_pass() -> None:
            deliverer = Deliverer(state)
            await deliverer.tick()
            assert deliverer.in_flight["we_dead"] == 2 and deliverer.in_flight["we_live"] == 1
            await asyncio.wait_for(asyncio.gather(*deliverer.tasks), 30)
            await deliverer.client.aclose()

        asyncio.run(one_pass())
        assert [g["headers"]["webhook-id"] for g in alive.got] == ["evt_live"]
        assert state.webhooks.get_delivery("evt_live.we_live").status == "delivered"  # type: ignore[union-attr]
    finally:
        dead.stop()
        alive.stop()
        redis_proc.stop()
