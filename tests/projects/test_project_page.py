"""The project page as a hub: links to the project's runs, launches, sweeps and models;
a Kubernetes namespace only where the project runs on Kubernetes; and the console uses
the same words as the project page for a project no access sync applies to."""

from __future__ import annotations

import pytest

from apps.accounts.models import User
from apps.projects.models import Project
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def test_the_project_page_links_to_its_runs_launches_sweeps_and_models(vic: User, project: Project) -> None:
    page = client_for(vic).get("/projects/demo/demo/").content.decode()
    for href in (
        "/runs/demo/demo/",
        f"/launches/?project={project.pk}",
        f"/launches/sweeps/?project={project.pk}",
        "/models/projects/demo/demo/",
    ):
        assert f'href="{href}"' in page, href
    for href in (
        "/runs/demo/demo/",
        f"/launches/?project={project.pk}",
        f"/launches/sweeps/?project={project.pk}",
        "/models/projects/demo/demo/",
    ):
        assert client_for(vic).get(href).status_code == 200, href


def test_a_local_project_shows_no_kubernetes_namespace(lin: User, root: User, project: Project) -> None:
    Project.objects.filter(pk=project.pk).update(backend="local")
    page = client_for(lin).get("/projects/demo/demo/").content.decode()
    assert "Kubernetes namespace" not in page and project.namespace not in page
    console = client_for(root).get("/console/projects/").content.decode()
    assert project.namespace not in console and "not synced yet" not in console
    assert "no sync applies (local backend)" in console
    detail = client_for(root).get("/console/projects/demo/demo/").content.decode()
    assert project.namespace not in detail and "no sync applies (local backend)" in detail


def test_a_kubernetes_project_shows_its_namespace(lin: User, project: Project) -> None:
    Project.objects.filter(pk=project.pk).update(backend="kubernetes")
    page = client_for(lin).get("/projects/demo/demo/").content.decode()
    assert "Kubernetes namespace" in page and project.namespace in page


def test_the_access_fragment_is_a_fragment_for_htmx_and_the_project_page_for_a_plain_visit(
    vic: User, project: Project
) -> None:
    url = f"/projects/{project.team.slug}/{project.slug}/access/"
    plain = client_for(vic).get(url + "?check=1")
    assert plain.status_code == 302
    assert plain["Location"] == f"/projects/{project.team.slug}/{project.slug}/?check=1#access"
    fragment = client_for(vic).get(url, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="access")
    assert fragment.status_code == 200
    assert 'id="access"' in fragment.content.decode() and "<html" not in fragment.content.decode()
