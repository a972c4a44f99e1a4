"""The gateway over HTTP. Every failure becomes a ``CLIError``: one line, a non-zero exit, no traceback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_attempt

RECONNECTS = 30  # about 30 s for a restarted gateway to come back


RATE_LIMIT_WAITS = 4  # a 429 is waited out (Retry-After) this many times before it is reported


def _retry_after(state: RetryCallState) -> float:
    """Seconds a 429 asked the caller to wait (``Retry-After``), at most 30."""
    resp = state.outcome.result() if state.outcome else None
    wait = resp.headers.get("retry-after", "1") if resp is not None else "1"
    return min(30.0, float(wait) if wait.replace(".", "", 1).isdigit() else 1.0)


class CLIError(Exception):
    """A failure to report in one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class GatewayUnreachableError(CLIError):
    pass


class Gateway:
    def __init__(self, url: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=httpx.Timeout(timeout, read=None))

    def close(self) -> None:
        self.http.close()

    def alive(self) -> bool:
        try:
            return self.http.get("/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """``method path``; a 429 is waited out (its Retry-After, at most 30 s) up to ``RATE_LIMIT_WAITS`` times,
        except for an upload, whose stream cannot be sent twice. The last answer decides."""
        waits_out = retry_if_result(lambda resp: resp.status_code == 429 and "files" not in kwargs)
        send = Retrying(
            retry=waits_out,
            wait=_retry_after,
            stop=stop_after_attempt(RATE_LIMIT_WAITS),
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
            reraise=True,
        )
        return self._result(send(self._send, method, path, **kwargs))

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise GatewayUnreachableError(
                f"no gateway answers at {self.url}; start the local stack with `sage-ft up` or set --gateway"
            ) from None
        except httpx.HTTPError as err:
            raise CLIError(f"request to {self.url}{path} failed: {err}") from None

    @staticmethod
    def _result(resp: httpx.Response) -> Any:
        if resp.status_code < 400:
            return resp.json() if resp.content else None
        try:
            error = resp.json().get("error") or {}
            message = error.get("message") or resp.text
            param = error.get("param")
        except (ValueError, AttributeError):
            message, param = resp.text[:300], None
        where = f" ({param})" if param and param not in message else ""
        raise CLIError(f"{resp.status_code}: {message}{where}")

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=body, **kwargs)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def upload(self, path: Path, purpose: str = "fine-tune") -> dict[str, Any]:
        if not path.is_file():
            raise CLIError(f"{path}: no such file")
        with path.open("rb") as fh:
            result: dict[str, Any] = self.request(
                "POST", "/v1/files", data={"purpose": purpose}, files={"file": (path.name, fh, "application/jsonl")}
            )
        return result

    def events(self, job_id: str, after: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
        """The job's events as they happen (server-sent events), ending with ``("end", final job)``.

        A gateway that shuts down (a rollout) ends the stream with a ``shutdown`` event; the stream is then opened
        again with ``Last-Event-ID``, so a follower sees every event once."""
        from httpx_sse import SSEError, connect_sse

        last, reconnects = after, 0
        while True:
            headers = {"Last-Event-ID": str(last)} if last else {}
            try:
                with connect_sse(
                    self.http, "GET", f"/v1/fine_tuning/jobs/{job_id}/events/stream", headers=headers
                ) as source:
                    if source.response.status_code >= 400:
                        source.response.read()
                        self._result(source.response)
                    for sse in source.iter_sse():
                        if sse.event == "shutdown":
                            break
                        if sse.id and sse.id.isdigit():
                            last = int(sse.id)
                        yield sse.event, json.loads(sse.data) if sse.data else {}
                        if sse.event == "end":
                            return
                        reconnects = 0
            except httpx.ConnectError:
                if reconnects == 0 and last == after:
                    raise GatewayUnreachableError(f"no gateway answers at {self.url}") from None
            except (httpx.HTTPError, SSEError) as err:
                raise CLIError(f"the event stream of {job_id} broke off: {err}") from None
            reconnects += 1
            if reconnects > RECONNECTS:
                raise CLIError(f"the event stream of {job_id} ended and the gateway did not come back")
            time.sleep(1.0)
