"""Who decides a project's promotion requests, asked every way Plinth asks it: may this
person decide (is_eligible_approver), whose inbox (awaiting_decision), who is mailed
(notices.approvers_of), who may be named, how big a quorum can be. One rule
(apps.registry.policies), so every answer agrees.

ada, bea members; lin, lin2 leads; vic viewer of demo; omar of another team; root admin."""

from __future__ import annotations

import pytest

from apps.accounts.models import User
from apps.core.errors import InvalidInput
from apps.projects.models import Project
from apps.registry import notices, services
from apps.registry.models import PromotionRequest
from apps.registry.policies import awaiting_decision, eligible_approvers, is_eligible_approver
from tests.registry.fakes import FakeRegistry
from tests.registry.test_policy import ask

pytestmark = pytest.mark.django_db


@pytest.fixture
def everyone(ada: User, bea: User, lin: User, lin2: User, vic: User, omar: User, root: User) -> list[User]:
    return [ada, bea, lin, lin2, vic, omar, root]


def names(users: object) -> set[str]:
    return {user.username for user in users}  # type: ignore[attr-defined]


def test_by_default_the_teams_active_leads_decide(everyone: list[User], project: Project, lin2: User) -> None:
    assert names(eligible_approvers(project)) == {"lin", "lin2"}
    lin2.is_active = False
    lin2.save()
    assert names(eligible_approvers(project)) == {"lin"}


def test_named_approvers_decide_while_they_are_members_or_leads(
    everyone: list[User], project: Project, root: User, bea: User, vic: User
) -> None:
    services.update_policy(root, project, approvers=["bea", "lin"])
    assert names(eligible_approvers(project)) == {"bea", "lin"}
    bea.memberships.update(role="viewer")  # demoted after being named
    assert names(eligible_approvers(project)) == {"lin"}


def test_naming_an_approver_needs_an_active_member_or_lead(everyone: list[User], project: Project, root: User) -> None:
    for who in ("vic", "omar"):
        with pytest.raises(InvalidInput) as refused:
            services.update_policy(root, project, approvers=[who])
        assert "approvers" in refused.value.fields


def test_a_quorum_counts_only_people_who_may_decide(
    everyone: list[User], project: Project, root: User, lin2: User
) -> None:
    services.update_policy(root, project, required_approvals=2)  # lin and lin2
    lin2.is_active = False
    lin2.save()
    with pytest.raises(InvalidInput) as refused:
        services.update_policy(root, project, required_approvals=2, expiry_days=3)
    assert "required_approvals" in refused.value.fields


@pytest.mark.parametrize("named", [[], ["bea", "lin2"]])
def test_every_question_about_approvers_gets_the_same_answer(
    named: list[str], everyone: list[User], ada: User, project: Project, root: User, fake_registry: FakeRegistry
) -> None:
    if named:
        services.update_policy(root, project, approvers=named)
    response = ask(ada)
    assert response.status_code == 201, response.json()
    request = PromotionRequest.objects.get(pk=response.json()["id"])
    listed = names(eligible_approvers(project))
    assert listed == (set(named) or {"lin", "lin2"})
    for user in everyone:
        may = is_eligible_approver(user, project)
        assert may is (user.username in listed or user == root), user.username
        inbox = awaiting_decision(user).filter(pk=request.pk).exists()
        assert inbox is (may and user != ada), user.username
    assert names(notices.approvers_of(request)) == listed - {"ada"}
