"""The metric cache never serves an outdated history, and is filled in the background.

Against the real `mlflow server` (SQLite store): a point written after the end at an
*earlier* step (status, end time and latest point unchanged) is seen at once where the
portal reads MLflow's store, and within PLINTH_METRIC_CACHE_MAX_AGE (or on refresh) over
REST only; a store that is unset or unreachable falls back to REST; a launch that ends and
a run logged from outside that finishes both get their cut histories computed by the
background tasks, so the first compare after the end reads no history."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from apps.accounts.models import Team, User
from apps.compute.base import Observation
from apps.launches import tasks as launch_tasks
from apps.launches.models import Launch, Status
from apps.projects.models import Project
from apps.tracking import store
from apps.tracking.gateway import MlflowGateway, gateway
from apps.tracking.models import MetricSeries
from apps.tracking.runs import Run
from apps.tracking.series import histories
from apps.tracking.tasks import cache_finished_runs
from tests.conftest import MLFLOW_STORES, api_for, client_for
from tests.launches.conftest import FakeBackend, eager_tasks, fake_backend, make_template  # noqa: F401
from tests.tracking.conftest import link, new_experiment, series_of

pytestmark = pytest.mark.mlflow

COMPARE_API = "/api/v1/runs/compare/"


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """How many history reads the portal makes: over REST (get-history-bulk calls) and
    from the store (queries)."""
    seen = {"rest": 0, "store": 0}
    rest = MlflowGateway.get_history_bulk
    direct = store.read_downsampled

    def counting_rest(self: MlflowGateway, run_ids: list[str], key: str, **kwargs: Any) -> Any:
        seen["rest"] += 1
        return rest(self, run_ids, key, **kwargs)

    def counting_store(pairs: list[tuple[str, str]], max_points: int) -> Any:
        seen["store"] += 1
        return direct(pairs, max_points)

    monkeypatch.setattr(MlflowGateway, "get_history_bulk", counting_rest)
    monkeypatch.setattr(store, "read_downsampled", counting_store)
    yield seen


@pytest.fixture
def experiment(project: Project, mlflow_client: MlflowClient, mlflow_up: str) -> str:
    experiment_id = new_experiment(mlflow_client, "cache-fresh")
    link(project, experiment_id)
    return experiment_id


@pytest.fixture
def with_store(settings: Any, mlflow_up: str) -> str:
    """The portal reads the test server's own SQLite store directly."""
    settings.PLINTH_MLFLOW_STORE_URI = MLFLOW_STORES[mlflow_up]
    return str(settings.PLINTH_MLFLOW_STORE_URI)


@pytest.fixture
def rest_only(settings: Any) -> None:
    settings.PLINTH_MLFLOW_STORE_URI = ""


def finished_run(client: MlflowClient, experiment_id: str, points: int = 20) -> str:
    """A run of `points` losses in (0, 1] at steps 0..points-1, finished."""
    run_id = client.create_run(experiment_id, run_name="finished").info.run_id
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric("loss", 1 / (1 + s), now + s, s) for s in range(points)])
    client.set_terminated(run_id)
    return run_id


def compare(user: User, run_id: str) -> dict[str, Any]:
    response = api_for(user).get(COMPARE_API, {"run_ids": run_id, "metrics": "loss"})
    assert response.status_code == 200, response.content
    body: dict[str, Any] = response.json()
    return body


def late_point(client: MlflowClient, run_id: str) -> None:
    """The issue's case: a point at an earlier step, written after the end; the run's
    status, end time and latest point (step 19) stay as they were."""
    before = client.get_run(run_id)
    client.log_metric(run_id, "loss", 9.0, step=3)
    after = client.get_run(run_id)
    assert (after.info.status, after.info.end_time) == (before.info.status, before.info.end_time)
    assert after.data.metrics["loss"] == before.data.metrics["loss"]


def test_a_late_point_at_an_earlier_step_is_served_at_once_with_the_store(
    vic: User, experiment: str, mlflow_client: MlflowClient, with_store: str, reads: dict[str, int]
) -> None:
    run_id = finished_run(mlflow_client, experiment)
    steps, values = series_of(compare(vic, run_id), "loss", run_id)
    assert (len(steps), max(values)) == (20, 1.0)
    assert reads == {"rest": 0, "store": 1}
    compare(vic, run_id)
    assert reads == {"rest": 0, "store": 1}, "an unchanged run was read again"

    late_point(mlflow_client, run_id)
    steps, values = series_of(compare(vic, run_id), "loss", run_id)
    assert (len(steps), max(values)) == (21, 9.0)
    assert steps[:5] == [0, 1, 2, 3, 3] and 9.0 in values[3:5]
    row = MetricSeries.objects.get(run_id=run_id, key="loss")
    assert (row.points, row.logged, row.maximum) == (21, 21, 9.0)


def test_over_rest_a_late_point_is_served_within_the_max_age_or_on_refresh(
    vic: User, settings: Any, experiment: str, mlflow_client: MlflowClient, rest_only: None, reads: dict[str, int]
) -> None:
    run_id = finished_run(mlflow_client, experiment)
    assert len(series_of(compare(vic, run_id), "loss", run_id)[0]) == 20
    late_point(mlflow_client, run_id)
    # Within the documented bound the cached row is served, and says as of when.
    run = Run.from_mlflow(gateway().get_run(run_id))
    cached = histories([run], ["loss"]).series[(run_id, "loss")]
    assert cached.cached and cached.as_of is not None and len(cached.steps) == 20
    # A refresh reads MLflow again...
    fresh = histories([run], ["loss"], refresh=True).series[(run_id, "loss")]
    assert not fresh.cached and (len(fresh.steps), max(fresh.values)) == (21, 9.0)
    # ...and past the bound so does every read.
    late_again = int(time.time() * 1000)
    mlflow_client.log_batch(run_id, metrics=[Metric("loss", 7.0, late_again, 5)])
    settings.PLINTH_METRIC_CACHE_MAX_AGE = 0
    steps, values = series_of(compare(vic, run_id), "loss", run_id)
    assert (len(steps), sorted(values)[-2:]) == (22, [7.0, 9.0])
    assert reads["store"] == 0


