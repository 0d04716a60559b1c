from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.generic import TemplateView

from apps.access.mixins import PlatformAdminMixin
from apps.core import health


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


class SystemStatusView(PlatformAdminMixin, TemplateView):
    """Platform admins: database, broker, worker, MLflow, cluster — with a way to ping the worker."""

    template_name = "core/status.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["checks"] = health.system_status()
        return context

    def get_template_names(self) -> list[str]:
        if getattr(self.request, "htmx", False):
            return ["core/status.html#checks"]
        return [self.template_name]

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
