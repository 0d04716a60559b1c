"""The project page as a hub: links to the project's runs, launches, sweeps and models;
a Kubernetes namespace only where the project runs on Kubernetes; and the console uses
the same words as the project page for a project no access sync applies to."""

from __future__ import annotations

from typing import Any

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


def test_the_access_card_is_the_project_pages_fragment_for_htmx_and_its_old_address_redirects(
    vic: User, project: Project
) -> None:
    page = f"/projects/{project.team.slug}/{project.slug}/"
    fragment = client_for(vic).get(page, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="access")
    assert fragment.status_code == 200
    body = fragment.content.decode()
    assert body.lstrip().startswith('<section class="card" id="access"') and "<html" not in body
    assert "HX-Target" in fragment["Vary"]
    # Another htmx target (or none) is the whole page.
    other = client_for(vic).get(page, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="members")
    assert other.status_code == 200 and "<html" in other.content.decode()
    # The card's former address, plain or htmx: the project page at the card.
    for headers in ({}, {"HX-Request": "true", "HX-Target": "access"}):
        moved = client_for(vic).get(f"{page}access/?check=1", headers=headers)
        assert moved.status_code == 302 and moved["Location"] == f"{page}?check=1#access"
    assert client_for(vic).get(f"{page}access/")["Location"] == f"{page}#access"


def test_check_the_cluster_now_asks_the_project_page_for_its_access_card(
    lin: User, project: Project, settings: Any
) -> None:
    settings.PLINTH_KUBE_ACCESS_SYNC = True
    Project.objects.filter(pk=project.pk).update(backend="kubernetes")
    page = client_for(lin).get(f"/projects/{project.team.slug}/{project.slug}/").content.decode()
    assert f'hx-get="/projects/{project.team.slug}/{project.slug}/?check=1" hx-target="#access"' in page
