"""The sweep form starts from the template's objective (the metric it logs at every step, so
early stopping can act), warns when early stopping is pointed at another metric, and takes
an optional seed; the demo template sklearn-digits declares `loss`/min and can be slowed
down to watch its curve."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from apps.accounts.models import Team, User
from apps.launches.argv import build_argv
from apps.launches.demo import SKLEARN_DIGITS
from apps.launches.models import Sweep, Template
from apps.launches.services import InvalidInput, create_template
from apps.projects.models import Project
from tests.launches.conftest import FakeBackend, FakeMlflow, make_template
from tests.launches.test_sweep_optuna import COMMAND, PARAMETERS

pytestmark = pytest.mark.django_db


@pytest.fixture
def quad(team: Team) -> Template:
    return make_template(
        team,
        "quadratic",
        COMMAND,
        parameters=PARAMETERS,
        backends=["local"],
        objective={"metric": "loss", "direction": "min"},
    )


def form_page(client: Any, template: Template) -> str:
    response = client.get(f"{reverse('launches:sweep-create')}?template={template.pk}")
    assert response.status_code == 200
    return str(response.content.decode())


def selected_direction(page: str) -> str:
    found = re.search(r'<option value="(\w+)" selected>', page.split('name="direction"')[1])
    assert found is not None, "no direction selected"
    return found.group(1)


def test_the_form_prefills_the_templates_per_step_objective(ada: User, quad: Template, client: Any) -> None:
    client.force_login(ada)
    page = form_page(client, quad)
    assert re.search(r'name="metric" value="loss"', page), "metric not prefilled"
    assert selected_direction(page) == "min"
    assert "The template logs loss at every step" in page


def test_without_a_template_objective_the_form_proposes_accuracy_higher_is_better(
    ada: User, team: Team, client: Any
) -> None:
    plain = make_template(team, "plain", COMMAND, parameters=PARAMETERS, backends=["local"])
    client.force_login(ada)
    page = form_page(client, plain)
    assert re.search(r'name="metric" value="accuracy"', page)
    assert selected_direction(page) == "max"
    assert "at every step" not in page


def form(project: Project, template: Template, **changes: Any) -> dict[str, Any]:
    return {
        "template": template.pk,
        "project": project.pk,
        "strategy": "bayes",
        "space": '{"x": {"min": -5, "max": 5}, "y": {"min": -5, "max": 5}}',
        "max_trials": 4,
        "parallelism": 1,
        "metric": "loss",
        "direction": "min",
        "early_stopping": "median",
        "min_steps": 3,
        **changes,
    }


@pytest.mark.parametrize(
    ("changes", "warned"),
    [
        ({}, False),
        ({"metric": "accuracy", "direction": "max"}, True),
        ({"metric": "accuracy", "direction": "max", "early_stopping": ""}, False),  # nothing to stop early
    ],
)
def test_early_stopping_on_another_metric_than_the_per_step_one_is_started_with_a_warning(
    ada: User,
    linked_project: Project,
    quad: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    django_capture_on_commit_callbacks: Any,
    client: Any,
    changes: dict[str, Any],
    warned: bool,
) -> None:
    client.force_login(ada)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("launches:sweep-create"), form(linked_project, quad, **changes))
    assert response.status_code == 302, response.content.decode()[:2000]
    sweep = Sweep.objects.get()
    assert sweep.metric == changes.get("metric", "loss")
    warnings = [str(m) for m in get_messages(response.wsgi_request) if m.level_tag == "warning"]
    if warned:
        assert warnings == [
            "Early stopping compares accuracy, but the template logs loss at every step: if accuracy is logged "
            "only at the end, no trial will be stopped early."
        ]
    else:
        assert warnings == []


def test_a_seed_from_the_form_plans_the_same_trials(
    ada: User,
    linked_project: Project,
    quad: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    django_capture_on_commit_callbacks: Any,
    client: Any,
) -> None:
    client.force_login(ada)
    url = reverse("launches:sweep-create")
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(url, form(linked_project, quad, seed=22, strategy="random", max_trials=3))
        assert response.status_code == 302, response.content.decode()[:2000]
    first, second = Sweep.objects.order_by("id")
    assert first.seed == second.seed == 22
    assert first.planned == second.planned and len(first.planned) == 3
    response = client.post(url, form(linked_project, quad, seed=-1))
    assert response.status_code == 400 and "seed" in response.context["form"].errors


def test_the_digits_template_declares_loss_and_can_be_slowed_down(root: User) -> None:
    template = create_template(root, None, **SKLEARN_DIGITS)
    assert template.objective == {"metric": "loss", "direction": "min"}
    spec = template.parameters["sleep_per_epoch"]
    assert (spec["type"], spec["default"], spec["min"], spec["max"]) == ("float", 0.2, 0.0, 5.0)
    defaults = {name: p["default"] for name, p in template.parameters.items()}
    assert "--sleep_per_epoch=0.2" in build_argv(template.command, defaults)


@pytest.mark.parametrize(
    "objective",
    [
        {"metric": "loss"},
        {"metric": "", "direction": "min"},
        {"metric": "loss", "direction": "lower"},
        {"metric": "loss", "direction": "min", "extra": 1},
        ["loss", "min"],
    ],
)
def test_a_template_objective_is_a_metric_and_a_direction(root: User, objective: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        create_template(root, None, **{**SKLEARN_DIGITS, "objective": objective})
    assert "objective" in caught.value.fields
