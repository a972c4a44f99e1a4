"""``/v1/files``: OpenAI's file objects, plus the validation ``report`` sage-ft adds."""

from __future__ import annotations

from typing import Any, Literal

from sage_ft.jobs.model import FileRecord
from sage_ft_gateway.protocol.params import ApiModel


class FileObject(ApiModel):
    object: Literal["file"]
    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"]
    status_details: str | None = None
    report: dict[str, Any] | None = None

    @classmethod
    def from_record(cls, record: FileRecord) -> FileObject:
        return cls(
            object="file",
            id=record.id,
            bytes=record.bytes,
            created_at=int(record.created_at),
            filename=record.filename,
            purpose=record.purpose,
            status=record.status,
            status_details=record.status_details,
            report=record.report,
        )


class FileList(ApiModel):
    object: Literal["list"]
    data: list[FileObject]
    has_more: bool


# The upload is streamed (size-limited before it is read), so its multipart body is declared here, not parsed by
# FastAPI. A dataset's content is checked after upload: bad records are a 400 naming the line.
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "JSONL or JSON dataset"},
                        "purpose": {"type": "string", "enum": ["fine-tune", "evals"]},
                    },
                }
            }
        },
    }
}
