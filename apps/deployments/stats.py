"""Per-revision request statistics of the inference gateway: recorded in memory, written
to RequestStats at most once a second per process, read back as metrics and series.

Each process (a gunicorn worker, say) keeps running totals per (revision, minute):
requests, 4xx, 5xx, latency sum and a histogram over LATENCY_BUCKETS_MS. `flush` rewrites
this process's own row for each (revision, minute, writer) with those totals (one upsert
statement; idempotent, no contention between processes); readers sum the rows of every
writer. The gateway calls `flush_if_due` when a request has finished, so the only database
write on the request path is that one upsert, at most once a second; `flush` also runs at
exit. A process that gets no further request keeps its last second's counts until its next
request or its exit.

Percentiles are read from the histogram: the bucket holding the q-th request (rank
q * count) is found, and the value is interpolated linearly between the bucket's lower and
upper bound by the rank's position among that bucket's requests (as Prometheus'
histogram_quantile does). The first bucket starts at 0 ms; a rank in the last, open bucket
(above 10 s) reads as its lower bound, 10,000 ms.
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from apps.deployments.models import LATENCY_BUCKETS_MS, RequestSample, RequestStats, Revision
from apps.deployments.serving.base import MetricsSeries, RevisionMetrics

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0  # at most one write per this many seconds per process
SAMPLE_BODY_BYTES = 4096  # a captured request or answer is cut to this many bytes
SAMPLES_PER_MINUTE = 10  # captured pairs per revision per minute per process
SAMPLES_KEPT = 200  # captured pairs kept per revision (the oldest go)
MAX_SERIES_POINTS = 1000  # a series longer than this lists only the minutes with requests
NBUCKETS = len(LATENCY_BUCKETS_MS) + 1
clock = time.monotonic  # what "once a second" is measured with


@dataclass
class Totals:
    """One process's running totals for one revision in one minute."""

    requests: int = 0
    errors_4xx: int = 0
    errors_5xx: int = 0
    latency_ms_sum: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * NBUCKETS)


@dataclass
class _Sample:
    revision_id: int
    at: datetime
    status_code: int
    latency_ms: float
    request_body: str
    response_body: str


_lock = threading.Lock()
_totals: dict[tuple[int, datetime], Totals] = {}
_dirty: set[tuple[int, datetime]] = set()
_samples: list[_Sample] = []
_sample_counts: dict[tuple[int, datetime], int] = {}
_last_flush = 0.0


def discard() -> None:
    """Drop everything this process has buffered and not written yet."""
    global _last_flush
    with _lock:
        _totals.clear()
        _dirty.clear()
        _samples.clear()
        _sample_counts.clear()
        _last_flush = 0.0


def _reset_after_fork() -> None:
    """A forked child starts with empty buffers: its parent's counts are its parent's."""
    global _lock, _last_flush
    _lock = threading.Lock()
    _totals.clear()
    _dirty.clear()
    _samples.clear()
    _sample_counts.clear()
    _last_flush = 0.0


os.register_at_fork(after_in_child=_reset_after_fork)


