"""``/v1/files``: OpenAI's files API for fine-tuning datasets."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from sage_ft.api_errors import error_responses
from sage_ft_gateway.deps import Svc, Tenant
from sage_ft_gateway.protocol.files import UPLOAD_BODY, FileList, FileObject
from sage_ft_gateway.protocol.params import Deleted, IdPath
from sage_ft_gateway.uploads import receive_upload

router = APIRouter(prefix="/v1/files", tags=["files"], responses=error_responses(400, 401, 404, 503))


@router.post("", response_model=FileObject, openapi_extra=UPLOAD_BODY, responses=error_responses(413, 415))
async def create_file(request: Request, tenant: Tenant, svc: Svc) -> FileObject:
    limit = int(svc.state.settings.gateway.max_upload_mb * 1024 * 1024)
    upload = await receive_upload(request, limit)
    assert upload.path is not None  # receive_upload refuses a body without a file part
    try:
        record = await run_in_threadpool(
            svc.files.create, tenant, upload.path, upload.filename or "upload.jsonl", upload.fields.get("purpose")
        )
    finally:
        upload.cleanup()
    return FileObject.from_record(record)


@router.get("", response_model=FileList)
def list_files(tenant: Tenant, svc: Svc, purpose: str | None = None) -> dict[str, Any]:
    data = [FileObject.from_record(f) for f in svc.files.list(tenant, purpose)]
    return {"object": "list", "data": data, "has_more": False}


@router.get("/{file_id}", response_model=FileObject)
def get_file(file_id: IdPath, tenant: Tenant, svc: Svc) -> FileObject:
    return FileObject.from_record(svc.files.get(tenant, file_id))


@router.get(
    "/{file_id}/content",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The file's bytes",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
def file_content(file_id: IdPath, tenant: Tenant, svc: Svc) -> StreamingResponse:
    return StreamingResponse(svc.files.content(tenant, file_id), media_type="application/octet-stream")


@router.delete("/{file_id}", response_model=Deleted)
def delete_file(file_id: IdPath, tenant: Tenant, svc: Svc) -> dict[str, Any]:
    return svc.files.delete(tenant, file_id)
