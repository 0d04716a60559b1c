"""Home's "Needs your attention" lists the promotions the navigation's badge counts: one
selector for both, so they never disagree."""

from __future__ import annotations

import re

import pytest

from apps.accounts.models import User
from apps.projects.models import Project
from apps.registry import services
from apps.registry.models import RegisteredModel
from tests.conftest import client_for
from tests.registry.fakes import FakeRegistry

pytestmark = pytest.mark.django_db


def attention(page: str) -> str:
    found = re.search(r'<section class="card" aria-labelledby="attention-h">(.*?)</section>', page, re.S)
    assert found, "the home page has its attention section"
    return found.group(1)


def badge(page: str) -> int:
    found = re.search(r'class="badge"[^>]*>(\d+)<', page)
    return int(found.group(1)) if found else 0


def test_home_lists_the_pending_promotion_the_badge_counts(
    ada: User, lin: User, project: Project, fake_registry: FakeRegistry
) -> None:
    asked = services.create_request(
        ada, RegisteredModel(name="digits", project=project), version=2, alias="champion", justification="better"
    )
    lead_home = client_for(lin).get("/").content.decode()
    assert badge(lead_home) == 1
    assert f"/models/requests/{asked.pk}/" in attention(lead_home)
    assert "digits" in attention(lead_home)
    # The requester cannot decide their own request: neither badge nor home list it for them.
    own_home = client_for(ada).get("/").content.decode()
    assert badge(own_home) == 0
    assert f"/models/requests/{asked.pk}/" not in attention(own_home)
