"""The environment services: who may define which, versions, immutable content, the life
cycle with its 409s, the platform default, who uses an environment, and an audit event
with before/after for every change. Builds are fake rows (tests/environments/fake_builds.py)."""

from __future__ import annotations

from typing import Any

import pytest

from apps.accounts.models import Team, User
from apps.audit.models import AuditEvent
from apps.audit.verbs import AuditVerb
from apps.core.errors import Conflict, InvalidInput, NotAllowed
from apps.deployments.models import Deployment, DeploymentStatus, Revision, RevisionStatus
from apps.environments import services
from apps.environments.models import BuildStatus, Environment, EnvironmentBuild, EnvironmentState
from apps.launches import services as launch_services
from apps.launches.demo import SKLEARN_DIGITS
from apps.launches.models import Launch, Status, Template
from apps.projects.models import Project
from tests.environments.fake_builds import env_row, fake_build

pytestmark = pytest.mark.django_db


def events(verb: AuditVerb, env: Environment) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(verb=verb.value, target_id=str(env.pk)).order_by("id"))


# --- who may define which ----------------------------------------------------------------------
def test_platform_admins_define_platform_wide_environments(root: User) -> None:
    env = services.create_environment(root, name="sklearn-1.7", description="scikit-learn 1.7")
    assert (env.label, env.version, env.team, env.state, env.build) == ("sklearn-1.7:1", 1, None, "ready", None)
    (event,) = events(AuditVerb.ENVIRONMENT_CREATED, env)
    assert event.before is None and event.after is not None
    assert event.after["label"] == "sklearn-1.7:1" and event.actor == root


@pytest.mark.parametrize("who", ["lin", "ada"])
def test_nobody_but_platform_admins_defines_a_platform_wide_one(who: str, people: dict[str, User]) -> None:
    with pytest.raises(NotAllowed):
        services.create_environment(people[who], name="sklearn-1.7")
    assert not Environment.objects.filter(name="sklearn-1.7").exists()


def test_a_lead_defines_the_teams_own_and_not_another_teams(lin: User, team: Team, other_team: Team) -> None:
    env = services.create_environment(lin, team=team, name="cv-base")
    assert env.label == "demo/cv-base:1"
    with pytest.raises(NotAllowed):
        services.create_environment(lin, team=other_team, name="cv-base")


def test_a_member_does_not_define_the_teams_own(ada: User, team: Team) -> None:
    with pytest.raises(NotAllowed):
        services.create_environment(ada, team=team, name="cv-base")


# --- versions and content ----------------------------------------------------------------------
def test_versions_count_up_per_name_and_scope(root: User, lin: User, team: Team) -> None:
    first = services.create_environment(root, name="base")
    second = services.create_environment(root, name="base", image="python:3.12")
    teams = services.create_environment(lin, team=team, name="base")
    assert [first.version, second.version, teams.version] == [1, 2, 1]
    assert teams.label == "demo/base:1"


def test_a_new_version_copies_the_content_and_applies_the_changes(root: User) -> None:
    pods = {"node_selector": {"pool": "cpu"}, "env": {"OMP_NUM_THREADS": "1"}}
    first = services.create_environment(root, name="base", image="python:3.12", pod_defaults=pods, description="d")
    second = services.new_version(root, first, image="python:3.13")
    assert (second.version, second.image, second.pod_defaults, second.description) == (2, "python:3.13", pods, "d")
    first.refresh_from_db()
    assert first.image == "python:3.12", "the old version's content never changes"


def test_a_new_version_takes_content_only(root: User) -> None:
    first = services.create_environment(root, name="base")
    with pytest.raises(InvalidInput) as caught:
        services.new_version(root, first, state="retired")
    assert "state" in caught.value.fields


