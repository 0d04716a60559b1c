"""The metric cache against a real MLflow server: a running run is read live; once it has
finished its series are cached and equal a fresh computation; a run resumed, written to
late or deleted is never served from the cache."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from apps.accounts.models import User
from apps.projects.models import Project
from apps.tracking.gateway import MlflowGateway
from apps.tracking.models import MetricSeries
from apps.tracking.series import compute
from apps.tracking.tasks import cache_run_histories, prune_metric_cache
from tests.conftest import api_for
from tests.tracking.conftest import link, new_experiment, series_of

pytestmark = pytest.mark.mlflow

COMPARE_API = "/api/v1/runs/compare/"


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, ...]]]:
    """Every history read the portal makes from MLflow: (metric, run ids...)."""
    seen: list[tuple[str, ...]] = []
    original = MlflowGateway.get_history_bulk

    def counting(self: MlflowGateway, run_ids: list[str], key: str, **kwargs: Any) -> Any:
        seen.append((key, *run_ids))
        return original(self, run_ids, key, **kwargs)

    monkeypatch.setattr(MlflowGateway, "get_history_bulk", counting)
    yield seen


@pytest.fixture
def experiment(project: Project, mlflow_client: MlflowClient, mlflow_up: str) -> str:
    """A fresh experiment per test (the cache state of one test must not leak)."""
    experiment_id = new_experiment(mlflow_client, "cache")
    link(project, experiment_id)
    return experiment_id


def log(client: MlflowClient, run_id: str, values: list[float], first_step: int = 0) -> None:
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric("loss", v, now + i, first_step + i) for i, v in enumerate(values)])


def fresh(client: MlflowClient, run_id: str, max_points: int) -> tuple[list[int], list[float]]:
    """What a computation from MLflow's own history gives, bypassing the portal."""
    points = sorted(client.get_metric_history(run_id, "loss"), key=lambda m: (m.step, m.timestamp))
    series = compute(run_id, "loss", [m.step for m in points], [m.value for m in points], max_points)
    return series.steps, series.values


def compare(user: User, run_id: str, max_points: int = 1000) -> dict[str, Any]:
    response = api_for(user).get(COMPARE_API, {"run_ids": run_id, "max_points": str(max_points)})
    assert response.status_code == 200, response.content
    body: dict[str, Any] = response.json()
    return body


def test_a_running_run_is_read_live_and_never_cached(
    vic: User, experiment: str, mlflow_client: MlflowClient, reads: list[tuple[str, ...]]
) -> None:
    run_id = mlflow_client.create_run(experiment, run_name="training").info.run_id
    log(mlflow_client, run_id, [1.0, 0.9, 0.8])
    assert series_of(compare(vic, run_id), "loss", run_id) == ([0, 1, 2], [1.0, 0.9, 0.8])
    log(mlflow_client, run_id, [0.7, 0.6], first_step=3)
    assert series_of(compare(vic, run_id), "loss", run_id) == ([0, 1, 2, 3, 4], [1.0, 0.9, 0.8, 0.7, 0.6])
    assert len(reads) == 2
    assert not MetricSeries.objects.filter(run_id=run_id).exists()


def test_a_finished_run_is_cached_once_and_the_cache_equals_a_fresh_computation(
    vic: User, experiment: str, mlflow_client: MlflowClient, reads: list[tuple[str, ...]]
) -> None:
    run_id = mlflow_client.create_run(experiment, run_name="done").info.run_id
    values = [((step * 7919) % 1000) / 100 for step in range(3000)]
    for start in range(0, 3000, 1000):
        log(mlflow_client, run_id, values[start : start + 1000], first_step=start)
    mlflow_client.set_terminated(run_id)

    first = series_of(compare(vic, run_id, max_points=500), "loss", run_id)
    assert len(reads) == 1
    assert MetricSeries.objects.filter(run_id=run_id, key="loss", max_points=500).count() == 1
    second = series_of(compare(vic, run_id, max_points=500), "loss", run_id)
    assert len(reads) == 1, "the second request read MLflow again"
    assert first == second == fresh(mlflow_client, run_id, 500)
    assert len(first[0]) <= 500

    # max_points is part of the key: another size is another computation, and another row.
    other = series_of(compare(vic, run_id, max_points=100), "loss", run_id)
    assert len(reads) == 2 and len(other[0]) <= 100
    assert other == fresh(mlflow_client, run_id, 100)
    assert MetricSeries.objects.filter(run_id=run_id).count() == 2


