"""The Django admin is the platform admins' look-up tool: the console links to it only for
them, and for them it lists the models (read-only) instead of "You don't have permission
to view or edit anything"; nobody else gets in."""

from __future__ import annotations

import pytest

from apps.accounts.models import Team, User
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

NO_PERMISSION = "have permission to view or edit anything"


def test_a_platform_admin_sees_the_models_in_the_django_admin_and_the_link_to_it(root: User, team: Team) -> None:
    console = client_for(root).get("/console/").content.decode()
    assert 'href="/admin/"' in console
    index = client_for(root).get("/admin/")
    assert index.status_code == 200
    assert NO_PERMISSION not in index.content.decode()
    assert 'href="/admin/accounts/team/"' in index.content.decode()
    teams = client_for(root).get("/admin/accounts/team/")
    assert teams.status_code == 200 and team.slug in teams.content.decode()
    # Looking, not changing: changes go through the console and its audited services.
    assert client_for(root).get("/admin/accounts/team/add/").status_code == 403
    assert 'href="/admin/accounts/team/add/"' not in teams.content.decode()


def test_a_lead_has_no_django_admin_link_and_no_way_in(lin: User) -> None:
    console = client_for(lin).get("/console/").content.decode()
    assert 'href="/admin/"' not in console
    response = client_for(lin).get("/admin/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert client_for(lin).get("/admin/accounts/team/").status_code == 302


def test_a_platform_admin_cannot_change_third_party_models_through_admin_actions(root: User) -> None:
    """django_celery_beat's bulk actions ask for no permission beyond "view": its models are
    not opened to platform admins at all, so disabling a reconciler there is impossible."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    every = IntervalSchedule.objects.create(every=5, period=IntervalSchedule.SECONDS)
    task = PeriodicTask.objects.create(name="sync", task="apps.launches.tasks.sync_launches", interval=every)
    listing = client_for(root).get("/admin/django_celery_beat/periodictask/")
    assert listing.status_code == 403
    answer = client_for(root).post(
        "/admin/django_celery_beat/periodictask/", {"action": "disable_tasks", "_selected_action": [task.pk]}
    )
    assert answer.status_code == 403
    task.refresh_from_db()
    assert task.enabled
