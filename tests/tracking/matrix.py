"""The tracking routes in the authorization matrix (tests/access/test_matrix.py).

MLflow is a FakeMlflow here (tests/tracking/fakes.py): demo/demo is linked to experiment
"1" with one finished run of ada's launch, carrying a metric and an artifact; the other
team's project is linked to experiment "2" with one run. Behaviour against a real MLflow
server is tested in tests/tracking/test_*.py."""

from __future__ import annotations

from typing import Any

import pytest

from apps.projects.models import ExperimentState, Project
from tests.access.matrix_vocab import DEMO_PROJECT, NONE, Kwargs, Op, Route, World, route
from tests.tracking.fakes import FakeMlflow, make_run

DEMO_RUN = "d" * 32
OTHER_RUN = "e" * 32


def demo_run(world: World) -> dict[str, Any]:
    return {**DEMO_PROJECT, "run_id": world.extra["demo_run"]}


RUN: Kwargs = demo_run
# Another team's run, asked for under demo/demo's address: it is not a run of demo/demo.
OTHER_RUN_IN_DEMO: Kwargs = lambda w: {**DEMO_PROJECT, "run_id": w.extra["other_run"]}  # noqa: E731
OTHER_RUN_AT_HOME: Kwargs = lambda w: {"team": "other", "slug": "other", "run_id": w.extra["other_run"]}  # noqa: E731
ARTIFACT: Kwargs = lambda w: {**demo_run(w), "path": "model/MLmodel"}  # noqa: E731

MATRIX: dict[str, Route] = {
    # Every signed-in user picks among the projects they can see (omar sees his own).
    "tracking:index": route(NONE, Op("GET", "vic", outsider=200)),
    "tracking:runs": route(DEMO_PROJECT, Op("GET", "vic")),
    "tracking:run": route(
        RUN,
        Op("GET", "vic"),
        # A run of another team's project is a 404 under any project's address...
        Op("GET", "vic", ok=404, kwargs=OTHER_RUN_IN_DEMO, note="another team's run, demo's address"),
        # ...and under its own, a 404 to demo's people and a page to its team (omar) and root.
        Op("GET", "vic", ok=404, outsider=200, admin=200, kwargs=OTHER_RUN_AT_HOME, note="another team's run"),
    ),
    "tracking:artifact": route(ARTIFACT, Op("GET", "vic")),
    # Without run ids the compare page says how to pick runs (run ids in the query string
    # are checked in tests/tracking/test_access.py: the matrix builds URLs without one).
    "tracking:compare": route(NONE, Op("GET", "vic", outsider=200)),
    "api:run-list": route(NONE, Op("GET", "vic", body={"project": "demo/demo"})),
    "api:run-compare": route(
        NONE,
        Op("GET", "vic", body=lambda w: {"run_ids": w.extra["demo_run"]}),
        Op(
            "GET",
            "vic",
            ok=404,
            outsider=200,
            admin=200,
            body=lambda w: {"run_ids": w.extra["other_run"]},
            note="another team's run",
        ),
    ),
}


def extend_world(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeMlflow().install(monkeypatch)
    Project.objects.filter(team__slug="other", slug="other").update(
        mlflow_experiment_id="2", mlflow_state=ExperimentState.LINKED
    )
    history: dict[str, Any] = {"loss": [1.0, 0.5, 0.25], "accuracy": [0.5, 0.8, 0.9]}
    fake.add(
        make_run(
            DEMO_RUN,
            world.project.mlflow_experiment_id,
            name="ada's run",
            metrics=history,
            params={"lr": "0.01"},
            artifacts={"model/MLmodel": b"flavors: {}\n"},
        )
    )
    fake.add(make_run(OTHER_RUN, "2", name="omar's run", metrics={"loss": [2.0, 1.0]}, params={"lr": "0.1"}))
    world.extra.update(demo_run=DEMO_RUN, other_run=OTHER_RUN, mlflow=fake)
