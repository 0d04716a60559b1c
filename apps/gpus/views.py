"""GPU pages: the fleet, idle GPUs, the usage report (+ CSV), a launch's GPU panel (an htmx
fragment for the launch page), a project's idle policy, exemptions and prices."""

from __future__ import annotations

import csv
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import View
from django.views.generic import TemplateView

from apps.access import policies
from apps.access.lookups import get_launch_for_user, get_project_by_slug_for_user
from apps.access.mixins import ObjectAccessMixin, PlatformAdminMixin
from apps.access.policies import actor_of
from apps.access.roles import Action
from apps.core.filters import FilteredListMixin, errors_text
from apps.core.pages import error_response, paginate, run_action, run_service
from apps.core.partials import fragment_for, render_fragment, vary
from apps.gpus import charts, services, usage
from apps.gpus.filters import GpuFilter, IdleFilter, UsageQuery
from apps.gpus.forms import ExemptionForm, IdlePolicyForm, PriceForm, last_month
from apps.gpus.models import Gpu, GpuPrice, IdleExemption, IdleFinding
from apps.gpus.selectors import (
    fleet_figures,
    heatmap_hours,
    idle_findings,
    source_summary,
    usage_teams,
    visible_gpus,
)
from apps.launches.models import TERMINAL, Launch

GPUS_PER_PAGE = 100


def currency() -> str:
    return str(settings.PLINTH_GPU_PRICE_CURRENCY)


class FleetView(LoginRequiredMixin, FilteredListMixin, TemplateView):
    """Every GPU: allocated or not, to whom, how busy; "allocated but idle" first."""

    template_name = "gpus/index.html"
    filterset_class = GpuFilter

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        user = self.request.user
        admin = policies.is_platform_admin(user)
        gpus = self.filtered(visible_gpus(user))
        page = paginate(self.request, gpus, per_page=GPUS_PER_PAGE)
        figures = fleet_figures()
        heatmap = None
        if figures.total:
            hours = heatmap_hours()
            shown = list(gpus.values_list("pk", "node", "index"))
            columns, cells = usage.heatmap([pk for pk, _, _ in shown], hours)
            labels = [f"{node}/{index}" for _, node, index in shown]
            heatmap = charts.heatmap_figure(columns, labels, [cells[pk] for pk, _, _ in shown])
        day = usage.Period.of(timezone.now() - timedelta(hours=24), timezone.now())
        waste = usage.totals(day)  # fleet-wide, like the counts above
        context.update(
            figures=figures,
            page=page,
            heatmap=heatmap,
            heatmap_hours=heatmap_hours(),
            sources=source_summary(),
            waste=waste,
            is_admin=admin,
            scoped=not admin,
        )
        return context


class IdleView(LoginRequiredMixin, FilteredListMixin, TemplateView):
    """Allocated GPUs idle for at least their policy's window, with owner, project, launch
    and for how long (?history=1 adds the last week's resolved and reclaimed ones)."""

    filterset_class = IdleFilter
    template_name = "gpus/idle.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        user = self.request.user
        shown = self.filtered(idle_findings(user, include_history=True))
        history = self.filterset is not None and self.filterset.form.cleaned_data.get("history") == "1"
        page = paginate(self.request, shown, per_page=50)
        findings: list[IdleFinding] = list(page.object_list)
        context.update(
            page=page,
            findings=findings,
            history=history,
            manageable={f.team_id for f in findings if f.team_id and f.team and policies.can_manage_team(user, f.team)},
            sources=source_summary(),
        )
        return context


def _usage_context(request: HttpRequest) -> tuple[UsageQuery, dict[str, Any]]:
    form = UsageQuery(request.GET, whole_days=True)
    if not form.is_valid():
        return form, {}
    data = form.cleaned_data
    teams, team = usage_teams(request.user, data.get("team") or "")
    period = data["period"]
    foreign = policies.can_see_foreign_usage(request.user)
    rows = usage.usage_report(period, data["group_by"], teams, include_foreign=foreign, team=team)
    return form, {"period": period, "rows": rows, "teams": teams, "team": team, "group_by": data["group_by"]}


