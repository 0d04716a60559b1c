"""Forms follow post/redirect/get: every page POST of the authorization matrix that
succeeds answers a redirect, and what it redirects to is a page that changes nothing —
so a refresh (or the back button) after a success never repeats the change."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from tests.access.matrix_vocab import World
from tests.access.test_matrix import (  # noqa: F401 - the matrix's fixtures, used here too
    CASES,
    Case,
    _tasks_run_in_process,
    describe,
    send,
    sent,
    world,
)
from tests.conftest import client_for

PAGE_POSTS = [c for c in CASES if c.op.method == "POST" and not c.is_api]


def test_the_matrix_has_page_posts_to_walk() -> None:
    names = {c.name for c in PAGE_POSTS}
    assert {"account", "teams:create", "launches:create", "launches:cancel"} <= names


@pytest.mark.parametrize("case", PAGE_POSTS, ids=str)
def test_a_successful_post_redirects_and_a_refresh_repeats_nothing(
    case: Case,
    world: World,  # noqa: F811 - the matrix's fixture
) -> None:
    events = AuditEvent.objects.count()
    response = send(case, world, case.op.allowed)
    if response.status_code >= 400:
        pytest.skip(f"{case}: no success to check here ({describe(response)}, e.g. MLflow is down in tests)")
    assert response.status_code == 302, f"{case}: a successful POST answered {describe(response)}, not a redirect"
    changed = AuditEvent.objects.count()
    location = response["Location"]
    if location.startswith("/login/") or case.name in ("logout", "login"):
        return  # signing in and out: the session is the change, not an audited row
    # The browser follows with a GET, and a refresh repeats that GET: neither changes anything.
    client = client_for(world.users[case.op.allowed])
    for _ in range(2):
        followed = client.get(location)
        assert followed.status_code in (200, 302), f"{case}: GET {location} answered {describe(followed)}"
    assert AuditEvent.objects.count() == changed, f"{case}: following the redirect changed something"
    assert changed >= events
