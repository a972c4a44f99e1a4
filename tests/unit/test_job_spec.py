"""The job request: OpenAI's body plus extensions, validated with the offending parameter named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sage_ft.errors import ConfigError
from sage_ft.jobs.model import fine_tuned_model_name
from sage_ft.jobs.spec import build_training_config, parse_request
from sage_ft.storage.manifest import check_model_name


def test_openai_body_maps_to_a_training_config() -> None:
    req = parse_request(
        {
            "model": "Qwen/Qwen2.5-Coder-1.5B-Instruct",
            "training_file": "file-1",
            "seed": 3,
            "method": {
                "type": "supervised",
                "supervised": {"hyperparameters": {"n_epochs": 4, "batch_size": 8, "learning_rate_multiplier": 0.5}},
            },
        }
    )
    config, shown = build_training_config(req, preset="cpu", data_path="d.jsonl", output_dir="/o")
    assert (config.num_train_epochs, config.per_device_train_batch_size, config.seed) == (4, 8, 3)
    assert config.learning_rate == pytest.approx(2e-4 * 0.5)
    assert shown == {
        "n_epochs": 4,
        "batch_size": 8,
        "learning_rate_multiplier": 0.5,
        "learning_rate": config.learning_rate,
        "preset": "cpu",
    }


def test_extensions_and_the_deprecated_hyperparameters_form() -> None:
    req = parse_request(
        {
            "model": "local-model",
            "hyperparameters": {"n_epochs": "auto", "learning_rate_multiplier": 2},
            "learning_rate": 1e-3,
            "quantization": "4bit",
            "packing": True,
            "max_length": 256,
            "lora": {"r": 32},
            "name": "code",
            "task": "code",
        }
    )
    config, _ = build_training_config(req, preset="cpu", data_path=None, output_dir="/o")
    assert config.learning_rate == 1e-3  # absolute learning_rate wins over the multiplier
    assert config.load_in_4bit and not config.load_in_8bit and config.packing and config.max_length == 256
    assert config.lora.r == 32 and config.num_train_epochs == 3
    assert req.is_local_model() and req.name == "code"


def test_wandb_integration_sets_project_entity_name_tags_and_a_stable_run_id() -> None:
    body = {
        "model": "m",
        "integrations": [{"type": "wandb", "wandb": {"project": "p", "entity": "team", "tags": ["a", "b"]}}],
    }
    config, _ = build_training_config(
        parse_request(body), preset="cpu", data_path=None, output_dir="/o", run_id="ftjob-1"
    )
    assert config.report_to == ["tensorboard", "wandb"]
    assert (config.wandb_project, config.wandb_entity, config.wandb_tags) == ("p", "team", ["a", "b"])
    assert config.run_name == "ftjob-1" and config.wandb_run_id == "ftjob-1"  # a retried attempt continues the run
    body["integrations"][0]["wandb"]["name"] = "my-run"  # type: ignore[index]
    config, _ = build_training_config(parse_request(body), preset="cpu", data_path=None, output_dir="/o")
    assert config.run_name == "my-run"
    plain, _ = build_training_config(parse_request({"model": "m"}), preset="cpu", data_path=None, output_dir="/o")
    assert plain.report_to == ["tensorboard"] and plain.wandb_project is None


def test_any_training_config_field_through_config_and_presets_keep_their_epochs() -> None:
    req = parse_request(
        {"model": "m", "config": {"warmup_ratio": 0.1, "gradient_checkpointing": True, "lora": {"r": 4}}}
    )
    config, _ = build_training_config(req, preset="tiny", data_path=None, output_dir="/o")
    assert config.warmup_ratio == 0.1 and config.gradient_checkpointing and config.lora.r == 4
    assert config.num_train_epochs == 100 and config.learning_rate == 3e-3  # n_epochs auto: the preset's own
    with pytest.raises(ConfigError) as exc:
        parse_request({"model": "m", "config": {"data_path": "/etc/passwd"}})
    assert exc.value.param == "config" and "data_path" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        build_training_config(
            parse_request({"model": "m", "config": {"warmup_ratio": 2}}), preset="cpu", data_path=None, output_dir="/o"
        )
    assert exc.value.param == "config.warmup_ratio"


RFT = {"model": "m", "training_file": "file-1"}
CHECK = {
    "grader": {
        "type": "string_check",
        "name": "v",
        "input": "{{sample.output_json.verdict}}",
        "reference": "yes",
        "operation": "eq",
    }
}
FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "verdict",
        "strict": True,
        "schema": {"type": "object", "properties": {"verdict": {"enum": ["yes", "no"]}}, "required": ["verdict"]},
    },
}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "http://x.y/z"}, "model"),
        ({"model": "a/b/c"}, "model"),
        ({"model": "../x"}, "model"),
        ({"model": "m", "hyperparameters": {"n_epochs": 51}}, "hyperparameters.n_epochs"),
        ({"model": "m", "method": {"type": "distillation"}}, "method.type"),
        ({"model": "m", "method": {"type": "reinforcement"}}, "method.reinforcement"),
        (
            RFT | {"method": {"type": "reinforcement", "reinforcement": {**CHECK, "response_format": {"type": "xml"}}}},
            "method.reinforcement.response_format.type",
        ),
        (
            RFT
            | {
                "method": {
                    "type": "reinforcement",
                    "reinforcement": {
                        **CHECK,
                        "response_format": FORMAT | {"json_schema": {"name": "v", "schema": {"type": "objekt"}}},
                    },
                }
            },
            "method.reinforcement.response_format.json_schema.schema",
        ),
        (
            RFT
            | {
                "method": {
                    "type": "reinforcement",
                    "reinforcement": {**CHECK, "response_format": {"type": "json_schema"}},
                }
            },
            "method.reinforcement.response_format",
        ),
        (
            {"model": "m", "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 2.5}}}},
            "method.dpo.hyperparameters.beta",
        ),
        (
            {"model": "m", "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}},
            "method.dpo.hyperparameters.beta",
        ),
        ({"model": "m", "method": {"type": "supervised", "dpo": {}}}, "method"),
        ({"model": "m", "from_checkpoint": "ckpt-1"}, "from_checkpoint"),
        ({"model": "ft:"}, "model"),
        ({"model": "m", "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"model": "m", "name": "ft:abc"}, "name"),
        ({"model": "m", "integrations": [{"type": "slack"}]}, "integrations.0.type"),
        ({"model": "m", "unknown_thing": 1}, "unknown_thing"),
        ({"model": "m", "config": {"no_such_field": 1}}, "config.no_such_field"),
        ({"model": "m", "config": {"report_to": ["slack"]}}, "config.report_to.0"),
        ({}, "model"),
    ],
)
def test_bad_requests_name_the_parameter(body: dict, param: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_request(body)
    assert exc.value.param == param
    assert str(exc.value).startswith(param)


def test_fine_tuned_names_are_valid_store_names() -> None:
    name = fine_tuned_model_name("Qwen/Qwen2.5-Coder-1.5B-Instruct", "my-suffix", "ftjob-0123abcd")
    assert name == "ft:Qwen2.5-Coder-1.5B-Instruct:my-suffix:0123abcd"
    assert check_model_name(name) == name


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"config": {"num_train_epochs": -1}}, "config.num_train_epochs"),
        ({"config": {"lora": {"r": 0}}}, "config.lora.r"),
        ({"config": {"lora": {"lora_dropout": 1.5}}}, "config.lora.lora_dropout"),
        ({"lora": {"r": 0}}, "lora.r"),
        ({"config": {"learning_rate": -1.0}}, "config.learning_rate"),
        ({"config": {"save_steps": 0}}, "config.save_steps"),
    ],
)
def test_a_config_the_request_parses_but_training_refuses_names_its_exact_field(body: dict, param: str) -> None:
    """The parameter comes from pydantic's error location, not from searching the message text."""
    with pytest.raises(ConfigError) as exc:
        build_training_config(parse_request({"model": "m", **body}), preset="cpu", data_path=None, output_dir="/o")
    assert exc.value.param == param, str(exc.value)


