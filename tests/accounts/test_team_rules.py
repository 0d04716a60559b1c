"""The rules of teams and roles, through the services and the API."""

from __future__ import annotations

import pytest

from apps.access.roles import Role
from apps.accounts import services
from apps.accounts.models import Membership, Team, User
from apps.audit.models import AuditEvent
from apps.core.errors import InvalidInput, NotAllowed
from tests.conftest import api_for, client_for, make_user

pytestmark = pytest.mark.django_db


def membership(team: Team, user: User) -> Membership:
    return Membership.objects.get(team=team, user=user)


def test_a_platform_admin_creates_a_team_with_its_first_lead(root: User) -> None:
    lead = make_user("newlead")
    team = services.create_team(root, slug="vision", name="Vision", gpu_budget=4, lead="newlead")
    assert membership(team, lead).role == Role.LEAD
    verbs = list(AuditEvent.objects.filter(team_id=team.pk).values_list("verb", flat=True))
    assert sorted(verbs) == ["team.created", "team.member_added"]


def test_only_platform_admins_create_teams(lin: User) -> None:
    with pytest.raises(NotAllowed):
        services.create_team(lin, slug="mine", name="Mine")
    assert not Team.objects.filter(slug="mine").exists()


def test_a_duplicate_team_slug_is_a_400_with_a_field_message(root: User, team: Team) -> None:
    response = api_for(root).post("/api/v1/teams/", {"slug": "demo", "name": "Again"}, format="json")
    assert response.status_code == 400
    assert "already exists" in response.json()["slug"][0]
    assert Team.objects.filter(slug="demo").count() == 1


def test_a_bad_team_slug_is_a_400(root: User) -> None:
    response = api_for(root).post("/api/v1/teams/", {"slug": "Bad Slug!", "name": "X"}, format="json")
    assert response.status_code == 400
    assert "slug" in response.json()


def test_a_lead_adds_a_member_and_the_event_is_audited(lin: User, team: Team) -> None:
    newcomer = make_user("newcomer")
    services.add_member(lin, team, username="newcomer", role=Role.VIEWER)
    assert membership(team, newcomer).role == Role.VIEWER
    event = AuditEvent.objects.get(verb="team.member_added")
    assert (event.actor, event.team_id, event.after) == (lin, team.pk, {"user": "newcomer", "role": "viewer"})


def test_an_unknown_role_is_a_400_and_nothing_changes(lin: User, team: Team) -> None:
    make_user("newcomer")
    response = api_for(lin).post(
        "/api/v1/teams/demo/members/", {"username": "newcomer", "role": "owner"}, format="json"
    )
    assert response.status_code == 400
    assert "Unknown role" in response.json()["role"][0]
    assert not Membership.objects.filter(user__username="newcomer").exists()


def test_setting_an_unknown_role_is_a_400(lin: User, ada: User, team: Team) -> None:
    response = api_for(lin).patch("/api/v1/teams/demo/members/ada/", {"role": "superuser"}, format="json")
    assert response.status_code == 400
    assert membership(team, ada).role == Role.MEMBER


def test_adding_someone_twice_is_a_400(lin: User, ada: User, team: Team) -> None:
    with pytest.raises(InvalidInput) as caught:
        services.add_member(lin, team, username="ada", role=Role.LEAD)
    assert "already a member" in caught.value.fields["username"][0]
    assert membership(team, ada).role == Role.MEMBER


def test_adding_a_user_who_does_not_exist_is_a_400(lin: User, team: Team) -> None:
    response = api_for(lin).post("/api/v1/teams/demo/members/", {"username": "ghost", "role": "member"}, format="json")
    assert response.status_code == 400
    assert "no active user" in response.json()["username"][0]


def test_a_member_cannot_add_members(ada: User, team: Team) -> None:
    make_user("newcomer")
    with pytest.raises(NotAllowed):
        services.add_member(ada, team, username="newcomer", role=Role.VIEWER)


def test_demoting_the_last_lead_is_a_409(lin: User, team: Team) -> None:
    response = api_for(lin).patch("/api/v1/teams/demo/members/lin/", {"role": "member"}, format="json")
    assert response.status_code == 409
    assert "last lead" in response.json()["detail"]
    assert membership(team, lin).role == Role.LEAD


def test_removing_the_last_lead_is_a_409_even_for_a_platform_admin(lin: User, root: User, team: Team) -> None:
    response = api_for(root).delete("/api/v1/teams/demo/members/lin/")
    assert response.status_code == 409
    assert Membership.objects.filter(team=team, user=lin).exists()


def test_a_lead_may_step_down_once_there_is_another_lead(lin: User, ada: User, team: Team) -> None:
    services.set_member_role(lin, membership(team, ada), Role.LEAD)
    services.set_member_role(lin, membership(team, lin), Role.MEMBER)
    assert membership(team, lin).role == Role.MEMBER
    assert membership(team, ada).role == Role.LEAD


def test_a_lead_removes_a_member(lin: User, ada: User, team: Team) -> None:
    response = api_for(lin).delete("/api/v1/teams/demo/members/ada/")
    assert response.status_code == 204
    assert not Membership.objects.filter(team=team, user=ada).exists()
    event = AuditEvent.objects.get(verb="team.member_removed")
    assert event.before == {"user": "ada", "role": "member"}