class UsageView(LoginRequiredMixin, View):
    """GPU-hours allocated versus used per team or project over a period (leads: their
    teams; platform admins: everyone, pods outside Plinth's projects by namespace)."""

    def get(self, request: HttpRequest) -> HttpResponse:
        form, report = _usage_context(request)
        if not report:
            usage_teams(request.user)  # 403 before a form error tells anything
            return render(request, "gpus/usage.html", {"form": form}, status=400)
        rows = report["rows"]
        admin = policies.is_platform_admin(request.user)
        foreign = policies.can_see_foreign_usage(request.user)
        timeline = usage.usage_timeline(report["period"], report["teams"], include_foreign=foreign, team=report["team"])
        start, end = last_month()
        total = usage.sum_rows(rows)
        context = {
            "form": form,
            **report,
            "total": total,
            "figure": charts.usage_figure(rows) if rows else None,
            "timeline": charts.timeline_figure(timeline) if timeline else None,
            "currency": currency(),
            "prices": GpuPrice.objects.all(),
            "products": sorted(set(Gpu.objects.exclude(product="").values_list("product", flat=True))),
            "price_form": PriceForm() if admin else None,
            "last_month": {"start": start.isoformat(), "end": end.isoformat()},
            "csv_query": request.GET.urlencode(),
            "is_admin": admin,
        }
        return render(request, "gpus/usage.html", context)


class UsageCsvView(LoginRequiredMixin, View):
    """The usage report as CSV (same query parameters and access as the page)."""

    def get(self, request: HttpRequest) -> HttpResponse:
        form, report = _usage_context(request)
        if not report:
            usage_teams(request.user)
            return error_response(request, 400, errors_text(form))
        period = report["period"]
        name = f"gpu-usage-{period.start:%Y%m%d}-{period.end:%Y%m%d}.csv"
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        writer = csv.writer(response)
        writer.writerow(
            [
                "group",
                "team",
                "project",
                "period_start",
                "period_end",
                "gpu_hours_allocated",
                "gpu_hours_used",
                "utilization_percent",
                "cost",
                "currency",
            ]
        )
        for row in report["rows"]:
            data = row.as_dict()
            writer.writerow(
                [
                    data["group"],
                    data["team"],
                    data["project"],
                    period.start.isoformat(),
                    period.end.isoformat(),
                    f"{row.allocated_hours:.4f}",
                    f"{row.used_hours:.4f}",
                    "" if data["utilization_percent"] is None else f"{data['utilization_percent']:.2f}",
                    data["cost"] or "",
                    currency() if data["cost"] is not None else "",
                ]
            )
        return response


class PriceView(PlatformAdminMixin, View):
    """Set or remove the price of a GPU-hour of one product (platform admins)."""

    def post(self, request: HttpRequest) -> HttpResponse:
        form = PriceForm(request.POST)
        if not form.is_valid():
            return error_response(
                request,
                400,
                "Give a GPU product and a price (a number, or empty to remove it).",
                back=reverse("gpus:usage"),
            )
        return run_action(
            request,
            lambda: services.set_gpu_price(actor_of(request), form.cleaned_data["product"], form.cleaned_data["price"]),
            success=f"Price of {form.cleaned_data['product']} saved.",
            then=reverse("gpus:usage"),
        )


