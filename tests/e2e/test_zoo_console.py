"""The data zoo (tests/tracking/zoo.py) in headless Chromium: the runs table, the compare
page of every zoo run and each run's page load and draw every chart without one console
error or page error (Plotly's "<path> attribute d: Expected number" included: a NaN or an
infinity that reached a trace). The nested-runs family folds and unfolds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import ConsoleMessage, Page, expect
from pytest_django.live_server_helper import LiveServer

from apps.accounts.models import User
from apps.projects.models import Project
from tests.e2e.test_compare_page import sign_in
from tests.tracking.conftest import link
from tests.tracking.zoo import CHILDREN, Zoo, seed_zoo

pytestmark = [pytest.mark.browser, pytest.mark.mlflow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def zoo(mlflow_server: str) -> Zoo:
    return seed_zoo(mlflow_server)


@pytest.fixture
def console_errors(page: Page) -> Iterator[list[str]]:
    """Every console message of type "error" the pages print (page errors are the `page`
    fixture's to report)."""
    errors: list[str] = []

    def seen(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"{page.url}: {message.text}")

    page.on("console", seen)
    yield errors


# Chart containers whose data has a figure (an empty chart is a sentence, not a container).
FIGURE_IDS = """() => Array.from(document.querySelectorAll(".chart[data-chart]"))
    .filter((el) => JSON.parse(document.getElementById(el.getAttribute("data-chart")).textContent).figure)
    .map((el) => el.id)"""


def draw_every_chart(page: Page, undrawn: list[str]) -> int:
    """Scroll each chart the server sent a figure for (an empty chart is a message) into view (charts draw when near)
    and wait until Plotly has drawn it; the number of charts. One Plotly did not draw is
    added to `undrawn` (a failure reported with the console's errors at the end)."""
    ids: list[str] = page.evaluate(FIGURE_IDS)
    for chart_id in ids:
        chart = page.locator(f"#{chart_id}")
        chart.scroll_into_view_if_needed()
        try:
            expect(chart.locator(".main-svg").first).to_be_attached()
        except AssertionError:
            undrawn.append(f"{page.url[:80]} #{chart_id}: {chart.inner_html()[:300]!r}")
    return len(ids)


def test_the_zoo_pages_load_and_draw_without_a_console_error(
    page: Page,
    console_errors: list[str],
    live_server: LiveServer,
    ada: User,
    project: Project,
    mlflow_up: str,
    zoo: Zoo,
) -> None:
    link(project, zoo.experiment_id)
    sign_in(page, live_server, ada)

    page.goto(f"{live_server.url}/runs/demo/demo/?max_results=100&order_by=attributes.start_time+ASC")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Runs")
    expect(page.locator('input[name="run_ids"]')).to_have_count(len(zoo.active))
    children = page.locator(f'tr.child[data-parent="{zoo.runs["parent"]}"]')
    expect(children).to_have_count(len(CHILDREN))
    fold = page.get_by_label("Show the 4 nested runs of parent")
    fold.uncheck()
    expect(children.first).to_be_hidden()
    fold.check()
    expect(children.first).to_be_visible()

    ids = ",".join(zoo.active.values())
    page.goto(f"{live_server.url}/runs/compare/?run_ids={ids}")
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"{len(zoo.active)} runs")
    undrawn: list[str] = []
    assert draw_every_chart(page, undrawn) > 0
    for extra in ("#parcoords", "#scatter"):
        if page.locator(extra).count():
            page.locator(extra).scroll_into_view_if_needed()
            expect(page.locator(f"{extra} .main-svg").first).to_be_attached()

    drawn = 0
    for run_id in zoo.active.values():
        page.goto(f"{live_server.url}/runs/demo/demo/{run_id}/")
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        drawn += draw_every_chart(page, undrawn)
    assert drawn > 0
    assert not console_errors and not undrawn, "console errors:\n" + "\n".join(
        [*console_errors, "charts not drawn:", *undrawn]
    )