@pytest.mark.parametrize(
    "uri",
    ["", "sqlite:////nonexistent-folder/mlflow.db", "postgresql://nobody@127.0.0.1:9/mlflow"],
    ids=["unset", "missing-file", "refused"],
)
def test_the_store_unset_or_unreachable_falls_back_to_rest(
    vic: User, settings: Any, experiment: str, mlflow_client: MlflowClient, reads: dict[str, int], uri: str
) -> None:
    settings.PLINTH_MLFLOW_STORE_URI = uri
    run_id = finished_run(mlflow_client, experiment)
    steps, values = series_of(compare(vic, run_id), "loss", run_id)
    assert (len(steps), values[0]) == (20, 1.0)
    assert reads["rest"] == 1
    if not uri:
        assert reads["store"] == 0


def test_a_store_behind_runs_search_is_not_trusted(
    vic: User, experiment: str, mlflow_client: MlflowClient, with_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica that has not caught up with the latest point MLflow reports: REST reads it."""
    run_id = finished_run(mlflow_client, experiment)
    behind = {(run_id, "loss"): store.Fingerprint(5, 1)}
    monkeypatch.setattr(store, "fingerprints", lambda run_ids: behind)
    steps, _ = series_of(compare(vic, run_id), "loss", run_id)
    assert len(steps) == 20


def test_a_launch_that_ends_gets_its_histories_computed_in_the_background(
    vic: User,
    ada: User,
    team: Team,
    project: Project,
    experiment: str,
    mlflow_client: MlflowClient,
    with_store: str,
    fake_backend: FakeBackend,  # noqa: F811
    eager_tasks: None,  # noqa: F811
    reads: dict[str, int],
) -> None:
    run_id = mlflow_client.create_run(experiment, run_name="launched").info.run_id
    now = int(time.time() * 1000)
    mlflow_client.log_batch(run_id, metrics=[Metric("loss", 1 / (1 + s), now + s, s) for s in range(50)])
    template = make_template(team, "train", ["python", "train.py"])
    launch = Launch.objects.create(
        project=project,
        template=template,
        created_by=ada,
        backend="fake",
        status=Status.RUNNING,
        mlflow_run_id=run_id,
        mlflow_experiment_id=experiment,
    )
    fake_backend.jobs[launch.pk] = Observation("succeeded", "done", 0)
    assert not MetricSeries.objects.filter(run_id=run_id).exists()

    assert launch_tasks.sync_launches()["ended"] == 1
    assert mlflow_client.get_run(run_id).info.status == "FINISHED"
    assert MetricSeries.objects.filter(run_id=run_id, key="loss", points=50).exists()
    reads_after_task = dict(reads)
    steps, _ = series_of(compare(vic, run_id), "loss", run_id)
    assert len(steps) == 50
    assert reads == reads_after_task, "the first compare after the end read the history again"


def test_a_run_logged_from_outside_gets_its_histories_computed_when_it_finishes(
    vic: User, experiment: str, mlflow_client: MlflowClient, rest_only: None, reads: dict[str, int]
) -> None:
    running = mlflow_client.create_run(experiment, run_name="still running").info.run_id
    mlflow_client.log_metric(running, "loss", 1.0, step=0)
    done = finished_run(mlflow_client, experiment, points=30)
    other = new_experiment(mlflow_client, "unlinked")
    unlinked = finished_run(mlflow_client, other)

    counts = cache_finished_runs()
    assert counts == {"runs": 1, "computed": 1, "cached": 0}
    assert set(MetricSeries.objects.values_list("run_id", flat=True)) == {done}
    assert cache_finished_runs() == {"runs": 1, "computed": 0, "cached": 1}

    before = dict(reads)
    assert len(series_of(compare(vic, done), "loss", done)[0]) == 30
    assert reads == before, "the first compare after the end read the history again"
    assert not MetricSeries.objects.filter(run_id__in=[running, unlinked]).exists()


def test_the_compare_page_says_as_of_when_and_re_reads_on_request(
    vic: User, experiment: str, mlflow_client: MlflowClient, rest_only: None, reads: dict[str, int]
) -> None:
    run_id = finished_run(mlflow_client, experiment)
    compare(vic, run_id)  # computes and caches the history
    late_point(mlflow_client, run_id)
    page = client_for(vic).get("/runs/compare/", {"run_ids": run_id})
    assert page.status_code == 200
    body = page.content.decode()
    assert "data-as-of" in body and "refresh=1" in body
    api = api_for(vic).get("/api/v1/runs/compare/", {"run_ids": run_id})
    assert api.json()["as_of"] is not None
    assert len(api.json()["series"]["loss"][run_id]["steps"]) == 20
    fresh = api_for(vic).get("/api/v1/runs/compare/", {"run_ids": run_id, "refresh": "1"})
    assert fresh.status_code == 200
    assert fresh.json()["as_of"] is None
    loss = fresh.json()["series"]["loss"][run_id]
    assert (len(loss["steps"]), max(loss["values"])) == (21, 9.0)
    assert api_for(vic).get("/api/v1/runs/compare/", {"run_ids": run_id, "refresh": "yes"}).status_code == 400
