"""A template's objective (what sweeps over it optimise first) through the API and the
console: the API speaks the sweep API's spelling (minimize/maximize), the console form and
the stored row Sweep.direction's (min/max); a bad one is a 400 naming `objective` and
changes nothing."""

from __future__ import annotations

import json

import pytest

from apps.accounts.models import Team, User
from apps.launches.models import Template
from tests.conftest import api_for, client_for

pytestmark = pytest.mark.django_db

BODY = {"team": "demo", "slug": "digits", "image": "python:3.12", "command": ["python", "train.py"]}


def test_the_api_sets_reads_and_clears_a_templates_objective(lin: User, team: Team) -> None:
    objective = {"metric": " loss ", "direction": "minimize"}
    response = api_for(lin).post("/api/v1/templates/", {**BODY, "objective": objective}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["objective"] == {"metric": "loss", "direction": "minimize"}
    template = Template.objects.get(slug="digits")
    assert template.objective == {"metric": "loss", "direction": "min"}

    listed = api_for(lin).get("/api/v1/templates/").json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert [t["objective"] for t in rows if t["slug"] == "digits"] == [{"metric": "loss", "direction": "minimize"}]

    cleared = api_for(lin).patch(f"/api/v1/templates/{template.pk}/", {"objective": None}, format="json")
    assert cleared.status_code == 200, cleared.json()
    assert cleared.json()["objective"] is None and Template.objects.get(pk=template.pk).objective == {}


@pytest.mark.parametrize(
    "objective",
    [
        {"metric": "loss"},
        {"metric": "", "direction": "min"},
        {"metric": "loss", "direction": "down"},
        {"metric": "loss", "direction": "min", "steps": 3},
        {"metric": "loss", "direction": ["min"]},
        {"metric": "loss", "direction": {"min": 1}},
        {"metric": ["loss"], "direction": "min"},
        ["loss", "min"],
        "loss",
    ],
)
def test_a_bad_objective_is_a_400_naming_it_and_changes_nothing(lin: User, team: Team, objective: object) -> None:
    created = api_for(lin).post(
        "/api/v1/templates/", {**BODY, "objective": {"metric": "acc", "direction": "max"}}, format="json"
    )
    assert created.status_code == 201, created.json()
    pk = created.json()["id"]
    response = api_for(lin).patch(f"/api/v1/templates/{pk}/", {"objective": objective}, format="json")
    assert response.status_code == 400 and "objective" in response.json(), response.json()
    assert Template.objects.get(pk=pk).objective == {"metric": "acc", "direction": "max"}


def test_the_console_form_shows_and_keeps_the_objective(lin: User, team: Team) -> None:
    created = api_for(lin).post(
        "/api/v1/templates/", {**BODY, "objective": {"metric": "loss", "direction": "min"}}, format="json"
    )
    assert created.status_code == 201, created.json()
    template = Template.objects.get(pk=created.json()["id"])
    page = client_for(lin).get(f"/console/templates/{template.pk}/").content.decode()
    assert "&quot;metric&quot;: &quot;loss&quot;" in page

    form = {
        "name": "Digits",
        "image": "python:3.12",
        "command": json.dumps(BODY["command"]),
        "max_runtime_seconds": 3600,
        "backends": ["local"],
        "is_active": "on",
        "objective": '{"metric": "val_loss", "direction": "min"}',
    }
    assert client_for(lin).post(f"/console/templates/{template.pk}/", form).status_code == 302
    assert Template.objects.get(pk=template.pk).objective == {"metric": "val_loss", "direction": "min"}
    bad = client_for(lin).post(f"/console/templates/{template.pk}/", {**form, "objective": '{"metric": "x"}'})
    assert bad.status_code == 400 and "minimize" in bad.content.decode()
    assert Template.objects.get(pk=template.pk).objective == {"metric": "val_loss", "direction": "min"}