def test_change_environment_has_no_way_to_change_content(root: User) -> None:
    env = services.create_environment(root, name="base", image="python:3.12")
    with pytest.raises(TypeError):
        services.change_environment(root, env, image="python:3.13")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"name": "Not A Slug"}, "name"),
        ({"image": "UPPER/case:1"}, "image"),
        ({"image": "python:3.12@sha256:abc"}, "image"),
        ({"pod_defaults": {"node_selector": {"bad key!": "x"}}}, "pod_defaults"),
        ({"pod_defaults": {"tolerations": [{"key": "gpu", "operator": "Sometimes"}]}}, "pod_defaults"),
        ({"pod_defaults": {"tolerations": [{"key": "gpu", "operator": "Exists", "value": "x"}]}}, "pod_defaults"),
        (
            {"pod_defaults": {"tolerations": [{"key": "g", "effect": "NoSchedule", "tolerationSeconds": 5}]}},
            "pod_defaults",
        ),
        ({"pod_defaults": {"env": {"1BAD": "x"}}}, "pod_defaults"),
        ({"pod_defaults": {"volumes": []}}, "pod_defaults"),
        ({"requirements": "cowsay ==== 6"}, "requirements"),
        ({"requirements": "--index-url http://evil/\ncowsay"}, "requirements"),
    ],
)
def test_bad_content_is_a_400_on_its_field(root: User, given: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        services.create_environment(root, **{"name": "base", **given})
    assert field in caught.value.fields
    assert not Environment.objects.filter(name="base").exists()


def test_valid_pod_defaults_are_kept_in_their_shape(root: User) -> None:
    pods = {
        "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoExecute", "tolerationSeconds": 60},
        ],
        "env": {"HF_HOME": "/cache/hf"},
    }
    env = services.create_environment(root, name="gpu", pod_defaults=pods)
    assert env.pod_defaults == pods


@pytest.mark.parametrize(
    ("image", "pinned"),
    [
        ("python:3.12", False),
        ("ghcr.io/acme/sklearn:1.7", False),
        ("localhost:5000/acme/sklearn@sha256:" + "a" * 64, True),
        ("ghcr.io/acme/sklearn:1.7@sha256:" + "0f" * 32, True),
    ],
)
def test_an_image_is_pinned_when_it_has_a_digest(root: User, image: str, pinned: bool) -> None:
    env = services.create_environment(root, name="img", image=image)
    assert services.image_is_pinned(env.image) is pinned


# --- builds ---------------------------------------------------------------------------------
def test_a_list_whose_build_is_ready_is_ready_at_once(root: User) -> None:
    build = fake_build("cowsay==6.1")
    env = services.create_environment(root, name="cows", requirements="Cowsay == 6.1  # the extra")
    assert (env.state, env.build_id, env.requirements) == (EnvironmentState.READY, build.pk, "cowsay==6.1")


def test_a_list_whose_build_failed_is_failed_with_its_error(root: User) -> None:
    build = fake_build("no-such-package==0", BuildStatus.FAILED)
    env = services.create_environment(root, name="broken", requirements="no-such-package==0")
    assert (env.state, env.build_id) == (EnvironmentState.FAILED, build.pk)
    assert "no-such-package" in env.state_reason
    assert not env.is_selectable


