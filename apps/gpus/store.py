"""Writing utilization history in bulk, rolling it up by the hour, and keeping it within
its retention.

The sampler writes one row per GPU per minute: 500 GPUs make 720,000 rows a day, so rows
go in through one `executemany` of a prepared INSERT (no model instances), and a second
pass in the same minute is a no-op (ON CONFLICT DO NOTHING on (gpu, at)). Roll-ups are
recomputed hour by hour (delete + insert in one transaction, so re-rolling is safe) and
pages read them for anything older than the hour being filled, never millions of raw rows."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max, Sum
from django.utils import timezone

from apps.gpus.models import GpuHourly, GpuSample, SourceStatus, resolution_seconds

HOUR = timedelta(hours=1)
# The sample columns insert_samples() takes, in order.
SAMPLE_COLUMNS = (
    "gpu_id",
    "at",
    "utilization",
    "memory_used_mib",
    "power_w",
    "engine_active",
    "allocated",
    "launch_id",
    "project_id",
    "team_id",
    "namespace",
)
MAX_HOURS_PER_ROLLUP = 24 * 8  # the first run after a long outage catches up in steps


def floor_time(when: datetime, seconds: int) -> datetime:
    """`when` rounded down to the sampler's grid (whole multiples of `seconds` since the epoch)."""
    stamp = int(when.timestamp())
    return datetime.fromtimestamp(stamp - stamp % seconds, tz=when.tzinfo or timezone.get_current_timezone())


def floor_hour(when: datetime) -> datetime:
    return floor_time(when, 3600)


def _insert_sql() -> str:
    quote = connection.ops.quote_name
    table = quote(GpuSample._meta.db_table)
    columns = ", ".join(quote(c) for c in SAMPLE_COLUMNS)
    marks = ", ".join(["%s"] * len(SAMPLE_COLUMNS))
    # Standard upsert syntax: SQLite (3.24+) and PostgreSQL both accept it. Only quoted
    # identifiers from the model are formatted in; every value is a parameter.
    conflict = f"ON CONFLICT ({quote('gpu_id')}, {quote('at')}) DO NOTHING"
    return f"INSERT INTO {table} ({columns}) VALUES ({marks}) {conflict}"  # noqa: S608


def insert_samples(rows: Iterable[Sequence[Any]], batch: int = 20_000) -> int:
    """Insert sample rows (tuples in SAMPLE_COLUMNS order, `at` an aware datetime); rows whose
    (gpu, at) exists already are skipped. Returns how many rows were offered."""
    adapt = connection.ops.adapt_datetimefield_value
    adapted: dict[datetime, Any] = {}  # a pass shares one instant: adapt it once
    sql = _insert_sql()
    total = 0
    chunk: list[tuple[Any, ...]] = []

    def flush() -> None:
        # One transaction per batch: in autocommit every row would be a commit of its own.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(sql, chunk)

    for row in rows:
        at = row[1]
        value = adapted.get(at)
        if value is None:
            value = adapted[at] = adapt(at)
        chunk.append((row[0], value, *row[2:]))
        if len(chunk) >= batch:
            flush()
            total += len(chunk)
            chunk = []
    if chunk:
        flush()
        total += len(chunk)
    return total


# --- roll-ups ---------------------------------------------------------------------------
def rolled_until() -> datetime | None:
    """Hours before this instant are rolled up (None: nothing yet)."""
    status = SourceStatus.objects.filter(name="rollup").only("mark").first()
    return status.mark if status is not None else None


