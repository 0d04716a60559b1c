from __future__ import annotations

import re
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from apps.core import context

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def client_ip(request: HttpRequest) -> str | None:
    # REMOTE_ADDR only: X-Forwarded-For is trivially forged unless a trusted proxy strips it.
    return request.META.get("REMOTE_ADDR") or None


class RequestIdMiddleware:
    """Gives every request an id (a sane incoming X-Request-ID is kept), binds it for logs
    and audit events, and returns it in the response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _SAFE_ID.match(incoming) else context.new_request_id()
        request.request_id = request_id  # type: ignore[attr-defined]
        with context.bind(request_id, client_ip(request)):
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response


class ServiceErrorMiddleware:
    """An expected refusal that reaches a page — a ServiceError not caught to show next to a
    form, `PermissionDenied`, `Http404` — becomes the error page with its status code
    (400/403/404/409/503; an htmx request gets the reason as a message), with the reason
    the code gave, logged as one line. Never a 500, and never Django's technical 404 page
    for a not-found the code expects, even with DEBUG on. The API answers its own errors
    (DRF's exception handler); this leaves /api/ alone."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        from django.core.exceptions import PermissionDenied
        from django.http import Http404

        from apps.core.errors import ServiceError
        from apps.core.pages import error_response

        if request.path.startswith("/api/"):
            return None
        if isinstance(exception, ServiceError):
            return error_response(request, exception.status_code, exception.message, exception=exception)
        if isinstance(exception, PermissionDenied):
            return error_response(request, 403, reason_of(exception))
        if isinstance(exception, Http404):
            return error_response(request, 404, reason_of(exception))
        return None


def reason_of(exception: BaseException | None) -> str:
    """The sentence an exception was raised with (`PermissionDenied("Only leads …")`), or ""."""
    if exception is None or not exception.args:
        return ""
    first = exception.args[0]
    return first if isinstance(first, str) else ""
