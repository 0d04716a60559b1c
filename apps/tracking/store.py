"""Direct, read-only reads of MLflow's backend store (`PLINTH_MLFLOW_STORE_URI`).

MLflow's REST server spends ~35 µs of CPU per point it returns; a database answers the same
question in a fraction of that and can cut the histories itself. Where the portal may read
the store (a read replica in production, the embedded server's own SQLite file under
`make run`), a compare reads:

* the fingerprint of every metric of its runs — `COUNT(*)` and `MAX(timestamp)` per (run,
  key) over MLflow's `metrics` table, NaN rows included — in one `GROUP BY` query. MLflow
  never deletes a point and its primary key (key, timestamp, step, run_uuid, value, is_nan)
  makes every logged point a new row, so any new point, at any step, changes the count:
  this is what makes a cached series exact rather than "fresh enough";
* the histories it lacks, cut to `max_points` by the database in ONE query (window
  functions), with the semantics of `apps.tracking.downsample.downsample`: the finite
  points of a series ordered by (step, timestamp, value); all of them when they fit, else
  the first, the last, and in each of (max_points - 2) // 2 buckets of the points between
  them (bucket = position * buckets // interior, positions counted from 0 after the first)
  the lowest value (earliest on ties) and the highest (latest on ties).

Schema as pinned by MLflow 3 (`metrics`: key, value, timestamp, run_uuid, step, is_nan);
NaN is stored as is_nan = true, ±inf as ±1.7976931348623157e308 (MLflow's sentinels, read
as ±inf, apps.core.numbers). SQLite and PostgreSQL are supported (window functions, integer
division of integers).

Every failure — no URI, a driver missing, the database unreachable, a schema that does not
match — raises `StoreUnavailable`, and the caller reads MLflow's REST API instead. The
connection is made read-only (SQLite `query_only`, PostgreSQL read-only transactions) and
nothing is ever committed.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from django.conf import settings

from apps.core.numbers import MLFLOW_FLOAT_MAX, display
from apps.tracking.downsample import MAX_NONFINITE, MIN_POINTS, Downsampled

logger = logging.getLogger(__name__)

# Bound parameters per query stay well under SQLite's limit (32,766) and PostgreSQL's.
MAX_IDS_PER_QUERY = 5000


class StoreUnavailable(Exception):
    """The store cannot be read (not configured, unreachable, unexpected schema)."""


@dataclass(frozen=True)
class Fingerprint:
    """What the store holds of one metric of one run: `logged` points (NaN included) and
    the newest `last_timestamp` (ms since the epoch)."""

    logged: int
    last_timestamp: int


def store_uri() -> str:
    """The configured SQLAlchemy URL of MLflow's backend store, or "" (REST only)."""
    return str(settings.PLINTH_MLFLOW_STORE_URI or "")


def enabled() -> bool:
    """True when a store URL is configured (it may still turn out unreachable)."""
    return bool(store_uri())


_engines: dict[str, Any] = {}
_engines_lock = threading.Lock()


