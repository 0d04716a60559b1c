"""Usage arithmetic: GPU-hours allocated and used per team or project over a period, the
fleet heatmap, and a launch's utilization over its lifetime.

Every range is read as hourly roll-ups for the hours already rolled up, plus the raw
samples of the hours after that (the hour being filled), so a month costs the same few
queries as a day. Definitions, for a GPU sampled every R seconds:
  allocated GPU-hours = (samples taken while some launch or pod held it) x R / 3600
  used GPU-hours      = Σ over those samples of utilization/100 x R / 3600
A period is whole hours: its start is rounded down to the hour; its end too, unless it is
in the future, in which case the period ends now."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, Max, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from apps.accounts.models import Team
from apps.gpus.models import Gpu, GpuHourly, GpuPrice, GpuSample, resolution_seconds
from apps.gpus.store import HOUR, floor_hour, rolled_until
from apps.projects.models import Project

GROUPS = ("team", "project")


@dataclass
class UsageRow:
    """One team's or project's GPU-hours in a period."""

    key: str  # "demo" or "demo/train"; "ns:<namespace>" for pods outside Plinth's projects
    team: str
    project: str
    allocated_hours: float = 0.0
    used_hours: float = 0.0
    measured_hours: float = 0.0  # allocated hours that had a reading (used is known for these)
    cost: Decimal | None = None
    by_product: dict[str, float] = field(default_factory=dict)

    @property
    def utilization(self) -> float | None:
        """Used as a share of the allocated time that was measured (percent)."""
        return 100.0 * self.used_hours / self.measured_hours if self.measured_hours else None

    @property
    def idle_hours(self) -> float:
        return max(self.measured_hours - self.used_hours, 0.0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.key,
            "team": self.team,
            "project": self.project,
            "gpu_hours_allocated": round(self.allocated_hours, 4),
            "gpu_hours_used": round(self.used_hours, 4),
            "gpu_hours_measured": round(self.measured_hours, 4),
            "utilization_percent": round(self.utilization, 2) if self.utilization is not None else None,
            "cost": str(self.cost.quantize(Decimal("0.01"))) if self.cost is not None else None,
        }


@dataclass
class Period:
    start: datetime
    end: datetime

    @classmethod
    def of(cls, start: datetime, end: datetime, now: datetime | None = None) -> Period:
        now = now or timezone.now()
        end = now if end >= now else floor_hour(end)
        return cls(floor_hour(start), max(end, floor_hour(start)))

    @property
    def hours(self) -> float:
        return (self.end - self.start).total_seconds() / 3600


def split(period: Period) -> tuple[tuple[datetime, datetime] | None, tuple[datetime, datetime]]:
    """The part of `period` read from roll-ups, and the part read from raw samples.

    The raw part is always returned, empty when the roll-ups cover the whole period, and
    callers always read it: whether it is empty depends on the clock (the first minutes of
    an hour, before the roll-up moves its mark), and a page's query count must not."""
    mark = rolled_until()
    if mark is None:
        return None, (period.start, period.end)
    hourly_end = min(period.end, mark)
    hourly = (period.start, floor_hour(hourly_end)) if floor_hour(hourly_end) > period.start else None
    raw_start = max(period.start, floor_hour(hourly_end) if hourly else period.start)
    return hourly, (raw_start, max(period.end, raw_start))


def _usage_rows(period: Period, teams: Any, include_foreign: bool, **filters: Any) -> list[dict[str, Any]]:
    """Allocated rows of the period per (GPU, team, project, namespace), from both stores
    (grouped by GPU, not joined to its model: the covering indexes then answer alone).
    `teams` None: every team (and, with `include_foreign`, pods outside Plinth's projects)."""

    def scoped(query: Any) -> Any:
        query = query.filter(**filters)
        if teams is None:
            return query if include_foreign else query.filter(team__isnull=False)
        return query.filter(team__in=teams)

    hourly, raw = split(period)
    rows: list[dict[str, Any]] = []
    keys = ("gpu_id", "team_id", "project_id", "namespace")
    if hourly is not None:
        rows.extend(
            scoped(GpuHourly.objects.filter(hour__gte=hourly[0], hour__lt=hourly[1], allocated=True))
            .order_by()
            .values(*keys)
            .annotate(seconds_=Sum("seconds"), used=Sum("used_seconds"), measured=Sum("util_samples"))
        )
    resolution = resolution_seconds()
    # The raw tail is read even when empty (see split()): a fixed query count.
    for row in (
        scoped(GpuSample.objects.filter(at__gte=raw[0], at__lt=raw[1], allocated=True))
        .order_by()
        .values(*keys)
        .annotate(n=Count("at"), util=Sum("utilization"), measured=Count("utilization"))
    ):
        rows.append(
            {
                **{k: row[k] for k in keys},
                "seconds_": row["n"] * resolution,
                "used": float(row["util"] or 0) / 100.0 * resolution,
                "measured": row["measured"],
                "resolution": resolution,
            }
        )
    return rows


