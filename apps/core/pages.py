"""Helpers for page views: run a service and turn its errors into form errors, into the
error page (layout, the service's reason, a way back) or, for htmx, into a message."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from django import forms
from django.contrib import messages
from django.core.paginator import Page, Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import Resolver404, resolve
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.log import log_response
from django_htmx.http import reswap, retarget

from apps.core.errors import ServiceError

T = TypeVar("T")

# What the request asked for was refused: an error page (or message), not a form error.
PAGE_STATUSES = (403, 404)

DEFAULT_REASONS = {
    400: "The request could not be understood.",
    403: "You do not have permission to do that.",
    404: "There is nothing here, or it is not visible to you.",
    409: "That conflicts with the current state.",
    500: "Something went wrong on our side. It has been logged.",
    503: "A service Plinth depends on is unreachable; try again in a moment.",
}


def run_service(
    form: forms.Form, call: Callable[[], T], *, field_for: Callable[[str], str | None] | None = None
) -> tuple[T | None, int]:
    """Call a service; on a ServiceError attach its messages to `form` (per field where the
    form has that field: `field_for` maps a service key such as "parameters.epochs" to a
    form field, or None) and return the status code to render with (400/409/503). A 403 or
    404 is not about the input: it propagates, and becomes the error page."""
    try:
        return call(), 200
    except ServiceError as exc:
        if exc.status_code in PAGE_STATUSES:
            raise
        placed = False
        for key, texts in exc.fields.items():
            field = field_for(key) if field_for else (key if key in form.fields else None)
            if field is not None and field in form.fields:
                for text in texts:
                    form.add_error(field, text)
                placed = True
        if not placed:
            form.add_error(None, exc.message)
        return None, exc.status_code


def run_action(
    request: HttpRequest,
    call: Callable[[], T],
    *,
    success: str | Callable[[T], str],
    then: str,
    respond: Callable[[T], HttpResponse] | None = None,
    conflict_message: str | None = None,
) -> HttpResponse:
    """An action without a form (cancel, restore, approve): call the service; on success
    say `success` and redirect to `then` (post/redirect/get; `respond` answers instead,
    e.g. an htmx fragment); on a ServiceError answer the error page with its status and
    reason, whose way back is `then` (for htmx: the reason as a message). With
    `conflict_message`, a 409 (the object's state does not allow it now) is no error page:
    it is said as an error message, `conflict_message` followed by the reason, on the page
    `then` (post/redirect/get, like a success)."""
    try:
        done = call()
    except ServiceError as exc:
        if conflict_message is not None and exc.status_code == 409:
            messages.error(request, f"{conflict_message}{exc.message}")
            return redirect(then)
        return error_response(request, exc.status_code, exc.message, back=then, exception=exc)
    messages.success(request, success(done) if callable(success) else success)
    return respond(done) if respond is not None else redirect(then)


def back_url(request: HttpRequest) -> str:
    """Where "Go back" leads: the page the request came from (same site only), else the
    nearest page above the requested path, else home."""
    referer = request.headers.get("Referer", "")
    if referer and url_has_allowed_host_and_scheme(referer, {request.get_host()}, request.is_secure()):
        came_from = urlsplit(referer)
        if came_from.path != request.path or came_from.query != request.META.get("QUERY_STRING", ""):
            return referer
    parts = [p for p in request.path.split("/") if p]
    while parts:
        parts.pop()
        candidate = "/" + "".join(f"{p}/" for p in parts)
        try:
            match = resolve(candidate)
        except Resolver404:
            continue
        if not candidate.startswith("/api/") and match.url_name not in ("logout",):
            return candidate
    return "/"


def error_response(
    request: HttpRequest,
    status: int,
    message: str = "",
    *,
    back: str | None = None,
    exception: BaseException | None = None,
    log: bool = True,
) -> HttpResponse:
    """The error page: the site's layout, the reason sentence and a way back, with `status`.
    For htmx requests, the reason as a message swapped into the page's `#messages` region
    (status kept), never a page inside a table cell. Logged as one line with the reason
    (a traceback only for 5xx, when `exception` is given; `log=False` where Django has
    logged it already)."""
    reason = message or DEFAULT_REASONS.get(status, DEFAULT_REASONS[400])
    context: dict[str, Any] = {"status": status, "message": reason, "back": back or back_url(request)}
    if getattr(request, "htmx", False):
        response = render(request, "error.html#alert", context, status=status)
        response = reswap(retarget(response, "#messages"), "innerHTML")
    else:
        response = render(request, "error.html", context, status=status)
    if not log:
        return response
    log_response(
        "%s: %s (%s)",
        response.reason_phrase,
        request.path,
        reason,
        response=response,
        request=request,
        level="error" if status >= 500 else "warning",
        # A 503 (MLflow or the cluster unreachable) is expected: one line, no traceback.
        exception=exception if status >= 500 and status != 503 else None,
    )
    return response


def paginate(request: HttpRequest, items: Any, per_page: int = 25) -> Page:  # type: ignore[type-arg]
    paginator = Paginator(items, per_page)
    return paginator.get_page(request.GET.get("page"))
