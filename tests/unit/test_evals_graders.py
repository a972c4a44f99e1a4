"""Eval templates and graders: what OpenAI's string_check and text_similarity compute, and named errors."""

from __future__ import annotations

from typing import Any

import pytest

from sage_ft.errors import ConfigError
from sage_ft.evals import parse_criteria
from sage_ft.graders import Grading, check_template, render, sample_of, variables
from sage_ft.graders.similarity import similarity

ITEM = {"question": "Capital of Oslandia?", "answer": "Brightport", "tags": ["geo"], "meta": {"level": 2}}
PROPS = {"question", "answer", "tags", "meta"}


def test_templates_render_items_and_samples() -> None:
    assert variables("Q: {{item.question}} A: {{ sample.output_text }}") == ["item.question", "sample.output_text"]
    assert render("{{item.question}} / {{item.meta.level}} / {{item.tags}}", ITEM) == (
        'Capital of Oslandia? / 2 / ["geo"]'
    )
    assert render("{{sample.output_text}}!", ITEM, {"output_text": "Brightport"}) == "Brightport!"
    with pytest.raises(KeyError):
        render("{{item.missing}}", ITEM)


@pytest.mark.parametrize(
    ("template", "sample", "fragment"),
    [
        ("{{item.nope}}", True, "not a field of item_schema"),
        ("{{ctx.x}}", True, "unknown template variable"),
        ("{{sample.output_text}}", False, "the sample does not exist yet"),
        ("{{item.question", True, "malformed"),
        ("{{sample.logprobs}}", True, "unknown template variable"),
    ],
)
def test_bad_templates_name_the_parameter_and_variable(template: str, sample: bool, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        check_template(template, "input_messages.template.0.content", PROPS, sample=sample)
    assert exc.value.param == "input_messages.template.0.content" and fragment in str(exc.value)


def _check(op: str, output: str) -> bool:
    (criterion,) = parse_criteria(
        [
            {
                "type": "string_check",
                "name": "c",
                "input": "{{sample.output_text}}",
                "reference": "{{item.answer}}",
                "operation": op,
            }
        ],
        PROPS,
    )
    return Grading().run(criterion, sample_of(output), ITEM).passed


@pytest.mark.parametrize(
    ("op", "output", "passed"),
    [
        ("eq", "Brightport", True),
        ("eq", "brightport", False),
        ("ne", "Dunmere", True),
        ("ne", "Brightport", False),
        ("like", "It is Brightport.", True),
        ("like", "it is brightport", False),
        ("ilike", "it is BRIGHTPORT", True),
        ("ilike", "Dunmere", False),
    ],
)
def test_string_check_operations(op: str, output: str, passed: bool) -> None:
    assert _check(op, output) is passed


@pytest.mark.parametrize("metric", ["fuzzy_match", "bleu", "rouge_1", "rouge_2", "rouge_l"])
def test_similarity_is_one_for_equal_text_and_orders_closeness(metric: str) -> None:
    ref = "the quick brown fox jumps over the lazy dog"
    same, close, far = (
        similarity(metric, t, ref)
        for t in (ref, "the quick brown fox jumped over a lazy dog", "an entirely unrelated sentence here")
    )
    assert same == pytest.approx(1.0) and far < close < same and far >= 0


def test_text_similarity_passes_at_its_threshold() -> None:
    raw = [
        {
            "type": "text_similarity",
            "name": "r",
            "input": "{{sample.output_text}}",
            "reference": "{{item.answer}}",
            "evaluation_metric": "rouge_l",
            "pass_threshold": 0.6,
        }
    ]
    (criterion,) = parse_criteria(raw, PROPS)
    assert Grading().run(criterion, sample_of("red fox jumps"), {"answer": "red fox jumps"}).passed
    low = Grading().run(criterion, sample_of("a blue owl"), {"answer": "red fox jumps"})
    assert not low.passed and low.reward == 0.0 and low.name == "r"


@pytest.mark.parametrize(
    ("raw", "param", "fragment"),
    [
        ([{"type": "regex", "name": "x"}], "testing_criteria.0.type", "unsupported grader type 'regex'"),
        ([{"name": "x"}], "testing_criteria.0.type", "give a type: string_check, text_similarity, python"),
        ([{"type": "label_model", "name": "x"}], "testing_criteria.0.model", "Field required"),
        ([{"type": "python", "name": "x", "source": ""}], "testing_criteria.0.source", "at least 1 character"),
        (
            [{"type": "text_similarity", "name": "x", "input": "a", "reference": "b", "evaluation_metric": "meteor"}],
            "testing_criteria.0.evaluation_metric",
            "supported: fuzzy_match",
        ),
        (
            [{"type": "string_check", "name": "x", "input": "a", "reference": "b", "operation": "regex"}],
            "testing_criteria.0.operation",
            "eq",
        ),
        (
            [{"type": "string_check", "name": "x", "input": "{{item.answr}}", "reference": "b", "operation": "eq"}],
            "testing_criteria.0.input",
            "answr",
        ),
        (
            [{"type": "string_check", "name": "x", "input": "a", "reference": "b", "operation": "eq", "extra": 1}],
            "testing_criteria.0.extra",
            "unknown parameter",
        ),
        ([], "testing_criteria", "at least one"),
    ],
)
def test_bad_criteria_name_the_field(raw: Any, param: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_criteria(raw, PROPS)
    assert exc.value.param == param and fragment in str(exc.value), str(exc.value)


SCHEMA = {
    "type": "object",
    "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
    "required": ["question", "answer"],
}


def test_item_schema_is_checked_and_gives_the_fields() -> None:
    from sage_ft.evals import check_item_schema

    assert check_item_schema(SCHEMA) == {"question", "answer"}
    assert check_item_schema({"type": "object"}) is None
    for bad, fragment in (
        ({"type": "array"}, "must be 'object'"),
        ({"type": "objekt"}, "not a valid JSON Schema"),
        ([1], "JSON Schema object"),
    ):
        with pytest.raises(ConfigError) as exc:
            check_item_schema(bad)
        assert exc.value.param == "data_source_config.item_schema" and fragment in str(exc.value)


def test_eval_rows_are_checked_by_line_and_field(tmp_path: Any) -> None:
    from sage_ft.errors import DataError
    from sage_ft.evals import load_rows, rows_from_content

    good = tmp_path / "good.jsonl"
    good.write_text('{"item": {"question": "q", "answer": "a"}}\n\n{"item": {"question": "r", "answer": "b"}}\n')
    assert [r["item"]["answer"] for r in load_rows(good, SCHEMA)] == ["a", "b"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"item": {"question": "q", "answer": "a"}}\n{"item": {"question": "q"}}\n{"item": 3}\n'
        '{"question": "q"}\nnot json\n{"item": {"question": 5, "answer": "a"}, "extra": 1}\n'
        '{"item": {"question": 5, "answer": "a"}}\n'
    )
    with pytest.raises(DataError) as exc:
        load_rows(bad, SCHEMA)
    text = str(exc.value)
    for fragment in (
        "line 2: item: 'answer' is a required property",
        "line 3: each row is an object",
        "line 4: each row",
        "line 5: not valid JSON",
        "line 6: unknown key(s) extra",
        "line 7: item.question: 5 is not of type 'string'",
    ):
        assert fragment in text, text
    assert "line 1" not in text
    assert rows_from_content([{"item": {"question": "q", "answer": "a"}}], SCHEMA, "data_source.source.content")
    with pytest.raises(ConfigError) as cexc:
        rows_from_content([{"item": {"question": "q"}}], SCHEMA, "data_source.source.content")
    assert cexc.value.param == "data_source.source.content" and "data_source.source.content.0: item" in str(cexc.value)


def _run_body(**change: Any) -> dict[str, Any]:
    source: dict[str, Any] = {
        "type": "completions",
        "model": "ft:sage-tiny:x:1",
        "input_messages": {
            "type": "template",
            "template": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "{{item.question}}"},
            ],
        },
        "source": {
            "type": "file_content",
            "content": [
                {"item": {"question": "Capital of Oslandia?", "answer": "Brightport"}},
                {"item": {"question": "Capital of Vetria?", "answer": "Lowmere"}},
            ],
        },
    }
    source.update(change)
    return {"name": "r", "data_source": source}


