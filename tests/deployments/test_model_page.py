"""The registered model's page lists the deployments that serve it (what serves each, and a
link), only to those who may see them, and offers to deploy it when it serves nowhere."""

from __future__ import annotations

import re

import pytest
from django.utils import timezone

from apps.accounts.models import User
from apps.deployments.models import Deployment, RevisionStatus
from tests.conftest import client_for
from tests.deployments.conftest import add_revision

pytestmark = pytest.mark.django_db

PAGE = "/models/registered/digits/"


def _card(html: str) -> str:
    found = re.search(r'<section class="card" id="deployments".*?</section>', html, re.S)
    assert found is not None, "no deployments card on the model page"
    return found.group(0)


def test_the_model_page_links_each_deployment_with_what_it_serves(
    people: dict[str, User], deployment: Deployment
) -> None:
    add_revision(deployment, 1, RevisionStatus.SERVING, traffic=90, serving_at=timezone.now())
    add_revision(deployment, 2, RevisionStatus.SERVING, traffic=10, is_canary=True)
    add_revision(deployment, 3, RevisionStatus.RETIRED)
    for who in ("vic", "ada", "lin", "root"):
        card = _card(client_for(people[who]).get(PAGE).content.decode())
        assert f'href="/deployments/{deployment.pk}/"' in card
        assert re.search(r"v1 <span class=\"muted\">90 %</span>, v2 <span class=\"muted\">10 %</span>", card), card
        assert "v3" not in card


def test_a_model_served_nowhere_offers_to_deploy_it_to_members_only(people: dict[str, User], digits: object) -> None:
    member = _card(client_for(people["ada"]).get(PAGE).content.decode())
    assert "Not deployed." in member and "/deployments/projects/demo/demo/new/?model=digits" in member
    viewer = _card(client_for(people["vic"]).get(PAGE).content.decode())
    assert "Not deployed." in viewer and "/new/" not in viewer


def test_the_card_costs_two_queries_whatever_the_number_of_deployments(
    people: dict[str, User], deployment: Deployment, django_assert_max_num_queries: object
) -> None:
    from apps.deployments import services
    from apps.registry.models import RegisteredModel
    from apps.registry.views import _deployments_of

    model = RegisteredModel.objects.get(name="digits")
    for n in range(5):
        extra = services.create_deployment(people["ada"], deployment.project, name=f"digits-{n}", model="digits")
        add_revision(extra, 1, RevisionStatus.SERVING, traffic=100)
    with django_assert_max_num_queries(3):  # type: ignore[operator]
        rows = _deployments_of(people["ada"], model)
        assert len(rows) == 6 and all(hasattr(d, "serving_revisions") for d in rows)
