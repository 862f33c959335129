"""Delegate's Django project: configuration only (settings, URLs, the Celery app, WSGI/ASGI)."""
# Bind @shared_task to Delegate's Celery app whenever Django starts.
from portal.celery import app as celery_app

__all__ = ("celery_app",)
