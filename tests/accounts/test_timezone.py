"""Pages show times in the viewer's zone, labelled: the account's setting first, else the
browser's zone (a cookie, checked against the IANA list: anything else is ignored), else
the server's; the setting is audited; the API keeps ISO 8601 with an offset."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.urls import reverse

from apps.accounts.models import User
from apps.audit.models import AuditEvent
from apps.core.timezones import COOKIE
from apps.projects.models import Project
from tests.conftest import api_for, client_for

pytestmark = pytest.mark.django_db

NOON_UTC = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
def dated(project: Project) -> Project:
    Project.objects.filter(pk=project.pk).update(created_at=NOON_UTC)
    project.refresh_from_db()
    return project


def project_page(user: User, cookie: str | None = None) -> str:
    client = client_for(user)
    if cookie is not None:
        client.cookies[COOKIE] = cookie
    response = client.get(reverse("projects:detail", args=["demo", "demo"]))
    assert response.status_code == 200
    return response.content.decode()


def test_without_a_zone_times_are_shown_in_the_servers_zone_and_say_so(ada: User, dated: Project) -> None:
    page = project_page(ada)
    assert '<time datetime="2026-01-15T12:00:00+00:00"' in page
    assert ">2026-01-15 12:00 UTC</time>" in page


def test_the_browsers_zone_from_the_cookie_shows_local_time_with_its_label(ada: User, dated: Project) -> None:
    page = project_page(ada, "Europe/Paris")
    assert ">2026-01-15 13:00 CET</time>" in page
    assert '<time datetime="2026-01-15T13:00:00+01:00"' in page


@pytest.mark.parametrize("bad", ["Mars/Olympus_Mons", "../../etc/passwd", "", "x" * 300, "UTC; rm -rf"])
def test_an_unknown_zone_in_the_cookie_is_ignored(ada: User, dated: Project, bad: str) -> None:
    page = project_page(ada, bad)
    assert ">2026-01-15 12:00 UTC</time>" in page


def test_the_account_setting_wins_over_the_browser_and_is_audited(ada: User, dated: Project) -> None:
    response = client_for(ada).post(reverse("account-time-zone"), {"time_zone": "Asia/Tokyo"})
    assert response.status_code == 302
    ada.refresh_from_db()
    assert ada.time_zone == "Asia/Tokyo"
    event = AuditEvent.objects.get(verb="account.time_zone_set")
    assert event.actor == ada and event.after == {"time_zone": "Asia/Tokyo"}

    assert ">2026-01-15 21:00 JST</time>" in project_page(ada, "Europe/Paris")
    account = client_for(ada).get(reverse("account")).content.decode()
    assert "Times are shown in <strong>Asia/Tokyo</strong> (your setting)" in account

    back = client_for(ada).post(reverse("account-time-zone"), {"time_zone": ""})  # the browser's again
    assert back.status_code == 302
    assert ">2026-01-15 13:00 CET</time>" in project_page(ada, "Europe/Paris")


def test_an_unknown_zone_on_the_account_page_is_a_400_naming_the_field(ada: User) -> None:
    response = client_for(ada).post(reverse("account-time-zone"), {"time_zone": "Mars/Olympus_Mons"})
    assert response.status_code == 400
    assert response.context["tz_form"].errors["time_zone"]
    ada.refresh_from_db()
    assert ada.time_zone == ""
    assert not AuditEvent.objects.filter(verb="account.time_zone_set").exists()


def test_the_api_answers_iso_8601_with_an_offset_whatever_the_viewers_zone(ada: User, dated: Project) -> None:
    User.objects.filter(pk=ada.pk).update(time_zone="Asia/Tokyo")
    client = api_for(ada)
    client.cookies[COOKIE] = "Europe/Paris"
    body = client.get(f"/api/v1/projects/{dated.pk}/").json()
    stamp = datetime.fromisoformat(body["created_at"])
    offset = stamp.utcoffset()
    assert offset is not None
    assert stamp == NOON_UTC
    assert offset.total_seconds() == 0  # the server's zone, for every caller
