"""Published models, fetched into a local cache and checked before any engine sees them.

A part (``adapter/`` or ``merged/``) is cached under ``<cache>/<manifest sha256>/<part>``: a re-published model has
a new manifest and so a new key, and a cached copy is never trusted across manifests. Every file is verified
against the manifest's sha256 on the way in (``fetch_part``). On top of that, serving refuses weights that are not
safetensors and adapter configs with keys outside an allow-list (no ``auto_map``, no custom modules).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sage_ft.errors import SageFTError
from sage_ft.storage import IntegrityError, ObjectStore, fetch_part
from sage_ft.storage.manifest import Manifest
from sage_ft.storage.names import resolve_model_name
from sage_ft_serving.plan import Inputs, read_json


class ArtifactError(SageFTError):
    """A published artifact serving will not load (unsafe format, unexpected config keys)."""


# PEFT LoraConfig fields (peft 0.1x-0.2x); anything else (auto_map, custom module paths) is refused.
ADAPTER_CONFIG_KEYS = frozenset(
    {
        "alpha_pattern",
        "auto_mapping",
        "base_model_name_or_path",
        "bias",
        "corda_config",
        "eva_config",
        "exclude_modules",
        "fan_in_fan_out",
        "inference_mode",
        "init_lora_weights",
        "layer_replication",
        "layers_pattern",
        "layers_to_transform",
        "loftq_config",
        "lora_alpha",
        "lora_bias",
        "lora_dropout",
        "megatron_config",
        "megatron_core",
        "modules_to_save",
        "peft_type",
        "peft_version",
        "r",
        "rank_pattern",
        "revision",
        "target_modules",
        "target_parameters",
        "task_type",
        "trainable_token_indices",
        "use_dora",
        "use_qalora",
        "qalora_group_size",
        "use_rslora",
        "alora_invocation_tokens",
        "arrow_config",
        "ensure_weight_tying",
        "kasa_config",
        "lora_ga_config",
        "monteclora_config",
        "use_bdlora",
        "velora_config",
    }
)
_UNSAFE_WEIGHTS = re.compile(r"\.(bin|pt|pth|pkl|pickle|ckpt|h5|msgpack)$")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9]+")


@dataclass(frozen=True)
class Artifact:
    """One part of one published model, verified and on local disk."""

    manifest: Manifest
    digest: str  # part_digest: the cache key
    part: str
    path: Path

    @property
    def engine_name(self) -> str:
        """A name for this exact artifact inside an engine (an adapter name in vLLM): unique per publish."""
        return f"{_SAFE_NAME.sub('-', self.manifest.name).strip('-')[:48]}-{self.digest[:12]}"


def resolve(store: ObjectStore, name: str) -> Manifest | None:
    """The published model named (or aliased) ``name``; None if there is none."""
    return resolve_model_name(store, name)


def part_digest(manifest: Manifest, part: str) -> str:
    """sha256 over the manifest's entries for ``part``: the cache key. A merge adds ``merged/`` without changing
    the adapter's key; a re-publish with other bytes changes it."""
    entries = {k: v.sha256 for k, v in sorted(manifest.files.items()) if k.split("/", 1)[0] == part}
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()


def fetch(store: ObjectStore, manifest: Manifest, part: str, cache_dir: Path) -> Artifact:
    """The verified local copy of ``part``, downloading it (atomically, checked file by file) when not cached."""
    digest = part_digest(manifest, part)
    path = cache_dir / digest / part
    if not path.is_dir():
        fetch_part(store, manifest.name, part, path)
    check_safe(path, part)
    return Artifact(manifest=manifest, digest=digest, part=part, path=path)


def check_safe(path: Path, part: str) -> None:
    """Refuse pickled weights, and adapter configs with keys outside the allow-list."""
    for file in path.rglob("*"):
        if _UNSAFE_WEIGHTS.search(file.name):
            raise ArtifactError(f"{part}/{file.relative_to(path)}: only safetensors weights are loaded")
    if not any(f.suffix == ".safetensors" for f in path.rglob("*.safetensors")):
        raise ArtifactError(f"{part}/ holds no .safetensors weights")
    if part == "adapter":
        config_path = path / "adapter_config.json"
        if not config_path.is_file():
            raise ArtifactError("adapter/adapter_config.json is missing")
        config = json.loads(config_path.read_text(encoding="utf-8"))
        unknown = sorted(set(config) - ADAPTER_CONFIG_KEYS)
        if unknown:
            raise ArtifactError(f"adapter/adapter_config.json has keys serving does not allow: {', '.join(unknown)}")
        if config.get("auto_mapping"):
            raise ArtifactError("adapter/adapter_config.json names custom classes (auto_mapping); refused")
    elif part == "merged":
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        if "auto_map" in config:
            raise ArtifactError("merged/config.json asks for custom model code (auto_map); refused")


def small_json(store: ObjectStore, manifest: Manifest, rel: str) -> dict[str, Any] | None:
    """One small JSON file of a published model (``adapter/adapter_config.json``), checked against the manifest."""
    entry = manifest.files.get(rel)
    if entry is None:
        return None
    raw = store.get_bytes(manifest.key(rel))
    if hashlib.sha256(raw).hexdigest() != entry.sha256:
        raise IntegrityError(f"{rel}: sha256 differs from the manifest")
    try:
        data = json.loads(raw)
    except ValueError as err:
        raise ArtifactError(f"{rel} is not valid JSON: {err}") from None
    return data if isinstance(data, dict) else None


def plan_inputs(store: ObjectStore, manifest: Manifest, base_dir: Path | None) -> Inputs:
    """What the pre-deploy check reads: the base model's configs on local disk, and the adapter's small files."""
    weights = sum(f.stat().st_size for f in base_dir.glob("*.safetensors")) if base_dir else 0
    adapter_config = small_json(store, manifest, "adapter/adapter_config.json")
    training = manifest.training.get("max_length") if isinstance(manifest.training, dict) else None
    return Inputs(
        base_config=read_json(base_dir / "config.json") if base_dir else None,
        tokenizer_config=read_json(base_dir / "tokenizer_config.json") if base_dir else None,
        weights_bytes=weights,
        adapter_config=adapter_config,
        adapter_tokenizer=small_json(store, manifest, "adapter/tokenizer.json") if adapter_config else None,
        training_max_length=training if isinstance(training, int) else None,
    )
