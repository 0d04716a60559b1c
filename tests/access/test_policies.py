"""Named rules and lookups of apps.access that pages call instead of deciding inline, one
test per clause: API tokens (the account page and the console), the wording of a 404, GPU
usage outside Plinth's projects, defining environments and choosing the platform default,
managing templates, usage reports, attaching an existing MLflow experiment, cancelling and
extending a launch or a sweep, and the pages a policy opens."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser

from apps.access import policies
from apps.access.roles import Role
from apps.accounts import services as account_services
from apps.accounts.models import ApiToken, Membership, Team, User
from apps.environments.models import Environment
from apps.launches.models import Launch, Sweep, SweepStatus
from apps.projects.models import Project
from tests.compute.fakes import make_launch, make_template
from tests.conftest import api_for, client_for, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def ada_token(ada: User) -> ApiToken:
    token, _ = account_services.create_api_token(ada, name="laptop")
    return token


def revoked(token: ApiToken) -> bool:
    token.refresh_from_db()
    return token.revoked_at is not None


def test_a_platform_admin_revokes_anyones_token_in_the_console(root: User, ada_token: ApiToken) -> None:
    response = client_for(root).post(f"/console/tokens/{ada_token.pk}/revoke/")
    assert response.status_code == 302
    assert revoked(ada_token)


@pytest.mark.parametrize("who", ["lin", "ada"])
def test_nobody_else_revokes_through_the_console(who: str, people: dict[str, User], ada_token: ApiToken) -> None:
    # lin may use the console (a lead) but not its account pages; ada may not use it at all.
    assert client_for(people[who]).post(f"/console/tokens/{ada_token.pk}/revoke/").status_code == 403
    assert not revoked(ada_token)


def test_an_unknown_token_in_the_console_is_a_404(root: User) -> None:
    assert client_for(root).post("/console/tokens/987654/revoke/").status_code == 404


def test_the_account_page_revokes_ones_own_token(ada: User, ada_token: ApiToken) -> None:
    assert client_for(ada).post(f"/account/tokens/{ada_token.pk}/revoke/").status_code == 302
    assert revoked(ada_token)


@pytest.mark.parametrize("who", ["lin", "root"])
def test_the_account_page_never_reaches_someone_elses_token(
    who: str, people: dict[str, User], ada_token: ApiToken
) -> None:
    assert client_for(people[who]).post(f"/account/tokens/{ada_token.pk}/revoke/").status_code == 404
    assert not revoked(ada_token)


def test_an_invisible_project_reads_as_a_missing_one(omar: User, project: Project) -> None:
    hidden = client_for(omar).get(f"/projects/{project.team.slug}/{project.slug}/")
    missing = client_for(omar).get(f"/projects/{project.team.slug}/no-such-project/")
    assert hidden.status_code == missing.status_code == 404
    assert "No such project." in hidden.content.decode()
    assert "No such project." in missing.content.decode()


def test_usage_of_pods_outside_plinth_is_for_platform_admins(lin: User, root: User) -> None:
    assert policies.can_see_foreign_usage(root) is True
    assert policies.can_see_foreign_usage(lin) is False
    assert policies.can_see_foreign_usage(AnonymousUser()) is False
    root.is_active = False
    assert policies.can_see_foreign_usage(root) is False


@pytest.mark.parametrize(("who", "status"), [("root", 200), ("lin", 200), ("ada", 403), ("omar", 403)])
def test_the_audit_log_is_opened_by_its_policy_for_the_page_and_the_api(
    who: str, status: int, people: dict[str, User]
) -> None:
    assert client_for(people[who]).get("/audit/").status_code == status
    assert api_for(people[who]).get("/api/v1/audit/").status_code == status


def test_the_console_navigation_offers_admin_links_to_platform_admins_only(lin: User, root: User) -> None:
    assert "Django admin" in client_for(root).get("/console/").content.decode()
    assert "Django admin" not in client_for(lin).get("/console/").content.decode()


@pytest.fixture
def olga(other_team: Team) -> User:
    """A lead, of another team than demo."""
    user = make_user("olga")
    Membership.objects.create(team=other_team, user=user, role=Role.LEAD)
    return user


def deactivated(user: User) -> User:
    user.is_active = False
    user.save(update_fields=["is_active"])
    return user


@pytest.mark.parametrize(
    ("who", "allowed"), [("root", True), ("lin", True), ("olga", True), ("ada", False), ("vic", False), ("omar", False)]
)
def test_admins_and_leads_of_any_team_define_environments_and_read_usage_reports(
    who: str, allowed: bool, people: dict[str, User], olga: User
) -> None:
    user = {**people, "olga": olga}[who]
    assert policies.can_define_environment(user) is allowed
    assert policies.can_report_usage(user) is allowed
    assert policies.leads_a_team(user) is allowed


@pytest.mark.parametrize("who", ["root", "lin"])
def test_nobody_signed_out_or_deactivated_defines_environments_or_reads_usage(
    who: str, people: dict[str, User]
) -> None:
    for user in (AnonymousUser(), deactivated(people[who])):
        assert policies.can_define_environment(user) is False
        assert policies.can_report_usage(user) is False
        assert policies.leads_a_team(user) is False


def test_leading_a_team_is_asked_in_one_query_and_a_platform_admin_in_none(
    lin: User, ada: User, root: User, django_assert_num_queries: Any
) -> None:
    with django_assert_num_queries(1):
        assert policies.can_report_usage(lin) is True
    with django_assert_num_queries(1):
        assert policies.can_define_environment(ada) is False
    with django_assert_num_queries(0):
        assert policies.can_report_usage(root) is True


@pytest.mark.parametrize(
    ("who", "own_team", "global_ones"),
    [("root", True, True), ("lin", True, False), ("olga", False, False), ("ada", False, False), ("vic", False, False)],
)
def test_leads_manage_their_teams_templates_and_platform_admins_also_the_global_ones(
    who: str, own_team: bool, global_ones: bool, people: dict[str, User], olga: User, team: Team
) -> None:
    user = {**people, "olga": olga}[who]
    assert policies.can_manage_templates(user, team) is own_team
    assert policies.can_manage_templates(user, None) is global_ones


def test_nobody_deactivated_manages_templates(lin: User, root: User, team: Team) -> None:
    assert policies.can_manage_templates(AnonymousUser(), team) is False
    assert policies.can_manage_templates(deactivated(lin), team) is False
    assert policies.can_manage_templates(deactivated(root), None) is False


def test_only_platform_admins_attach_an_existing_experiment(people: dict[str, User]) -> None:
    assert policies.can_attach_experiment(people["root"]) is True
    for who in ("lin", "ada", "vic", "omar"):
        assert policies.can_attach_experiment(people[who]) is False, who
    assert policies.can_attach_experiment(AnonymousUser()) is False
    assert policies.can_attach_experiment(deactivated(people["root"])) is False


def test_a_lead_posting_the_attach_form_is_refused_before_the_form_is_read(lin: User, project: Project) -> None:
    # Empty: were the form read first, this would be a 400 naming the missing field.
    response = client_for(lin).post(f"/projects/{project.team.slug}/{project.slug}/attach-experiment/", {})
    assert response.status_code == 403


def test_a_deactivated_lead_opens_no_audit_log(lin: User, team: Team) -> None:
    assert policies.can_view_audit(lin) is True
    lin = deactivated(lin)
    assert policies.can_view_audit(lin) is False
    assert policies.can_view_audit(lin, team) is False


# --- cancelling and extending a launch or a sweep -----------------------------------------------
@pytest.fixture(params=["launch", "sweep"])
def run_by_ada(request: pytest.FixtureRequest, ada: User, project: Project) -> Launch | Sweep:
    """A launch, or a sweep, that ada (a member of demo) started in demo's project."""
    if request.param == "launch":
        return make_launch(project, ada)
    return Sweep.objects.create(
        project=project,
        template=make_template(project),
        created_by=ada,
        strategy="grid",
        space={"lr": [0.1, 0.2]},
        planned=[{"lr": 0.1}, {"lr": 0.2}],
        max_trials=2,
        parallelism=1,
        status=SweepStatus.RUNNING,
    )


