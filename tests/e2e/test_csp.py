"""The chart pages in Chromium under the site's Content-Security-Policy (script-src 'self',
no eval): no violation is reported, no JavaScript error, and every chart container holds a
drawn plot (SVG or canvas) after load — Plotly's scatter, bar, heatmap and parcoords traces
included. Each page loads only the plotly.js bundles its charts name (apps.core.figures:
basic for lines and bars, cartesian for the heatmap, strict for parcoords), and each bundle
registers the trace types it is chosen for, without a violation. Also measures, in a fresh
browser profile, how long the compare page takes from navigation to every chart above the
fold drawn (printed; `python -m tests.bench_pages` reports it too).

The data is the browser tour's day (tests/e2e/test_tour.py: runs, a finished sweep, a
promotion request) plus four sampled GPUs (tests/gpus/test_pages.py)."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page
from playwright.sync_api import Error as PlaywrightError
from pytest_django.live_server_helper import LiveServer

from apps.accounts.models import User
from apps.core.figures import BUNDLES, bundle_links
from tests.bench_pages import ABOVE_THE_FOLD_DRAWN
from tests.e2e.test_tour import Day, day, page_urls, sign_in  # noqa: F401 - `day` is a fixture
from tests.gpus.test_pages import fleet  # noqa: F401 - a fixture
from tests.launches.conftest import eager_tasks, fake_backend  # noqa: F401 - fixtures `day` needs

pytestmark = [pytest.mark.browser, pytest.mark.mlflow, pytest.mark.django_db(transaction=True)]

CHART_PAGES = [
    "tracking:run",
    "tracking:compare",
    "launches:sweep-detail",
    "registry:request",
    "gpus:index",
    "gpus:usage",
    "gpus:launch-usage",
    "deployments:detail",
]
CHART_MS = 30_000
# Every violation the page reports, recorded from the first script on (before the page's own).
RECORD_VIOLATIONS = """window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(
    e.violatedDirective + " blocked " + (e.blockedURI || "inline") + " at " + e.sourceFile + ":" + e.lineNumber);
});"""
ALL_DRAWN = """() => Array.from(document.querySelectorAll(".chart")).every(
    (el) => el.querySelector(".main-svg, canvas") || el.hasAttribute("data-empty"))"""
UNDRAWN = """() => Array.from(document.querySelectorAll(".chart"))
    .filter((el) => !el.querySelector(".main-svg, canvas")).map((el) => el.id)"""
# The plotly.js bundles the page loaded, and the ones its charts name.
BUNDLES_LOADED = """() => performance.getEntriesByType("resource").map((e) => e.name)
    .filter((url) => url.includes("/vendor/plotly-")).map((url) => url.split("/vendor/plotly-")[1].split(".")[0])"""
BUNDLES_NAMED = """() => Array.from(document.querySelectorAll(".chart[data-plotly-bundle]"))
    .map((el) => el.getAttribute("data-plotly-bundle"))"""
# The smallest bundles that draw a page's charts (the tour's data: see the module docstring):
# lines and bars need no more than the basic bundle, the GPU heatmap the cartesian one, and
# parallel coordinates (compare, sweep) the strict one.
SMALLEST = {
    "tracking:run": {"basic"},
    "registry:request": {"basic"},
    "gpus:index": {"cartesian"},
    "gpus:launch-usage": {"basic"},
    "deployments:detail": {"basic"},
}
PARCOORDS_PAGES = {"tracking:compare", "launches:sweep-detail"}


def fresh_context(browser: Browser) -> BrowserContext:
    context = browser.new_context(viewport={"width": 1366, "height": 900}, locale="en-US")
    context.set_default_timeout(CHART_MS)
    context.add_init_script(RECORD_VIOLATIONS)
    return context


def watch(page: Page) -> list[str]:
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}")
            if message.type == "error" or "Content Security Policy" in message.text
            else None
        ),
    )
    return problems


def open_and_draw(page: Page, url: str) -> dict[str, Any]:
    response = page.goto(url, wait_until="load")
    charts = page.locator(".chart")
    for index in range(charts.count()):  # below the fold, charts draw when scrolled near
        charts.nth(index).scroll_into_view_if_needed()
    with contextlib.suppress(PlaywrightError):  # reported below with the charts that did not draw
        page.wait_for_function(ALL_DRAWN, timeout=CHART_MS)
    return {
        "status": response.status if response else 0,
        "charts": charts.count(),
        "undrawn": page.evaluate(UNDRAWN),
        "bundles": set(page.evaluate(BUNDLES_LOADED)),
        "named": set(page.evaluate(BUNDLES_NAMED)),
        "violations": page.evaluate("() => window.__cspViolations"),
        "policy": response.headers.get("content-security-policy", "") if response else "",
    }


def test_the_chart_pages_draw_every_chart_under_the_policy_without_a_violation(
    browser: Browser,
    live_server: LiveServer,
    day: Day,  # noqa: F811 - the fixture
    fleet: dict[str, Any],  # noqa: F811 - the fixture
    ada: User,
    root: User,
) -> None:
    pages = page_urls(day)
    # The launch-usage page of a launch that has GPUs and samples.
    pages["gpus:launch-usage"] = f"/gpus/launches/{fleet['mine'].pk}/"
    failures: list[str] = []
    drawn = visited = 0
    for user in (ada, root):
        context = fresh_context(browser)
        page = context.new_page()
        problems = watch(page)
        sign_in(page, live_server.url, user)
        for name in CHART_PAGES:
            if name == "gpus:usage" and not user.is_platform_admin:
                continue  # usage reports are for leads and platform admins
            problems.clear()
            seen = open_and_draw(page, live_server.url + pages[name])
            page.wait_for_timeout(100)  # console messages of the last draw arrive asynchronously
            where = f"{user.username} {name}"
            if seen["status"] != 200:
                failures.append(f"{where}: answered {seen['status']}")
                continue
            if "script-src 'self'" not in seen["policy"]:
                failures.append(f"{where}: policy {seen['policy']!r}")
            failures += [f"{where}: chart not drawn: {chart}" for chart in seen["undrawn"]]
            expected = SMALLEST.get(name, seen["named"])
            if seen["bundles"] != seen["named"] or seen["named"] != expected:
                failures.append(f"{where}: loaded plotly.js {seen['bundles']}, charts name {seen['named']}")
            if name in PARCOORDS_PAGES and "strict" not in seen["named"]:
                failures.append(f"{where}: parallel coordinates without the strict bundle: {seen['named']}")
            failures += [f"{where}: {v}" for v in seen["violations"]] + [f"{where}: {p}" for p in problems]
            drawn += seen["charts"] - len(seen["undrawn"])
            visited += 1
        if user.is_platform_admin:  # the API docs (Swagger UI from drf-spectacular-sidecar) too
            problems.clear()
            page.goto(live_server.url + "/api/v1/docs/", wait_until="load")
            page.locator(".swagger-ui .info").first.wait_for()
            page.wait_for_timeout(100)
            violations = page.evaluate("() => window.__cspViolations")
            failures += [f"api docs: {v}" for v in violations] + [f"api docs: {p}" for p in problems]
        context.close()
    assert not failures, "\n".join(failures)
    # The pages did have charts to draw: runs, compare (histories, parcoords, scatter),
    # sweep, evidence, the GPU heatmap, the launch's GPU chart and the deployment's request
    # charts (a canary beside its stable revision), for both users.
    assert visited == 2 * len(CHART_PAGES) - 1 and drawn >= visited


def test_the_compare_page_draws_the_charts_above_the_fold_at_once(
    browser: Browser,
    live_server: LiveServer,
    day: Day,  # noqa: F811 - the fixture
    ada: User,
) -> None:
    context = fresh_context(browser)  # a cold cache: plotly.js is fetched too
    try:
        page = context.new_page()
        problems = watch(page)
        sign_in(page, live_server.url, ada)
        started = time.perf_counter()
        page.goto(live_server.url + page_urls(day)["tracking:compare"], wait_until="commit")
        # No scrolling: the charts on screen draw by themselves.
        page.wait_for_function(ABOVE_THE_FOLD_DRAWN, timeout=CHART_MS)
        seconds = time.perf_counter() - started
        print(f"\ncompare page: charts above the fold drawn {seconds:.2f} s after navigation (fresh browser)")
        assert page.evaluate("() => window.__cspViolations") == [] and problems == []
    finally:
        context.close()


def test_each_plotly_bundle_registers_the_trace_types_it_is_chosen_for_under_the_policy(
    browser: Browser, live_server: LiveServer
) -> None:
    context = fresh_context(browser)
    try:
        for bundle in bundle_links():
            page = context.new_page()
            problems = watch(page)
            page.goto(live_server.url + "/login/", wait_until="load")  # a page without charts
            assert page.evaluate("() => typeof window.Plotly") == "undefined", "no plotly.js without a chart"
            page.add_script_tag(url=bundle["src"])
            traces = set(page.evaluate("() => Object.keys(window.Plotly.PlotSchema.get().traces)"))
            chosen = next(b for b in BUNDLES if b.name == bundle["name"])
            assert chosen.traces is None or chosen.traces <= traces, (bundle["name"], chosen.traces - traces)
            if chosen.traces is None:
                assert {"parcoords", "heatmap", "scatter", "bar"} <= traces
            else:  # no more than it says, either: a larger bundle would have been mislabelled
                assert traces <= chosen.traces | {"scatter"}, (bundle["name"], traces - chosen.traces)
            assert page.evaluate("() => window.__cspViolations") == [] and problems == []
            page.close()
    finally:
        context.close()
