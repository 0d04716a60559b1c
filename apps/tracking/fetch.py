"""Reading metric histories from MLflow quickly: few calls, run side by side.

MLflow spends ~35 µs of CPU per point it returns, whatever the endpoint, so the time goes
into points, not calls. `metrics/get-history-bulk` (the endpoint MLflow's own charts use)
returns one metric of up to 100 runs in one SQL query, 25,000 points at most: runs are
grouped so that a call's points fit (estimated from each run's latest step), a call that
comes back full is continued from the run it cut, and the calls run on a small thread
pool (MLflow's server has several workers). A single series longer than 25,000 points is
paged through `metrics/get-history`.

Nothing here touches the database: the worker threads only talk to MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, TypeVar

from django.conf import settings

from apps.tracking.gateway import HISTORY_BULK_LIMIT, MlflowError, gateway

T = TypeVar("T")
R = TypeVar("R")

RUNS_PER_CALL = 100  # MLflow refuses more run ids per get-history-bulk call


def pool_size() -> int:
    return max(1, int(settings.PLINTH_MLFLOW_THREADS))


def in_parallel(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """fn over items on the thread pool, results in order; the first error is raised. One
    item runs in this thread (no pool for the common small case)."""
    work = list(items)
    if len(work) <= 1:
        return [fn(item) for item in work]
    with ThreadPoolExecutor(max_workers=min(pool_size(), len(work)), thread_name_prefix="mlflow") as pool:
        return list(pool.map(fn, work))


@dataclass
class History:
    """All finite and non-finite points of one metric of one run, ordered by step (then
    timestamp), as MLflow's charts order them."""

    steps: list[int]
    values: list[float]
    # Wall-clock time of each point (ms since the epoch, MLflow's `timestamp`): the x of a
    # time axis, for metrics logged without a step.
    timestamps: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Want:
    """A history to read: run, metric, and a guess of its length (latest step + 1)."""

    run_id: str
    key: str
    estimate: int


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _ordered(points: list[dict[str, Any]]) -> History:
    """Points by step, then timestamp. MLflow sends them by timestamp, which is step order
    for any ordinary training loop: the sort only runs when it is not."""
    steps = [p.get("step") or 0 for p in points]
    if any(later < earlier for earlier, later in pairwise(steps)):
        points = sorted(points, key=lambda p: (p.get("step") or 0, p.get("timestamp") or 0))
        steps = [p.get("step") or 0 for p in points]
    values = [p.get("value") for p in points]
    if not all(type(v) is float for v in values):
        values = [_number(v) for v in values]
    timestamps = [int(p.get("timestamp") or 0) for p in points]
    return History([int(s) for s in steps], values, timestamps)  # type: ignore[arg-type]


def _paged_history(run_id: str, key: str) -> History:
    points: list[dict[str, Any]] = []
    token = ""
    while True:
        page, token = gateway().get_metric_history(run_id, key, page_token=token)
        points.extend(page)
        if not token:
            return _ordered(points)


def _groups(wants: list[Want], limit: int) -> list[tuple[str, list[str]]]:
    """(metric, run ids) per call: as few calls as the estimates allow, of even sizes (so
    they finish together on the pool), each expected to stay *under* `limit` points — an
    answer of exactly `limit` points looks cut short and would be continued."""
    by_key: dict[str, list[Want]] = {}
    for want in wants:
        by_key.setdefault(want.key, []).append(want)
    room = max(1, limit - 1)
    groups: list[tuple[str, list[str]]] = []
    for key, items in by_key.items():
        sizes = [min(max(1, w.estimate), room) for w in items]
        calls = max(math.ceil(len(items) / RUNS_PER_CALL), math.ceil(sum(sizes) / room))
        target = math.ceil(sum(sizes) / calls)
        per_call = math.ceil(len(items) / calls)
        chunk: list[str] = []
        total = 0
        for want, size in zip(items, sizes, strict=True):
            if chunk and (len(chunk) >= min(per_call, RUNS_PER_CALL) or total + size > min(target, room)):
                groups.append((key, chunk))
                chunk, total = [], 0
            chunk.append(want.run_id)
            total += size
        if chunk:
            groups.append((key, chunk))
    return groups


