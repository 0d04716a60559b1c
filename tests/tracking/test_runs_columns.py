"""The runs table's column picker offers every param and metric key of the experiment (not
only the page's), read once and cached per experiment; the compare CSV carries the runs'
tags. MLflow is a FakeMlflow here; the zoo walk checks the same against the real server."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache
from django.urls import reverse

from apps.accounts.models import User
from apps.projects.models import ExperimentState, Project
from apps.tracking import keys
from apps.tracking.gateway import MlflowUnavailable
from tests.conftest import client_for
from tests.tracking.fakes import FakeMlflow, make_run

pytestmark = pytest.mark.django_db

EXPERIMENT = "5"


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def linked(project: Project) -> Project:
    Project.objects.filter(pk=project.pk).update(mlflow_experiment_id=EXPERIMENT, mlflow_state=ExperimentState.LINKED)
    project.refresh_from_db()
    return project


@pytest.fixture
def history(fake_mlflow: FakeMlflow) -> FakeMlflow:
    """An old run with keys nobody logs any more, and a new run with today's keys."""
    fake_mlflow.add(
        make_run(
            "old",
            EXPERIMENT,
            name="old",
            start_time=1_600_000_000_000,
            metrics={"val_auc": [0.7]},
            params={"dropout": "0.1"},
        )
    )
    fake_mlflow.add(
        make_run(
            "new", EXPERIMENT, name="new", start_time=1_700_000_000_000, metrics={"loss": [0.2]}, params={"lr": "1"}
        )
    )
    return fake_mlflow


def runs_page(**query: Any) -> Any:
    return reverse("tracking:runs", kwargs={"team": "demo", "slug": "demo"}), query


def test_the_picker_offers_keys_of_runs_that_are_not_on_the_page(
    vic: User, linked: Project, history: FakeMlflow
) -> None:
    response = client_for(vic).get(*runs_page(max_results=1))
    assert [row[0].run_id for row in response.context["rows"]] == ["new"]
    assert response.context["all_params"] == ["dropout", "lr"]
    assert response.context["all_metrics"] == ["loss", "val_auc"]
    html = response.content.decode()
    assert 'name="metrics" value="val_auc"' in html and 'name="params" value="dropout"' in html
    # Chosen, the old run's metric is a column (empty on this page), sortable like any other.
    chosen = client_for(vic).get(*runs_page(max_results=1, metrics="val_auc"))
    assert chosen.context["metrics"] == ["val_auc"] and chosen.context["rows"][0][3] == [None]
    assert chosen.context["sort"]["metrics"][0]["order_by"] == "metrics.val_auc DESC"


def test_the_keys_are_read_once_and_a_new_runs_keys_show_at_once(
    vic: User, linked: Project, history: FakeMlflow, settings: Any
) -> None:
    settings.PLINTH_RUN_KEYS_CACHE_SECONDS = 60
    client_for(vic).get(*runs_page(max_results=1))
    before = history.calls["search_runs"]
    # A run logged since: its keys are on the page, so they are offered though cached keys are older.
    history.add(make_run("newest", EXPERIMENT, name="newest", start_time=1_800_000_000_000, metrics={"f1": [0.5]}))
    response = client_for(vic).get(*runs_page(max_results=1))
    assert history.calls["search_runs"] == before + 1  # the page only: the experiment's keys came from the cache
    assert response.context["all_metrics"] == ["f1", "loss", "val_auc"]
    # A key logged meanwhile to a run off the page shows once the cache is forgotten (or expires).
    history.runs["old"].params["momentum"] = "0.9"
    assert "momentum" not in client_for(vic).get(*runs_page(max_results=1)).context["all_params"]
    keys.forget_keys(EXPERIMENT)
    assert "momentum" in client_for(vic).get(*runs_page(max_results=1)).context["all_params"]


def test_with_the_cache_off_every_page_reads_the_keys(
    vic: User, linked: Project, history: FakeMlflow, settings: Any
) -> None:
    settings.PLINTH_RUN_KEYS_CACHE_SECONDS = 0
    client_for(vic).get(*runs_page(max_results=1))
    history.runs["old"].params["momentum"] = "0.9"
    assert "momentum" in client_for(vic).get(*runs_page(max_results=1)).context["all_params"]


def test_mlflow_failing_on_the_key_scan_leaves_the_page_with_its_own_keys(
    vic: User, linked: Project, history: FakeMlflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(experiment_id: str) -> keys.ExperimentKeys:
        raise MlflowUnavailable("MLflow is slow today.")

    monkeypatch.setattr(keys, "scan_keys", down)
    response = client_for(vic).get(*runs_page(max_results=1))
    assert response.status_code == 200
    assert (response.context["all_params"], response.context["all_metrics"]) == (["lr"], ["loss"])


def test_the_csv_export_carries_tags_but_not_mlflows_bookkeeping(
    vic: User, linked: Project, fake_mlflow: FakeMlflow
) -> None:
    fake_mlflow.add(
        make_run(
            "a",
            EXPERIMENT,
            name="a",
            metrics={"loss": [0.5]},
            tags={
                "team": "vision",
                "note": "=HYPERLINK(1)",
                "mlflow.user": "grace",
                "mlflow.source.type": "LOCAL",
                "mlflow.log-model.history": "[...]",
            },
        )
    )
    fake_mlflow.add(make_run("b", EXPERIMENT, name="b", tags={"mlflow.parentRunId": "a", "stage": "dev"}))
    response = client_for(vic).get(reverse("tracking:compare"), {"run_ids": "a,b", "format": "csv"})
    assert response.status_code == 200
    reader = csv.DictReader(io.StringIO(response.content.decode()))
    header = list(reader.fieldnames or [])
    tag_columns = [column for column in header if column.startswith("tag.")]
    assert tag_columns == [
        "tag.mlflow.parentRunId",
        "tag.mlflow.runName",
        "tag.mlflow.user",
        "tag.note",
        "tag.stage",
        "tag.team",
    ]
    assert header.index("tag.mlflow.parentRunId") > header.index("metrics.loss")  # tags come last
    rows = {row["run_id"]: row for row in reader}
    assert (rows["a"]["tag.team"], rows["a"]["tag.mlflow.user"], rows["a"]["tag.stage"]) == ("vision", "grace", "")
    assert rows["a"]["tag.note"] == "'=HYPERLINK(1)"  # a spreadsheet formula stays text
    assert (rows["b"]["tag.mlflow.parentRunId"], rows["b"]["tag.stage"]) == ("a", "dev")
