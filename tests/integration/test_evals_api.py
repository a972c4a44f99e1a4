"""OpenAI's Evals API on the gateway, driven by the unchanged openai client: eval files, eval definitions (create,
retrieve, list, update, delete), named 4xx errors for bad graders, templates and schemas, and tenant scoping."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from stack import Stack, auth_env

pytestmark = pytest.mark.slow
KEYS = {"acme": "sk-acme-evals-1", "globex": "sk-globex-evals-2"}
SCHEMA = {
    "type": "object",
    "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
    "required": ["question", "answer"],
}
CHECK = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}
ROUGE = {
    "type": "text_similarity",
    "name": "rouge",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "evaluation_metric": "rouge_l",
}


@pytest.fixture(scope="module")
def stack(make_stack: Any) -> Stack:
    # python graders go to serving's sandbox, as under compose (here serving's is bubblewrap: the process launcher)
    st: Stack = make_stack(**auth_env(KEYS), SAGE_GRADER_PYTHON_SANDBOX="serving")
    st.start_serving()
    st.start_gateway()  # definitions need no worker
    return st


@pytest.fixture(scope="module")
def clients(stack: Stack) -> dict[str, openai.OpenAI]:
    return {t: openai.OpenAI(base_url=f"{stack.url}/v1", api_key=k, max_retries=0) for t, k in KEYS.items()}


def _create(client: openai.OpenAI, **kw: Any) -> Any:
    body: dict[str, Any] = {
        "name": "facts",
        "data_source_config": {"type": "custom", "item_schema": SCHEMA, "include_sample_schema": True},
        "testing_criteria": [CHECK, ROUGE],
    }
    body.update(kw)
    return client.evals.create(**body)


def _error(call: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(openai.APIStatusError) as exc:
        call()
    return exc.value.status_code, json.loads(exc.value.response.text)["error"]


def test_eval_files_are_checked_by_line(clients: dict[str, openai.OpenAI]) -> None:
    acme = clients["acme"]
    rows = "".join(json.dumps({"item": {"question": f"q{i}", "answer": f"a{i}"}}) + "\n" for i in range(3))
    good = acme.files.create(file=("facts.jsonl", rows.encode()), purpose="evals")
    assert good.status == "processed" and good.purpose == "evals" and good.model_extra["report"]["rows"] == 3
    status, err = _error(
        lambda: acme.files.create(file=("bad.jsonl", (rows + '{"question": "q"}\n').encode()), purpose="evals")
    )
    assert status == 400 and "line 4" in err["message"] and '"item"' in err["message"]
    status, err = _error(lambda: acme.fine_tuning.jobs.create(model="sage-tiny", training_file=good.id))
    assert status == 400 and err["param"] == "training_file" and "'evals'" in err["message"]


def test_evals_are_created_read_listed_updated_and_deleted(clients: dict[str, openai.OpenAI]) -> None:
    acme = clients["acme"]
    first = _create(acme, metadata={"team": "qa"})
    assert first.object == "eval" and first.id.startswith("eval-") and first.name == "facts"
    schema = first.data_source_config.schema_
    assert schema["properties"]["item"] == SCHEMA and "sample" in schema["properties"]
    graders = {c.name: c for c in first.testing_criteria}
    assert graders["exact"].type == "string_check" and graders["rouge"].pass_threshold == 0.5  # the default, filled
    second = _create(acme, name="more")
    assert acme.evals.retrieve(first.id).model_dump() == first.model_dump()
    ids = [e.id for e in acme.evals.list(order="asc").data]
    assert ids.index(first.id) < ids.index(second.id)
    page = acme.evals.list(order="asc", limit=1)
    assert page.has_more and len(page.data) == 1
    after = acme.evals.list(order="asc", after=page.data[0].id, limit=100).data
    assert [e.id for e in after] == ids[1:]
    renamed = acme.evals.update(first.id, name="renamed", metadata={"team": "ml"})
    assert renamed.name == "renamed" and renamed.metadata == {"team": "ml"}
    assert acme.evals.retrieve(first.id).name == "renamed"
    deleted = acme.evals.delete(second.id)
    assert deleted.deleted and deleted.eval_id == second.id
    with pytest.raises(openai.NotFoundError):
        acme.evals.retrieve(second.id)


@pytest.mark.parametrize(
    ("change", "param", "fragment"),
    [
        (
            {
                "testing_criteria": [
                    {"type": "label_model", "name": "x", "model": "m", "input": [], "labels": [], "passing_labels": []}
                ]
            },
            "testing_criteria.0.input",
            "at least 1 item",
        ),
        ({"testing_criteria": [{}]}, "testing_criteria.0.type", "give a type: string_check"),
        ({"testing_criteria": [{**CHECK, "type": "regex"}]}, "testing_criteria.0.type", "unsupported grader type"),
        (
            {"testing_criteria": [{"type": "python", "name": "p", "source": "def grade(s, i): return 1", "x": 1}]},
            "testing_criteria.0.x",
            "unknown parameter",
        ),
        ({"testing_criteria": [{**CHECK, "reference": "{{item.answr}}"}]}, "testing_criteria.0.reference", "answr"),
        (
            {"testing_criteria": [{**ROUGE, "evaluation_metric": "cosine"}]},
            "testing_criteria.0.evaluation_metric",
            "fuzzy_match",
        ),
        ({"testing_criteria": [CHECK, CHECK]}, "testing_criteria", "unique"),
        (
            {"data_source_config": {"type": "custom", "item_schema": {"type": "array"}}},
            "data_source_config.item_schema",
            "object",
        ),
        ({"data_source_config": {"type": "logs"}}, "data_source_config.type", "custom"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "16"),
    ],
)
def test_bad_evals_get_a_400_naming_the_field(
    clients: dict[str, openai.OpenAI], change: dict[str, Any], param: str, fragment: str
) -> None:
    status, err = _error(lambda: _create(clients["acme"], **change))
    assert status == 400 and err["param"] == param and fragment in err["message"], err


def test_another_tenant_sees_no_eval(clients: dict[str, openai.OpenAI]) -> None:
    acme, globex = clients["acme"], clients["globex"]
    mine = _create(acme)
    assert mine.id not in {e.id for e in globex.evals.list(limit=100).data}
    for call in (
        lambda: globex.evals.retrieve(mine.id),
        lambda: globex.evals.update(mine.id, name="x"),
        lambda: globex.evals.delete(mine.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert acme.evals.retrieve(mine.id).name == "facts"  # untouched


TEMPLATE = {"type": "template", "template": [{"role": "user", "content": "{{item.question}}"}]}


def _rows(n: int) -> list[dict[str, Any]]:
    return [{"item": {"question": f"q{i}", "answer": f"a{i}"}} for i in range(n)]


def _run(client: openai.OpenAI, eval_id: str, source: dict[str, Any], **kw: Any) -> Any:
    data_source = {
        "type": "completions",
        "model": "sage-tiny",
        "input_messages": TEMPLATE,
        "source": source,
        "sampling_params": {"temperature": 0, "max_completion_tokens": 8},
        **kw,
    }
    return client.evals.runs.create(eval_id, name="r", data_source=data_source)  # type: ignore[arg-type]


def test_runs_are_queued_read_listed_canceled_and_deleted(clients: dict[str, openai.OpenAI]) -> None:
    """No worker here: runs stay queued, which is what cancel acts on."""
    acme = clients["acme"]
    ev = _create(acme)
    run = _run(acme, ev.id, {"type": "file_content", "content": _rows(3)})
    assert run.object == "eval.run" and run.id.startswith("evalrun-") and run.status == "queued"
    assert run.model == "sage-tiny" and run.eval_id == ev.id and run.data_source.type == "completions"
    assert run.result_counts.total == 3 and run.result_counts.passed == 0
    assert [c.testing_criteria for c in run.per_testing_criteria_results] == ["exact", "rouge"]
    other = _run(acme, ev.id, {"type": "file_content", "content": _rows(1)})
    assert acme.evals.runs.retrieve(run.id, eval_id=ev.id).model_dump() == run.model_dump()
    assert [r.id for r in acme.evals.runs.list(ev.id, order="asc").data] == [run.id, other.id]
    assert [r.id for r in acme.evals.runs.list(ev.id, order="desc", limit=1).data] == [other.id]
    canceled = acme.evals.runs.cancel(run.id, eval_id=ev.id)
    assert canceled.status == "canceled" and acme.evals.runs.retrieve(run.id, eval_id=ev.id).status == "canceled"
    assert [r.id for r in acme.evals.runs.list(ev.id, status="canceled").data] == [run.id]
    assert acme.evals.runs.output_items.list(run.id, eval_id=ev.id).data == []
    deleted = acme.evals.runs.delete(run.id, eval_id=ev.id)
    assert deleted.deleted and deleted.run_id == run.id
    with pytest.raises(openai.NotFoundError):
        acme.evals.runs.retrieve(run.id, eval_id=ev.id)
    acme.evals.delete(ev.id)  # its runs go with it
    with pytest.raises(openai.NotFoundError):
        acme.evals.runs.retrieve(other.id, eval_id=ev.id)


@pytest.mark.parametrize(
    ("change", "param", "fragment"),
    [
        (
            {"input_messages": {"type": "template", "template": [{"role": "user", "content": "{{item.questn}}"}]}},
            "data_source.input_messages.template.0.content",
            "questn",
        ),
        (
            {"source": {"type": "file_content", "content": [{"item": {"question": "q"}}]}},
            "data_source.source.content",
            "'answer' is a required property",
        ),
        ({"model": "ft:sage-tiny:nope:0123456789abcdef01234567"}, "data_source.model", "does not exist"),
        ({"model": "sage-tni"}, "data_source.model", "no base model"),
        ({"sampling_params": {"temperature": 3}}, "data_source.sampling_params.temperature", "2"),
        ({"type": "responses"}, "data_source.type", "completions"),
    ],
)
def test_bad_runs_get_a_4xx_naming_the_field(
    clients: dict[str, openai.OpenAI], change: dict[str, Any], param: str, fragment: str
) -> None:
    acme = clients["acme"]
    ev = _create(acme)
    source = change.pop("source", {"type": "file_content", "content": _rows(2)})
    status, err = _error(lambda: _run(acme, ev.id, source, **change))
    assert status in (400, 404) and err["param"] == param and fragment in err["message"], err


def test_a_run_file_is_checked_against_the_item_schema_by_line(clients: dict[str, openai.OpenAI]) -> None:
    acme = clients["acme"]
    ev = _create(acme)
    lines = [{"item": {"question": "q0", "answer": "a0"}}, {"item": {"question": "q1"}}]
    bad = acme.files.create(
        file=("loose.jsonl", "".join(json.dumps(r) + "\n" for r in lines).encode()), purpose="evals"
    )
    status, err = _error(lambda: _run(acme, ev.id, {"type": "file_id", "id": bad.id}))
    assert status == 400 and err["param"] == "data_source.source.id", err
    assert "line 2" in err["message"] and "'answer' is a required property" in err["message"]
    train = acme.files.create(file=("t.jsonl", b'{"prompt": "a", "completion": "b"}\n'), purpose="fine-tune")
    status, err = _error(lambda: _run(acme, ev.id, {"type": "file_id", "id": train.id}))
    assert status == 400 and err["param"] == "data_source.source.id" and "'evals'" in err["message"]
    good = acme.files.create(file=("ok.jsonl", json.dumps(lines[0]).encode() + b"\n"), purpose="evals")
    assert _run(acme, ev.id, {"type": "file_id", "id": good.id}).result_counts.total == 1


def test_another_tenant_sees_no_run(clients: dict[str, openai.OpenAI]) -> None:
    acme, globex = clients["acme"], clients["globex"]
    ev = _create(acme)
    run = _run(acme, ev.id, {"type": "file_content", "content": _rows(1)})
    theirs = _create(globex)
    for call in (
        lambda: globex.evals.runs.retrieve(run.id, eval_id=ev.id),
        lambda: globex.evals.runs.list(ev.id),
        lambda: globex.evals.runs.cancel(run.id, eval_id=ev.id),
        lambda: globex.evals.runs.delete(run.id, eval_id=ev.id),
        lambda: globex.evals.runs.output_items.list(run.id, eval_id=ev.id),
        lambda: globex.evals.runs.retrieve(run.id, eval_id=theirs.id),
        lambda: globex.evals.runs.cancel(run.id, eval_id=theirs.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert acme.evals.runs.retrieve(run.id, eval_id=ev.id).status == "queued"  # untouched


def test_a_holdout_and_a_validation_file_are_one_too_many(clients: dict[str, openai.OpenAI]) -> None:
    acme = clients["acme"]
    row = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    data = acme.files.create(file=("t.jsonl", json.dumps(row).encode() + b"\n"), purpose="fine-tune")
    status, err = _error(
        lambda: acme.fine_tuning.jobs.create(
            model="sage-tiny", training_file=data.id, validation_file=data.id, extra_body={"eval": {"holdout": 0.1}}
        )
    )
    assert status == 400 and err["param"] == "eval.holdout", err
    status, err = _error(
        lambda: acme.fine_tuning.jobs.create(
            model="sage-tiny", training_file=data.id, extra_body={"eval": {"holdout": 0.7}}
        )
    )
    assert status == 400 and err["param"] == "eval.holdout", err


PYTHON = {
    "type": "python",
    "name": "py",
    "source": "def grade(sample, item):\n    return float(sample['output_text'].strip() == item['answer'])\n",
}
SCORE = {
    "type": "score_model",
    "name": "judge",
    "model": "sage-tiny",
    "input": [{"role": "user", "content": "Score 0-1: {{item.question}} -> {{sample.output_text}}"}],
    "range": [0, 1],
}
LABEL = {
    "type": "label_model",
    "name": "tone",
    "model": "sage-tiny",
    "input": [{"role": "user", "content": "{{sample.output_text}}"}],
    "labels": ["right", "wrong"],
    "passing_labels": ["right"],
}
MULTI = {
    "type": "multi",
    "name": "mix",
    "graders": {"exact": CHECK, "rouge": ROUGE},
    "calculate_output": "0.5 * exact + 0.5 * rouge",
}


def test_every_grader_type_is_a_testing_criterion(clients: dict[str, openai.OpenAI]) -> None:
    ev = _create(clients["acme"], testing_criteria=[CHECK, ROUGE, PYTHON, SCORE, LABEL, MULTI])
    types = [c.type for c in clients["acme"].evals.retrieve(ev.id).testing_criteria]
    assert types == ["string_check", "text_similarity", "python", "score_model", "label_model", "multi"]


def test_graders_run_and_validate_through_the_unchanged_client(clients: dict[str, openai.OpenAI]) -> None:
    graders = clients["acme"].fine_tuning.alpha.graders
    item = {"question": "Capital of Oslandia?", "answer": "Brightport"}
    for grader, right, wrong in ((CHECK, 1.0, 0.0), (PYTHON, 1.0, 0.0), (ROUGE, 1.0, 0.0)):
        assert graders.validate(grader=grader).grader.type == grader["type"]  # type: ignore[union-attr]
        hit = graders.run(grader=grader, model_sample="Brightport", item=item)
        miss = graders.run(grader=grader, model_sample="Dunmere", item=item)
        assert (hit.reward, miss.reward) == (right, wrong), (grader["type"], hit, miss)
        assert hit.metadata.type == grader["type"] and hit.metadata.name == grader["name"]
        assert not any(v for k, v in hit.metadata.errors.model_dump().items() if k.endswith("error"))
    mixed = graders.run(grader=MULTI, model_sample="Brightport harbour", item=item)
    assert mixed.sub_rewards["exact"] == 0.0 and 0 < mixed.sub_rewards["rouge"] < 1
    assert mixed.reward == pytest.approx(0.5 * mixed.sub_rewards["rouge"])
    crash = graders.run(
        grader={**PYTHON, "source": "def grade(sample, item):\n    return item['missing']\n"},
        model_sample="x",
        item=item,
    )
    assert crash.reward == 0 and crash.metadata.errors.python_grader_runtime_error
    assert crash.metadata.errors.python_grader_runtime_error_details == "KeyError: 'missing'"
    assert crash.metadata.execution_time > 0


@pytest.mark.parametrize(
    ("grader", "param", "fragment"),
    [
        ({**CHECK, "reference": "{{itm.answer}}"}, "grader.reference", "itm.answer"),
        ({**PYTHON, "image_tag": "evil:latest"}, "grader.image_tag", "not an allowed sandbox image"),
        ({**MULTI, "calculate_output": "exact + __import__('os')"}, "grader", "only these functions"),
        ({"type": "multi", "name": "m", "graders": {"a": MULTI}, "calculate_output": "a"}, "grader.graders.a.type", ""),
        ({**SCORE, "model": "sage-tiyn"}, "grader.model", "sage-tiny"),
    ],
)
def test_bad_graders_are_a_4xx_naming_the_field(
    clients: dict[str, openai.OpenAI], grader: dict[str, Any], param: str, fragment: str
) -> None:
    graders = clients["acme"].fine_tuning.alpha.graders
    for call in (lambda: graders.validate(grader=grader), lambda: graders.run(grader=grader, model_sample="x")):
        status, err = _error(call)
        assert status in (400, 404) and err["param"] == param and fragment in err["message"], err


def test_with_serving_down_a_python_grader_is_a_grader_error_naming_it(
    stack: Stack, clients: dict[str, openai.OpenAI]
) -> None:
    """The gateway sends python graders to serving: without it the answer is a grader error, not a 500 (and so
    every python answer above came through serving's sandbox)."""
    assert stack.serving is not None
    stack.serving.stop()
    try:
        down = clients["acme"].fine_tuning.alpha.graders.run(grader=PYTHON, model_sample="Brightport", item={})
        assert down.reward == 0 and down.metadata.errors.python_grader_server_error
        assert down.metadata.errors.python_grader_server_error_type == "sandbox_unavailable"
        assert not down.metadata.errors.python_grader_runtime_error  # the grader itself is fine
    finally:
        stack.start_serving()
