"""The OpenAPI document is a contract: schemathesis, run against the real gateway (with serving behind it, Redis and
a store), must find no server error and no conformance failure on any route."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from stack import Stack

pytestmark = pytest.mark.slow
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.fixture(scope="module")
def stack(make_stack: Any) -> Stack:
    # transformers: no model is ever started here (nothing generated names a published model)
    st: Stack = make_stack(SAGE_SERVING_ENGINE="transformers", SAGE_SERVING_AUTO_DEPLOY="true")
    st.start_gateway()
    st.start_serving()
    return st


def test_the_openapi_document_declares_every_route_with_typed_bodies_and_errors(stack: Stack) -> None:
    doc = httpx.get(f"{stack.url}/openapi.json", timeout=10).json()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            responses = op["responses"]
            if path.startswith("/v1/"):
                assert any(code.startswith("4") for code in responses), f"{method} {path} declares no error"
            if method in ("post", "put") and path.endswith(("/jobs", "/completions", "/deployments", "/files")):
                body = op["requestBody"]["content"]
                schema = next(iter(body.values()))["schema"]
                assert schema != {"type": "object", "additionalProperties": True}, f"{method} {path}: untyped body"
    error = doc["components"]["schemas"]["ErrorResponse"]
    assert error["properties"]["error"]["$ref"].endswith("ErrorDetail")


@pytest.mark.parametrize("service", ["gateway", "serving"])
def test_schemathesis_finds_no_failure(stack: Stack, service: str, tmp_path: Path) -> None:
    """Every check schemathesis has (server errors, status codes, content types, response schemas, undeclared
    methods and Allow, schema-valid data accepted, schema-invalid data rejected), over examples, coverage, fuzzing
    and stateful sequences (create a file, then a job from it ...), with a fixed seed so CI is repeatable."""
    url = stack.url if service == "gateway" else stack.serving_url
    exe = Path(sys.executable).parent / "schemathesis"
    out = subprocess.run(
        [
            str(exe),
            "--config-file",
            str(CONFIG),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = out.stdout[-4000:]
    assert out.returncode == 0, out.stdout[-12000:]
    assert "generated" in summary and "failures" not in summary.rsplit("SUMMARY", 1)[-1], summary