def test_method_type_error_lists_the_supported_types() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_request({"model": "m", "method": {"type": "distillation"}})
    assert "supervised" in str(exc.value) and "dpo" in str(exc.value) and "reinforcement" in str(exc.value)


@pytest.mark.parametrize(("beta", "shown"), [("auto", 0.1), (0.5, 0.5), (2, 2.0)])
def test_dpo_resolves_beta_and_the_presets_learning_rate(beta: object, shown: float, tmp_path: Path) -> None:
    from sage_ft.presets import PresetConfigs

    request = parse_request(
        {
            "model": "ft:sage-tiny:x:abc",
            "method": {
                "type": "dpo",
                "dpo": {
                    "hyperparameters": {
                        "beta": beta,
                        "n_epochs": 2,
                        "batch_size": "auto",
                        "learning_rate_multiplier": "auto",
                    }
                },
            },
        }
    )
    (tmp_path / "adapter_config.json").write_text('{"r": 32, "lora_alpha": 64, "target_modules": ["v_proj", "q_proj"]}')
    config, hyper = build_training_config(
        request, preset="cpu", data_path=None, output_dir="/o", base_model="sage-tiny", init_adapter=str(tmp_path)
    )
    assert (config.lora.r, config.lora.lora_alpha, config.lora.target_modules) == (32, 64, ["q_proj", "v_proj"])
    assert config.method == "dpo" and config.dpo.beta == shown and hyper["beta"] == shown
    assert config.model_name == "sage-tiny" and config.init_adapter == str(tmp_path) and config.num_train_epochs == 2
    assert config.learning_rate == pytest.approx(PresetConfigs.get("cpu").learning_rate)
    assert config.dpo.sft_weight == 1.0  # RPO by default: the guard against likelihood displacement
    sft, hyper_sft = build_training_config(
        parse_request({"model": "sage-tiny"}), preset="cpu", data_path=None, output_dir="/o"
    )
    assert sft.method == "sft" and "beta" not in hyper_sft
    for fixed in ("method", "init_adapter"):
        with pytest.raises(ConfigError) as exc:
            parse_request({"model": "m", "config": {fixed: "dpo"}})
        assert exc.value.param == "config" and fixed in str(exc.value)


