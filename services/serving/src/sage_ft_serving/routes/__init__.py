"""Serving's routes, one module per feature; each handler is thin and calls the manager."""