def usage_report(
    period: Period, group_by: str, teams: Any, *, include_foreign: bool = False, team: Team | None = None
) -> list[UsageRow]:
    """GPU-hours allocated and used per team or project of `teams` (a queryset; None for
    every team), with cost where the GPU product has a price. `include_foreign` adds pods
    outside Plinth's projects, one row per namespace (platform admins)."""
    if group_by not in GROUPS:
        raise ValueError(group_by)
    if team is not None:
        teams = Team.objects.filter(pk=team.pk)
    resolution = resolution_seconds()
    rows = _usage_rows(period, teams, include_foreign and teams is None)
    products = dict(Gpu.objects.filter(pk__in={r["gpu_id"] for r in rows}).values_list("pk", "product"))
    prices = dict(GpuPrice.objects.values_list("product", "price_per_hour"))
    team_slugs = dict(Team.objects.filter(pk__in={r["team_id"] for r in rows}).values_list("pk", "slug"))
    projects = {
        p.pk: p
        for p in Project.objects.filter(pk__in={r["project_id"] for r in rows if r["project_id"]}).select_related(
            "team"
        )
    }
    out: dict[str, UsageRow] = {}
    for row in rows:
        project = projects.get(row["project_id"]) if row["project_id"] else None
        team_slug = team_slugs.get(row["team_id"], "") if row["team_id"] else ""
        if not team_slug:
            key, team_label, project_label = f"ns:{row['namespace'] or '?'}", "", ""
        elif group_by == "team":
            key, team_label, project_label = team_slug, team_slug, ""
        else:
            project_label = project.slug if project else ""
            key, team_label = (
                (f"{team_slug}/{project_label}" if project else f"{team_slug}/ns:{row['namespace']}"),
                team_slug,
            )
        entry = out.setdefault(key, UsageRow(key, team_label, project_label))
        hours = (row["seconds_"] or 0) / 3600
        entry.allocated_hours += hours
        entry.used_hours += (row["used"] or 0) / 3600
        entry.measured_hours += (row["measured"] or 0) * row.get("resolution", resolution) / 3600
        product = products.get(row["gpu_id"], "")
        entry.by_product[product] = entry.by_product.get(product, 0.0) + hours
    for entry in out.values():
        priced = [(hours, prices[m]) for m, hours in entry.by_product.items() if m in prices]
        if priced:
            entry.cost = sum((Decimal(str(round(h, 6))) * p for h, p in priced), Decimal(0))
    return sorted(out.values(), key=lambda r: (r.key.startswith("ns:"), r.key))


def sum_rows(rows: list[UsageRow], key: str = "total") -> UsageRow:
    """The rows added up (cost: the sum of the priced parts, None when nothing is priced)."""
    total = UsageRow(key, "", "")
    for row in rows:
        total.allocated_hours += row.allocated_hours
        total.used_hours += row.used_hours
        total.measured_hours += row.measured_hours
        if row.cost is not None:
            total.cost = (total.cost or Decimal(0)) + row.cost
    return total


def totals(period: Period, teams: Any = None, *, include_foreign: bool = True, **filters: Any) -> UsageRow:
    """One row for everything in scope (the fleet's waste headline, a launch's totals)."""
    resolution = resolution_seconds()
    total = UsageRow("total", "", "")
    for row in _usage_rows(period, teams, include_foreign, **filters):
        total.allocated_hours += (row["seconds_"] or 0) / 3600
        total.used_hours += (row["used"] or 0) / 3600
        total.measured_hours += (row["measured"] or 0) * row.get("resolution", resolution) / 3600
    return total


def launch_totals(launch: Any) -> UsageRow:
    """GPU-hours a launch held and used over its whole life."""
    return totals(Period.of(launch.created_at, timezone.now()), include_foreign=True, launch_id=launch.pk)


