"""``sage-ft-serving``: serve on ``SAGE_SERVING_HOST:SAGE_SERVING_PORT``; stopping it stops every model server."""

from __future__ import annotations

import logging


def main() -> None:
    import uvicorn

    from sage_ft_serving.app import create_app
    from sage_ft_serving.settings import Settings

    settings = Settings()
    logging.basicConfig(
        level=settings.serving.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(create_app(settings), host=settings.serving.host, port=settings.serving.port,
                log_level=settings.serving.log_level, access_log=False,
                timeout_graceful_shutdown=int(settings.serving.shutdown_grace_seconds))  # fmt: skip


if __name__ == "__main__":
    main()
