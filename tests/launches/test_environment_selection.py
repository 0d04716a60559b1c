"""Which environment a launch runs in, and what a refusal leaves behind (nothing).

The order: the environment asked for > the template's pinned one > the project's default >
the platform default. Deprecated warns (or, redirected, runs in the replacement); retired
refuses naming the replacement (409); failed is a 400; building a 409. The launch and its
MLflow run name the environment it ran in (tags `plinth.environment`,
`plinth.environment.packages`); a sweep's trials all run in one."""

from __future__ import annotations

from typing import Any

import pytest

from apps.accounts.models import Team, User
from apps.audit.models import AuditEvent
from apps.audit.verbs import AuditVerb
from apps.environments.models import Environment, EnvironmentBuild, EnvironmentState
from apps.launches import services, sweeps
from apps.launches.models import Launch, Template
from apps.projects.models import Project
from tests.conftest import api_for, client_for
from tests.launches.conftest import FakeMlflow, make_template

pytestmark = pytest.mark.django_db


def make_env(name: str, *, team: Team | None = None, version: int = 1, **fields: Any) -> Environment:
    """A ready, image-only environment unless `fields` say otherwise."""
    fields.setdefault("state", EnvironmentState.READY)
    fields.setdefault("image", f"registry.example/{name}@sha256:{'a' * 64}")
    return Environment.objects.create(team=team, name=name, version=version, **fields)


def portal() -> Environment:
    return Environment.objects.get(is_default=True)


def run_tags(fake: FakeMlflow, launch: Launch) -> dict[str, str]:
    return dict(fake.runs[launch.mlflow_run_id]["tags"])


@pytest.fixture
def train(team: Team) -> Template:
    return make_template(team, "train", ["python", "train.py"])


def launch_api(user: User, **body: Any) -> Any:
    return api_for(user).post("/api/v1/launches/", {"project": "demo/demo", "template": "train", **body}, format="json")


# --- the order --------------------------------------------------------------------------------
def test_the_template_pin_wins_over_the_project_default_which_wins_over_the_platform_default(
    ada: User, linked_project: Project, train: Template, fake_mlflow: FakeMlflow
) -> None:
    assert linked_project.environment_id is None
    first = services.create_launch(ada, linked_project, train)
    assert first.environment == portal()
    assert run_tags(fake_mlflow, first)["plinth.environment"] == "portal:1"
    assert run_tags(fake_mlflow, first)["plinth.environment.packages"] == "portal"

    project_env = make_env("project-env")
    Project.objects.filter(pk=linked_project.pk).update(environment=project_env)
    linked_project.refresh_from_db()
    second = services.create_launch(ada, linked_project, train)
    assert second.environment == project_env

    pinned = make_env("pinned")
    Template.objects.filter(pk=train.pk).update(environment=pinned)
    train.refresh_from_db()
    third = services.create_launch(ada, linked_project, train)
    assert third.environment == pinned
    assert run_tags(fake_mlflow, third)["plinth.environment"] == "pinned:1"
    assert run_tags(fake_mlflow, third)["plinth.environment.packages"] == f"image={pinned.image}"

    asked = make_env("asked")
    fourth = services.create_launch(ada, linked_project, train, environment=asked.pk)
    assert fourth.environment == asked
    assert Launch.objects.get(pk=fourth.pk).environment_id == asked.pk


def test_the_api_takes_an_environment_by_label_and_answers_with_it(
    ada: User, linked_project: Project, train: Template, fake_mlflow: FakeMlflow
) -> None:
    make_env("sklearn-1.7")
    response = launch_api(ada, environment="sklearn-1.7:1")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["environment"] == "sklearn-1.7:1"
    assert body["environment_warnings"] == []
    listed = api_for(ada).get(f"/api/v1/launches/{body['id']}/").json()
    assert listed["environment"] == "sklearn-1.7:1"


def test_a_built_environment_tags_its_own_requirements(
    ada: User, linked_project: Project, train: Template, fake_mlflow: FakeMlflow
) -> None:
    build = EnvironmentBuild.objects.create(requirements_hash="b" * 64, requirements="cowsay==6.1", status="ready")
    env = make_env("cows", image="", requirements="cowsay==6.1\n", build=build)
    launch = services.create_launch(ada, linked_project, train, environment=env)
    assert run_tags(fake_mlflow, launch)["plinth.environment.packages"] == "cowsay==6.1"