def usage_timeline(
    period: Period, teams: Any, *, include_foreign: bool = False, team: Team | None = None
) -> list[tuple[datetime, float, float]]:
    """(day, GPU-hours allocated, GPU-hours used) for each day of the period in scope."""
    if team is not None:
        teams = Team.objects.filter(pk=team.pk)
    include_foreign = include_foreign and teams is None

    def scoped(query: Any) -> Any:
        if teams is None:
            return query if include_foreign else query.filter(team__isnull=False)
        return query.filter(team__in=teams)

    days: dict[datetime, list[float]] = defaultdict(lambda: [0.0, 0.0])

    def add(hour: datetime, seconds: float, used: float) -> None:
        local = timezone.localtime(hour)
        day = local.replace(hour=0, minute=0, second=0, microsecond=0)
        days[day][0] += seconds / 3600
        days[day][1] += used / 3600

    hourly, raw = split(period)
    if hourly is not None:
        for row in (
            scoped(GpuHourly.objects.filter(hour__gte=hourly[0], hour__lt=hourly[1], allocated=True))
            .order_by()
            .values("hour")
            .annotate(s=Sum("seconds"), u=Sum("used_seconds"))
        ):
            add(row["hour"], row["s"] or 0, row["u"] or 0)
    resolution = resolution_seconds()
    hour = floor_hour(raw[0])
    while hour < raw[1]:  # every day the raw part touches has its row, samples or not
        add(hour, 0.0, 0.0)
        hour += HOUR
    # Read even when empty (see split()), in one query however many hours the roll-up lags.
    for row in (
        scoped(GpuSample.objects.filter(at__gte=raw[0], at__lt=raw[1], allocated=True))
        .annotate(hour=TruncHour("at", tzinfo=UTC))
        .order_by()
        .values("hour")
        .annotate(n=Count("at"), util=Sum("utilization"))
    ):
        add(row["hour"], (row["n"] or 0) * resolution, float(row["util"] or 0) / 100 * resolution)
    return sorted((day, values[0], values[1]) for day, values in days.items())


# --- the fleet heatmap ---------------------------------------------------------------------
def heatmap(
    gpu_ids: list[int], hours: int, now: datetime | None = None
) -> tuple[list[datetime], dict[int, list[float | None]]]:
    """Mean utilization per GPU per hour for the last `hours` hours (the current hour
    included, so far): roll-ups for rolled hours, raw samples for the rest."""
    now = now or timezone.now()
    end = floor_hour(now) + HOUR
    start = end - timedelta(hours=hours)
    columns = [start + timedelta(hours=i) for i in range(hours)]
    position = {c: i for i, c in enumerate(columns)}
    cells: dict[int, list[float | None]] = {g: [None] * hours for g in gpu_ids}
    sums: dict[tuple[int, datetime], list[float]] = defaultdict(lambda: [0.0, 0.0])
    mark = rolled_until() or start
    if mark > start:
        for row in (
            GpuHourly.objects.filter(hour__gte=start, hour__lt=min(mark, end), gpu_id__in=gpu_ids)
            .order_by()
            .values("gpu_id", "hour")
            .annotate(total=Sum("util_sum"), n=Sum("util_samples"))
        ):
            cell = sums[(row["gpu_id"], row["hour"])]
            cell[0] += row["total"] or 0
            cell[1] += row["n"] or 0
    for row in raw_by_hour(max(mark, start), end, gpu_id__in=gpu_ids):
        cell = sums[(row["gpu_id"], row["hour"])]
        cell[0] += float(row["util_sum"] or 0)
        cell[1] += row["util_samples"]
    for (gpu_id, when), (total, n) in sums.items():
        if gpu_id in cells and when in position and n:
            cells[gpu_id][position[when]] = round(total / n, 1)
    return columns, cells


def raw_by_hour(start: datetime, end: datetime, **filters: Any) -> Any:
    """Raw samples in [start, end) summed per GPU and hour, oldest hour first, in one query
    however many hours the range spans (a page's query count must not depend on how far the
    roll-up lags behind the clock)."""
    if end <= start:
        return []
    return (
        GpuSample.objects.filter(at__gte=start, at__lt=end, **filters)
        .annotate(hour=TruncHour("at", tzinfo=UTC))
        .order_by()
        .values("gpu_id", "hour")
        .annotate(
            util_sum=Sum("utilization"),
            util_samples=Count("utilization"),
            mem_sum=Sum("memory_used_mib"),
            mem_samples=Count("memory_used_mib"),
        )
        .order_by("hour", "gpu_id")
    )


