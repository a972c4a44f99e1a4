"""``sage-ft-serving``: serve on ``SAGE_SERVING_HOST:SAGE_SERVING_PORT``; stopping it stops every model server.
``sage-ft-serving graders``: only the python-grader sandbox (``create_grader_app``), on the same address."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sage_ft_serving.settings import Settings


def serve(settings: Settings, *, graders_only: bool = False, **app_options: Any) -> None:
    """Run the app under uvicorn. On SIGTERM, open requests (proxied chat streams) get ``shutdown_grace_seconds``,
    then are cut, and every model server is stopped; ``app_options`` go to ``create_app`` (tests)."""
    import uvicorn

    from sage_ft_serving.app import create_app, create_grader_app

    logging.basicConfig(
        level=settings.serving.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_grader_app(settings) if graders_only else create_app(settings, **app_options),
        host=settings.serving.host,
        port=settings.serving.port,
        log_level=settings.serving.log_level,
        access_log=False,
        timeout_graceful_shutdown=int(settings.serving.shutdown_grace_seconds),
    )


def main() -> None:
    import sys

    from sage_ft_serving.settings import Settings

    args = sys.argv[1:]
    if args not in ([], ["graders"]):
        sys.exit("usage: sage-ft-serving [graders]")
    serve(Settings(), graders_only=args == ["graders"])


if __name__ == "__main__":
    main()
