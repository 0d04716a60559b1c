"""Which environment a new launch or deployment runs in, and the life-cycle rules."""

from __future__ import annotations

from typing import Any

import pytest

from apps.accounts.models import Team
from apps.core.errors import Conflict, InvalidInput
from apps.environments import selection
from apps.environments.models import Environment, EnvironmentState
from apps.launches.models import Template
from apps.projects.models import Project


def make_env(name: str, version: int = 1, *, state: str = EnvironmentState.READY, **fields: Any) -> Environment:
    return Environment.objects.create(name=name, version=version, state=state, **fields)


@pytest.fixture
def template(db: None) -> Template:
    return Template.objects.create(slug="train", name="Train", image="python:3.11", command=["python", "-V"])


def test_the_platform_default_is_the_portal_environment_out_of_the_box(db: None) -> None:
    default = selection.platform_default()

    assert default is not None
    assert (default.label, default.is_portal, default.state) == ("portal:1", True, EnvironmentState.READY)


def test_without_any_default_the_portal_environment_is_made_again_once(db: None) -> None:
    """A flushed database (a transactional test's teardown, or rows deleted by hand) has no
    default: launches still get the portal's own interpreter, and only one row of it."""
    Environment.objects.all().delete()

    first, second = selection.platform_default(), selection.platform_default()

    assert first.pk == second.pk and (first.label, first.is_portal, first.is_default) == ("portal:1", True, True)
    assert Environment.objects.filter(name="portal").count() == 1


def test_a_ready_environment_is_used_without_warnings(db: None) -> None:
    env = make_env("sklearn-1.7")

    assert selection.apply_rules(env) == selection.Selected(env, [])


def test_a_deprecated_environment_warns_naming_its_replacement(db: None) -> None:
    new = make_env("sklearn-1.7", 2)
    old = make_env("sklearn-1.7", state=EnvironmentState.DEPRECATED, replaced_by=new, message="CVE fixed in 2.")

    chosen = selection.apply_rules(old)

    assert chosen.environment == old
    assert chosen.warnings == ["sklearn-1.7:1 is deprecated. CVE fixed in 2. Use sklearn-1.7:2 instead."]


def test_a_message_that_names_the_replacement_is_not_followed_by_it_again(db: None) -> None:
    new = make_env("sklearn", 2)
    old = make_env("sklearn", 1, state=EnvironmentState.RETIRED, replaced_by=new, message="Moved to sklearn:2")

    with pytest.raises(Conflict) as refused:
        selection.apply_rules(old)

    assert refused.value.message == "The environment sklearn:1 is retired. Moved to sklearn:2."


def test_a_redirected_environment_follows_replacements_to_one_that_is_not(db: None) -> None:
    newest = make_env("sklearn", 3)
    middle = make_env("sklearn", 2, state=EnvironmentState.DEPRECATED, replaced_by=newest, redirect=True)
    oldest = make_env("sklearn", 1, state=EnvironmentState.DEPRECATED, replaced_by=middle, redirect=True)

    chosen = selection.apply_rules(oldest)

    assert chosen.environment == newest
    assert chosen.warnings == [
        "sklearn:1 is deprecated. This runs in sklearn:2 instead.",
        "sklearn:2 is deprecated. This runs in sklearn:3 instead.",
    ]


def test_a_redirect_cycle_ends_instead_of_looping(db: None) -> None:
    one = make_env("loop", 1, state=EnvironmentState.DEPRECATED, redirect=True)
    two = make_env("loop", 2, state=EnvironmentState.DEPRECATED, redirect=True, replaced_by=one)
    Environment.objects.filter(pk=one.pk).update(replaced_by=two)
    one.refresh_from_db()

    chosen = selection.apply_rules(one)

    assert chosen.environment.state == EnvironmentState.DEPRECATED
    assert len(chosen.warnings) <= selection.MAX_REDIRECTS + 1


def test_a_retired_environment_is_refused_naming_its_replacement(db: None) -> None:
    new = make_env("sklearn-1.7", 2)
    old = make_env("sklearn-1.7", state=EnvironmentState.RETIRED, replaced_by=new, message="Gone.")

    with pytest.raises(Conflict) as refused:
        selection.apply_rules(old)

    assert refused.value.status_code == 409
    assert refused.value.message == "The environment sklearn-1.7:1 is retired. Gone. Use sklearn-1.7:2 instead."


def test_a_building_environment_is_refused(db: None) -> None:
    with pytest.raises(Conflict, match="still building"):
        selection.apply_rules(make_env("fresh", state=EnvironmentState.BUILDING))


def test_a_failed_environment_is_refused_on_the_field(db: None) -> None:
    with pytest.raises(InvalidInput) as refused:
        selection.apply_rules(make_env("broken", state=EnvironmentState.FAILED), field_name="environment_id")

    assert "broken:1 failed to build" in refused.value.fields["environment_id"][0]


def test_a_launch_runs_in_the_requested_then_template_then_project_then_platform_default(
    project: Project, template: Template
) -> None:
    pinned, project_default, requested = make_env("pinned"), make_env("project-default"), make_env("asked")
    Template.objects.filter(pk=template.pk).update(environment=pinned)
    Project.objects.filter(pk=project.pk).update(environment=project_default)
    template.refresh_from_db()
    project.refresh_from_db()

    assert selection.for_launch(project, template, requested).environment == requested
    assert selection.for_launch(project, template).environment == pinned
    template.environment = None
    assert selection.for_launch(project, template).environment == project_default
    project.environment = None
    assert selection.for_launch(project, template).environment.label == "portal:1"


def test_a_deployment_serves_in_the_requested_then_recorded_then_project_default(project: Project) -> None:
    recorded, project_default, requested = make_env("recorded"), make_env("project-default"), make_env("asked")
    project.environment = project_default

    assert selection.for_deployment(project, recorded, requested).environment == requested
    assert selection.for_deployment(project, recorded).environment == recorded
    assert selection.for_deployment(project, None).environment == project_default


def test_with_no_default_a_launch_runs_on_the_portals_interpreter(project: Project, template: Template) -> None:
    Environment.objects.filter(is_default=True).update(is_default=False)
    Project.objects.filter(pk=project.pk).update(environment=None)
    project.refresh_from_db()

    chosen = selection.for_launch(project, template)

    assert (chosen.environment.label, chosen.environment.is_portal, chosen.warnings) == ("portal:1", True, [])


def test_recorded_by_label_finds_platform_and_team_environments(team: Team) -> None:
    platform = make_env("cv-base", 2)
    own = make_env("cv-base", 2, team=team)

    assert selection.recorded_by_label("cv-base:2") == platform
    assert selection.recorded_by_label("demo/cv-base:2") == own
    assert own.label == "demo/cv-base:2"
    for label in ("", "cv-base", "cv-base:x", "cv-base:3", "other/cv-base:2", "  "):
        assert selection.recorded_by_label(label) is None


def test_a_label_with_a_digit_that_is_not_ascii_names_nothing(db: None) -> None:
    assert selection.recorded_by_label("portal:²") is None and selection.recorded_by_label("portal:\u0661") is None
