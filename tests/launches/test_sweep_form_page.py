"""The sweep page's own example of a search space (its help text: a log-scale range and a
list) submitted under the default Grid strategy is refused on the page with a 400 whose
message sits under the Space field, names the parameter that has a range and says ranges
need Random; the same example under Random starts the sweep."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from apps.accounts.models import Team, User
from apps.launches.models import Sweep, Template
from apps.projects.models import Project
from tests.launches.conftest import FakeMlflow, make_template

pytestmark = pytest.mark.django_db


@pytest.fixture
def example_template(team: Team) -> Template:
    """A template with the two parameters the form's example names."""
    return make_template(
        team,
        "example",
        ["python", "train.py"],
        parameters={
            "learning_rate": {"type": "float", "default": 0.01, "min": 0.00001, "max": 1.0},
            "alpha": {"type": "float", "default": 0.001, "min": 0.0, "max": 1.0},
        },
    )


def the_forms_example(page: str) -> dict[str, Any]:
    """The search space the Space field's help text gives as its example."""
    found = re.search(r"e\.g\. (.*?); ranges", html.unescape(page))
    assert found, "the Space field gives no example"
    example: dict[str, Any] = json.loads(found.group(1))
    return example


def space_field(page: str) -> str:
    """The Space field's block on the page: its label, input, help and errors."""
    found = re.search(r'<div class="field[^"]*">\s*<label for="id_space">.*?</div>', page, re.S)
    assert found, "no Space field on the page"
    return found.group(0)


def submit(client: Client, project: Project, template: Template, strategy: str, space: dict[str, Any]) -> Any:
    return client.post(
        reverse("launches:sweep-create"),
        {
            "template": template.pk,
            "project": project.pk,
            "strategy": strategy,
            "space": json.dumps(space),
            "max_trials": 2,
            "parallelism": 1,
            "metric": "accuracy",
            "direction": "max",
            "early_stopping": "",
            "min_steps": 5,
            "seed": "",
        },
    )


def test_the_forms_own_example_under_grid_names_the_parameter_under_the_space_field(
    ada: User, linked_project: Project, example_template: Template, fake_mlflow: FakeMlflow
) -> None:
    client = Client()
    client.force_login(ada)
    form_page = client.get(reverse("launches:sweep-create"), {"template": example_template.pk})
    assert form_page.status_code == 200
    example = the_forms_example(form_page.content.decode())
    ranged = [name for name, values in example.items() if isinstance(values, dict)]
    assert ranged == ["learning_rate"] and example["learning_rate"].get("log") is True, example

    refused = submit(client, linked_project, example_template, "grid", example)

    assert refused.status_code == 400
    page = refused.content.decode()
    field = space_field(page)
    assert "has-error" in field.split(">", 1)[0], "the Space field is not marked"
    errors = [html.unescape(e) for e in re.findall(r'<p class="error" id="id_space-error">(.*?)</p>', field, re.S)]
    assert len(errors) == 1, errors
    [error] = errors
    assert error.startswith("learning_rate:") and "Random" in error, error
    assert "alpha" not in error, "the list parameter is fine under Grid"
    assert page.count("learning_rate: a range") == 1, "the message shows once, under the field"
    assert not Sweep.objects.exists()
    assert not fake_mlflow.runs  # no parent run either

    started = submit(client, linked_project, example_template, "random", example)
    assert started.status_code == 302, started.content.decode()[:2000]
    assert Sweep.objects.get().strategy == "random"