def test_nobody_raises_their_own_role(lin: User, ada: User, team: Team) -> None:
    # A demoted lead (now a member) cannot climb back up even though they still hold rights
    # elsewhere; and a member can never touch roles at all.
    other = make_user("other-lead")
    Membership.objects.create(team=team, user=other, role=Role.LEAD)
    services.set_member_role(lin, membership(team, lin), Role.MEMBER)
    with pytest.raises(NotAllowed):
        services.set_member_role(lin, membership(team, lin), Role.LEAD)
    with pytest.raises(NotAllowed):
        services.set_member_role(ada, membership(team, ada), Role.LEAD)
    assert membership(team, lin).role == Role.MEMBER
    assert membership(team, ada).role == Role.MEMBER


def test_a_lead_raising_their_own_role_through_the_api_is_refused(vic: User, lin: User, team: Team) -> None:
    response = api_for(vic).patch("/api/v1/teams/demo/members/vic/", {"role": "lead"}, format="json")
    assert response.status_code == 403
    assert membership(team, vic).role == Role.VIEWER


def test_a_platform_admin_sets_any_role(root: User, ada: User, team: Team) -> None:
    services.set_member_role(root, membership(team, ada), Role.LEAD)
    assert membership(team, ada).role == Role.LEAD


def test_the_budget_is_for_platform_admins_and_never_below_the_allocated_quota(
    lin: User, root: User, team: Team, project: object
) -> None:
    response = api_for(lin).patch("/api/v1/teams/demo/", {"gpu_budget": 100}, format="json")
    assert response.status_code == 403
    response = api_for(root).patch("/api/v1/teams/demo/", {"gpu_budget": 1}, format="json")
    assert response.status_code == 409
    assert "hold 2 GPUs" in response.json()["detail"]
    response = api_for(root).patch("/api/v1/teams/demo/", {"gpu_budget": 16}, format="json")
    assert response.status_code == 200
    team.refresh_from_db()
    assert team.gpu_budget == 16


def test_a_role_change_is_audited_with_before_and_after(lin: User, ada: User, team: Team) -> None:
    services.set_member_role(lin, membership(team, ada), Role.VIEWER)
    event = AuditEvent.objects.get(verb="team.role_changed")
    assert (event.before, event.after) == ({"role": "member"}, {"role": "viewer"})


def test_a_member_may_leave_a_team_but_not_remove_others(ada: User, vic: User, lin: User, team: Team) -> None:
    assert api_for(ada).delete("/api/v1/teams/demo/members/vic/").status_code == 403
    assert api_for(ada).delete("/api/v1/teams/demo/members/ada/").status_code == 204
    assert not Membership.objects.filter(team=team, user=ada).exists()
    response = client_for(vic).post("/teams/demo/members/vic/remove/")
    assert response.status_code == 302
    assert not Membership.objects.filter(team=team, user=vic).exists()


@pytest.mark.parametrize("htmx", [False, True])
def test_removing_the_last_lead_on_the_page_says_why_once(lin: User, team: Team, htmx: bool) -> None:
    headers = {"HX-Request": "true"} if htmx else {}
    response = client_for(lin).post("/teams/demo/members/lin/remove/", headers=headers)
    page = response.content.decode()
    assert response.status_code == 409
    assert page.count("lin is the last lead of demo") == 1, page
    assert "This field is required." not in page
    assert Membership.objects.filter(team=team, user=lin).exists()


def test_demoting_the_last_lead_on_the_page_says_why_once(lin: User, team: Team) -> None:
    response = client_for(lin).post("/teams/demo/members/lin/role/", {"role": "member"})
    page = response.content.decode()
    assert response.status_code == 409 and page.count("lin is the last lead of demo") == 1, page
    assert membership(team, lin).role == Role.LEAD


def test_the_members_table_is_the_team_pages_fragment_and_brings_the_messages_out_of_band(
    lin: User, team: Team
) -> None:
    client = client_for(lin)
    fragment = client.get("/teams/demo/", headers={"HX-Request": "true", "HX-Target": "members"})
    body = fragment.content.decode()
    assert fragment.status_code == 200 and "HX-Target" in fragment["Vary"]
    assert body.lstrip().startswith('<section class="card" id="members"') and "<html" not in body
    assert 'id="messages" aria-live="polite" hx-swap-oob="true"' in body
    make_user("newcomer")
    added = client.post(
        "/teams/demo/members/",
        {"username": "newcomer", "role": "viewer"},
        headers={"HX-Request": "true", "HX-Target": "members"},
    ).content.decode()
    assert 'data-member="newcomer"' in added and "<html" not in added
    assert "Added newcomer as viewer." in added.split('id="messages"', 1)[1]
    # Any other htmx target, or none, is the whole page, with nothing out of band.
    for headers in ({}, {"HX-Request": "true"}, {"HX-Request": "true", "HX-Target": "elsewhere"}):
        page = client.get("/teams/demo/", headers=headers).content.decode()
        assert "<html" in page and "hx-swap-oob" not in page, headers