# --- one launch over its lifetime ----------------------------------------------------------
MAX_POINTS = 1000


def launch_gpu_ids(launch_id: int, since: datetime) -> set[int]:
    """The GPUs a launch held: from its roll-ups, its current GPUs and the hour being filled
    (so the raw samples can be read through the (gpu, at) key, not by scanning time)."""
    ids = set(GpuHourly.objects.filter(launch_id=launch_id).values_list("gpu_id", flat=True).distinct())
    ids |= set(Gpu.objects.filter(launch_id=launch_id).values_list("pk", flat=True))
    tail = max(rolled_until() or since, since)
    ids |= set(GpuSample.objects.filter(at__gte=tail, launch_id=launch_id).values_list("gpu_id", flat=True).distinct())
    return ids


def launch_series(launch_id: int, start: datetime, end: datetime | None) -> dict[str, Any]:
    """Utilization and memory of each GPU a launch held since `start`, at most MAX_POINTS
    points a trace: raw minutes while the lifetime fits, else hourly means (and coarser when
    even those are too many)."""
    now = timezone.now()
    first, last = start, end or now
    resolution = resolution_seconds()
    gpu_ids = launch_gpu_ids(launch_id, first)
    if not gpu_ids:
        return {"gpus": {}, "step": "minute"}
    traces: dict[int, dict[str, list[Any]]] = defaultdict(lambda: {"t": [], "util": [], "mem": []})
    raw_since = rolled_until() or first
    if (last - first).total_seconds() / resolution <= MAX_POINTS and first >= now - timedelta(days=7):
        for gpu_id, at, util, mem in (
            GpuSample.objects.filter(
                gpu_id__in=gpu_ids, at__gte=first - timedelta(seconds=resolution), at__lte=last, launch_id=launch_id
            )
            .order_by("at")
            .values_list("gpu_id", "at", "utilization", "memory_used_mib")
        ):
            trace = traces[gpu_id]
            trace["t"].append(at)
            trace["util"].append(util)
            trace["mem"].append(mem)
        step = "minute"
    else:
        for row in (
            GpuHourly.objects.filter(launch_id=launch_id, hour__lt=raw_since)
            .order_by("hour")
            .values("gpu_id", "hour")
            .annotate(
                u=Sum("util_sum"), un=Sum("util_samples"), m=Sum("mem_sum"), mn=Sum("mem_samples"), mx=Max("mem_max")
            )
        ):
            _append_hour(traces[row["gpu_id"]], row["hour"], row["u"], row["un"], row["m"], row["mn"])
        tail = (floor_hour(max(raw_since, first)), floor_hour(min(now, last)) + HOUR)
        for row in raw_by_hour(*tail, gpu_id__in=gpu_ids, launch_id=launch_id):
            trace = traces[row["gpu_id"]]
            util_sum, mem_sum = float(row["util_sum"] or 0), float(row["mem_sum"] or 0)
            _append_hour(trace, row["hour"], util_sum, row["util_samples"], mem_sum, row["mem_samples"])
        step = "hour"
        for trace in traces.values():
            _thin(trace)
    labels = {
        pk: f"{node}/{index}"
        for pk, node, index in Gpu.objects.filter(pk__in=list(traces)).values_list("pk", "node", "index")
    }
    named = {labels.get(pk, f"gpu {pk}"): trace for pk, trace in sorted(traces.items())}
    return {"gpus": named, "step": step}


def _append_hour(trace: dict[str, list[Any]], hour: datetime, u: Any, un: Any, m: Any, mn: Any) -> None:
    trace["t"].append(hour)
    trace["util"].append(round(u / un, 2) if un else None)
    trace["mem"].append(round(m / mn) if mn else None)


def _thin(trace: dict[str, list[Any]]) -> None:
    """Average consecutive points until the trace has at most MAX_POINTS (months-long runs)."""
    size = len(trace["t"])
    if size <= MAX_POINTS:
        return
    step = -(-size // MAX_POINTS)
    for key in ("util", "mem"):
        values = trace[key]
        chunks = [values[i : i + step] for i in range(0, size, step)]
        trace[key] = [
            (sum(v for v in chunk if v is not None) / max(1, sum(1 for v in chunk if v is not None)))
            if any(v is not None for v in chunk)
            else None
            for chunk in chunks
        ]
    trace["t"] = trace["t"][::step]
