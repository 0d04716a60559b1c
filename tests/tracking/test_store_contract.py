"""Contract: histories read from MLflow's store (one SQL query, cut by the database) equal
histories read over MLflow's REST API and cut by apps.tracking.downsample — on the same
runs of the real `mlflow server`, whose SQLite store the test points
PLINTH_MLFLOW_STORE_URI at, across MLflow's schema as pinned."""

from __future__ import annotations

import math
import random
import time
from typing import Any

import pytest
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.entities import Metric

from apps.tracking import store
from apps.tracking.fetch import Want, read_histories
from apps.tracking.gateway import gateway
from apps.tracking.runs import Run
from apps.tracking.series import compute, histories
from tests.conftest import MLFLOW_STORES, skip_without_postgres
from tests.tracking.conftest import new_experiment

pytestmark = pytest.mark.mlflow

MAX_POINTS = [4, 5, 7, 100, 1000, 10_000]


def shapes(rng: random.Random) -> dict[str, list[tuple[int, float, int]]]:
    """Metric key -> [(step, value, timestamp offset ms)] in the order they are logged."""
    ties = [(s, round(rng.random(), 1), s) for s in range(3000)]  # many equal values
    spiky = [(s, math.exp(-s / 300) + rng.random() * 0.01, s) for s in range(1200)]
    spiky[777] = (777, 50.0, 777)
    spiky[901] = (901, -3.0, 901)
    odd = [(s, float(s % 7), s) for s in range(60)]
    for index, bad in ((3, math.nan), (10, math.inf), (11, -math.inf), (40, math.nan), (59, math.inf)):
        odd[index] = (index, bad, index)
    stepless = [(0, 10.0 - i * 0.3 + rng.random(), i * 5) for i in range(40)]
    late = [(s, 1 / (1 + s), s) for s in range(150)] + [(3, 9.0, 1000), (70, -1.0, 1001), (149, 0.5, 1002)]
    return {
        "ties": ties,
        "spiky": spiky,
        "odd/values": odd,
        "stepless": stepless,
        "late": late,
        "single": [(0, 0.93, 0)],
        "only nan": [(0, math.nan, 0), (1, math.nan, 1)],
        "négatif": [(s, -1e12 + s * 1e9 * rng.random(), s) for s in range(500)],
    }


@pytest.fixture(scope="module")
def zoo(mlflow_client: MlflowClient) -> list[str]:
    """Three runs, every shape in each (different random values), two finished."""
    experiment_id = new_experiment(mlflow_client, "store-contract")
    run_ids = []
    for index in range(3):
        rng = random.Random(index)
        run_id = mlflow_client.create_run(experiment_id, run_name=f"zoo-{index}").info.run_id
        start = int(time.time() * 1000)
        points = [
            Metric(key, value, start + offset, step)
            for key, series in shapes(rng).items()
            for step, value, offset in series
        ]
        for chunk in range(0, len(points), 1000):
            mlflow_client.log_batch(run_id, metrics=points[chunk : chunk + 1000])
        if index < 2:
            mlflow_client.set_terminated(run_id)
        run_ids.append(run_id)
    return run_ids


@pytest.fixture
def store_uri(settings: Any, mlflow_up: str) -> str:
    settings.PLINTH_MLFLOW_STORE_URI = MLFLOW_STORES[mlflow_up]
    return str(settings.PLINTH_MLFLOW_STORE_URI)


def as_dict(down: Any) -> dict[str, Any]:
    return {
        "steps": down.steps,
        "values": down.values,
        "timestamps": down.timestamps,
        "points": down.points,
        "minimum": down.minimum,
        "maximum": down.maximum,
        "last": down.last,
        "nonfinite": [list(mark) for mark in down.nonfinite],
    }


def test_the_store_holds_mlflows_metrics_table_as_pinned(store_uri: str) -> None:
    columns = {c["name"]: c for c in sa.inspect(sa.create_engine(store_uri)).get_columns("metrics")}
    assert {"key", "value", "timestamp", "run_uuid", "step", "is_nan"} <= set(columns)


@pytest.mark.parametrize("max_points", MAX_POINTS)
def test_store_and_rest_give_the_same_series(zoo: list[str], store_uri: str, max_points: int) -> None:
    keys = list(shapes(random.Random(0)))
    pairs = [(run_id, key) for run_id in zoo for key in keys]
    direct = store.read_downsampled(pairs, max_points)

    over_rest, errors = read_histories(
        [Want(run_id, key, 3000) for run_id, key in pairs],
        lambda run_id, key, h: compute(run_id, key, h.steps, h.values, max_points, h.timestamps),
    )
    assert not errors
    assert set(direct) == set(over_rest) == set(pairs)
    for pair in pairs:
        rest = over_rest[pair]
        expected = {
            "steps": rest.steps,
            "values": rest.values,
            "timestamps": rest.timestamps,
            "points": rest.points,
            "minimum": rest.minimum,
            "maximum": rest.maximum,
            "last": rest.last,
            "nonfinite": rest.nonfinite,
        }
        assert as_dict(direct[pair]) == expected, pair
    # The cases that make the comparison mean something.
    ties = direct[(zoo[0], "ties")]
    assert ties.points == 3000 and len(ties.steps) <= max_points
    assert direct[(zoo[0], "spiky")].maximum == 50.0 and 50.0 in direct[(zoo[0], "spiky")].values
    assert [mark[2] for mark in direct[(zoo[0], "odd/values")].nonfinite] == ["NaN", "inf", "-inf", "NaN", "inf"]
    assert direct[(zoo[0], "only nan")].points == 0
    if max_points >= 1000:  # all kept: the late point at step 3 sits after the first one
        assert direct[(zoo[0], "late")].steps[:5] == [0, 1, 2, 3, 3]


