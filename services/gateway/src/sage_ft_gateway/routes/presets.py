"""``/v1/presets``: the presets a job may name, for forms and scripts (an extension)."""

from __future__ import annotations

from fastapi import APIRouter

from sage_ft.api_errors import error_responses
from sage_ft.presets import PresetConfigs
from sage_ft_gateway.deps import Tenant
from sage_ft_gateway.protocol.presets import Preset, PresetList

router = APIRouter(prefix="/v1/presets", tags=["presets"], responses=error_responses(401))


@router.get("", response_model=PresetList)
def list_presets(tenant: Tenant) -> PresetList:
    return PresetList(object="list", data=[Preset.from_info(p) for p in PresetConfigs.describe()])