class PolicyView(ObjectAccessMixin, View):
    """A project's idle policy: everyone in the team reads it, leads change it."""

    lookup = get_project_by_slug_for_user
    lookup_kwargs = ("team", "slug")

    def _render(self, request: HttpRequest, form: IdlePolicyForm, status: int = 200) -> HttpResponse:
        project = self.object
        return render(
            request,
            "gpus/policy.html",
            {
                "project": project,
                "form": form,
                "policy": services.policy_for(project),
                "can_manage": policies.can_manage_team(request.user, project.team),
            },
            status=status,
        )

    def get(self, request: HttpRequest, team: str, slug: str) -> HttpResponse:
        return self._render(request, IdlePolicyForm.for_policy(services.policy_for(self.object)))

    def post(self, request: HttpRequest, team: str, slug: str) -> HttpResponse:
        form = IdlePolicyForm(request.POST)
        if not form.is_valid():
            return self._render(request, form, 400)
        _, status = run_service(
            form, lambda: services.set_idle_policy(actor_of(request), self.object, **form.cleaned_data)
        )
        if status != 200:
            return self._render(request, form, status)
        messages.success(request, f"Idle policy of {self.object.full_slug} saved.")
        return redirect("gpus:policy", team=team, slug=slug)


def _back_url(request: HttpRequest, launch: Launch) -> str:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return reverse("launches:detail", kwargs={"pk": launch.pk})


def _back(request: HttpRequest, launch: Launch) -> HttpResponse:
    return redirect(_back_url(request, launch))


class ExemptView(ObjectAccessMixin, View):
    """A lead exempts a launch from the idle policy (with a reason, optionally for hours)."""

    lookup = get_launch_for_user
    lookup_kwargs = ("pk",)
    write_action = Action.MANAGE

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        form = ExemptionForm(request.POST)
        if not form.is_valid():
            reason = "Say why this launch may hold idle GPUs."
            return error_response(request, 400, reason, back=_back_url(request, self.object))
        return run_action(
            request,
            lambda: services.exempt_launch(
                actor_of(request), self.object, form.cleaned_data["reason"], form.expires_at()
            ),
            success=f"{self.object.job_name} is exempt from the idle policy.",
            then=_back_url(request, self.object),
        )


class UnexemptView(ObjectAccessMixin, View):
    lookup = get_launch_for_user
    lookup_kwargs = ("pk",)
    write_action = Action.MANAGE

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        if services.remove_exemption(actor_of(request), self.object):
            messages.success(request, f"{self.object.job_name} follows the idle policy again.")
        return _back(request, self.object)


class LaunchUsageView(ObjectAccessMixin, View):
    """A launch's GPU utilization and memory over its lifetime. For htmx swapping
    #gpu-usage: the panel alone (the launch page loads it, and it polls while the launch
    lives); otherwise a page."""

    lookup = get_launch_for_user
    lookup_kwargs = ("pk",)

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        launch: Launch = self.object
        context = launch_panel_context(request, launch)
        if fragment_for(request, ("gpu-usage",)):
            return render_fragment(
                request, "gpus/launch_usage.html", "gpu-usage", context, finished=launch.status in TERMINAL
            )
        return vary(render(request, "gpus/launch_usage.html", context))


def launch_panel_context(request: HttpRequest, launch: Launch) -> dict[str, Any]:
    """What the launch's GPU panel shows (also for embedding with {% include %})."""
    since = launch.started_at or launch.submitted_at or launch.created_at
    series = usage.launch_series(launch.pk, since, launch.finished_at) if launch.gpus else {"gpus": {}}
    exemption = IdleExemption.objects.filter(launch=launch).select_related("created_by").first()
    return {
        "launch": launch,
        "figure": charts.launch_figure(series) if series["gpus"] else None,
        "step": series.get("step", ""),
        "held": list(Gpu.objects.filter(launch=launch, present=True).order_by("node", "index")),
        "totals": usage.launch_totals(launch) if launch.gpus else None,
        "findings": list(IdleFinding.objects.active().filter(launch=launch).select_related("gpu")),
        "exemption": exemption if exemption and exemption.is_active() else None,
        "policy": services.policy_for(launch.project),
        "can_exempt": policies.can_manage_team(request.user, launch.project.team),
        "live": launch.status not in TERMINAL,
        "sources": source_summary(),
        "poll_seconds": max(30, int(settings.PLINTH_GPU_SAMPLE_SECONDS)),
        "panel_url": reverse("gpus:launch-usage", kwargs={"pk": launch.pk}),
    }
