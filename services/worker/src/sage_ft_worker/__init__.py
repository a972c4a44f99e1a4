"""sage-ft worker: Celery tasks that train, checkpoint, publish and merge, with training in a child process."""
