"""Celery tasks: ``sage_ft.train``, ``sage_ft.merge`` and ``sage_ft.evaluate``.

Arguments are ids only: no data, no secrets."""
