"""The environments API: codes (400 with the field, 403, 404, 409), content is immutable
through PATCH, the build with its log from an offset, who uses it, the list's filters and
its query budget."""

from __future__ import annotations

from typing import Any

import pytest

from apps.accounts.models import Team, User
from apps.audit.models import AuditEvent
from apps.environments import services
from apps.environments.models import BuildStatus, Environment, EnvironmentState
from tests.conftest import api_for
from tests.environments.fake_builds import env_row, fake_build

pytestmark = pytest.mark.django_db
LIST = "/api/v1/environments/"


def url(env: Environment, tail: str = "") -> str:
    return f"{LIST}{env.pk}/{tail}"


@pytest.fixture
def cows(lin: User, team: Team) -> Environment:
    """demo/cows:1, ready, on a (fake) ready build with a three-line log."""
    fake_build("cowsay==6.1", log="one\ntwo\nthree\n")
    return services.create_environment(lin, team=team, name="cows", requirements="cowsay==6.1", image="python:3.12")


def test_a_lead_defines_a_teams_environment(lin: User, team: Team) -> None:
    fake_build("cowsay==6.1")
    body = {"team": "demo", "name": "cows", "requirements": "cowsay==6.1", "pod_defaults": {"env": {"A": "1"}}}
    response = api_for(lin).post(LIST, body, format="json")
    assert response.status_code == 201, response.json()
    made = response.json()
    assert (made["label"], made["team"], made["state"], made["pinned"]) == ("demo/cows:1", "demo", "ready", False)
    assert made["build"]["status"] == "ready" and made["pod_defaults"] == {"env": {"A": "1"}}
    assert made["usage"] == {"templates": 0, "projects": 0, "launches": 0, "deployments": 0}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Bad Name"}, "name"),
        ({"name": "ok", "image": "python:3.12@sha256:short"}, "image"),
        ({"name": "ok", "requirements": "cowsay ==== 1"}, "requirements"),
        ({"name": "ok", "pod_defaults": {"tolerations": "all"}}, "pod_defaults"),
        ({"name": "ok", "extends_portal": "maybe"}, "extends_portal"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(root: User, body: dict[str, Any], field: str) -> None:
    response = api_for(root).post(LIST, body, format="json")
    assert response.status_code == 400
    assert field in response.json()


def test_a_team_nobody_may_see_is_a_404(lin: User, other_team: Team) -> None:
    assert api_for(lin).post(LIST, {"team": "other", "name": "x"}, format="json").status_code == 404


def test_patching_content_is_a_400_asking_for_a_new_version(lin: User, cows: Environment) -> None:
    response = api_for(lin).patch(url(cows), {"requirements": "cowsay==6.0", "description": "x"}, format="json")
    assert response.status_code == 400
    assert "new version" in response.json()["requirements"][0]
    cows.refresh_from_db()
    assert (cows.requirements, cows.description) == ("cowsay==6.1", "")


def test_a_new_version_through_the_api(lin: User, cows: Environment) -> None:
    response = api_for(lin).post(url(cows, "versions/"), {"image": "python:3.13"}, format="json")
    assert response.status_code == 201
    assert (response.json()["label"], response.json()["image"]) == ("demo/cows:2", "python:3.13")
    assert response.json()["requirements"] == "cowsay==6.1"


def test_deprecating_and_a_bad_transition(lin: User, root: User, cows: Environment) -> None:
    newer = services.new_version(lin, cows, description="2")
    api = api_for(lin)
    body = {"state": "deprecated", "replaced_by": newer.pk, "redirect": True, "message": "Use 2."}
    response = api.patch(url(cows), body, format="json")
    assert response.status_code == 200
    assert response.json()["replaced_by"] == {"id": newer.pk, "label": "demo/cows:2"}
    assert api.patch(url(cows), {"state": "retired"}, format="json").status_code == 200
    response = api.patch(url(cows), {"state": "ready"}, format="json")
    assert response.status_code == 409 and "retired" in response.json()["detail"]


def test_a_redirect_without_replacement_is_a_400(lin: User, cows: Environment) -> None:
    response = api_for(lin).patch(url(cows), {"state": "deprecated", "redirect": True}, format="json")
    assert response.status_code == 400 and "replaced_by" in response.json()


def test_set_default_codes(root: User, team: Team) -> None:
    api = api_for(root)
    shared = services.create_environment(root, name="sklearn-1.7")
    teams = env_row("cv", team=team)
    assert api.post(url(teams, "set-default/")).status_code == 409
    response = api.post(url(shared, "set-default/"))
    assert response.status_code == 200 and response.json()["is_default"] is True
    assert Environment.objects.get(is_default=True) == shared


def test_rebuild_codes(lin: User, team: Team, cows: Environment) -> None:
    fake_build("no-such-package==0", BuildStatus.FAILED)
    broken = services.create_environment(lin, team=team, name="broken", requirements="no-such-package==0")
    api = api_for(lin)
    assert api.post(url(cows, "rebuild/")).status_code == 409
    response = api.post(url(broken, "rebuild/"))
    assert response.status_code == 200
    assert (response.json()["state"], response.json()["build"]["status"]) == ("building", "queued")


def test_the_build_log_from_an_offset(vic: User, cows: Environment) -> None:
    api = api_for(vic)
    whole = api.get(url(cows, "build/")).json()
    assert (whole["log"], whole["offset"], whole["finished"]) == ("one\ntwo\nthree\n", 0, True)
    rest = api.get(url(cows, "build/"), {"offset": 4}).json()
    assert (rest["log"], rest["next_offset"]) == ("two\nthree\n", 14)
    assert api.get(url(cows, "build/"), {"offset": "x"}).status_code == 400


def test_an_environment_without_a_build_has_no_build_to_show(vic: User, root: User) -> None:
    image_only = services.create_environment(root, name="img", image="python:3.12")
    assert api_for(vic).get(url(image_only, "build/")).status_code == 404


def test_usage_lists_counts(vic: User, cows: Environment, project: Any) -> None:
    type(project).objects.filter(pk=project.pk).update(environment=cows)
    body = api_for(vic).get(url(cows, "usage/")).json()
    assert body["projects"] == {"count": 1, "rows": [{"id": project.pk, "label": "demo/demo"}]}
    assert body["launches"] == {"count": 0, "rows": []}


def test_invisible_is_404_and_not_yours_is_403(omar: User, ada: User, cows: Environment) -> None:
    assert api_for(omar).get(url(cows)).status_code == 404
    assert api_for(ada).patch(url(cows), {"description": "x"}, format="json").status_code == 403
    assert api_for(ada).get(url(cows)).status_code == 200


def test_every_change_through_the_api_is_audited(lin: User, cows: Environment) -> None:
    before = AuditEvent.objects.count()
    api_for(lin).patch(url(cows), {"description": "Cows."}, format="json")
    api_for(lin).post(url(cows, "versions/"), {}, format="json")
    assert AuditEvent.objects.count() == before + 2


@pytest.mark.parametrize(
    ("query", "field"),
    [({"state": "sleeping"}, "state"), ({"team": "Not a slug!"}, "team"), ({"name": "A B"}, "name")],
)
def test_a_bad_filter_value_is_a_400_naming_it(vic: User, query: dict[str, str], field: str) -> None:
    response = api_for(vic).get(LIST, query)
    assert response.status_code == 400 and field in response.json()


def test_the_list_filters(vic: User, lin: User, root: User, team: Team, cows: Environment) -> None:
    services.create_environment(root, name="sklearn-1.7", description="scikit-learn")
    env_row("old", state=EnvironmentState.RETIRED)
    api = api_for(vic)

    def labels(**query: str) -> list[str]:
        return sorted(row["label"] for row in api.get(LIST, query).json()["results"])

    assert labels(team="demo") == ["demo/cows:1"]
    assert labels(team="-") == ["old:1", "portal:1", "sklearn-1.7:1"]
    assert labels(state="usable", q="scikit") == ["sklearn-1.7:1"]
    assert labels(name="cows") == ["demo/cows:1"]


def test_outsiders_list_the_platform_wide_ones_only(omar: User, cows: Environment) -> None:
    labels = [row["label"] for row in api_for(omar).get(LIST).json()["results"]]
    assert labels == ["portal:1"]


def test_the_list_takes_the_same_queries_for_many_environments(
    lin: User, team: Team, django_assert_max_num_queries: Any
) -> None:
    build = fake_build("cowsay==6.1")
    replacement = env_row("base", team=team)
    for i in range(25):
        env_row(f"env-{i:02d}", team=team, build=build, replaced_by=replacement, created_by=lin)
    with django_assert_max_num_queries(9):  # today 7: count, rows, 5 usage counts
        response = api_for(lin).get(LIST)
    assert len(response.json()["results"]) >= 25
