"""A registered model tagged into a project may have a version made from a run in another
team's experiment: every page and endpoint shows such a run as "a run outside this
project", without its name or metrics, and the run's own pages answer 404 (the real MLflow
server for the flows, the fake registry for evidence captured before the rule)."""

from __future__ import annotations

import pytest

from apps.accounts.models import User
from apps.projects.models import Project
from apps.registry.models import PromotionRequest, RegisteredModel
from tests.conftest import api_for, client_for
from tests.registry.conftest import Registered
from tests.registry.fakes import FakeRegistry

pytestmark = pytest.mark.django_db

SECRET_METRIC = "their_secret_metric"


@pytest.fixture
def mixed_model(project: Project, other_project: Project, registered: Registered) -> tuple[str, str, str]:
    """A model tagged demo/demo: version 1 from a run in demo/demo's experiment, version 2
    from a run in other/other's experiment. Returns (name, the other run's id, its name)."""
    name = registered.model("demo/demo", [{"accuracy": 0.9}])
    registered.version(name, {SECRET_METRIC: 0.777}, experiment="other/other")
    run_id = registered.client.get_model_version(name, "2").run_id
    assert run_id is not None
    registered.client.set_tag(run_id, "mlflow.runName", "their-private-run")
    assert registered.client.get_run(run_id).info.run_name == "their-private-run"
    return name, run_id, "their-private-run"


@pytest.mark.mlflow
def test_the_model_page_shows_a_run_outside_the_project_without_its_data(
    vic: User, mixed_model: tuple[str, str, str]
) -> None:
    name, _, run_name = mixed_model
    response = client_for(vic).get(f"/models/registered/{name}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "a run outside this project" in html
    assert run_name not in html and SECRET_METRIC not in html and "0.7770" not in html
    assert "0.9000" in html  # the run inside the project is shown as before


@pytest.mark.mlflow
def test_the_model_api_shows_a_run_outside_the_project_without_its_data(
    vic: User, mixed_model: tuple[str, str, str]
) -> None:
    name, run_id, run_name = mixed_model
    response = api_for(vic).get(f"/api/v1/models/{name}/")
    assert response.status_code == 200
    runs = {v["version"]: v["run"] for v in response.json()["versions"]}
    assert runs[2]["outside_project"] is True and runs[2]["run_id"] == run_id
    assert runs[2]["metrics"] == {} and runs[2]["run_name"] == ""
    assert run_name not in response.content.decode() and SECRET_METRIC not in response.content.decode()
    assert runs[1]["outside_project"] is False and runs[1]["metrics"] == {"accuracy": 0.9}


@pytest.mark.mlflow
def test_its_run_page_and_artifacts_are_404_under_the_project(vic: User, mixed_model: tuple[str, str, str]) -> None:
    _, run_id, _ = mixed_model
    assert client_for(vic).get(f"/runs/demo/demo/{run_id}/").status_code == 404
    assert client_for(vic).get(f"/runs/demo/demo/{run_id}/artifacts/model/MLmodel").status_code == 404
    assert api_for(vic).get("/api/v1/runs/compare/", {"run_ids": run_id}).status_code == 404


@pytest.mark.mlflow
def test_promotion_evidence_holds_no_data_of_a_run_outside_the_project(
    ada: User, vic: User, mixed_model: tuple[str, str, str]
) -> None:
    name, _, run_name = mixed_model
    response = api_for(ada).post(
        "/api/v1/promotions/",
        {"model": name, "version": 2, "alias": "champion", "justification": "looks good"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    candidate = response.json()["evidence"]["candidate"]
    assert candidate["outside_project"] is True and candidate["metrics"] == {} and candidate["run_name"] == ""
    stored = PromotionRequest.objects.get(pk=response.json()["id"]).evidence
    assert SECRET_METRIC not in str(stored) and run_name not in str(stored)
    page = client_for(vic).get(f"/models/requests/{response.json()['id']}/").content.decode()
    assert "a run outside this project" in page and SECRET_METRIC not in page


def test_evidence_captured_before_the_rule_is_shown_without_the_outside_run(
    ada: User, vic: User, project: Project, fake_registry: FakeRegistry
) -> None:
    from apps.registry import services

    made = services.create_request(
        ada, RegisteredModel(name="digits", project=project), version=2, alias="champion", justification="x"
    )
    leaked = {
        **made.evidence,
        "candidate": {
            "version": 2,
            "run_id": "r2",
            "run_name": "their-private-run",
            "experiment_id": "999",
            "metrics": {SECRET_METRIC: 0.777},
        },
    }
    PromotionRequest.objects.filter(pk=made.pk).update(evidence=leaked)

    body = api_for(vic).get(f"/api/v1/promotions/{made.pk}/").content.decode()
    page = client_for(vic).get(f"/models/requests/{made.pk}/").content.decode()

    for shown in (body, page):
        assert "their-private-run" not in shown and SECRET_METRIC not in shown and "0.777" not in shown
    assert "a run outside this project" in page