def writer_name() -> str:
    """This process as a RequestStats writer: "host:pid" (at most 80 characters)."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}"


def minute_of(moment: datetime) -> datetime:
    """The start of the minute holding `moment` (aware)."""
    return moment.replace(second=0, microsecond=0)


def bucket_index(latency_ms: float) -> int:
    """Which histogram bucket a latency in ms falls in: the first whose upper bound is
    >= it (bounds are inclusive), len(LATENCY_BUCKETS_MS) above the last bound."""
    return bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)


def record(revision_id: int, status: int, latency_ms: float, *, now: datetime | None = None) -> None:
    """Count one request forwarded to `revision_id` that answered HTTP `status` after
    `latency_ms` milliseconds (in memory; `flush` writes it)."""
    key = (revision_id, minute_of(now or timezone.now()))
    with _lock:
        totals = _totals.get(key)
        if totals is None:
            totals = _totals[key] = Totals()
        totals.requests += 1
        if 400 <= status < 500:
            totals.errors_4xx += 1
        elif status >= 500:
            totals.errors_5xx += 1
        totals.latency_ms_sum += latency_ms
        totals.buckets[bucket_index(latency_ms)] += 1
        _dirty.add(key)


def _cut(body: bytes) -> str:
    text = body[:SAMPLE_BODY_BYTES].decode("utf-8", errors="replace")
    return text + ("…" if len(body) > SAMPLE_BODY_BYTES else "")


def record_sample(revision_id: int, status: int, latency_ms: float, request_body: bytes, response_body: bytes) -> bool:
    """Keep one request/answer pair of a deployment that captures samples: bodies cut to
    SAMPLE_BODY_BYTES, at most SAMPLES_PER_MINUTE per revision and minute in this process
    (headers, and so tokens, are never passed in). Returns whether it was kept."""
    now = timezone.now()
    key = (revision_id, minute_of(now))
    with _lock:
        if _sample_counts.get(key, 0) >= SAMPLES_PER_MINUTE:
            return False
        _sample_counts[key] = _sample_counts.get(key, 0) + 1
        _samples.append(_Sample(revision_id, now, status, latency_ms, _cut(request_body), _cut(response_body)))
    return True


def flush_if_due() -> None:
    """`flush` when FLUSH_SECONDS have passed since the last one (cheap otherwise)."""
    if clock() - _last_flush >= FLUSH_SECONDS and (_dirty or _samples):
        flush()


def _copy(t: Totals) -> Totals:
    return Totals(t.requests, t.errors_4xx, t.errors_5xx, t.latency_ms_sum, list(t.buckets))


def flush() -> None:
    """Write this process's buffered totals (one upsert for all dirty rows) and samples.
    A revision deleted meanwhile is skipped; a database error is logged and the counts are
    kept for the next flush. Never raises."""
    global _last_flush
    with _lock:
        _last_flush = clock()
        keys = list(_dirty)
        rows = [(key, _copy(_totals[key])) for key in keys]
        samples = list(_samples)
        _dirty.clear()
        _samples.clear()
        current = minute_of(timezone.now())
        for key in [k for k in _totals if k[1] < current and k not in keys]:
            del _totals[key]
        for key in [k for k in _sample_counts if k[1] < current]:
            del _sample_counts[key]
    try:
        _write(rows, samples)
    except DatabaseError:
        logger.warning("could not write the gateway's request statistics; kept for the next flush", exc_info=True)
        with _lock:
            _dirty.update(key for key, _ in rows)
            _samples[:0] = samples[-SAMPLES_KEPT:]


def _write(rows: list[tuple[tuple[int, datetime], Totals]], samples: list[_Sample]) -> None:
    writer = writer_name()
    objects = [
        RequestStats(
            revision_id=revision_id,
            minute=minute,
            writer=writer,
            requests=t.requests,
            errors_4xx=t.errors_4xx,
            errors_5xx=t.errors_5xx,
            latency_ms_sum=t.latency_ms_sum,
            latency_buckets=t.buckets,
        )
        for (revision_id, minute), t in rows
    ]
    sample_rows = [
        RequestSample(
            revision_id=s.revision_id,
            at=s.at,
            status_code=s.status_code,
            latency_ms=s.latency_ms,
            request_body=s.request_body,
            response_body=s.response_body,
        )
        for s in samples
    ]
    ids = {row.revision_id for row in objects} | {row.revision_id for row in sample_rows}
    # A revision deleted since it was recorded (its deployment went) is dropped here: on
    # PostgreSQL the foreign key is checked only at commit, which may be an outer
    # transaction's, so the IntegrityError below would come too late to keep the rest.
    alive = set(Revision.objects.filter(pk__in=ids).values_list("pk", flat=True))
    objects = [o for o in objects if o.revision_id in alive]
    sample_rows = [s for s in sample_rows if s.revision_id in alive]
    try:
        _upsert(objects, sample_rows)
    except IntegrityError:  # a revision went away since it was recorded: keep the rest
        alive = set(Revision.objects.filter(pk__in=ids).values_list("pk", flat=True))
        _upsert([o for o in objects if o.revision_id in alive], [s for s in sample_rows if s.revision_id in alive])


def _upsert(objects: list[RequestStats], samples: list[RequestSample]) -> None:
    with transaction.atomic():
        if objects:
            RequestStats.objects.bulk_create(
                objects,
                update_conflicts=True,
                unique_fields=["revision", "minute", "writer"],
                update_fields=["requests", "errors_4xx", "errors_5xx", "latency_ms_sum", "latency_buckets"],
            )
        if samples:
            RequestSample.objects.bulk_create(samples)
            for revision_id in {s.revision_id for s in samples}:
                old = RequestSample.objects.filter(revision_id=revision_id).order_by("-at", "-id")[SAMPLES_KEPT:]
                RequestSample.objects.filter(pk__in=list(old.values_list("pk", flat=True))).delete()


def _flush_at_exit() -> None:
    """The last write of a process that is going away; an error is dropped silently (the
    logging streams may be closed already)."""
    with _lock:
        rows = [(key, _copy(_totals[key])) for key in _dirty]
        samples = list(_samples)
        _dirty.clear()
        _samples.clear()
    if rows or samples:
        with contextlib.suppress(Exception):
            _write(rows, samples)


atexit.register(_flush_at_exit)


# --- readers -------------------------------------------------------------------------------
def percentile(buckets: Sequence[int], q: float) -> float | None:
    """The q-quantile (0 <= q <= 1) in ms of a histogram over LATENCY_BUCKETS_MS (len + 1
    counts), interpolated linearly within its bucket (see the module docstring); None for
    an empty histogram."""
    total = sum(buckets)
    if not total:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(buckets):
        if count and seen + count >= rank:
            if index >= len(LATENCY_BUCKETS_MS):
                return float(LATENCY_BUCKETS_MS[-1])
            lower = 0.0 if index == 0 else float(LATENCY_BUCKETS_MS[index - 1])
            upper = float(LATENCY_BUCKETS_MS[index])
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return float(LATENCY_BUCKETS_MS[-1])  # not reached: the ranks end in the last bucket


def _merge(into: list[int], buckets: Sequence[int]) -> None:
    for index, count in enumerate(list(buckets)[:NBUCKETS]):
        into[index] += int(count)


def _rows(revisions: Sequence[Revision], since: datetime) -> list[RequestStats]:
    ids = [revision.pk for revision in revisions]
    return list(
        RequestStats.objects.filter(revision_id__in=ids, minute__gte=minute_of(since)).only(
            "revision_id", "minute", "requests", "errors_4xx", "errors_5xx", "latency_buckets"
        )
    )


def metrics(revisions: Sequence[Revision], since: datetime) -> dict[int, RevisionMetrics]:
    """Requests per revision from the minute holding `since` (aware) on, all writers
    together: counts, 4xx, 5xx and p50/p95/p99 in ms. One query; every revision asked for
    has an entry (zeros without requests)."""
    sums: dict[int, Totals] = {revision.pk: Totals() for revision in revisions}
    for row in _rows(revisions, since):
        totals = sums[row.revision_id]
        totals.requests += row.requests
        totals.errors_4xx += row.errors_4xx
        totals.errors_5xx += row.errors_5xx
        _merge(totals.buckets, row.latency_buckets or [])
    return {
        revision_id: RevisionMetrics(
            revision_id=revision_id,
            requests=t.requests,
            errors_4xx=t.errors_4xx,
            errors_5xx=t.errors_5xx,
            p50_ms=percentile(t.buckets, 0.50),
            p95_ms=percentile(t.buckets, 0.95),
            p99_ms=percentile(t.buckets, 0.99),
        )
        for revision_id, t in sums.items()
    }


def series(revisions: Sequence[Revision], since: datetime) -> dict[int, MetricsSeries]:
    """Per-minute series per revision from the minute holding `since` (aware) to now: every
    minute of that span (0 requests and None percentiles where none came), or only the
    minutes with requests when the span is longer than MAX_SERIES_POINTS minutes. One query."""
    per_minute: dict[int, dict[datetime, Totals]] = {revision.pk: {} for revision in revisions}
    for row in _rows(revisions, since):
        totals = per_minute[row.revision_id].setdefault(row.minute, Totals())
        totals.requests += row.requests
        totals.errors_4xx += row.errors_4xx
        totals.errors_5xx += row.errors_5xx
        _merge(totals.buckets, row.latency_buckets or [])
    first, last = minute_of(since), minute_of(timezone.now())
    span = int((last - first).total_seconds() // 60) + 1
    grid = [first + timedelta(minutes=i) for i in range(span)] if 0 < span <= MAX_SERIES_POINTS else None
    result = {}
    for revision_id, minutes in per_minute.items():
        out = MetricsSeries(revision_id=revision_id)
        for minute in grid if grid is not None else sorted(minutes):
            t = minutes.get(minute) or Totals()
            out.t.append(minute)
            out.requests.append(t.requests)
            out.errors.append(t.errors_5xx)
            out.p50_ms.append(percentile(t.buckets, 0.50))
            out.p95_ms.append(percentile(t.buckets, 0.95))
            out.p99_ms.append(percentile(t.buckets, 0.99))
        result[revision_id] = out
    return result
