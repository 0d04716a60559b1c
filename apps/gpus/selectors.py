"""Reads for the GPU pages and API, scoped to the user: fleet figures, the idle list, whose
usage a user may report on, and whether any source is configured at all."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.utils import timezone

from apps.access import policies
from apps.access.lookups import get_team_for_user
from apps.access.roles import Action
from apps.accounts.models import Team
from apps.gpus.config import kubernetes_configured, nvml_enabled, prometheus_url
from apps.gpus.models import Gpu, IdleFinding, SourceStatus, default_threshold, resolution_seconds


@dataclass
class FleetFigures:
    """The headline: how many GPUs, how many held, how many really busy, and the waste."""

    total: int = 0
    allocated: int = 0
    busy: int = 0
    allocated_idle: int = 0  # held, and under the threshold in the last sample
    unmeasured: int = 0  # no utilization reading (no metrics source for it)
    flagged: int = 0  # held and idle for at least the policy's window
    threshold: float = 5.0
    by_product: list[dict[str, Any]] = field(default_factory=list)
    by_node: list[dict[str, Any]] = field(default_factory=list)

    @property
    def free(self) -> int:
        return self.total - self.allocated


def _counts(threshold: float) -> dict[str, Any]:
    # Prefixed: an aggregate may not share a name with a field of the model ("allocated").
    return {
        "n_total": Count("pk"),
        "n_allocated": Count("pk", filter=Q(allocated=True)),
        "n_busy": Count("pk", filter=Q(utilization__gte=threshold)),
        "n_allocated_idle": Count("pk", filter=Q(allocated=True, utilization__lt=threshold)),
        "n_unmeasured": Count("pk", filter=Q(utilization__isnull=True)),
    }


def _unprefixed(row: dict[str, Any]) -> dict[str, Any]:
    return {key.removeprefix("n_"): value for key, value in row.items()}


def fleet_figures() -> FleetFigures:
    """Fleet-wide counts (everyone signed in may see how busy the fleet is; who holds what
    is scoped separately): one aggregate per (node, product), summed here by product and in all,
    and the count of active idle findings."""
    threshold = default_threshold()
    rows = [
        _unprefixed(row)
        for row in Gpu.objects.present()
        .order_by()
        .values("node", "product")
        .annotate(**_counts(threshold))
        .order_by("node", "product")
    ]
    keys = ("total", "allocated", "busy", "allocated_idle", "unmeasured")
    figures = FleetFigures(threshold=threshold, **{key: sum(row[key] for row in rows) for key in keys})
    by_product: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = by_product.setdefault(row["product"], {"product": row["product"], **dict.fromkeys(keys, 0)})
        for key in keys:
            entry[key] += row[key]
    figures.by_product = [by_product[product] for product in sorted(by_product)]
    figures.by_node = rows
    figures.flagged = IdleFinding.objects.active().count()
    return figures


def visible_gpus(user: Any) -> Any:
    return (
        Gpu.objects.for_user(user)
        .present()
        .select_related("launch__created_by", "project__team", "team")
        .order_by("node", "index")
    )


def idle_findings(user: Any, include_history: bool = False, now: datetime | None = None) -> Any:
    found = IdleFinding.objects.for_user(user).select_related(
        "gpu", "launch__created_by", "launch__idle_exemption__created_by", "project__team", "team"
    )
    if include_history:
        since = (now or timezone.now()) - timedelta(days=7)
        return found.filter(Q(status__in=("open", "notified", "exempt")) | Q(created_at__gte=since)).order_by(
            "-created_at", "-id"
        )
    return found.active().order_by("idle_since", "id")


def usage_teams(user: Any, team_slug: str = "") -> tuple[Any, Team | None]:
    """Whose usage `user` may report on: (None = every team, for platform admins; else the
    teams they lead), narrowed to `team_slug` when given (404 unseen, 403 not led).
    PermissionDenied (403) for anyone else (policies.can_report_usage)."""
    team = get_team_for_user(user, team_slug, Action.MANAGE) if team_slug else None
    if policies.is_platform_admin(user):
        return None, team
    if team is None and not policies.can_report_usage(user):
        raise PermissionDenied("GPU usage reports are for team leads and platform admins.")
    return Team.objects.for_user(user, Action.MANAGE), team


@dataclass
class SourceSummary:
    """What is configured, how it last answered, and when the sampler last ran: the page's
    honest empty states are written from this."""

    prometheus: str
    kubernetes: bool
    nvml: bool
    statuses: dict[str, SourceStatus]
    resolution: int

    @property
    def configured(self) -> bool:
        return bool(self.prometheus or self.kubernetes or self.nvml)

    @property
    def last_pass(self) -> datetime | None:
        sampler = self.statuses.get("sampler")
        return sampler.mark if sampler else None

    @property
    def stale(self) -> bool:
        """No pass for three resolutions: beat or the worker is not running."""
        last = self.last_pass
        return last is None or timezone.now() - last > timedelta(seconds=3 * self.resolution + 60)

    @property
    def failing(self) -> list[SourceStatus]:
        return [s for s in self.statuses.values() if s.configured and not s.ok and s.name not in ("sampler", "rollup")]

    @property
    def nvml_without_gpus(self) -> bool:
        status = self.statuses.get("nvml")
        return bool(self.nvml and status is not None and status.ok and status.gpus == 0)


def source_summary() -> SourceSummary:
    return SourceSummary(
        prometheus=prometheus_url(),
        kubernetes=kubernetes_configured(),
        nvml=nvml_enabled(),
        statuses={s.name: s for s in SourceStatus.objects.all()},
        resolution=resolution_seconds(),
    )


def heatmap_hours() -> int:
    return max(1, min(int(settings.PLINTH_GPU_HEATMAP_HOURS), 7 * 24))
