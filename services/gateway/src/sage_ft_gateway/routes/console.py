"""The web console: static files shipped in this package, served at ``/console/``. It calls only the public API
(the same routes the ``openai`` client and the CLI use), with the caller's API key when auth is on."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from starlette.staticfiles import StaticFiles

CONSOLE = Path(__file__).resolve().parent.parent / "console"
NO_CACHE = {"Cache-Control": "no-cache"}  # revalidated each load: an upgraded gateway serves its own page
router = APIRouter(include_in_schema=False)


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/console/")


@router.get("/console")
def console_bare() -> RedirectResponse:
    return RedirectResponse("/console/")


@router.get("/console/")
def console_index() -> FileResponse:
    return FileResponse(CONSOLE / "index.html", headers=NO_CACHE)


def mount(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/console/assets", StaticFiles(directory=CONSOLE, check_dir=False), name="console-assets")
