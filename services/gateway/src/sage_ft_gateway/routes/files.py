"""``/v1/files``: OpenAI's files API for fine-tuning datasets."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from sage_ft_gateway.deps import Svc, Tenant
from sage_ft_gateway.uploads import receive_upload

router = APIRouter(prefix="/v1/files", tags=["files"])


@router.post("")
async def create_file(request: Request, tenant: Tenant, svc: Svc) -> dict[str, Any]:
    limit = int(svc.state.settings.gateway.max_upload_mb * 1024 * 1024)
    upload = await receive_upload(request, limit)
    assert upload.path is not None  # receive_upload refuses a body without a file part
    try:
        record = await run_in_threadpool(svc.files.create, tenant, upload.path, upload.filename or "upload.jsonl",
                                         upload.fields.get("purpose"))  # fmt: skip
    finally:
        upload.cleanup()
    return record.to_openai()


@router.get("")
def list_files(tenant: Tenant, svc: Svc, purpose: str | None = None) -> dict[str, Any]:
    return {"object": "list", "data": [f.to_openai() for f in svc.files.list(tenant, purpose)], "has_more": False}


@router.get("/{file_id}")
def get_file(file_id: str, tenant: Tenant, svc: Svc) -> dict[str, Any]:
    return svc.files.get(tenant, file_id).to_openai()


@router.get("/{file_id}/content")
def file_content(file_id: str, tenant: Tenant, svc: Svc) -> StreamingResponse:
    return StreamingResponse(svc.files.content(tenant, file_id), media_type="application/octet-stream")


@router.delete("/{file_id}")
def delete_file(file_id: str, tenant: Tenant, svc: Svc) -> dict[str, Any]:
    return svc.files.delete(tenant, file_id)
