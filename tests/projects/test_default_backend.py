"""PLINTH_DEFAULT_BACKEND decides the backend of a new project when its creator names none:
through the API, the create form's initial choice and the model's default."""

from __future__ import annotations

from typing import Any

import pytest

from apps.accounts.models import Team, User
from apps.projects import services
from apps.projects.models import Backend, Project
from tests.conftest import api_for, client_for

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("configured", ["kubernetes", "local"])
def test_the_api_creates_a_project_on_the_configured_default_backend(
    settings: Any, lin: User, team: Team, configured: str
) -> None:
    settings.PLINTH_DEFAULT_BACKEND = configured
    response = api_for(lin).post("/api/v1/projects/", {"team": "demo", "slug": "vision", "name": "V"}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["backend"] == configured
    assert Project.objects.get(slug="vision").backend == configured


def test_a_backend_named_by_the_creator_wins_over_the_default(settings: Any, lin: User, team: Team) -> None:
    settings.PLINTH_DEFAULT_BACKEND = "kubernetes"
    project = services.create_project(lin, team, slug="cpu", name="CPU", backend="local")
    assert project.backend == Backend.LOCAL


def test_the_create_form_preselects_the_default_backend(settings: Any, lin: User, team: Team) -> None:
    settings.PLINTH_DEFAULT_BACKEND = "kubernetes"
    page = client_for(lin).get("/projects/new/").content.decode()
    assert '<option value="kubernetes" selected>' in page
    assert '<option value="local" selected>' not in page


def test_the_model_default_follows_the_setting_and_ignores_nonsense(settings: Any, team: Team) -> None:
    settings.PLINTH_DEFAULT_BACKEND = "kubernetes"
    assert Project(team=team, slug="a").backend == Backend.KUBERNETES
    settings.PLINTH_DEFAULT_BACKEND = "mainframe"
    assert Project(team=team, slug="b").backend == Backend.LOCAL
