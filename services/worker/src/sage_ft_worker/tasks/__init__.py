"""Celery tasks: ``sage_ft.train`` and ``sage_ft.merge``. Arguments are ids only: no data, no secrets."""