@dataclass
class Answer:
    key: str
    histories: dict[str, History]
    again: list[str]  # run ids still to read (the call came back full)
    errors: dict[str, str]


def _read(key: str, run_ids: list[str], limit: int) -> Answer:
    """One get-history-bulk call. MLflow orders its answer by run id and stops at `limit`
    points: when the answer is full, the last run it mentions may be cut short, so that
    run and the runs it did not mention are read again (each round completes at least one
    run, so this ends). A run that fills a call alone is paged through get-history."""
    try:
        points = gateway().get_history_bulk(run_ids, key, max_results=limit)
    except MlflowError as exc:
        if len(run_ids) > 1:  # find the run MLflow refuses, one call each
            return _split(key, run_ids, limit)
        return Answer(key, {}, [], {run_ids[0]: exc.message})
    by_run: dict[str, list[dict[str, Any]]] = {}
    for point in points:
        by_run.setdefault(str(point.get("run_id")), []).append(point)
    if points and len(points) >= limit:
        cut = str(points[-1].get("run_id"))
        if len(by_run) == 1:
            return Answer(key, {cut: _paged_history(cut, key)}, [r for r in run_ids if r != cut], {})
        del by_run[cut]
        again = [r for r in run_ids if r not in by_run]
        return Answer(key, {r: _ordered(p) for r, p in by_run.items()}, again, {})
    return Answer(key, {r: _ordered(by_run.get(r, [])) for r in run_ids}, [], {})


def _split(key: str, run_ids: list[str], limit: int) -> Answer:
    merged = Answer(key, {}, [], {})
    for run_id in run_ids:
        part = _read(key, [run_id], limit)
        merged.histories.update(part.histories)
        merged.again.extend(part.again)
        merged.errors.update(part.errors)
    return merged


def read_histories(
    wants: list[Want], transform: Callable[[str, str, History], T], *, limit: int = HISTORY_BULK_LIMIT
) -> tuple[dict[tuple[str, str], T], dict[tuple[str, str], str]]:
    """`transform(run_id, key, history)` of the full history of each of `wants`, computed
    on the worker threads as answers arrive (so downsampling overlaps the waiting), and
    the histories MLflow refused {(run_id, key): message} (e.g. a run deleted while being
    read). MLflow unreachable raises MlflowUnavailable."""
    results: dict[tuple[str, str], T] = {}
    errors: dict[tuple[str, str], str] = {}
    groups = _groups(wants, limit)

    def work(key: str, run_ids: list[str]) -> tuple[Answer, dict[str, T]]:
        answer = _read(key, run_ids, limit)
        return answer, {run_id: transform(run_id, key, h) for run_id, h in answer.histories.items()}

    def take(done: tuple[Answer, dict[str, T]]) -> list[tuple[str, list[str]]]:
        answer, transformed = done
        for run_id, result in transformed.items():
            results[(run_id, answer.key)] = result
        for run_id, message in answer.errors.items():
            errors[(run_id, answer.key)] = message
        # What a full answer left out is read in a call of its own.
        return [(answer.key, answer.again)] if answer.again else []

    if len(groups) <= 1:
        queue = list(groups)
        while queue:
            queue.extend(take(work(*queue.pop())))
        return results, errors

    with ThreadPoolExecutor(max_workers=min(pool_size(), len(groups)), thread_name_prefix="mlflow") as pool:
        running = {pool.submit(work, key, run_ids) for key, run_ids in groups}
        while running:
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                for key, run_ids in take(future.result()):
                    running.add(pool.submit(work, key, run_ids))
    return results, errors