def hourly_rows_from_samples(start: datetime, end: datetime, **filters: Any) -> list[dict[str, Any]]:
    """Samples in [start, end) summed per GPU and holder: the roll-up of one hour, or the
    not-yet-rolled tail of a range (same keys as GpuHourly's fields)."""
    resolution = resolution_seconds()
    grouped = (
        GpuSample.objects.filter(at__gte=start, at__lt=end, **filters)
        .order_by()
        .values("gpu_id", "allocated", "launch_id", "project_id", "team_id", "namespace")
        .annotate(
            samples=Count("at"),
            util_samples=Count("utilization"),
            util_sum=Sum("utilization"),
            util_max=Max("utilization"),
            mem_samples=Count("memory_used_mib"),
            mem_sum=Sum("memory_used_mib"),
            mem_max=Max("memory_used_mib"),
            power_samples=Count("power_w"),
            power_sum=Sum("power_w"),
        )
    )
    rows = []
    for row in grouped:
        row["util_sum"] = float(row["util_sum"] or 0)
        row["mem_sum"] = float(row["mem_sum"] or 0)
        row["power_sum"] = float(row["power_sum"] or 0)
        row["seconds"] = row["samples"] * resolution
        row["used_seconds"] = row["util_sum"] / 100.0 * resolution
        rows.append(row)
    return rows


def roll_up_hour(hour: datetime) -> int:
    """(Re)compute the roll-up rows of one hour from its samples. Idempotent."""
    rows = hourly_rows_from_samples(hour, hour + HOUR)
    with transaction.atomic():
        GpuHourly.objects.filter(hour=hour).delete()
        GpuHourly.objects.bulk_create(GpuHourly(hour=hour, **row) for row in rows)
    return len(rows)


def roll_up(now: datetime | None = None) -> dict[str, Any]:
    """Roll up every complete hour not rolled yet (and the last one again, for samples that
    arrived late), then move the mark. An hour is complete once its last sample is due."""
    now = now or timezone.now()
    resolution = resolution_seconds()
    complete_until = floor_hour(now - timedelta(seconds=resolution))
    mark = rolled_until()
    if mark is None:
        first = GpuSample.objects.order_by("at").values_list("at", flat=True).first()
        if first is None:
            return {"hours": 0, "rows": 0, "until": None}
        start = floor_hour(first)
    else:
        start = mark - HOUR
        oldest_raw = now - timedelta(days=raw_retention_days())
        start = max(start, floor_hour(oldest_raw) + HOUR)  # never re-roll hours whose samples are gone
    hours = rows = 0
    hour = start
    while hour < complete_until and hours < MAX_HOURS_PER_ROLLUP:
        rows += roll_up_hour(hour)
        hour += HOUR
        hours += 1
    if hours:
        new_mark = max(hour, mark) if mark is not None else hour
        SourceStatus.objects.update_or_create(
            name="rollup", defaults={"mark": new_mark, "ok": True, "configured": True, "checked_at": now}
        )
        mark = new_mark
    return {"hours": hours, "rows": rows, "until": mark}


# --- retention --------------------------------------------------------------------------
def raw_retention_days() -> int:
    return max(1, int(settings.PLINTH_GPU_RAW_RETENTION_DAYS))


def hourly_retention_days() -> int:
    return max(7, int(settings.PLINTH_GPU_HOURLY_RETENTION_DAYS))


def prune(now: datetime | None = None) -> dict[str, int]:
    """Drop raw samples past their retention (only hours already rolled up) and roll-ups past
    theirs. Deletes go hour by hour so no transaction holds millions of rows."""
    now = now or timezone.now()
    mark = rolled_until()
    cutoff = floor_hour(now - timedelta(days=raw_retention_days()))
    cutoff_raw = None if mark is None else min(cutoff, mark)
    removed = {"samples": 0, "hourly": 0}
    if cutoff_raw is not None:
        oldest = GpuSample.objects.order_by("at").values_list("at", flat=True).first()
        hour = floor_hour(oldest) if oldest is not None else cutoff_raw
        while hour < cutoff_raw:
            deleted, _ = GpuSample.objects.filter(at__gte=hour, at__lt=hour + HOUR).delete()
            removed["samples"] += deleted
            hour += HOUR
        deleted, _ = GpuSample.objects.filter(at__lt=cutoff_raw).delete()
        removed["samples"] += deleted
    deleted, _ = GpuHourly.objects.filter(hour__lt=floor_hour(now - timedelta(days=hourly_retention_days()))).delete()
    removed["hourly"] = deleted
    return removed
