"""``sage-ft-gateway``: serve the API with uvicorn on ``SAGE_GATEWAY_HOST:SAGE_GATEWAY_PORT``."""

from __future__ import annotations

import logging


def main() -> None:
    import uvicorn

    from sage_ft_gateway.app import create_app
    from sage_ft_gateway.settings import Settings

    settings = Settings()
    logging.basicConfig(
        level=settings.gateway.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.gateway.host,
        port=settings.gateway.port,
        log_level=settings.gateway.log_level,
        access_log=False,
        timeout_graceful_shutdown=int(settings.gateway.shutdown_grace_seconds),
    )


if __name__ == "__main__":
    main()
