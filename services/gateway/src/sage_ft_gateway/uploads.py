"""Streaming multipart parsing with a size limit enforced while the body arrives.

Starlette's form parser spools a whole file before the route runs; this one writes the file part to disk as it
streams and stops at the limit: a declared Content-Length over the limit is refused before reading a byte, and a
chunked body is cut off at the first byte past it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header
from starlette.requests import Request

from sage_ft_gateway.errors import ApiError

FIELD_LIMIT = 64 * 1024
OVERHEAD = 64 * 1024  # multipart framing and small fields on top of the file itself


@dataclass
class Upload:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    path: Path | None = None
    size: int = 0

    def cleanup(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def too_large(limit: int) -> ApiError:
    return ApiError(
        413, f"File too large: the limit is {limit / 1024**2:.0f} MiB.", param="file", code="file_too_large"
    )


async def receive_upload(request: Request, limit: int, tmp_dir: Path | None = None) -> Upload:
    ctype, options = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in options:
        raise ApiError(400, "Expected a multipart/form-data body with a 'file' part.", param="file")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + OVERHEAD:
        raise too_large(limit)
    upload = Upload()
    state: dict[str, Any] = {"headers": {}, "name": None, "out": None, "buf": bytearray(), "hname": b"", "hval": b""}
    sink: list[IO[bytes]] = []

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["hname"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["hval"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["hname"].decode("latin-1").lower()] = state["hval"]
        state["hname"], state["hval"] = b"", b""

    def on_headers_finished() -> None:
        _, disp = parse_options_header(state["headers"].get("content-disposition", b""))
        state["name"] = disp.get(b"name", b"").decode("utf-8", "replace")
        filename = disp.get(b"filename")
        if filename is not None and state["name"] == "file":
            upload.filename = Path(filename.decode("utf-8", "replace")).name or "upload.jsonl"
            fh = tempfile.NamedTemporaryFile(prefix="upload-", dir=tmp_dir, delete=False)  # noqa: SIM115
            upload.path = Path(fh.name)
            sink.append(fh)
            state["out"] = fh

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["out"] is not None:
            upload.size += end - start
            if upload.size > limit:
                raise too_large(limit)
            state["out"].write(data[start:end])
        else:
            state["buf"] += data[start:end]
            if len(state["buf"]) > FIELD_LIMIT:
                raise ApiError(400, f"Form field '{state['name']}' is too long.", param=state["name"])

    def on_part_end() -> None:
        if state["out"] is None and state["name"]:
            upload.fields[state["name"]] = bytes(state["buf"]).decode("utf-8", "replace")
        state.update(headers={}, name=None, out=None, buf=bytearray())

    parser = MultipartParser(
        options[b"boundary"],
        callbacks={
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except ApiError:
        upload.cleanup()
        raise
    except Exception as err:
        upload.cleanup()
        raise ApiError(400, f"Malformed multipart body: {err}", param="file") from None
    finally:
        for fh in sink:
            fh.close()
    if upload.path is None:
        raise ApiError(400, "Missing the 'file' part.", param="file")
    return upload