@pytest.mark.parametrize(
    ("pairs", "epochs", "batch"),
    [(8, 25, 1), (40, 5, 1), (500, 3, 1), (2000, 3, 4), (20000, 1, 4)],
)
def test_dpo_auto_epochs_and_batch_come_from_the_number_of_pairs(
    pairs: int, epochs: int, batch: int, tmp_path: Path
) -> None:
    data = tmp_path / "pairs.jsonl"
    row = {"prompt": "q", "chosen": "a", "rejected": "b"}
    data.write_text((json.dumps(row) + "\n") * pairs)
    auto = parse_request({"model": "m", "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}}})
    config, hyper = build_training_config(auto, preset="cpu", data_path=str(data), output_dir="/o")
    assert (config.num_train_epochs, config.per_device_train_batch_size) == (epochs, batch)
    assert (hyper["n_epochs"], hyper["batch_size"]) == (epochs, batch)
    given = parse_request(
        {"model": "m", "method": {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 2, "batch_size": 3}}}}
    )
    config, _ = build_training_config(given, preset="cpu", data_path=str(data), output_dir="/o")
    assert (config.num_train_epochs, config.per_device_train_batch_size) == (2, 3)  # what the user set stays


def test_the_job_echoes_its_method_and_lineage() -> None:
    from sage_ft.jobs.model import Job
    from sage_ft_gateway.protocol.jobs import FineTuningJob

    hyper = {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 1.0, "beta": 0.2}
    job = Job(
        id="ftjob-00ff",
        tenant="t",
        model="ft:sage-tiny:a:0abc",
        base_model="sage-tiny",
        parent_model="ft:sage-tiny:a:0abc",
        spec={"method": {"type": "dpo"}},
        hyperparameters=hyper,
    )
    shown = FineTuningJob.from_job(job).model_dump(mode="json")
    assert shown["method"] == {
        "type": "dpo",
        "dpo": {"hyperparameters": {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 1.0, "beta": 0.2}},
    }
    assert shown["model"] == "ft:sage-tiny:a:0abc" and shown["base_model"] == "sage-tiny"
    assert fine_tuned_model_name(job.root_model, "b", job.id) == "ft:sage-tiny:b:00ff"
    plain = FineTuningJob.from_job(Job(id="ftjob-01", tenant="t", model="sage-tiny")).model_dump(mode="json")
    assert plain["method"]["type"] == "supervised" and "beta" not in plain["method"]["supervised"]["hyperparameters"]


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ({"type": "object", "properties": {"v": {"not": {"type": "string"}}}}, '"not"'),
        ({"type": "object", "properties": {"v": {"type": "string", "pattern": "(?=a)b"}}}, "look-around"),
    ],
    ids=["not", "look-around"],
)
def test_an_rft_schema_that_sampling_cannot_be_held_to_is_a_400(schema: dict, fragment: str) -> None:
    """Valid JSON Schema that the sampling grammar (llguidance) cannot enforce is refused at creation, naming the
    field and the reason, rather than accepted and sampled unconstrained."""
    bad = FORMAT | {"json_schema": {"name": "v", "schema": schema}}
    with pytest.raises(ConfigError) as exc:
        parse_request(RFT | {"method": {"type": "reinforcement", "reinforcement": {**CHECK, "response_format": bad}}})
    assert exc.value.param == "method.reinforcement.response_format.json_schema.schema", exc.value.param
    assert "cannot be enforced while sampling" in str(exc.value) and fragment in str(exc.value), str(exc.value)


