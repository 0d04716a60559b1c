"""The environment pages: the list, defining one, one environment (its build polled until
it ends, who uses it, its versions, the actions of those who manage it), new versions and
the actions, for every role; forms post/redirect/get; refusals are error pages."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from apps.accounts.models import Team, User
from apps.audit.models import AuditEvent
from apps.audit.verbs import AuditVerb
from apps.environments import services
from apps.environments.models import BuildStatus, Environment, EnvironmentState
from tests.conftest import client_for
from tests.environments.fake_builds import env_row, fake_build

pytestmark = pytest.mark.django_db
CONTENT = {
    "description": "",
    "requirements": "",
    "extends_portal": "on",
    "image": "",
    "node_selector": "",
    "tolerations": "",
    "env": "",
}


@pytest.fixture
def cows(lin: User, team: Team) -> Environment:
    fake_build("cowsay==6.1", log="Installed cowsay\n")
    return services.create_environment(lin, team=team, name="cows", requirements="cowsay==6.1")


def detail(env: Environment) -> str:
    return reverse("environments:detail", kwargs={"pk": env.pk})


@pytest.mark.parametrize(
    ("who", "sees_cows", "may_create"),
    [("root", True, True), ("lin", True, True), ("ada", True, False), ("vic", True, False), ("omar", False, False)],
)
def test_the_list_for_each_role(
    people: dict[str, User], cows: Environment, who: str, sees_cows: bool, may_create: bool
) -> None:
    response = client_for(people[who]).get(reverse("environments:list"))
    assert response.status_code == 200
    html = response.content.decode()
    assert ('data-environment="demo/cows:1"' in html) is sees_cows
    assert 'data-environment="portal:1"' in html and ">default<" in html
    assert (reverse("environments:create") in html) is may_create


def test_the_empty_list_says_who_defines_environments(ada: User) -> None:
    Environment.objects.all().delete()
    html = client_for(ada).get(reverse("environments:list")).content.decode()
    assert "No environments yet — platform admins define them" in html


def test_a_bad_filter_value_is_a_400_on_the_page(vic: User) -> None:
    response = client_for(vic).get(reverse("environments:list"), {"state": "sleeping"})
    assert response.status_code == 400
    assert "sleeping" in response.content.decode()


@pytest.mark.parametrize(
    ("who", "status", "manages"),
    [("root", 200, True), ("lin", 200, True), ("ada", 200, False), ("vic", 200, False), ("omar", 404, False)],
)
def test_the_detail_for_each_role(
    people: dict[str, User], cows: Environment, who: str, status: int, manages: bool
) -> None:
    response = client_for(people[who]).get(detail(cows))
    assert response.status_code == status
    if status == 200:
        html = response.content.decode()
        assert "cowsay==6.1" in html and 'data-usage="projects"' in html and "Installed cowsay" in html
        assert (reverse("environments:new-version", kwargs={"pk": cows.pk}) in html) is manages
        assert ('value="deprecate"' in html) is manages


def test_an_image_shows_whether_it_is_pinned(root: User) -> None:
    pinned = services.create_environment(root, name="pinned", image="ghcr.io/acme/sk@sha256:" + "a" * 64)
    loose = services.create_environment(root, name="loose", image="ghcr.io/acme/sk:1.7")
    assert 'title="pinned by digest' in client_for(root).get(detail(pinned)).content.decode()
    assert ">unpinned<" in client_for(root).get(detail(loose)).content.decode()


def test_the_build_fragment_polls_while_building_and_stops_when_it_ended(root: User) -> None:
    build = fake_build("cowsay==6.1", BuildStatus.BUILDING, progress=55, step="Installing cowsay")
    env = services.create_environment(root, name="cows", requirements="cowsay==6.1")
    client = client_for(root)
    headers = {"HX-Request": "true", "HX-Target": "build"}
    polled = client.get(detail(env), headers=headers)
    assert polled.status_code == 200
    html = polled.content.decode()
    assert 'hx-trigger="every 2s"' in html and 'aria-valuenow="55"' in html and "<html" not in html
    assert "HX-Refresh" not in polled.headers
    type(build).objects.filter(pk=build.pk).update(status=BuildStatus.FAILED, error="boom", progress=60)
    last = client.get(detail(env), headers=headers)
    assert last.status_code == 286
    assert "hx-trigger" not in last.content.decode() and "boom" in last.content.decode()
    assert last.headers["HX-Refresh"] == "true"  # the state, actions and versions changed with it


def test_a_lead_defines_an_environment_with_the_form(lin: User) -> None:
    fake_build("cowsay==6.1")
    body = {**CONTENT, "team": "demo", "name": "cows", "requirements": "cowsay==6.1", "node_selector": "pool=cpu"}
    response = client_for(lin).post(reverse("environments:create"), body)
    assert response.status_code == 302
    made = Environment.objects.get(name="cows")
    assert response["Location"] == detail(made)
    assert made.team is not None
    assert (made.team.slug, made.state, made.pod_defaults) == ("demo", "ready", {"node_selector": {"pool": "cpu"}})


def test_a_lead_cannot_pick_platform_wide(lin: User) -> None:
    response = client_for(lin).post(reverse("environments:create"), {**CONTENT, "team": "", "name": "cows"})
    assert response.status_code == 400
    assert not Environment.objects.filter(name="cows").exists()


def test_bad_content_is_shown_on_the_form(root: User) -> None:
    body = {**CONTENT, "team": "", "name": "x", "image": "NOT AN IMAGE"}
    response = client_for(root).post(reverse("environments:create"), body)
    assert response.status_code == 400
    assert "Not an image reference" in response.content.decode()


def test_a_new_version_form_is_prefilled(lin: User, cows: Environment) -> None:
    client = client_for(lin)
    page = client.get(reverse("environments:new-version", kwargs={"pk": cows.pk}))
    assert "cowsay==6.1" in page.content.decode()
    body = {**CONTENT, "requirements": "cowsay==6.1", "image": "python:3.13"}
    response = client.post(reverse("environments:new-version", kwargs={"pk": cows.pk}), body)
    assert response.status_code == 302
    assert Environment.objects.get(name="cows", version=2).image == "python:3.13"


def test_deprecating_on_the_page_and_an_error_page_for_a_conflict(lin: User, root: User, cows: Environment) -> None:
    newer = services.new_version(lin, cows, description="2")
    change = reverse("environments:change", kwargs={"pk": cows.pk})
    body = {"action": "deprecate", "replaced_by": newer.pk, "redirect": "on", "message": "Use 2."}
    response = client_for(lin).post(change, body)
    assert (response.status_code, response["Location"]) == (302, detail(cows))
    cows.refresh_from_db()
    assert (cows.state, cows.replaced_by_id, cows.redirect) == ("deprecated", newer.pk, True)
    assert AuditEvent.objects.filter(verb=AuditVerb.ENVIRONMENT_DEPRECATED.value, target_id=str(cows.pk)).exists()
    portal = Environment.objects.get(is_portal=True)
    refused = client_for(root).post(reverse("environments:change", kwargs={"pk": portal.pk}), {"action": "retire"})
    assert refused.status_code == 409
    assert "default" in refused.content.decode()


def test_setting_the_default_and_rebuilding_on_the_page(root: User) -> None:
    env = services.create_environment(root, name="sklearn-1.7")
    client = client_for(root)
    assert client.post(reverse("environments:set-default", kwargs={"pk": env.pk})).status_code == 302
    assert Environment.objects.get(is_default=True) == env
    fake_build("no-such-package==0", BuildStatus.FAILED)
    broken = services.create_environment(root, name="broken", requirements="no-such-package==0")
    assert "Rebuild" in client.get(detail(broken)).content.decode()
    assert client.post(reverse("environments:rebuild", kwargs={"pk": broken.pk})).status_code == 302
    broken.refresh_from_db()
    assert broken.state == EnvironmentState.BUILDING


def test_the_list_page_takes_the_same_queries_for_many_environments(
    lin: User, team: Team, django_assert_max_num_queries: Any
) -> None:
    build = fake_build("cowsay==6.1")
    replacement = env_row("base", team=team)
    for i in range(25):
        env_row(f"env-{i:02d}", team=team, build=build, replaced_by=replacement, created_by=lin)
    client = client_for(lin)
    with django_assert_max_num_queries(14):  # today 12: session, user, nav, count, rows, 5 usage counts, "may define"
        response = client.get(reverse("environments:list"))
    assert len(response.context["page"].object_list) >= 25


def test_the_navigation_links_environments(ada: User, lin: User) -> None:
    assert 'href="/environments/"' in client_for(ada).get("/").content.decode()
    assert 'href="/environments/"' in client_for(lin).get(reverse("console:index")).content.decode()
