"""Nested runs (tag `mlflow.parentRunId`): the runs table groups a parent with its
descendants, indented and foldable; a child whose parent is on another page says whose
child it is; the parent's run page lists its children. MLflow is a FakeMlflow here; the
same cases run against the real server over the data zoo (test_zoo_walk.py)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from apps.accounts.models import User
from apps.projects.models import ExperimentState, Project
from apps.tracking.nesting import families
from apps.tracking.runs import Run
from tests.conftest import client_for
from tests.tracking.fakes import FakeMlflow, FakeRun, make_run

pytestmark = pytest.mark.django_db

EXPERIMENT = "7"


@pytest.fixture
def linked(project: Project) -> Project:
    Project.objects.filter(pk=project.pk).update(mlflow_experiment_id=EXPERIMENT, mlflow_state=ExperimentState.LINKED)
    project.refresh_from_db()
    return project


def add(fake: FakeMlflow, run_id: str, started: int, parent: str = "", **kwargs: object) -> FakeRun:
    tags = {"mlflow.parentRunId": parent} if parent else {}
    return fake.add(
        make_run(run_id, EXPERIMENT, name=run_id, start_time=1_700_000_000_000 + started * 1000, tags=tags, **kwargs)  # type: ignore[arg-type]
    )


@pytest.fixture
def tree(fake_mlflow: FakeMlflow) -> FakeMlflow:
    """sweep (oldest) with trial-a (with its own grandchild-a), trial-b; and a loner."""
    add(fake_mlflow, "sweep", 0, metrics={"score": [0.9]})
    add(fake_mlflow, "trial-a", 1, "sweep", metrics={"score": [0.5], "loss": [0.4, 0.3]})
    add(fake_mlflow, "trial-b", 2, "sweep", metrics={"score": [0.7]}, status="FAILED")
    add(fake_mlflow, "grandchild-a", 3, "trial-a", metrics={"score": [0.2]})
    add(fake_mlflow, "loner", 4)
    return fake_mlflow


def runs_page() -> str:
    return reverse("tracking:runs", kwargs={"team": "demo", "slug": "demo"})


def run_page(run_id: str) -> str:
    return reverse("tracking:run", kwargs={"team": "demo", "slug": "demo", "run_id": run_id})


def shape(response: object) -> list[list[tuple[str, int]]]:
    return [[(r["row"].run.run_id, r["row"].depth) for r in family] for family in response.context["families"]]  # type: ignore[attr-defined]


def test_the_table_nests_children_under_their_parent_in_the_tables_order(
    vic: User, linked: Project, tree: FakeMlflow
) -> None:
    response = client_for(vic).get(runs_page())
    assert response.status_code == 200
    # The fake answers newest first: each generation keeps that order under its parent.
    assert shape(response) == [
        [("loner", 0)],
        [("sweep", 0), ("trial-b", 1), ("trial-a", 1), ("grandchild-a", 2)],
    ]
    assert len(response.context["rows"]) == 5  # the pager's count: every run once
    html = response.content.decode()
    # The family folds with one checkbox on its head (CSS :has, no script), children indented.
    assert html.count('<input type="checkbox" data-fold checked') == 1
    assert 'aria-label="Show the 3 nested runs of sweep"' in html
    assert html.count('class="child"') == 3
    assert 'data-parent="trial-a"' in html
    assert "tbody.family:has(input[data-fold]:not(:checked)) tr.child { display: none; }" in html


def test_a_child_whose_parent_is_on_another_page_links_to_it(vic: User, linked: Project, tree: FakeMlflow) -> None:
    response = client_for(vic).get(runs_page(), {"max_results": 2})  # loner, grandchild-a
    assert shape(response) == [[("loner", 0)], [("grandchild-a", 0)]]
    html = response.content.decode()
    assert f'child of <a href="{run_page("trial-a")}">trial-a</a>' in html


def test_a_parent_outside_the_project_is_named_by_id_without_a_link(
    vic: User, linked: Project, fake_mlflow: FakeMlflow
) -> None:
    fake_mlflow.add(make_run("elsewhere", "99", name="elsewhere"))
    add(fake_mlflow, "stray", 0, "elsewhere")
    html = client_for(vic).get(runs_page()).content.decode()
    assert "child of <code>elsewhere</code>" in html
    assert run_page("elsewhere") not in html


def test_grouping_survives_a_cycle_of_parent_tags() -> None:
    def run(run_id: str, parent: str) -> Run:
        return Run.from_mlflow(
            {
                "info": {"run_id": run_id, "experiment_id": EXPERIMENT},
                "data": {"tags": [{"key": "mlflow.parentRunId", "value": parent}]},
            }
        )

    grouped = families([run("a", "b"), run("b", "a"), run("c", "c"), run("d", "a")])
    assert [[(row.run.run_id, row.depth) for row in family] for family in grouped] == [
        [("c", 0)],
        [("a", 0), ("b", 1), ("d", 1)],
    ]


def test_the_parents_run_page_lists_its_children_with_status_and_metrics(
    vic: User, linked: Project, tree: FakeMlflow
) -> None:
    response = client_for(vic).get(run_page("sweep"))
    assert response.status_code == 200
    children = [(child.run_id, css, values) for child, css, values in response.context["child_runs"]]
    assert response.context["child_metrics"] == ["loss", "score"]
    assert children == [("trial-a", "succeeded", [0.3, 0.5]), ("trial-b", "failed", [None, 0.7])]
    html = response.content.decode()
    assert "2 child runs" in html and f'href="{run_page("trial-a")}"' in html
    assert "run_ids=trial-a,trial-b" in html  # "Compare them"
    child = client_for(vic).get(run_page("trial-a"))
    assert child.context["parent_run"] == {"run_id": "sweep", "name": "sweep"}
    assert [c.run_id for c, _, _ in child.context["child_runs"]] == ["grandchild-a"]
    loner = client_for(vic).get(run_page("loner"))
    assert loner.context["child_runs"] == [] and loner.context["parent_run"] is None
    assert 'id="child-runs"' not in loner.content.decode()


def test_mlflow_failing_on_the_children_is_a_message_not_a_failed_page(
    vic: User, linked: Project, tree: FakeMlflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.tracking.gateway import MlflowGateway, MlflowUnavailable

    def down(*args: object, **kwargs: object) -> list[Run]:
        raise MlflowUnavailable("MLflow went away.")

    monkeypatch.setattr(MlflowGateway, "search_runs", down)
    response = client_for(vic).get(run_page("sweep"))
    assert response.status_code == 200
    assert response.context["children_error"] == "MLflow went away."
    assert "MLflow went away." in response.content.decode()
