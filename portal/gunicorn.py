"""gunicorn's configuration (`gunicorn -c python:portal.gunicorn portal.wsgi:application`):
its worker timeout is PLINTH_WEB_TIMEOUT from the settings, the same number the request
budget for MLflow calls is derived from (see apps.core.deadline), so the two cannot drift."""

from __future__ import annotations

from portal import settings as _settings

# gunicorn's own GUNICORN_CMD_ARGS (e.g. "--workers 5") overrides these.
bind = "0.0.0.0:8000"
workers = 3
timeout = int(_settings.PLINTH_WEB_TIMEOUT)
graceful_timeout = timeout
accesslog = "-"
