"""Base models served by name: ``model="sage-tiny"`` answers from the base model itself.

Every tenant may ask a base model installed under the models root; it is what its fine-tunes are compared with (eval
runs, ``sage-ft eval --against``). With vLLM the base is the model its fine-tunes' adapters hot-load onto, served
under its own name, so a base request reuses that server (started here with a LoRA slot when none runs yet, so the
next adapter joins it without a restart). An engine that cannot hot-load serves the base directory as a model of its
own.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path

from sage_ft.models import local_model_dir
from sage_ft.storage.manifest import Manifest
from sage_ft_serving.artifacts import Artifact
from sage_ft_serving.engines import Engine
from sage_ft_serving.plan import Inputs, Limits, Plan, make_plan, rank_slot, read_json
from sage_ft_serving.pool import ServerPool
from sage_ft_serving.records import Key, Server

log = logging.getLogger(__name__)
BASE_PART = "base"
BASE_LORA_SLOT = 16  # the rank slot a server started for a base request gets (a larger adapter restarts it)


def base_manifest(models_root: Path, name: str) -> Manifest | None:
    """A manifest standing for installed base model ``name`` (no files of its own); None if none is installed."""
    return base_manifest_for(name) if local_model_dir(models_root, name) is not None else None


def base_manifest_for(name: str) -> Manifest:
    return Manifest(name=name, base_model=name, files={})


def is_base(manifest: Manifest) -> bool:
    return not manifest.files and manifest.name == manifest.base_model and manifest.job_id is None


def base_plan(engine: Engine, base_dir: Path, limits: Limits) -> Plan:
    """Context length from the base's config; on a hot-loading engine, the adapter mode and a LoRA slot."""
    inputs = Inputs(
        base_config=read_json(base_dir / "config.json"),
        tokenizer_config=read_json(base_dir / "tokenizer_config.json"),
        weights_bytes=sum(f.stat().st_size for f in base_dir.glob("*.safetensors")),
        adapter_config=None,
        adapter_tokenizer=None,
        training_max_length=None,
    )
    plan = make_plan(engine.hot_loads, inputs, limits)
    if engine.hot_loads:
        plan = replace(plan, mode="adapter", lora_rank=rank_slot(min(BASE_LORA_SLOT, limits.max_lora_rank)))
    return plan


def base_artifact(manifest: Manifest, base_dir: Path) -> Artifact:
    digest = hashlib.sha256(str(base_dir).encode()).hexdigest()
    return Artifact(manifest=manifest, digest=digest, part=BASE_PART, path=base_dir)


async def place(pool: ServerPool, engine: Engine, key: Key, base_dir: Path, plan: Plan) -> Server:
    """Serve base model ``key[1]`` (installed at ``base_dir``) for ``key``: on the live server of its key whatever its
    LoRA slot, or on one started for it. A hot-loading engine serves the base under its own name."""
    name = key[1]
    artifact = base_artifact(base_manifest_for(name), base_dir)
    server = await pool.ensure_for(engine, artifact, str(base_dir), plan, grow_rank=False)
    if engine.hot_loads:
        pool.share(server, key, name)  # the name the base's server serves it under
    else:
        await pool.attach(server, engine, key, artifact, plan)
    log.info("serving base model %s on %s", name, server.handle.name)
    return server