def test_the_portal_serves_the_same_answers_either_way(db: None, zoo: list[str], settings: Any, store_uri: str) -> None:
    runs = [Run.from_mlflow(gateway().get_run(run_id)) for run_id in zoo]
    settings.PLINTH_MLFLOW_STORE_URI = ""
    over_rest = histories(runs, None, 100, refresh=True)
    settings.PLINTH_MLFLOW_STORE_URI = store_uri
    direct = histories(runs, None, 100, refresh=True)
    assert set(direct.series) == set(over_rest.series) and len(direct.series) == 3 * len(shapes(random.Random(0)))
    for pair, series in over_rest.series.items():
        other = direct.series[pair]
        assert (other.as_json(), other.timestamps_json, other.nonfinite_json) == (
            series.as_json(),
            series.timestamps_json,
            series.nonfinite_json,
        ), pair
        assert (other.points, other.minimum, other.maximum, other.last) == (
            series.points,
            series.minimum,
            series.maximum,
            series.last,
        )
        assert (other.logged, other.last_timestamp) == (series.logged, series.last_timestamp)


def test_fingerprints_count_every_point_nan_included(zoo: list[str], store_uri: str) -> None:
    found = store.fingerprints(zoo)
    assert found[(zoo[0], "only nan")].logged == 2
    assert found[(zoo[0], "late")].logged == 153
    assert found[(zoo[0], "ties")].logged == 3000


POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/"


@pytest.fixture
def postgres_copy(zoo: list[str], store_uri: str) -> Any:
    """The zoo's rows of MLflow's `metrics` table copied into a throwaway PostgreSQL database
    (MLflow's column types), as a read replica would hold them; skipped without PostgreSQL."""
    import uuid

    admin = sa.create_engine(POSTGRES + "postgres", isolation_level="AUTOCOMMIT")
    name = f"plinth_store_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f"CREATE DATABASE {name}"))
    except sa.exc.OperationalError:
        admin.dispose()
        skip_without_postgres("no PostgreSQL at 127.0.0.1:5432")
    source = sa.create_engine(store_uri)
    target = sa.create_engine(POSTGRES + name)
    try:
        with source.connect() as read:
            rows = read.execute(
                sa.text(
                    "SELECT key, value, timestamp, run_uuid, step, is_nan FROM metrics WHERE run_uuid IN :ids"
                ).bindparams(sa.bindparam("ids", expanding=True)),
                {"ids": zoo},
            ).all()
        with target.begin() as write:
            write.execute(
                sa.text(
                    "CREATE TABLE metrics (key VARCHAR(250) NOT NULL, value DOUBLE PRECISION NOT NULL, "
                    "timestamp BIGINT NOT NULL, run_uuid VARCHAR(32) NOT NULL, step BIGINT NOT NULL DEFAULT 0, "
                    "is_nan BOOLEAN NOT NULL DEFAULT false)"
                )
            )
            write.execute(
                sa.text("INSERT INTO metrics VALUES (:key, :value, :timestamp, :run_uuid, :step, :is_nan)"),
                [{**row._mapping, "is_nan": bool(row.is_nan)} for row in rows],
            )
        yield POSTGRES + name
    finally:
        source.dispose()
        target.dispose()
        for engine in list(store._engines.values()):
            engine.dispose()
        store._engines.clear()
        with admin.connect() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def test_postgresql_gives_what_sqlite_gives(zoo: list[str], settings: Any, store_uri: str, postgres_copy: str) -> None:
    keys = list(shapes(random.Random(0)))
    pairs = [(run_id, key) for run_id in zoo for key in keys]
    for max_points in (5, 100, 10_000):
        from_sqlite = {pair: as_dict(down) for pair, down in store.read_downsampled(pairs, max_points).items()}
        settings.PLINTH_MLFLOW_STORE_URI = postgres_copy
        from_postgres = {pair: as_dict(down) for pair, down in store.read_downsampled(pairs, max_points).items()}
        settings.PLINTH_MLFLOW_STORE_URI = store_uri
        assert from_postgres == from_sqlite
    sqlite_prints = store.fingerprints(zoo)
    settings.PLINTH_MLFLOW_STORE_URI = postgres_copy
    assert store.fingerprints(zoo) == sqlite_prints
    assert sqlite_prints[(zoo[0], "ties")].logged == 3000