@pytest.mark.parametrize(
    ("who", "allowed"),
    [
        ("ada", True),  # its creator
        ("lin", True),  # a lead of its team
        ("root", True),  # a platform admin
        ("bea", False),  # another member of its team
        ("vic", False),  # a viewer of its team
        ("omar", False),  # a member of another team
        ("olga", False),  # a lead of another team
    ],
)
def test_a_runs_creator_its_teams_leads_and_platform_admins_manage_it(
    who: str, allowed: bool, people: dict[str, User], olga: User, team: Team, run_by_ada: Launch | Sweep
) -> None:
    bea = make_user("bea")
    Membership.objects.create(team=team, user=bea, role=Role.MEMBER)
    user = {**people, "olga": olga, "bea": bea}[who]
    assert policies.can_manage_run(user, run_by_ada) is allowed


def test_the_creator_keeps_the_right_deactivated_or_demoted_and_others_lose_it_deactivated(
    people: dict[str, User], team: Team, run_by_ada: Launch | Sweep
) -> None:
    # A failing sweep cancels its trials in its creator's name, whatever became of the account.
    Membership.objects.filter(team=team, user=people["ada"]).update(role=Role.VIEWER)
    assert policies.can_manage_run(deactivated(people["ada"]), run_by_ada) is True
    assert policies.can_manage_run(deactivated(people["lin"]), run_by_ada) is False
    assert policies.can_manage_run(deactivated(people["root"]), run_by_ada) is False
    assert policies.can_manage_run(AnonymousUser(), run_by_ada) is False


def test_the_creator_is_answered_without_a_query(
    ada: User, run_by_ada: Launch | Sweep, django_assert_num_queries: Any
) -> None:
    run = type(run_by_ada).objects.get(pk=run_by_ada.pk)  # its project not loaded
    with django_assert_num_queries(0):
        assert policies.can_manage_run(ada, run) is True


# --- the platform default environment -----------------------------------------------------------
def test_only_platform_admins_choose_the_default_among_platform_wide_environments(
    people: dict[str, User], olga: User, team: Team
) -> None:
    platform_wide = Environment.objects.get(is_default=True)
    teams_own = Environment(team=team, name="cv", version=1)
    assert policies.can_set_default_environment(people["root"]) is True
    assert policies.can_set_default_environment(people["root"], platform_wide) is True
    assert policies.can_set_default_environment(people["root"], teams_own) is False
    for user in (people["lin"], olga, people["ada"], people["vic"], people["omar"]):
        assert policies.can_set_default_environment(user) is False, user.username
        assert policies.can_set_default_environment(user, platform_wide) is False, user.username
    for nobody in (AnonymousUser(), deactivated(people["root"])):
        assert policies.can_set_default_environment(nobody) is False
        assert policies.can_set_default_environment(nobody, platform_wide) is False


def test_the_default_is_offered_on_the_page_by_the_same_rule(root: User, lin: User, team: Team) -> None:
    platform_wide = Environment.objects.get(is_default=True)
    assert client_for(root).get(f"/environments/{platform_wide.pk}/").context["may_set_default"] is True
    assert client_for(lin).get(f"/environments/{platform_wide.pk}/").context["may_set_default"] is False