def test_a_new_list_is_building_and_its_build_is_queued_after_the_commit(
    root: User, django_capture_on_commit_callbacks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.environments import tasks

    sent: list[int] = []
    monkeypatch.setattr(tasks.build_environment, "delay", lambda pk: sent.append(pk))
    with django_capture_on_commit_callbacks(execute=True):
        env = services.create_environment(root, name="cows", requirements="cowsay==6.1")
    assert env.state == EnvironmentState.BUILDING
    assert env.build is not None and env.build.status == BuildStatus.QUEUED
    assert sent == [env.build.pk]
    again = services.create_environment(root, name="cows-too", requirements="cowsay==6.1")
    assert again.build_id == env.build_id, "identical lists share one build"
    assert EnvironmentBuild.objects.count() == 1


# --- life cycle -------------------------------------------------------------------------------
@pytest.fixture
def pair(root: User) -> tuple[Environment, Environment]:
    """base:1 and base:2, platform-wide and ready."""
    return services.create_environment(root, name="base"), services.create_environment(root, name="base")


def test_deprecating_names_the_replacement_and_is_audited(root: User, pair: tuple[Environment, Environment]) -> None:
    old, new = pair
    changed = services.change_environment(
        root, old, state="deprecated", replaced_by=new, redirect=True, message="Use 2: newer pandas."
    )
    assert (changed.state, changed.replaced_by_id, changed.redirect) == ("deprecated", new.pk, True)
    (event,) = events(AuditVerb.ENVIRONMENT_DEPRECATED, old)
    assert event.before is not None and event.after is not None
    assert (event.before["state"], event.after["state"], event.after["replaced_by"]) == (
        "ready",
        "deprecated",
        "base:2",
    )


def test_a_redirect_needs_a_replacement(root: User, pair: tuple[Environment, Environment]) -> None:
    with pytest.raises(InvalidInput) as caught:
        services.change_environment(root, pair[0], state="deprecated", redirect=True)
    assert "replaced_by" in caught.value.fields
    pair[0].refresh_from_db()
    assert pair[0].state == "ready"


def test_undeprecating_clears_the_notice(root: User, pair: tuple[Environment, Environment]) -> None:
    old, new = pair
    services.change_environment(root, old, state="deprecated", replaced_by=new, redirect=True, message="m")
    back = services.change_environment(root, old, state="ready")
    assert (back.state, back.replaced_by_id, back.redirect, back.message) == ("ready", None, False, "")
    assert events(AuditVerb.ENVIRONMENT_CHANGED, old)[-1].after["state"] == "ready"  # type: ignore[index]


def test_retiring_is_final(root: User, pair: tuple[Environment, Environment]) -> None:
    old, new = pair
    retired = services.change_environment(root, old, state="retired", replaced_by=new, message="Gone.")
    assert (retired.state, retired.message, retired.replaced_by_id) == ("retired", "Gone.", new.pk)
    assert len(events(AuditVerb.ENVIRONMENT_RETIRED, old)) == 1
    for state in ("ready", "deprecated"):
        with pytest.raises(Conflict, match="retired"):
            services.change_environment(root, old, state=state)


def test_retiring_moves_the_projects_and_templates_that_use_it_to_its_replacement(
    root: User, pair: tuple[Environment, Environment], project: Project, team: Team
) -> None:
    old, new = pair
    Project.objects.filter(pk=project.pk).update(environment=old)
    pinned = Template.objects.create(team=team, slug="pinned", name="Pinned", image="python:3.11", environment=old)
    services.change_environment(root, old, state="deprecated", replaced_by=new, message="Use 2.")

    services.change_environment(root, old, state="retired")  # keeps the replacement it named

    project.refresh_from_db()
    pinned.refresh_from_db()
    assert (project.environment_id, pinned.environment_id) == (new.pk, new.pk)
    (event,) = events(AuditVerb.ENVIRONMENT_RETIRED, old)
    assert event.after is not None
    assert event.after["moved"] == {"projects": [project.full_slug], "templates": [str(pinned)]}
    assert event.after["replaced_by"] == "base:2" and event.after["message"] == "Use 2."


def test_retiring_one_still_in_use_without_a_replacement_is_a_409_naming_the_users(
    root: User, pair: tuple[Environment, Environment], project: Project
) -> None:
    old, _ = pair
    Project.objects.filter(pk=project.pk).update(environment=old)

    with pytest.raises(Conflict, match=f"project {project.full_slug}"):
        services.change_environment(root, old, state="retired")

    old.refresh_from_db()
    project.refresh_from_db()
    assert (old.state, project.environment_id) == ("ready", old.pk)


def test_a_building_one_changes_no_state(root: User) -> None:
    building = env_row("slow", state=EnvironmentState.BUILDING, build=fake_build("cowsay==6.1", BuildStatus.BUILDING))
    for state in ("deprecated", "retired", "ready"):
        with pytest.raises(Conflict, match="building"):
            services.change_environment(root, building, state=state)


def test_a_ready_one_names_no_replacement_without_deprecating(
    root: User, pair: tuple[Environment, Environment]
) -> None:
    with pytest.raises(Conflict):
        services.change_environment(root, pair[0], replaced_by=pair[1])


def test_the_default_can_be_deprecated_but_not_retired(root: User) -> None:
    portal = Environment.objects.get(is_portal=True)
    assert portal.is_default
    with pytest.raises(Conflict, match="default"):
        services.change_environment(root, portal, state="retired")
    assert services.change_environment(root, portal, state="deprecated").state == "deprecated"


@pytest.mark.parametrize("which", ["itself", "another team's", "a failed one"])
def test_a_replacement_must_be_usable_and_in_scope(
    root: User, lin: User, team: Team, other_team: Team, which: str
) -> None:
    env = services.create_environment(lin, team=team, name="cv")
    other = {
        "itself": env,
        "another team's": env_row("cv", team=other_team),
        "a failed one": env_row("bad", team=team, state=EnvironmentState.FAILED),
    }[which]
    with pytest.raises(InvalidInput) as caught:
        services.change_environment(lin, env, state="deprecated", replaced_by=other)
    assert "replaced_by" in caught.value.fields


def test_a_teams_one_may_be_replaced_by_a_platform_wide_one(lin: User, root: User, team: Team) -> None:
    env = services.create_environment(lin, team=team, name="cv")
    shared = services.create_environment(root, name="shared")
    assert services.change_environment(lin, env, state="deprecated", replaced_by=shared.pk).replaced_by == shared


def test_only_those_who_manage_it_change_it(ada: User, lin: User, root: User, team: Team) -> None:
    teams = services.create_environment(lin, team=team, name="cv")
    shared = services.create_environment(root, name="shared")
    with pytest.raises(NotAllowed):
        services.change_environment(ada, teams, description="x")
    with pytest.raises(NotAllowed):
        services.change_environment(lin, shared, description="x")
    assert services.change_environment(lin, teams, description="Vision").description == "Vision"


def test_the_description_changes_any_time_and_is_audited(root: User) -> None:
    env = env_row("old", state=EnvironmentState.RETIRED)
    services.change_environment(root, env, description="Kept for the record.")
    (event,) = events(AuditVerb.ENVIRONMENT_CHANGED, env)
    assert (event.before["description"], event.after["description"]) == ("", "Kept for the record.")  # type: ignore[index]


def test_a_change_that_changes_nothing_writes_nothing(root: User) -> None:
    env = services.create_environment(root, name="base", description="same")
    services.change_environment(root, env, description="same")
    assert events(AuditVerb.ENVIRONMENT_CHANGED, env) == []


def test_rebuilding_a_failed_one_queues_its_build_again(
    root: User, django_capture_on_commit_callbacks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.environments import tasks

    sent: list[int] = []
    monkeypatch.setattr(tasks.build_environment, "delay", lambda pk: sent.append(pk))
    build = fake_build("no-such-package==0", BuildStatus.FAILED)
    env = services.create_environment(root, name="broken", requirements="no-such-package==0")
    sibling = services.create_environment(root, name="broken-too", requirements="no-such-package==0")
    with django_capture_on_commit_callbacks(execute=True):
        again = services.rebuild_environment(root, env)
    assert again.state == EnvironmentState.BUILDING
    sibling.refresh_from_db()
    assert sibling.state == EnvironmentState.BUILDING, "every environment of the build waits on it again"
    build.refresh_from_db()
    assert (build.status, build.error, sent) == (BuildStatus.QUEUED, "", [build.pk])
    assert [e.after["state"] for e in events(AuditVerb.ENVIRONMENT_CHANGED, env)] == ["building"]  # type: ignore[index]
    assert len(events(AuditVerb.ENVIRONMENT_CHANGED, sibling)) == 1
    with pytest.raises(Conflict):
        services.rebuild_environment(root, again)


# --- the platform default ---------------------------------------------------------------------
def test_setting_the_default_moves_it(root: User) -> None:
    portal = Environment.objects.get(is_default=True)
    env = services.create_environment(root, name="sklearn-1.7")
    services.set_default(root, env)
    assert list(Environment.objects.filter(is_default=True)) == [env]
    (event,) = events(AuditVerb.ENVIRONMENT_DEFAULT_SET, env)
    assert (event.before, event.after) == ({"default": portal.label}, {"default": "sklearn-1.7:1"})


def test_only_platform_admins_set_the_default(lin: User, root: User) -> None:
    env = services.create_environment(root, name="sklearn-1.7")
    with pytest.raises(NotAllowed):
        services.set_default(lin, env)


@pytest.mark.parametrize("which", ["a team's", "deprecated", "building"])
def test_the_default_is_platform_wide_and_ready(root: User, team: Team, which: str) -> None:
    env = {
        "a team's": env_row("cv", team=team),
        "deprecated": env_row("old", state=EnvironmentState.DEPRECATED),
        "building": env_row("slow", state=EnvironmentState.BUILDING),
    }[which]
    with pytest.raises(Conflict):
        services.set_default(root, env)
    assert Environment.objects.get(is_default=True).is_portal


# --- who uses it ------------------------------------------------------------------------------
@pytest.fixture
def used(root: User, ada: User, project: Project, other_project: Project) -> Environment:
    """base:1 pinned by an active and an inactive template, the default of both projects,
    run in by a live and a finished launch, named by one deployment, served by a live
    revision of another, and named by a deployment being deleted."""
    env = services.create_environment(root, name="base")
    pinned = launch_services.create_template(root, None, **SKLEARN_DIGITS)
    retired = launch_services.create_template(root, None, **{**SKLEARN_DIGITS, "slug": "old-digits"})
    Template.objects.filter(pk__in=[pinned.pk, retired.pk]).update(environment=env)
    Template.objects.filter(pk=retired.pk).update(is_active=False)
    Project.objects.filter(pk__in=[project.pk, other_project.pk]).update(environment=env)
    for status in (Status.RUNNING, Status.SUCCEEDED):
        Launch.objects.create(
            project=project, template=pinned, created_by=ada, status=status, backend="local", environment=env
        )
    Deployment.objects.create(
        project=project, name="by-setting", model_name="m", backend="local", environment=env, created_by=ada
    )
    served = Deployment.objects.create(
        project=other_project, name="by-revision", model_name="m", backend="local", created_by=ada
    )
    Revision.objects.create(deployment=served, number=1, version=1, status=RevisionStatus.SERVING, environment=env)
    Revision.objects.create(deployment=served, number=2, version=2, status=RevisionStatus.RETIRED, environment=env)
    Deployment.objects.create(
        project=project,
        name="going",
        model_name="m",
        backend="local",
        environment=env,
        status=DeploymentStatus.DELETING,
        created_by=ada,
    )
    return env


def test_who_uses_counts_templates_projects_live_launches_and_deployments(used: Environment) -> None:
    found = services.who_uses(used)
    assert {kind: found[kind]["count"] for kind in found} == {
        "templates": 1,
        "projects": 2,
        "launches": 1,
        "deployments": 2,
    }
    assert sorted(d.name for d in found["deployments"]["rows"]) == ["by-revision", "by-setting"]
    assert services.usage_counts([used.pk])[used.pk] == {k: v["count"] for k, v in found.items()}


def test_who_uses_shows_a_user_only_the_rows_they_may_see(used: Environment, omar: User) -> None:
    found = services.who_uses(used, omar)
    assert found["projects"]["count"] == 2
    assert [p.slug for p in found["projects"]["rows"]] == ["other"]
    assert [d.name for d in found["deployments"]["rows"]] == ["by-revision"]
    assert found["launches"]["rows"] == []


def test_who_uses_takes_a_fixed_number_of_queries(used: Environment, django_assert_max_num_queries: Any) -> None:
    with django_assert_max_num_queries(8):
        services.who_uses(used)
    with django_assert_max_num_queries(5):
        services.usage_counts([used.pk, used.pk + 1000])


def test_the_demo_data_defines_sklearn_1_7_once(django_capture_on_commit_callbacks: Any) -> None:
    from django.core.management import call_command

    with django_capture_on_commit_callbacks() as queued:
        call_command("seed_demo")
    env = Environment.objects.get(name="sklearn-1.7")
    assert (env.team, env.requirements, env.extends_portal, env.state) == (
        None,
        "scikit-learn<1.8,>=1.7",
        True,
        EnvironmentState.BUILDING,
    )
    assert env.build is not None and env.build.status == BuildStatus.QUEUED
    assert queued, "its build is sent to the worker after the commit"
    call_command("seed_demo")
    assert Environment.objects.filter(name="sklearn-1.7").count() == 1


# --- the named rule ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("who", "scope", "allowed"),
    [
        ("root", "platform", True),
        ("lin", "platform", False),
        ("root", "demo", True),
        ("lin", "demo", True),
        ("ada", "demo", False),
        ("vic", "demo", False),
        ("omar", "demo", False),
        ("lin", "other", False),
    ],
)
def test_can_manage_environment(
    people: dict[str, User], team: Team, other_team: Team, who: str, scope: str, allowed: bool
) -> None:
    from apps.access.policies import can_manage_environment

    owner = {"platform": None, "demo": team, "other": other_team}[scope]
    assert can_manage_environment(people[who], owner) is allowed
    assert can_manage_environment(people[who], env_row("x", team=owner)) is allowed


def test_a_deactivated_platform_admin_manages_nothing(root: User) -> None:
    from apps.access.policies import can_manage_environment

    root.is_active = False
    assert can_manage_environment(root, None) is False


@pytest.mark.parametrize(("collisions", "defined"), [(1, True), (2, False)])
def test_a_version_taken_at_the_same_moment_is_retried_once_then_a_409(
    root: User, monkeypatch: pytest.MonkeyPatch, collisions: int, defined: bool
) -> None:
    """Two definitions of one name at once both read the same highest version; the unique
    constraint refuses the second insert. The service reads again once, then gives up."""
    from django.db import IntegrityError

    real = services._create
    left = [collisions]

    def colliding(*args: Any) -> Environment:
        if left[0]:  # as the insert of a version the other request took meanwhile fails
            left[0] -= 1
            raise IntegrityError("UNIQUE constraint failed: environment_version_unique_in_team")
        return real(*args)

    services.create_environment(root, name="base")  # the other request's version 1
    monkeypatch.setattr(services, "_create", colliding)
    if defined:
        assert services.create_environment(root, name="base").version == 2
    else:
        with pytest.raises(Conflict, match="same moment"):
            services.create_environment(root, name="base")
