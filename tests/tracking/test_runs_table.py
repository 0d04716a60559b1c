"""The runs table, page and API, against a real MLflow server holding runs that the plain
MLflow client logged (nobody launched them through Plinth)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from django.urls import reverse

from apps.accounts.models import User
from apps.launches import services as launch_services
from apps.launches.demo import SKLEARN_DIGITS
from apps.launches.models import Launch, Status
from apps.projects.models import Project
from tests.conftest import api_for, client_for
from tests.tracking.conftest import Seeded

pytestmark = pytest.mark.mlflow

RUNS_API = "/api/v1/runs/"


def names(body: dict[str, Any]) -> list[str]:
    return [run["name"] for run in body["runs"]]


def runs_page(project: Project) -> str:
    return reverse("tracking:runs", kwargs={"team": project.team.slug, "slug": project.slug})


def test_runs_logged_outside_plinth_are_listed_with_their_params_metrics_and_author(
    vic: User, linked: Project, seeded: Seeded
) -> None:
    body = api_for(vic).get(RUNS_API, {"project": "demo/demo"}).json()
    assert sorted(names(body)) == sorted(seeded.runs)
    assert body["next_page_token"] == ""
    run = next(r for r in body["runs"] if r["name"] == "run-03")
    assert run["run_id"] == seeded.run_id(3)
    assert run["params"] == {"lr": "0.1", "optimizer": "sgd", "depth": "3"}
    assert run["metrics"]["loss"] == pytest.approx(1 / 30 + 0.03, rel=1e-4)
    assert (run["status"], run["author"], run["project"], run["launch"]) == ("FINISHED", "grace", "demo/demo", None)
    assert run["duration_seconds"] is not None and run["duration_seconds"] >= 0


def test_the_runs_page_shows_the_table_with_chosen_columns_and_links(
    vic: User, linked: Project, seeded: Seeded
) -> None:
    response = client_for(vic).get(runs_page(linked), {"params": "optimizer", "metrics": "accuracy"})
    assert response.status_code == 200
    html = response.content.decode()
    assert response.context["params"] == ["optimizer"] and response.context["metrics"] == ["accuracy"]
    assert len(response.context["rows"]) == 12
    run_url = reverse("tracking:run", kwargs={"team": "demo", "slug": "demo", "run_id": seeded.run_id(5)})
    assert f'href="{run_url}"' in html
    assert f'name="run_ids" value="{seeded.run_id(5)}"' in html
    assert "data-select-all" in html
    assert ">0.65<" in html  # run-05's accuracy, 0.5 + 5 * 0.03


def test_a_run_launched_through_plinth_links_to_its_launch(
    vic: User, ada: User, root: User, linked: Project, seeded: Seeded
) -> None:
    template = launch_services.create_template(root, None, **SKLEARN_DIGITS)
    launch = Launch.objects.create(
        project=linked,
        template=template,
        created_by=ada,
        status=Status.SUCCEEDED,
        backend="local",
        mlflow_run_id=seeded.run_id(2),
        mlflow_experiment_id=seeded.experiment_id,
    )
    body = api_for(vic).get(RUNS_API, {"project": "demo/demo"}).json()
    run = next(r for r in body["runs"] if r["run_id"] == seeded.run_id(2))
    assert (run["launch"], run["author"]) == (launch.pk, "ada")
    html = client_for(vic).get(runs_page(linked)).content.decode()
    assert reverse("launches:detail", kwargs={"pk": launch.pk}) in html


def test_a_filter_in_mlflow_syntax_narrows_the_runs(vic: User, linked: Project, seeded: Seeded) -> None:
    api = api_for(vic)
    query = {"project": "demo/demo", "filter": "params.optimizer = 'adam' and metrics.accuracy > 0.7"}
    body = api.get(RUNS_API, query).json()
    assert sorted(names(body)) == ["run-08", "run-10"]
    response = client_for(vic).get(runs_page(linked), {"filter": "params.lr = '0.001'"})
    assert sorted(r[0].name for r in response.context["rows"]) == ["run-02", "run-05", "run-08", "run-11"]


@pytest.mark.parametrize(
    ("order_by", "expected"),
    [
        ("metrics.accuracy ASC", [f"run-{i:02d}" for i in range(12)]),
        ("metrics.accuracy DESC", [f"run-{i:02d}" for i in reversed(range(12))]),
        ("attributes.run_name DESC", [f"run-{i:02d}" for i in reversed(range(12))]),
    ],
)
def test_runs_sort_by_any_column(vic: User, linked: Project, order_by: str, expected: list[str]) -> None:
    assert names(api_for(vic).get(RUNS_API, {"project": "demo/demo", "order_by": order_by}).json()) == expected
    page = client_for(vic).get(runs_page(linked), {"order_by": order_by})
    assert [row[0].name for row in page.context["rows"]] == expected


def test_page_tokens_walk_through_every_run_once(vic: User, linked: Project, seeded: Seeded) -> None:
    api = api_for(vic)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        query = {"project": "demo/demo", "max_results": "5", "order_by": "attributes.run_name ASC", "page_token": token}
        body = api.get(RUNS_API, query).json()
        seen += names(body)
        pages += 1
        token = body["next_page_token"]
        if not token:
            break
    assert (pages, seen) == (3, sorted(seeded.runs))
    first = client_for(vic).get(runs_page(linked), {"max_results": "5", "order_by": "attributes.run_name ASC"})
    next_token = first.context["page"].next_page_token
    assert next_token and urlencode({"page_token": next_token}) in first.content.decode()
    second = client_for(vic).get(
        runs_page(linked), {"max_results": 5, "order_by": "attributes.run_name ASC", "page_token": next_token}
    )
    assert [row[0].name for row in second.context["rows"]] == ["run-05", "run-06", "run-07", "run-08", "run-09"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("filter", "metrics.loss >>> 1"),
        ("filter", "params.lr = 0.1 and"),
        ("filter", "nonsense.key = 'x'"),
        ("order_by", "foo.bar DESC"),
    ],
)
def test_a_bad_filter_or_order_is_a_400_with_mlflows_message(
    vic: User, linked: Project, field: str, value: str
) -> None:
    response = api_for(vic).get(RUNS_API, {"project": "demo/demo", field: value})
    assert response.status_code == 400
    assert response.json()[field] and response.json()["detail"]
    page = client_for(vic).get(runs_page(linked), {field: value})
    assert page.status_code == 400
    assert page.context["error"] and 'role="alert"' in page.content.decode()
    if field == "filter":
        assert value in page.content.decode().replace("&gt;", ">").replace("&#x27;", "'")


def test_the_api_needs_a_project_it_can_see(vic: User, omar: User, linked: Project) -> None:
    assert api_for(vic).get(RUNS_API).status_code == 400
    assert api_for(vic).get(RUNS_API, {"project": "nope"}).status_code == 400
    assert api_for(omar).get(RUNS_API, {"project": "demo/demo"}).status_code == 404
    assert api_for(vic).get(RUNS_API, {"project": "demo/demo", "max_results": "0"}).status_code == 400


def test_an_unlinked_project_has_an_empty_table_that_says_why(vic: User, project: Project, mlflow_up: str) -> None:
    response = client_for(vic).get(runs_page(project))
    assert response.status_code == 200
    assert "not linked to an MLflow experiment yet" in response.content.decode()
    assert api_for(vic).get(RUNS_API, {"project": "demo/demo"}).json() == {"runs": [], "next_page_token": ""}


def test_the_index_lists_the_projects_one_can_see(
    vic: User, omar: User, linked: Project, other_project: Project
) -> None:
    html = client_for(vic).get(reverse("tracking:index")).content.decode()
    assert runs_page(linked) in html and "other/other" not in html
    assert "demo/demo" not in client_for(omar).get(reverse("tracking:index")).content.decode()
