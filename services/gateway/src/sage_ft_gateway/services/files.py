"""Uploaded datasets: validate with the core validator, store under ``files/<id>``, keep the record in Redis.

Purpose ``fine-tune`` is training data; purpose ``evals`` is eval rows (``{"item": {...}}`` a line), checked here
for shape and against an eval's ``item_schema`` when a run uses it.

A file that cannot be parsed (bad JSON on line N, wrong encoding, not JSONL) is refused with a 400 naming the
line. A file that parses but has records the trainer cannot use is stored with ``status: error`` and
``status_details`` naming line and field; a job that names it is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from sage_ft.data.loader import read_file
from sage_ft.data.validate import validate_raw
from sage_ft.errors import DataError
from sage_ft.evals.items import load_rows
from sage_ft.jobs import FileRecord
from sage_ft.jobs.model import new_id
from sage_ft_gateway.errors import ApiError, not_found
from sage_ft_gateway.state import GatewayState

PURPOSES = ("fine-tune", "evals")


class FileService:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def create(self, tenant: str, path: Path, filename: str, purpose: str | None) -> FileRecord:
        if purpose not in PURPOSES:
            raise ApiError(400, f"purpose must be one of {', '.join(PURPOSES)}", param="purpose")
        if purpose == "evals":
            return self._store(
                tenant,
                path,
                FileRecord(
                    id=new_id("file"),
                    tenant=tenant,
                    filename=filename,
                    bytes=path.stat().st_size,
                    purpose=purpose,
                    report={"kind": "eval", "rows": len(load_rows(path)), "path": filename},
                ),
            )
        raw = read_file(path, name=filename)  # file-level problems raise DataError -> 400 naming file and line
        if raw.errors:
            first = raw.errors[0]
            more = f" (and {len(raw.errors) - 1} more)" if len(raw.errors) > 1 else ""
            raise DataError(f"{first.reason}{more}", path=filename, line=first.line, field=first.field)
        report = validate_raw(raw)
        record = FileRecord(
            id=new_id("file"),
            tenant=tenant,
            filename=filename,
            bytes=path.stat().st_size,
            purpose=purpose or "fine-tune",
        )
        if not report.ok:
            record.status = "error"
            try:
                report.raise_for_errors()
            except DataError as err:
                record.status_details = (
                    f"{filename}: line {err.line}: field '{err.field}': {err.reason}"
                    if (err.line and err.field)
                    else str(err)
                )
        summary = report.to_dict()
        summary.pop("record_formats", None)
        summary["path"] = filename
        record.report = summary
        return self._store(tenant, path, record)

    def _store(self, tenant: str, path: Path, record: FileRecord) -> FileRecord:
        store = self.state.tenant_store(tenant)
        store.put_file(f"files/{record.id}", path)
        try:
            self.state.jobs.put_file(record)  # the file exists once it is recorded
        except BaseException:
            store.delete(f"files/{record.id}")  # never recorded: no object left behind
            raise
        return record

    def get(self, tenant: str, file_id: str, param: str | None = None) -> FileRecord:
        record = self.state.jobs.get_file(tenant, file_id)
        if record is None:
            raise not_found("file", file_id, param)
        return record

    def list(self, tenant: str, purpose: str | None = None) -> list[FileRecord]:
        return [f for f in self.state.jobs.list_files(tenant) if purpose is None or f.purpose == purpose]

    def content(self, tenant: str, file_id: str) -> Iterator[bytes]:
        self.get(tenant, file_id)
        stream = self.state.tenant_store(tenant).open(f"files/{file_id}")

        def chunks() -> Iterator[bytes]:
            with stream:
                while chunk := stream.read(256 * 1024):
                    yield chunk

        return chunks()

    def delete(self, tenant: str, file_id: str) -> dict[str, object]:
        record = self.get(tenant, file_id)
        self.state.jobs.delete_file(record)
        self.state.tenant_store(tenant).delete(f"files/{file_id}")
        return {"id": file_id, "object": "file", "deleted": True}
