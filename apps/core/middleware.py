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
        response = self.get_response(request)
        if request.path.startswith("/api/"):
            return response
        if response.status_code == 405 and not response.content:
            # Django's bare 405 (a form's address opened in the browser): the error page.
            from apps.core.pages import error_response

            allowed = response.get("Allow", "POST")
            reason = f"This address takes a form submission ({allowed}), not a page visit."
            answer = error_response(request, 405, reason)
            answer["Allow"] = allowed
            return answer
        if getattr(request, "htmx", False) and _to_login(response):
            # A poll after the session ended: reload into the sign-in page rather than swap
            # the login page into a fragment.
            from django_htmx.http import HttpResponseClientRedirect

            return HttpResponseClientRedirect(response["Location"])
        return response

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


def _to_login(response: HttpResponse) -> bool:
    from django.conf import settings
    from django.shortcuts import resolve_url

    location = response.get("Location", "") if response.status_code in (301, 302) else ""
    return bool(location) and location.split("?", 1)[0] == resolve_url(settings.LOGIN_URL)


def reason_of(exception: BaseException | None) -> str:
    """The sentence an exception was raised with (`PermissionDenied("Only leads …")`), or ""."""
    if exception is None or not exception.args:
        return ""
    first = exception.args[0]
    return first if isinstance(first, str) else ""
