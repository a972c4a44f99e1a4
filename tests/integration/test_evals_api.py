"""OpenAI's Evals API on the gateway, driven by the unchanged openai client: eval files, eval definitions (create,
retrieve, list, update, delete), named 4xx errors for bad graders, templates and schemas, and tenant scoping."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import openai
import pytest
from stack import Stack

pytestmark = pytest.mark.slow
KEYS = {"acme": "sk-acme-evals-1", "globex": "sk-globex-evals-2"}
SCHEMA = {"type": "object", "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
          "required": ["question", "answer"]}  # fmt: skip
CHECK = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
         "operation": "eq"}  # fmt: skip
ROUGE = {"type": "text_similarity", "name": "rouge", "input": "{{sample.output_text}}",
         "reference": "{{item.answer}}", "evaluation_metric": "rouge_l"}  # fmt: skip


@pytest.fixture(scope="module")
def stack(make_stack: Any) -> Stack:
    table = ",".join(f"{t}:{hashlib.sha256(k.encode()).hexdigest()}" for t, k in KEYS.items())
    st: Stack = make_stack(SAGE_GATEWAY_AUTH_ENABLED="true", SAGE_GATEWAY_API_KEYS=table)
    st.start_gateway()  # definitions need no worker
    return st


@pytest.fixture(scope="module")
def clients(stack: Stack) -> dict[str, openai.OpenAI]:
    return {t: openai.OpenAI(base_url=f"{stack.url}/v1", api_key=k, max_retries=0) for t, k in KEYS.items()}


def _create(client: openai.OpenAI, **kw: Any) -> Any:
    body: dict[str, Any] = {"name": "facts", "data_source_config": {"type": "custom", "item_schema": SCHEMA,
                            "include_sample_schema": True}, "testing_criteria": [CHECK, ROUGE]}  # fmt: skip
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
    status, err = _error(lambda: acme.files.create(file=("bad.jsonl", (rows + '{"question": "q"}\n').encode()),
                                                   purpose="evals"))  # fmt: skip
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
        ({"testing_criteria": [{"type": "label_model", "name": "x", "model": "m", "input": [], "labels": [],
                                "passing_labels": []}]}, "testing_criteria.0.type", "label_model"),
        ({"testing_criteria": [{**CHECK, "reference": "{{item.answr}}"}]}, "testing_criteria.0.reference", "answr"),
        ({"testing_criteria": [{**ROUGE, "evaluation_metric": "cosine"}]}, "testing_criteria.0.evaluation_metric",
         "fuzzy_match"),
        ({"testing_criteria": [CHECK, CHECK]}, "testing_criteria", "unique"),
        ({"data_source_config": {"type": "custom", "item_schema": {"type": "array"}}},
         "data_source_config.item_schema", "object"),
        ({"data_source_config": {"type": "logs"}}, "data_source_config.type", "custom"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "16"),
    ],
)  # fmt: skip
def test_bad_evals_get_a_400_naming_the_field(clients: dict[str, openai.OpenAI], change: dict[str, Any], param: str,
                                              fragment: str) -> None:  # fmt: skip
    status, err = _error(lambda: _create(clients["acme"], **change))
    assert status == 400 and err["param"] == param and fragment in err["message"], err


def test_another_tenant_sees_no_eval(clients: dict[str, openai.OpenAI]) -> None:
    acme, globex = clients["acme"], clients["globex"]
    mine = _create(acme)
    assert mine.id not in {e.id for e in globex.evals.list(limit=100).data}
    for call in (lambda: globex.evals.retrieve(mine.id), lambda: globex.evals.update(mine.id, name="x"),
                 lambda: globex.evals.delete(mine.id)):  # fmt: skip
        with pytest.raises(openai.NotFoundError):
            call()
    assert acme.evals.retrieve(mine.id).name == "facts"  # untouched
