"""The portal as a WSGI application (`gunicorn portal.wsgi:application`).

Requests to the inference gateway (PATH_INFO under /serve/) go to a handler of their own
whose middleware is settings.GATEWAY_MIDDLEWARE, a few of the portal's; everything
else goes to Django's handler with the full settings.MIDDLEWARE. Both resolve against the
one URL conf, so the gateway's view, its authentication (a token or serving key, see
apps.deployments.gateway) and its answers are the same either way; only the work done
around them for pages (sessions, CSRF, messages, CSP, htmx) is left out. Neither handler
changes a setting: each builds its chain from its own list, once, when it is created.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import django
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, MiddlewareNotUsed
from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler
from django.utils.module_loading import import_string

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

GATEWAY_PREFIX = "/serve/"

logger = logging.getLogger("django.request")


class GatewayHandler(WSGIHandler):
    """A WSGIHandler whose middleware chain is built from the dotted paths it is given
    (by default settings.GATEWAY_MIDDLEWARE) instead of settings.MIDDLEWARE. The rest of
    Django's request handling is unchanged: URL resolution, the request_started and
    request_finished signals, error handlers, view/exception/template-response hooks."""

    def __init__(self, middleware: Sequence[str] | None = None) -> None:
        self.middleware_paths: tuple[str, ...] = tuple(
            settings.GATEWAY_MIDDLEWARE if middleware is None else middleware
        )
        super().__init__()  # calls load_middleware

    def load_middleware(self, is_async: bool = False) -> None:
        """Build the chain from self.middleware_paths, outermost first, as Django's
        BaseHandler.load_middleware builds it from settings.MIDDLEWARE (same adaptation
        between sync and async, MiddlewareNotUsed skipped, hooks collected in the same
        order). ImproperlyConfigured for a factory that returns None, RuntimeError for a
        middleware that is neither sync- nor async-capable."""
        self._view_middleware: list[Callable[..., Any]] = []
        self._template_response_middleware: list[Callable[..., Any]] = []
        self._exception_middleware: list[Callable[..., Any]] = []

        get_response = self._get_response_async if is_async else self._get_response  # type: ignore[attr-defined]
        handler = convert_exception_to_response(get_response)
        handler_is_async = is_async
        for middleware_path in reversed(self.middleware_paths):
            middleware = import_string(middleware_path)
            middleware_can_sync = getattr(middleware, "sync_capable", True)
            middleware_can_async = getattr(middleware, "async_capable", False)
            if not middleware_can_sync and not middleware_can_async:
                raise RuntimeError(
                    f"Middleware {middleware_path} must have at least one of sync_capable/async_capable set to True."
                )
            middleware_is_async = False if not handler_is_async and middleware_can_sync else middleware_can_async
            try:
                adapted_handler = self.adapt_method_mode(
                    middleware_is_async,
                    handler,
                    handler_is_async,
                    debug=settings.DEBUG,
                    name=f"middleware {middleware_path}",
                )
                instance = middleware(adapted_handler)
            except MiddlewareNotUsed as exc:
                if settings.DEBUG:
                    logger.debug("MiddlewareNotUsed(%r): %s", middleware_path, exc)
                continue
            handler = adapted_handler
            if instance is None:
                raise ImproperlyConfigured(f"Middleware factory {middleware_path} returned None.")
            if hasattr(instance, "process_view"):
                self._view_middleware.insert(0, self.adapt_method_mode(is_async, instance.process_view))
            if hasattr(instance, "process_template_response"):
                self._template_response_middleware.append(
                    self.adapt_method_mode(is_async, instance.process_template_response)
                )
            if hasattr(instance, "process_exception"):
                # Django's exception hooks are always synchronous.
                self._exception_middleware.append(self.adapt_method_mode(False, instance.process_exception))
            handler = convert_exception_to_response(instance)
            handler_is_async = middleware_is_async

        # Set last: Django reads it as "initialisation is complete".
        self._middleware_chain = self.adapt_method_mode(is_async, handler, handler_is_async)


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