def _engine(uri: str) -> Any:
    """One pooled, read-only SQLAlchemy engine per URL (created on first use)."""
    with _engines_lock:
        engine = _engines.get(uri)
        if engine is not None:
            return engine
        import sqlalchemy as sa

        timeout = float(settings.MLFLOW_TIMEOUT)
        connect_args: dict[str, Any] = {}
        if uri.startswith("sqlite"):
            connect_args = {"timeout": timeout, "check_same_thread": False}
        elif uri.startswith("postgresql"):
            # A query may take as long as one history read over REST, no longer.
            longest = float(settings.PLINTH_MLFLOW_HISTORY_TIMEOUT)
            connect_args = {
                "connect_timeout": max(1, int(timeout)),
                "options": f"-c statement_timeout={int(longest * 1000)}",
            }
        try:
            engine = sa.create_engine(uri, connect_args=connect_args, pool_pre_ping=True)
        except Exception as exc:  # a bad URL or a driver that is not installed
            raise StoreUnavailable(f"MLflow's store URL cannot be used ({type(exc).__name__}).") from exc

        @sa.event.listens_for(engine, "connect")
        def _read_only(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                if engine.dialect.name == "sqlite":
                    cursor.execute("PRAGMA query_only = ON")
                elif engine.dialect.name == "postgresql":
                    cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            finally:
                cursor.close()

        _engines[uri] = engine
        return engine


def _query(sql: str, params: dict[str, Any], expanding: Iterable[str]) -> list[Any]:
    """The rows of one read-only query; any database error is StoreUnavailable."""
    uri = store_uri()
    if not uri:
        raise StoreUnavailable("No MLflow store URL is configured.")
    import sqlalchemy as sa

    statement = sa.text(sql).bindparams(*(sa.bindparam(name, expanding=True) for name in expanding))
    try:
        with _engine(uri).connect() as connection:
            rows = list(connection.execute(statement, params))
            connection.rollback()
            return rows
    except sa.exc.SQLAlchemyError as exc:
        logger.warning("MLflow store unreadable, using the REST API: %s", type(exc).__name__)
        raise StoreUnavailable(f"MLflow's store is unreadable ({type(exc).__name__}).") from exc


def _chunks(items: list[str]) -> list[list[str]]:
    return [items[i : i + MAX_IDS_PER_QUERY] for i in range(0, len(items), MAX_IDS_PER_QUERY)] or [[]]


FINGERPRINT_SQL = """
SELECT run_uuid, key, COUNT(*) AS logged, MAX(timestamp) AS last_timestamp
FROM metrics
WHERE run_uuid IN :run_ids
GROUP BY run_uuid, key
"""


def fingerprints(run_ids: list[str]) -> dict[tuple[str, str], Fingerprint]:
    """{(run_id, key): Fingerprint} of every metric the store holds for `run_ids`, in one
    query (per 5,000 runs). Raises StoreUnavailable."""
    found: dict[tuple[str, str], Fingerprint] = {}
    if not run_ids:
        return found
    for chunk in _chunks(sorted(set(run_ids))):
        for run_id, key, logged, last in _query(FINGERPRINT_SQL, {"run_ids": chunk}, ["run_ids"]):
            found[(str(run_id), str(key))] = Fingerprint(int(logged), int(last or 0))
    return found


# Positions: 0-based among a series' finite points in (step, timestamp, value) order. The
# first and last points, and every point of a series that fits, get bucket -1 and are all
# kept; the others get bucket (pos - 1) * buckets // (n - 2), as keep_indices computes it.
# The non-finite points (NaN, and ±inf stored as MLflow's ±float-max sentinels) come in
# the same answer, the first :max_marks of each series, as downsample() remembers them.
HISTORY_SQL = """
WITH points AS (
    SELECT run_uuid, key, step, timestamp, value,
           ROW_NUMBER() OVER (PARTITION BY run_uuid, key ORDER BY step, timestamp, value) - 1 AS pos,
           COUNT(*) OVER (PARTITION BY run_uuid, key) AS n
    FROM metrics
    WHERE run_uuid IN :run_ids AND key IN :keys AND NOT is_nan AND value < :fmax AND value > -:fmax
),
ranked AS (
    SELECT run_uuid, key, step, timestamp, value, pos, n,
           ROW_NUMBER() OVER (PARTITION BY run_uuid, key, bucket ORDER BY value, pos) AS low,
           ROW_NUMBER() OVER (PARTITION BY run_uuid, key, bucket ORDER BY value DESC, pos DESC) AS high
    FROM (
        SELECT run_uuid, key, step, timestamp, value, pos, n, ((pos - 1) * :buckets) / (n - 2) AS bucket
        FROM points
        WHERE n > :max_points AND pos > 0 AND pos < n - 1
    ) AS bucketed
),
odd AS (
    SELECT run_uuid, key, step, timestamp, value, is_nan,
           ROW_NUMBER() OVER (PARTITION BY run_uuid, key ORDER BY step, timestamp, value) - 1 AS pos
    FROM metrics
    WHERE run_uuid IN :run_ids AND key IN :keys AND (is_nan OR value >= :fmax OR value <= -:fmax)
)
SELECT 1 AS finite, run_uuid, key, pos, step, timestamp, value, n
FROM points
WHERE n <= :max_points OR pos = 0 OR pos = n - 1
UNION ALL
SELECT 1 AS finite, run_uuid, key, pos, step, timestamp, value, n
FROM ranked
WHERE low = 1 OR high = 1
UNION ALL
SELECT 0 AS finite, run_uuid, key, pos, step, timestamp, CASE WHEN is_nan THEN NULL ELSE value END, 0
FROM odd
WHERE pos < :max_marks
"""


def read_downsampled(pairs: list[tuple[str, str]], max_points: int) -> dict[tuple[str, str], Downsampled]:
    """The histories of `pairs` [(run_id, key)], each cut to at most `max_points` points by
    the database (semantics of apps.tracking.downsample.downsample, see the module: kept
    steps, values and timestamps, the whole series' count/min/max/last of finite points,
    and its first MAX_NONFINITE non-finite points), in one query (per 5,000 runs). A pair
    the store holds no point of is absent from the answer. Raises StoreUnavailable."""
    wanted = set(pairs)
    if not wanted:
        return {}
    if max_points < MIN_POINTS:
        raise ValueError(f"max_points must be at least {MIN_POINTS}")
    keys = sorted({key for _, key in wanted})
    params: dict[str, Any] = {
        "keys": keys,
        "max_points": max_points,
        "buckets": (max_points - 2) // 2,
        "fmax": MLFLOW_FLOAT_MAX,
        "max_marks": MAX_NONFINITE,
    }
    kept: dict[tuple[str, str], list[tuple[int, int, int, float]]] = {}
    marks: dict[tuple[str, str], list[tuple[int, int, int, Any]]] = {}
    counts: dict[tuple[str, str], int] = {}
    pair: tuple[str, str] = ("", "")
    section: tuple[Any, Any, Any] = (None, None, None)
    into: list[Any] = []
    for chunk in _chunks(sorted({run_id for run_id, _ in wanted})):
        # Rows come grouped by series but not sorted (sorting a million rows in the database
        # costs more than sorting each series' few kept points here).
        for finite, run_id, key, pos, step, stamp, value, n in _query(
            HISTORY_SQL, {**params, "run_ids": chunk}, ["run_ids", "keys"]
        ):
            if (finite, run_id, key) != section:
                section = (finite, run_id, key)
                pair = (str(run_id), str(key))
                into = (kept if finite else marks).setdefault(pair, [])
                if finite:
                    counts[pair] = int(n)
            into.append((pos, step, stamp or 0, value))
    answer: dict[tuple[str, str], Downsampled] = {}
    for pair in (kept.keys() | marks.keys()) & wanted:
        points = kept.get(pair, [])
        if any(later[0] < earlier[0] for earlier, later in pairwise(points)):
            points.sort()
        odd = sorted(marks.get(pair, []))
        values = [float(p[3]) for p in points]
        answer[pair] = Downsampled(
            steps=[int(p[1]) for p in points],
            values=values,
            points=counts.get(pair, 0),
            # The extremes of the whole series are always among the kept points.
            minimum=min(values) if values else None,
            maximum=max(values) if values else None,
            last=values[-1] if values else None,
            timestamps=[int(p[2]) for p in points],
            nonfinite=[[int(m[1]), int(m[2]), display(math.nan if m[3] is None else m[3])] for m in odd],
        )
    return answer