def test_a_long_requirements_list_is_cut_under_5000_characters() -> None:
    env = Environment(name="big", version=1, requirements="\n".join(f"package-{i}==1.0" for i in range(1000)))
    tags = services.environment_tags(env)
    assert len(tags["plinth.environment.packages"]) <= 5000
    assert tags["plinth.environment.packages"].endswith("…")


# --- what the actor may ask for ----------------------------------------------------------------
@pytest.mark.parametrize("value", ["99999", "9" * 30, "²", "nope:1", "other-team/theirs:1", "theirs:1"])
def test_an_environment_the_project_cannot_use_is_a_400_on_the_field_and_creates_nothing(
    value: str, ada: User, other_team: Team, linked_project: Project, train: Template, fake_mlflow: FakeMlflow
) -> None:
    make_env("theirs", team=other_team)
    response = launch_api(ada, environment=value)
    assert response.status_code == 400, response.json()
    assert "environment" in response.json()
    assert not Launch.objects.exists()
    assert fake_mlflow.runs == {}


def test_the_teams_own_environment_is_usable_in_its_projects(
    ada: User, team: Team, linked_project: Project, train: Template, fake_mlflow: FakeMlflow
) -> None:
    mine = make_env("ours", team=team)
    response = launch_api(ada, environment=str(mine.pk))
    assert response.status_code == 201, response.json()
    assert response.json()["environment"] == "demo/ours:1"


# --- the life cycle ----------------------------------------------------------------------------
def test_a_deprecated_environment_warns_and_the_launch_runs_in_it(
    ada: User, linked_project: Project, train: Template, fake_mlflow: FakeMlflow
) -> None:
    new = make_env("sk", version=2)
    make_env("sk", state=EnvironmentState.DEPRECATED, replaced_by=new, message="Moving to 1.8.")
    response = launch_api(ada, environment="sk:1")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["environment"] == "sk:1"
    assert len(body["environment_warnings"]) == 1
    assert "sk:1 is deprecated" in body["environment_warnings"][0]
    assert "sk:2" in body["environment_warnings"][0]


def test_a_redirected_environment_runs_the_launch_in_its_replacement(
    ada: User, linked_project: Project, train: Template, fake_mlflow: FakeMlflow
) -> None:
    new = make_env("sk", version=2)
    old = make_env("sk", state=EnvironmentState.DEPRECATED, replaced_by=new, redirect=True)
    Template.objects.filter(pk=train.pk).update(environment=old)
    train.refresh_from_db()
    launch = services.create_launch(ada, linked_project, train)
    assert launch.environment == new
    assert run_tags(fake_mlflow, launch)["plinth.environment"] == "sk:2"
    assert any("instead" in warning for warning in launch.environment_warnings)
    event = AuditEvent.objects.get(verb=AuditVerb.LAUNCH_CREATED, target_id=str(launch.pk))
    assert event.after is not None and event.after["environment_warnings"] == launch.environment_warnings


def test_the_launch_page_shows_the_deprecation_warning(
    ada: User, linked_project: Project, train: Template, fake_mlflow: FakeMlflow
) -> None:
    new = make_env("sk", version=2)
    old = make_env("sk", state=EnvironmentState.DEPRECATED, replaced_by=new, message="Moving on.")
    client = client_for(ada)
    response = client.post(
        f"/launches/new/?template={train.pk}",
        {
            "template": str(train.pk),
            "project": str(linked_project.pk),
            "environment": str(old.pk),
            "cpu": "1",
            "memory": "1Gi",
            "gpus": "0",
        },
        follow=True,
    )
    assert response.status_code == 200
    text = response.content.decode()
    assert "sk:1 is deprecated" in text
    assert f'href="/environments/{old.pk}/"' in text  # the launch page links its environment
    assert Launch.objects.get().environment == old


