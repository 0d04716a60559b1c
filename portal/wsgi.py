"""The portal as a WSGI application (`gunicorn portal.wsgi:application`).

Requests to the inference gateway (PATH_INFO under /serve/) go to a handler of their own
whose middleware is settings.GATEWAY_MIDDLEWARE, a few of the portal's; everything
else goes to Django's handler with the full settings.MIDDLEWARE. Both resolve against the
one URL conf, so the gateway's view, its authentication (a token or serving key checked on
every request) and its answers are the same either way; only the work done around them for
pages (sessions, CSRF, messages, CSP, htmx) is left out.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

import django
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

GATEWAY_PREFIX = "/serve/"

_load_lock = threading.Lock()


class GatewayHandler(WSGIHandler):
    """A WSGIHandler whose middleware chain is built from settings.GATEWAY_MIDDLEWARE
    instead of settings.MIDDLEWARE (the rest of Django's request handling is unchanged:
    URL resolution, the request_started/request_finished signals, error handlers)."""

    def load_middleware(self, is_async: bool = False) -> None:
        """Build the chain from GATEWAY_MIDDLEWARE (a list of dotted paths).
        Django's loader reads settings.MIDDLEWARE, so that setting names the gateway's
        list while the chain is built (once, when the handler is created) and is put back
        afterwards."""
        with _load_lock:
            full = settings.MIDDLEWARE
            settings.MIDDLEWARE = list(settings.GATEWAY_MIDDLEWARE)
            try:
                super().load_middleware(is_async)
            finally:
                settings.MIDDLEWARE = full


StartResponse = Callable[..., Any]


def dispatcher(portal: WSGIHandler, gateway: WSGIHandler) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """The WSGI callable that hands a request whose PATH_INFO starts with GATEWAY_PREFIX to
    `gateway` and any other to `portal`."""

    def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        handler = gateway if environ.get("PATH_INFO", "").startswith(GATEWAY_PREFIX) else portal
        return handler(environ, start_response)

    return application


django.setup(set_prefix=False)
portal_application = WSGIHandler()
gateway_application = GatewayHandler()
application = dispatcher(portal_application, gateway_application)
