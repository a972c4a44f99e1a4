"""``sage-ft-worker``: start a Celery worker on the configured queues (solo pool: one job per worker process).

Training already runs in a child process, so the solo pool gives up nothing prefork would add, and killing the
worker kills exactly one process tree.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from sage_ft_worker.celery_app import app

    settings = app.context.settings.worker
    args = [
        "worker",
        "--pool=solo",
        "--concurrency=1",
        f"--queues={','.join(settings.queue_list())}",
        f"--hostname={settings.name}@%h",
        f"--loglevel={settings.log_level}",
        "--without-gossip",
        "--without-mingle",
    ]
    app.worker_main([*args, *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    main()