def test_a_run_that_goes_on_after_it_finished_is_never_served_stale(
    vic: User, experiment: str, mlflow_client: MlflowClient, reads: list[tuple[str, ...]]
) -> None:
    run_id = mlflow_client.create_run(experiment, run_name="resumed").info.run_id
    log(mlflow_client, run_id, [3.0, 2.0])
    mlflow_client.set_terminated(run_id)
    first_end = mlflow_client.get_run(run_id).info.end_time
    assert series_of(compare(vic, run_id), "loss", run_id)[1] == [3.0, 2.0]
    assert MetricSeries.objects.filter(run_id=run_id).exists()

    # Resumed (status back to RUNNING): read live, the old row deleted.
    mlflow_client.update_run(run_id, status="RUNNING")
    log(mlflow_client, run_id, [1.0], first_step=2)
    assert series_of(compare(vic, run_id), "loss", run_id)[1] == [3.0, 2.0, 1.0]
    assert not MetricSeries.objects.filter(run_id=run_id).exists()

    # Finished again, a second after the first end by MLflow's record: a new end time, a new row.
    mlflow_client.set_terminated(run_id, end_time=first_end + 1000)
    assert series_of(compare(vic, run_id), "loss", run_id)[1] == [3.0, 2.0, 1.0]
    assert MetricSeries.objects.get(run_id=run_id).values == "[3.0,2.0,1.0]"

    # Written to after the end without resuming: the latest point changed, so recomputed.
    log(mlflow_client, run_id, [0.5], first_step=3)
    assert series_of(compare(vic, run_id), "loss", run_id)[1] == [3.0, 2.0, 1.0, 0.5]
    assert len(reads) == 4


def test_a_deleted_run_is_gone_from_answers_and_from_the_cache(
    vic: User, experiment: str, mlflow_client: MlflowClient
) -> None:
    keep = mlflow_client.create_run(experiment, run_name="keep").info.run_id
    doomed = mlflow_client.create_run(experiment, run_name="doomed").info.run_id
    for run_id in (keep, doomed):
        log(mlflow_client, run_id, [1.0, 0.5])
        mlflow_client.set_terminated(run_id)
    compare(vic, f"{keep},{doomed}")
    assert MetricSeries.objects.filter(run_id=doomed).exists()
    mlflow_client.delete_run(doomed)
    body = compare(vic, f"{keep},{doomed}")
    assert [run["run_id"] for run in body["runs"]] == [keep]
    assert list(body["series"]["loss"]) == [keep]
    assert body["missing"] == [{"run_id": doomed, "reason": "deleted"}]
    assert not MetricSeries.objects.filter(run_id=doomed).exists()


def test_the_task_warms_the_cache_at_run_end_and_the_pruner_drops_deleted_runs(
    vic: User, experiment: str, mlflow_client: MlflowClient, reads: list[tuple[str, ...]]
) -> None:
    running = mlflow_client.create_run(experiment, run_name="running").info.run_id
    log(mlflow_client, running, [1.0])
    assert cache_run_histories(running) == "running"
    finished = mlflow_client.create_run(experiment, run_name="finished").info.run_id
    log(mlflow_client, finished, [2.0, 1.0])
    mlflow_client.set_terminated(finished)
    assert cache_run_histories(finished) == "1 computed, 0 already cached"
    assert cache_run_histories(finished) == "0 computed, 1 already cached"
    compare(vic, finished)
    assert len(reads) == 1, "the compare after the task read MLflow again"

    mlflow_client.delete_run(finished)
    assert prune_metric_cache() == {"runs": 1, "deleted": 1}
    assert not MetricSeries.objects.exists()
    assert cache_run_histories("f" * 32) == "gone"