def test_an_rft_response_format_reaches_the_trainer_and_decides_what_output_json_is() -> None:
    """OpenAI's ``response_format`` travels to the trainer's config as given; under it, only an answer that is a JSON
    object matching the schema has ``sample.output_json``, so a grader reading it scores the format too."""
    from sage_ft.graders import Grading, parse_grader, sample_of

    body = RFT | {"method": {"type": "reinforcement", "reinforcement": {**CHECK, "response_format": FORMAT}}}
    cfg, _ = build_training_config(parse_request(body), preset="cpu", data_path="d.jsonl", output_dir="/o")
    assert cfg.rft.response_format == FORMAT
    echoed = parse_request(body).model_dump(mode="json", exclude_none=True)  # what the job object shows
    assert echoed["method"]["reinforcement"]["response_format"] == FORMAT  # OpenAI's "schema", not a field name
    grader = parse_grader(CHECK["grader"], "grader")
    rewards = {}
    for answer in ('{"verdict": "yes"}', '{"verdict": "maybe"}', '["yes"]', "yes"):
        result = Grading().run(grader, sample_of(answer, cfg.rft.response_format), {})
        rewards[answer] = (result.reward, " ".join(result.errors.details))
    assert rewards['{"verdict": "yes"}'] == (1.0, "")
    for answer in ('{"verdict": "maybe"}', '["yes"]', "yes"):  # off-schema, not an object, not JSON
        assert rewards[answer][0] == 0.0 and "response format" in rewards[answer][1], rewards
    assert sample_of('["yes"]')["output_json"] == ["yes"]  # without a response format any JSON is output_json
    assert sample_of('{"verdict": "maybe"}', {"type": "json_object"})["output_json"] == {"verdict": "maybe"}
