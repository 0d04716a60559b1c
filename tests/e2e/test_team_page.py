"""The team page in a real browser: a lead signs in and manages members through the htmx form."""

from __future__ import annotations

import pytest
from django.urls import reverse
from playwright.sync_api import Locator, Page, Response, expect
from pytest_django.live_server_helper import LiveServer

from apps.access.roles import Role
from apps.accounts.models import Membership, User
from apps.audit.models import AuditEvent
from tests.conftest import PASSWORD, make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ADD_URL = "teams:member-add"


def sign_in(page: Page, live_server: LiveServer, user: User) -> None:
    """Sign in through the login form and land on the home page."""
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{live_server.url}/")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Welcome, {user.username}")


def open_team_page(page: Page, live_server: LiveServer, slug: str = "demo") -> Locator:
    """Open the team page and return its #members section, once htmx is ready on the page."""
    page.goto(f"{live_server.url}/teams/{slug}/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Demo team")
    assert page.evaluate("() => typeof window.htmx") == "object", (
        "htmx did not load (static/vendor/htmx.min.js: run `make install`)"
    )
    # A flag on the window survives an htmx swap but not a page load: it tells the two apart.
    page.evaluate("() => { window.__plinthSamePage = true; }")
    return page.locator("#members")


def assert_swapped_in_place(page: Page) -> None:
    assert page.evaluate("() => window.__plinthSamePage === true"), "the page reloaded: htmx did not handle the form"


def is_add_member_post(live_server: LiveServer, response: Response) -> bool:
    return response.request.method == "POST" and response.url == live_server.url + reverse(ADD_URL, args=["demo"])


def assert_htmx_request(response: Response, status: int) -> None:
    assert response.request.headers.get("hx-request") == "true", "the form was posted without htmx"
    assert response.status == status


def test_lead_signs_in_and_adds_a_viewer(page: Page, live_server: LiveServer, lin: User) -> None:
    newcomer = make_user("vic")  # exists, but is not in team demo yet

    sign_in(page, live_server, lin)
    my_teams = page.get_by_role("region", name="My teams")
    team_row = my_teams.get_by_role("row").filter(has_text="demo")
    expect(team_row.get_by_role("link", name="Demo team")).to_be_visible()
    expect(team_row.get_by_text("lead", exact=True)).to_be_visible()

    team_row.get_by_role("link", name="Demo team").click()
    expect(page).to_have_url(f"{live_server.url}/teams/demo/")
    members = open_team_page(page, live_server)
    expect(members.get_by_role("heading", name="Members")).to_have_text("Members (1)")
    expect(members.locator("tr[data-member]")).to_have_count(1)

    members.get_by_label("Username").fill("vic")
    members.get_by_label("Role", exact=True).select_option("viewer")
    with page.expect_response(lambda r: is_add_member_post(live_server, r)) as answer:
        members.get_by_role("button", name="Add member").click()
    assert_htmx_request(answer.value, 200)

    row = members.locator('tr[data-member="vic"]')
    expect(row).to_be_visible()
    expect(row.get_by_label("Role of vic")).to_have_value("viewer")
    expect(members.get_by_role("heading", name="Members")).to_have_text("Members (2)")
    expect(members.get_by_label("Username")).to_have_value("")  # a fresh form for the next one
    expect(members.get_by_role("alert")).to_have_count(0)
    expect(page.locator("#messages")).to_have_text("Added vic as viewer.")  # refreshed out of band
    expect(members.get_by_label("Username")).to_be_focused()  # ready for the next one
    assert_swapped_in_place(page)

    membership = Membership.objects.get(team__slug="demo", user=newcomer)
    assert membership.role == Role.VIEWER
    event = AuditEvent.objects.get(verb="team.member_added")
    assert event.actor_id == lin.pk
    assert event.team_id == membership.team_id
    assert event.after == {"user": "vic", "role": "viewer"}


def test_adding_an_unknown_user_shows_the_error_inline(page: Page, live_server: LiveServer, lin: User) -> None:
    sign_in(page, live_server, lin)
    members = open_team_page(page, live_server)

    members.get_by_label("Username").fill("nobody")
    members.get_by_label("Role", exact=True).select_option("viewer")
    with page.expect_response(lambda r: is_add_member_post(live_server, r)) as answer:
        members.get_by_role("button", name="Add member").click()
    assert_htmx_request(answer.value, 400)

    expect(members.get_by_role("alert")).to_have_text("There is no active user called 'nobody'.")
    # The form keeps what was typed, so it can be corrected.
    expect(members.get_by_label("Username")).to_have_value("nobody")
    expect(members.get_by_label("Role", exact=True)).to_have_value("viewer")
    expect(members.locator("tr[data-member]")).to_have_count(1)
    expect(members.get_by_role("heading", name="Members")).to_have_text("Members (1)")
    # A 400 carries form errors: it is swapped in, not reported as a server failure.
    expect(page.locator("#messages")).to_be_empty()
    assert_swapped_in_place(page)

    assert list(Membership.objects.filter(team__slug="demo").values_list("user__username", flat=True)) == ["lin"]
    assert not AuditEvent.objects.filter(verb="team.member_added").exists()


def test_add_member_form_works_with_the_keyboard_only(page: Page, live_server: LiveServer, lin: User) -> None:
    newcomer = make_user("vic")
    sign_in(page, live_server, lin)
    members = open_team_page(page, live_server)

    username = members.get_by_label("Username")
    role = members.get_by_label("Role", exact=True)
    username.focus()
    page.keyboard.type("vic")
    page.keyboard.press("Tab")
    expect(role).to_be_focused()
    expect(role).to_have_value("member")
    page.keyboard.press("ArrowUp")  # the options run viewer, member, lead
    expect(role).to_have_value("viewer")
    # Enter on a <select> opens its list in Chromium (no implicit submission from a select):
    # a keyboard user tabs on to the button and presses Enter there.
    page.keyboard.press("Tab")
    expect(members.get_by_role("button", name="Add member")).to_be_focused()
    with page.expect_response(lambda r: is_add_member_post(live_server, r)) as answer:
        page.keyboard.press("Enter")
    assert_htmx_request(answer.value, 200)

    row = members.locator('tr[data-member="vic"]')
    expect(row).to_be_visible()
    expect(row.get_by_label("Role of vic")).to_have_value("viewer")
    assert_swapped_in_place(page)
    assert Membership.objects.get(team__slug="demo", user=newcomer).role == Role.VIEWER