def test_a_run_renders_prompts_grades_items_and_counts() -> None:
    from sage_ft.evals.runs import criteria_of, grade_item, parse_run, prompt, summarize

    request = parse_run(_run_body(), SCHEMA)
    rows = request.data_source.source.content  # type: ignore[union-attr]
    raw = [
        {
            "type": "string_check",
            "name": "exact",
            "input": "{{sample.output_text}}",
            "reference": "{{item.answer}}",
            "operation": "eq",
        },
        {
            "type": "text_similarity",
            "name": "rouge",
            "input": "{{sample.output_text}}",
            "reference": "{{item.answer}}",
            "evaluation_metric": "rouge_l",
            "pass_threshold": 0.5,
        },
    ]
    criteria = criteria_of(raw)
    messages = prompt(request, rows[0]["item"])
    assert messages == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Capital of Oslandia?"},
    ]
    grading = Grading()
    good = grade_item(grading, criteria, 0, rows[0]["item"], messages, "Brightport", "m")
    bad = grade_item(grading, criteria, 1, rows[1]["item"], prompt(request, rows[1]["item"]), "Dunmere", "m")
    broken = grade_item(grading, criteria, 2, rows[1]["item"], [], None, "m", error="server down")
    assert (good.status, bad.status, broken.status) == ("pass", "fail", "error")
    assert good.output_text == "Brightport" and [r.passed for r in bad.results] == [False, False]
    summary = summarize(raw, [good, bad, broken], total=4)
    assert summary["result_counts"] == {"total": 4, "errored": 1, "failed": 1, "passed": 1}
    assert summary["per_testing_criteria_results"] == [
        {"testing_criteria": "exact", "passed": 1, "failed": 1},
        {"testing_criteria": "rouge", "passed": 1, "failed": 1},
    ]


@pytest.mark.parametrize(
    ("change", "param", "fragment"),
    [
        (
            {"input_messages": {"type": "template", "template": [{"role": "user", "content": "{{item.qestion}}"}]}},
            "data_source.input_messages.template.0.content",
            "qestion",
        ),
        (
            {
                "input_messages": {
                    "type": "template",
                    "template": [{"role": "user", "content": "{{sample.output_text}}"}],
                }
            },
            "data_source.input_messages.template.0.content",
            "does not exist yet",
        ),
        (
            {"input_messages": {"type": "item_reference", "item_reference": "item.msgs"}},
            "data_source.input_messages.type",
            "supported",
        ),
        (
            {"source": {"type": "file_content", "content": [{"item": {"question": "q"}}]}},
            "data_source.source.content",
            "'answer' is a required property",
        ),
        ({"source": {"type": "stored_completions"}}, "data_source.source", "file_id"),
        ({"sampling_params": {"temperature": 3}}, "data_source.sampling_params.temperature", "less than"),
    ],
)
def test_bad_runs_name_the_field(change: dict[str, Any], param: str, fragment: str) -> None:
    from sage_ft.evals.runs import parse_run

    with pytest.raises(ConfigError) as exc:
        parse_run(_run_body(**change), SCHEMA)
    assert exc.value.param.startswith(param) and fragment in str(exc.value), (exc.value.param, str(exc.value))
