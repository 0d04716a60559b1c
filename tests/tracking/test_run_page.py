"""One run's page and artifact downloads through the portal, against a real MLflow server;
path traversal is refused before MLflow is asked anything."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from apps.accounts.models import User
from apps.projects.models import Project
from apps.tracking.gateway import MlflowGateway
from tests.conftest import client_for
from tests.tracking.conftest import Seeded

pytestmark = pytest.mark.mlflow

NOTES = "first line\nsecond line\n"


@pytest.fixture(scope="module")
def with_artifacts(seeded: Seeded) -> str:
    run_id = seeded.run_id(7)
    seeded.client.log_text(run_id, NOTES, "model/notes.txt")
    seeded.client.log_text(run_id, "<script>alert(1)</script>", "report.html")
    seeded.client.set_tag(run_id, "stage", "candidate")
    return run_id


def run_url(run_id: str, **query: str) -> str:
    url = reverse("tracking:run", kwargs={"team": "demo", "slug": "demo", "run_id": run_id})
    return url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def artifact_url(run_id: str, path: str) -> str:
    return run_url(run_id) + "artifacts/" + path


def test_the_run_page_shows_params_metrics_histories_tags_and_artifacts(
    vic: User, linked: Project, seeded: Seeded, with_artifacts: str
) -> None:
    response = client_for(vic).get(run_url(with_artifacts))
    assert response.status_code == 200
    html = response.content.decode()
    assert "run-07" in html and "<code>0.01</code>" in html  # lr of run-07
    assert "candidate" in html  # its tag
    charts = [json.loads(c.json) for c in response.context["charts"]]
    assert [c["key"] for c in charts] == ["accuracy", "loss"]
    assert len(charts[1]["figure"]["data"][0]["y"]) == 30
    assert f"{linked.mlflow_experiment_id}/runs/{with_artifacts}" in html  # the MLflow UI link
    assert 'href="?path=model#artifacts"' in html and "report.html" in html
    folder = client_for(vic).get(run_url(with_artifacts, path="model"))
    assert artifact_url(with_artifacts, "model/notes.txt") in folder.content.decode()


def test_an_artifact_downloads_through_the_portal(vic: User, linked: Project, with_artifacts: str) -> None:
    response = client_for(vic).get(artifact_url(with_artifacts, "model/notes.txt"))
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == NOTES.encode()  # type: ignore[attr-defined]
    assert response["Content-Disposition"] == "attachment; filename*=UTF-8''notes.txt"
    html = client_for(vic).get(artifact_url(with_artifacts, "report.html"))
    assert html["Content-Type"] == "application/octet-stream"  # never rendered on the portal's origin
    b"".join(html.streaming_content)  # type: ignore[attr-defined]
    assert client_for(vic).get(artifact_url(with_artifacts, "model/missing.txt")).status_code == 404
    assert client_for(vic).get(artifact_url(with_artifacts, "model")).status_code == 404  # a folder


@pytest.mark.parametrize(
    "path",
    [
        "../../../etc/passwd",
        "model/../../mlflow.db",
        "%2e%2e/%2e%2e/etc/passwd",  # decoded once by Django: "../../etc/passwd"
        "%252e%252e/%252e%252e/etc/passwd",  # double-encoded: arrives as "%2e%2e/..."
        "model%5C..%5C..%5Cmlflow.db",  # backslashes
        "..%5Cmlflow.db",
        "/etc/passwd",  # absolute (the URL reads .../artifacts//etc/passwd)
        "C:/Windows/win.ini",
        "model/./notes.txt",
        "model//notes.txt",
        "model/notes.txt%00.png",
    ],
)
def test_path_traversal_is_refused_before_mlflow_is_asked(
    vic: User, linked: Project, with_artifacts: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("MLflow was asked for a refused path")

    monkeypatch.setattr(MlflowGateway, "open_artifact", refuse)
    monkeypatch.setattr(MlflowGateway, "get_run", refuse)
    response = client_for(vic).get(artifact_url(with_artifacts, path))
    assert response.status_code == 400, path


@pytest.mark.parametrize("path", ["..", "model/..", "%2e%2e", "/", "model\\.."])
def test_browsing_artifact_folders_refuses_traversal_too(
    vic: User, linked: Project, with_artifacts: str, path: str
) -> None:
    assert client_for(vic).get(run_url(with_artifacts), {"path": path}).status_code == 400


def test_a_run_from_another_experiment_is_not_found_under_this_project(
    vic: User, linked: Project, seeded: Seeded
) -> None:
    other = seeded.client.create_experiment("tests/elsewhere")
    stranger = seeded.client.create_run(other, run_name="stranger").info.run_id
    assert client_for(vic).get(run_url(stranger)).status_code == 404
    assert client_for(vic).get(artifact_url(stranger, "x.txt")).status_code == 404
    assert client_for(vic).get(run_url("0" * 32)).status_code == 404
