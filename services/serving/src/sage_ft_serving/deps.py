"""Request dependencies: the tenant the gateway authenticated, and the state kept on ``app.state``.

They are ``async`` because they never block: FastAPI runs a plain ``def`` dependency on its thread pool, which cost
every proxied request four thread hops (measured in benchmarks/eval_bench.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from sage_ft.protocol.common import MODEL_ID
from sage_ft.storage.scoped import LOCAL_TENANT
from sage_ft_serving.manager import DeploymentManager
from sage_ft_serving.proxy import ModelProxy
from sage_ft_serving.sandbox import GraderHost
from sage_ft_serving.state import ServingState

_TENANT = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


async def state(request: Request) -> ServingState:
    st: ServingState = request.app.state.serving
    return st


async def graders(request: Request) -> GraderHost:
    """Set by both apps: the whole service and the graders-only one."""
    host: GraderHost = request.app.state.graders
    return host


async def manager(request: Request) -> DeploymentManager:
    return (await state(request)).manager


async def model_proxy(request: Request) -> ModelProxy:
    return (await state(request)).proxy


async def tenant(x_sage_tenant: Annotated[str | None, Header(pattern=_TENANT)] = None) -> str:
    """``X-Sage-Tenant``, set by the gateway after it authenticated the caller (serving is not public)."""
    return x_sage_tenant or LOCAL_TENANT


async def wait_for_deploy(x_sage_no_wait: Annotated[str | None, Header()] = None) -> bool:
    """``X-Sage-No-Wait``: answer 503 + Retry-After instead of waiting for a deploy."""
    return not x_sage_no_wait


async def asked_as(x_sage_model_as: Annotated[str | None, Header(pattern=MODEL_ID)] = None) -> str | None:
    """``X-Sage-Model-As``: the name the caller used (an alias the gateway resolved); answers show it."""
    return x_sage_model_as


Tenant = Annotated[str, Depends(tenant)]
AskedAs = Annotated[str | None, Depends(asked_as)]
Graders = Annotated[GraderHost, Depends(graders)]
Manager = Annotated[DeploymentManager, Depends(manager)]
Proxy = Annotated[ModelProxy, Depends(model_proxy)]
State = Annotated[ServingState, Depends(state)]
Wait = Annotated[bool, Depends(wait_for_deploy)]
