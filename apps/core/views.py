from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.generic import TemplateView

from apps.access.mixins import PlatformAdminMixin
from apps.core import health
from apps.core.middleware import reason_of
from apps.core.pages import error_response
from apps.core.partials import FragmentMixin

# The site's error handlers (portal/urls.py handler400/403/404/500): for what goes wrong
# outside a view's own code (no route matches, a middleware refuses, a bug). The API answers
# JSON like every other API error; pages get the error page with the layout, the reason
# and a way back.


def _api_error(request: HttpRequest, status: int, detail: str) -> HttpResponse | None:
    return JsonResponse({"detail": detail}, status=status) if request.path.startswith("/api/") else None


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    # The reason of a SuspiciousOperation may quote what an attacker sent: not shown. A
    # request whose Host is not allowed cannot build the layout's links: Django's plain page.
    from django.core.exceptions import BadRequest, DisallowedHost
    from django.views import defaults

    if isinstance(exception, DisallowedHost):
        return defaults.bad_request(request, exception)
    reason = reason_of(exception) if isinstance(exception, BadRequest) else ""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": reason or "Bad request."}, status=400)
    try:
        return error_response(request, 400, reason)
    except Exception:  # the request is too broken to render the layout for
        return defaults.bad_request(request, exception or BadRequest())


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    reason = reason_of(exception)
    return _api_error(request, 403, reason or "You do not have permission to perform this action.") or (
        error_response(request, 403, reason)
    )


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    # A path that matches no route: Django's resolver message names the URL patterns tried,
    # which is no reason to show anyone.
    from django.urls import Resolver404

    reason = "" if isinstance(exception, Resolver404) else reason_of(exception)
    return _api_error(request, 404, "Not found.") or error_response(request, 404, reason)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: a form posted without a valid token (an old tab, cookies off)."""
    sentence = "The form was out of date or your browser did not send its cookie; reload the page and try again."
    return _api_error(request, 403, f"CSRF check failed: {reason}") or error_response(request, 403, sentence)


def server_error(request: HttpRequest) -> HttpResponse:
    """A 500 with the layout when the layout can render (the error may be the database
    itself: then Django's plain page)."""
    from django.views import defaults

    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Server error."}, status=500)
    try:
        return error_response(request, 500, log=False)  # Django logged it with its traceback
    except Exception:
        return defaults.server_error(request)


@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness: the process answers. Checks nothing else on purpose."""
    return JsonResponse({"status": "ok"})


@never_cache
def readyz(request: HttpRequest) -> HttpResponse:
    """Readiness: this process can serve (its database answers); 503 naming what is down.
    `?full=1`: every dependency (database, broker, worker, MLflow, cluster, reconciler,
    rate limit), 503 when a required one (database, broker, MLflow) is down — for
    monitoring, not for the load balancer."""
    full = request.GET.get("full") in ("1", "true", "yes")
    checks = health.system_status() if full else health.readiness()
    down = [c for c in checks if not c.ok and c.required]
    body = {
        "status": "ok" if not down else "unavailable",
        "checks": {c.name: {"ok": c.ok, "detail": c.detail, "ms": c.millis} for c in checks},
    }
    return JsonResponse(body, status=503 if down else 200)


class SystemStatusView(PlatformAdminMixin, FragmentMixin, TemplateView):
    """Platform admins: database, broker, worker, MLflow, cluster — with a way to ping the
    worker. The checks refresh themselves (htmx swapping #checks) for as long as the page is open."""

    template_name = "core/status.html"
    fragments = ("checks",)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["checks"] = health.system_status()
        return context

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        """Send a heartbeat task now, so the worker line turns green within seconds."""
        from django.contrib import messages

        from apps.core.tasks import heartbeat

        try:
            heartbeat.delay()
            messages.info(request, "Sent a heartbeat task; a live worker answers within a few seconds.")
        except Exception as exc:  # the broker is down: say so on the page
            messages.error(request, f"Could not reach the broker: {exc}")
        from django.shortcuts import redirect

        return redirect("status")
