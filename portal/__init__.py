"""Plinth: a self-service ML platform portal."""

from portal.celery import app as celery_app

__all__ = ["celery_app"]