def test_a_retired_environment_is_refused_naming_its_replacement_and_creates_nothing(
    ada: User, linked_project: Project, train: Template, fake_mlflow: FakeMlflow
) -> None:
    new = make_env("sk", version=2)
    old = make_env("sk", state=EnvironmentState.RETIRED, replaced_by=new)
    Project.objects.filter(pk=linked_project.pk).update(environment=old)
    response = launch_api(ada)
    assert response.status_code == 409, response.json()
    assert "sk:1 is retired" in response.json()["detail"]
    assert "sk:2" in response.json()["detail"]
    assert not Launch.objects.exists()
    assert fake_mlflow.runs == {} and fake_mlflow.deleted == []
    assert not AuditEvent.objects.filter(verb=AuditVerb.LAUNCH_CREATED).exists()


@pytest.mark.parametrize(("state", "code"), [(EnvironmentState.FAILED, 400), (EnvironmentState.BUILDING, 409)])
def test_an_environment_without_a_usable_build_is_refused_and_creates_nothing(
    state: str, code: int, ada: User, linked_project: Project, train: Template, fake_mlflow: FakeMlflow
) -> None:
    make_env("broken", state=state)
    response = launch_api(ada, environment="broken:1")
    assert response.status_code == code, response.json()
    assert not Launch.objects.exists()
    assert fake_mlflow.runs == {}


# --- sweeps ------------------------------------------------------------------------------------
def test_every_trial_of_a_sweep_runs_in_the_environment_of_its_first(
    ada: User,
    linked_project: Project,
    train: Template,
    fake_mlflow: FakeMlflow,
    fake_backend: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    first_env = make_env("first")
    Project.objects.filter(pk=linked_project.pk).update(environment=first_env, gpu_quota=0)
    linked_project.refresh_from_db()
    Template.objects.filter(pk=train.pk).update(parameters={"lr": {"type": "float", "default": 0.1}})
    train.refresh_from_db()
    sweep = sweeps.create_sweep(
        ada, linked_project, train, strategy="grid", space={"lr": [0.1, 0.2, 0.3]}, max_trials=3, parallelism=1
    )
    assert fake_mlflow.runs[sweep.mlflow_parent_run_id]["tags"]["plinth.environment"] == "first:1"
    sweeps.advance(sweep.pk)
    # The project's default changes while the sweep runs: later trials stay in the first one.
    Project.objects.filter(pk=linked_project.pk).update(environment=make_env("second"))
    Launch.objects.filter(sweep=sweep).update(status="succeeded")
    sweeps.advance(sweep.pk)
    Launch.objects.filter(sweep=sweep).update(status="succeeded")
    sweeps.advance(sweep.pk)
    trials = list(Launch.objects.filter(sweep=sweep).order_by("trial"))
    assert len(trials) == 3
    assert {t.environment_id for t in trials} == {first_env.pk}


def test_a_sweep_in_a_retired_environment_is_refused_before_anything_exists(
    ada: User, linked_project: Project, train: Template, fake_mlflow: FakeMlflow
) -> None:
    Project.objects.filter(pk=linked_project.pk).update(environment=make_env("gone", state=EnvironmentState.RETIRED))
    linked_project.refresh_from_db()
    Template.objects.filter(pk=train.pk).update(parameters={"lr": {"type": "float", "default": 0.1}})
    train.refresh_from_db()
    response = api_for(ada).post(
        "/api/v1/sweeps/",
        {
            "project": "demo/demo",
            "template": "train",
            "strategy": "grid",
            "space": {"lr": [0.1]},
            "max_trials": 1,
            "parallelism": 1,
        },
        format="json",
    )
    assert response.status_code == 409, response.json()
    assert fake_mlflow.runs == {}


def test_the_launch_forms_first_choice_says_what_an_unnamed_launch_runs_in() -> None:
    from types import SimpleNamespace

    from apps.environments.models import Environment, EnvironmentState
    from apps.launches.forms import _default_choice

    old = Environment(name="sklearn-1.7", version=1, state=EnvironmentState.DEPRECATED)
    pin = Environment(name="cv", version=3, state=EnvironmentState.READY)
    project = SimpleNamespace(environment=old)

    assert _default_choice(pin, [project]) == "cv:3 (pinned by the template)"
    assert _default_choice(None, [project]) == "sklearn-1.7:1 (the project's default, deprecated)"
    assert _default_choice(None, [project, project]) == "the project's default environment"
