"""`python -m tests.bench_pages`: how fast chart pages show their charts in a real browser.

Seeds an MLflow store (PLINTH_BENCH_PAGE_RUNS runs x _METRICS metrics x _STEPS steps,
default 20 x 6 x 500) through the MLflow client, starts a real `mlflow server` on it, a
Plinth live server on a throwaway SQLite database with the static files collected as
`make install` does (hashed names, gzip/brotli, served by whitenoise) and headless Chromium
(/usr/bin/chromium), then measures the tour's first chart page (the compare page of the tour's four runs, in an
experiment of their own: charts above the fold drawn in a fresh browser, exactly as
tests/e2e/test_tour.py measures it, against the 1.0 s target), and for the compare page of
every run and for one run's page:

* the server's first answer, before any history is cached: for the compare page once with
  the histories read through MLflow's REST API (a remote MLflow) and once from MLflow's
  store in one SQL query (what `make run` does: it points PLINTH_MLFLOW_STORE_URI at its
  own MLflow's store), then for the run page from the store;
* the time from navigation to every chart above the fold drawn, in a fresh browser profile
  (cold browser cache: plotly.js is fetched and parsed too; the server's cache is warm, so
  this is the browser's part) and again in the same profile (warm);
* which plotly.js bundles the page loaded until then and how they came over the wire
  (apps.core.figures: a page of line charts needs only the basic bundle).

Prints a table. PLINTH_BENCH_STATIC_ROOT keeps the collected files between runs (default
.bench/staticfiles: brotli on plotly.js takes a while on a busy machine, and only new files
are compressed).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench_runs import _env, seed, start_server, stop_server

RUNS, METRICS, STEPS = (
    _env("PLINTH_BENCH_PAGE_RUNS", 20),
    _env("PLINTH_BENCH_PAGE_METRICS", 6),
    _env("PLINTH_BENCH_PAGE_STEPS", 500),
)
CHROMIUM = "/usr/bin/chromium"
PASSWORD = "bench-pages-password-1"
# Every chart that starts above the fold, and the page's first chart even when a long table
# pushes it below (20 runs' metrics table does): drawn, or showing its empty state. The one
# definition of "the charts are there" for this benchmark, the tour and the CSP browser test.
ABOVE_THE_FOLD_DRAWN = """() => { const all = Array.from(document.querySelectorAll(".chart"));
  const seen = all.filter((el, i) => i === 0 || el.getBoundingClientRect().top < window.innerHeight);
  return seen.length > 0 && seen.every((el) => el.querySelector(".main-svg, canvas")
    || el.hasAttribute("data-empty")); }"""
VIEWPORT: Any = {"width": 1366, "height": 900}  # playwright's ViewportSize
# The first chart page's target in a fresh browser ("under a second"); the bench and the
# tour report the measured time beside it.
FIRST_CHART_TARGET_SECONDS = 1.0
FIRST_CHART_PAGE_ROW = "first chart page, fresh browser (tour's page) (s)"
Rows = list[tuple[str, str]]


def first_chart_page_seconds(browser: Any, base: str, path: str, sign_in: Any, timeout_ms: int = 120_000) -> float:
    """Seconds from navigation to `path` until ABOVE_THE_FOLD_DRAWN holds, in a fresh browser
    profile (cold cache: plotly.js is fetched and parsed too) of VIEWPORT's size; `sign_in(page)`
    signs the new profile in first. Measured the same way by the tour and by this benchmark.
    Raises playwright's TimeoutError after `timeout_ms`."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        sign_in(page)
        started = time.perf_counter()
        page.goto(base + path, wait_until="commit")
        page.wait_for_function(ABOVE_THE_FOLD_DRAWN, timeout=timeout_ms)
        return time.perf_counter() - started
    finally:
        context.close()


def tour_runs(client: Any, experiment_id: str) -> list[str]:
    """The runs whose compare page is the tour's first chart page: three runs as a training
    script logs them (tests.tracking.conftest.log_run) and one of a person's own script (NaN,
    inf, a single value without steps, HTML in its name). Their run ids, in that order."""
    from tests.tracking.conftest import log_run

    run_ids = [log_run(client, experiment_id, index) for index in range(3)]
    messy = client.create_run(experiment_id, run_name="notebook <b>run</b> ☃")
    client.log_metric(messy.info.run_id, "accuracy", float("nan"))
    client.log_metric(messy.info.run_id, "loss", float("inf"))
    client.log_metric(messy.info.run_id, "f1", 0.5)  # one value, no steps
    client.log_param(messy.info.run_id, "lr", "0.1")
    client.set_terminated(messy.info.run_id)
    return [*run_ids, messy.info.run_id]


def setup(folder: Path, tracking_uri: str) -> None:
    static_root = Path(os.environ.get("PLINTH_BENCH_STATIC_ROOT", "") or Path(".bench") / "staticfiles").resolve()
    static_root.mkdir(parents=True, exist_ok=True)
    os.environ["PLINTH_STATIC_ROOT"] = str(static_root)
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    os.environ.setdefault("PLINTH_MLFLOW_TIMEOUT", "30")
    from django.core.management import call_command

    from tests.bench import setup as setup_portal

    setup_portal(str(folder))
    call_command("collectstatic", interactive=False, verbosity=0)


def make_viewer(experiment_id: str) -> tuple[str, str]:
    """A viewer of a project linked to the experiment: (username, project path)."""
    from apps.accounts.models import Membership, Team, User
    from apps.projects.models import ExperimentState, Project

    user = User.objects.create_user("bench-pages", password=PASSWORD)
    team = Team.objects.create(slug="bench", name="Bench")
    Membership.objects.create(team=team, user=user, role="viewer")
    Project.objects.create(
        team=team,
        slug="pages",
        name="bench pages",
        namespace="bench-pages",
        mlflow_experiment_name=f"bench/{experiment_id}",
        mlflow_experiment_id=experiment_id,
        mlflow_state=ExperimentState.LINKED,
    )
    return user.username, "bench/pages"


def seed_tour_page(tracking_uri: str) -> str:
    """The tour's runs in an experiment of their own in the store, linked to a second project
    of the viewer's team: the path of their compare page (the tour's first chart page)."""
    from mlflow import MlflowClient

    from apps.accounts.models import Team
    from apps.projects.models import ExperimentState, Project

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = str(client.create_experiment("bench/tour"))
    run_ids = tour_runs(client, experiment_id)
    Project.objects.create(
        team=Team.objects.get(slug="bench"),
        slug="tour",
        name="the tour's runs",
        namespace="bench-tour",
        mlflow_experiment_name="bench/tour",
        mlflow_experiment_id=experiment_id,
        mlflow_state=ExperimentState.LINKED,
    )
    return "/runs/compare/?run_ids=" + ",".join(run_ids)


def serve() -> Any:
    """A live server whose static files go through the site's own middleware (whitenoise),
    as in `make run` and production (not the test server's finder-based handler)."""
    from django.test.testcases import LiveServerThread

    thread = LiveServerThread("127.0.0.1", static_handler=lambda handler: handler, port=0)  # type: ignore[arg-type]
    thread.daemon = True
    thread.start()
    thread.is_ready.wait()
    if thread.error:
        raise thread.error
    return thread


def sign_in(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/login/" not in url)


def first_answers(browser: Any, base: str, username: str, pages: dict[str, str], store_uri: str) -> Rows:
    """The server's first answer to each page, before any history is cached (seconds); the
    compare page once through MLflow's REST API and once from its store."""
    from django.conf import settings

    from apps.tracking.models import MetricSeries

    # Playwright's sync API runs an event loop in this thread; these ORM calls are plain ones.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    rows: Rows = []
    context = browser.new_context()
    context.set_default_timeout(300_000)
    try:
        sign_in(context.new_page(), base, username)
        sources = [("compare", "MLflow's REST API", ""), ("compare", "MLflow's store", store_uri)]
        sources += [(name, "MLflow's store", store_uri) for name in pages if name != "compare"]
        for name, source, uri in sources:
            settings.PLINTH_MLFLOW_STORE_URI = uri
            MetricSeries.objects.all().delete()
            started = time.perf_counter()
            response = context.request.get(base + pages[name], timeout=300_000)
            seconds = time.perf_counter() - started
            answer = f"{seconds:.2f}" if response.ok else f"{seconds:.2f} (answered {response.status})"
            rows.append((f"{name}: server's first answer, histories from {source} (s)", answer))
        settings.PLINTH_MLFLOW_STORE_URI = store_uri
        for path in pages.values():  # every history cached again for the browser's visits
            context.request.get(base + path, timeout=300_000)
    finally:
        settings.PLINTH_MLFLOW_STORE_URI = store_uri  # as `make run`
        context.close()
    return rows


def tour_page(browser: Any, base: str, username: str, path: str) -> Rows:
    """The tour's measurement of its first chart page (first_chart_page_seconds), after one
    request has cached the runs' histories on the server as the tour's visits do."""
    context = browser.new_context()
    try:
        sign_in(context.new_page(), base, username)
        context.request.get(base + path, timeout=300_000)
    finally:
        context.close()
    seconds = first_chart_page_seconds(browser, base, path, lambda page: sign_in(page, base, username))
    verdict = "under" if seconds < FIRST_CHART_TARGET_SECONDS else "over"
    return [(FIRST_CHART_PAGE_ROW, f"{seconds:.2f} ({verdict} the {FIRST_CHART_TARGET_SECONDS:.1f} s target)")]


def measure(base: str, username: str, pages: dict[str, str], store_uri: str = "", tour_path: str = "") -> Rows:
    from playwright.sync_api import sync_playwright

    rows: Rows = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            if tour_path:
                rows += tour_page(browser, base, username, tour_path)
            rows += first_answers(browser, base, username, pages, store_uri)
            for name, path in pages.items():
                context = browser.new_context(viewport=VIEWPORT)
                context.set_default_timeout(120_000)
                page = context.new_page()
                bundles: dict[str, str] = {}

                def on_response(response: Any, seen: dict[str, str] = bundles) -> None:
                    if "/vendor/plotly-" in response.url:
                        bundle = response.url.split("/vendor/plotly-")[1].split(".")[0]
                        headers = response.headers
                        seen.setdefault(
                            bundle,
                            f"{bundle} ({headers.get('content-encoding', 'none')}, "
                            f"{headers.get('content-length', '?')} bytes, {headers.get('cache-control', '')})",
                        )

                page.on("response", on_response)
                sign_in(page, base, username)
                timings = []
                loaded = ""
                for _visit in ("cold", "warm"):
                    started = time.perf_counter()
                    page.goto(base + path, wait_until="commit")
                    page.wait_for_function(ABOVE_THE_FOLD_DRAWN)
                    timings.append(time.perf_counter() - started)
                    charts = page.locator(".chart").count()
                    loaded = loaded or "; ".join(bundles.values())
                context.close()
                rows.append((f"{name}: charts above the fold drawn, fresh browser (s)", f"{timings[0]:.2f}"))
                rows.append((f"{name}: the same, second visit (s)", f"{timings[1]:.2f}"))
                rows.append((f"{name}: chart containers on the page", str(charts)))
                rows.append((f"{name}: plotly.js loaded until then", loaded or "none"))
        finally:
            browser.close()
    return rows


def run() -> Rows:
    with tempfile.TemporaryDirectory(prefix="plinth-bench-pages-") as tmp:
        folder = Path(tmp)
        store = folder / "mlflow.sqlite"
        experiment_id, ids, _seconds = seed(store, RUNS, METRICS, STEPS)
        proc, url = start_server(store, folder)
        try:
            setup(folder, url)
            username, project = make_viewer(experiment_id)
            tour_path = seed_tour_page(url)
            server = serve()
            try:
                base = f"http://127.0.0.1:{server.port}"
                pages = {"compare": "/runs/compare/?run_ids=" + ",".join(ids), "run": f"/runs/{project}/{ids[0]}/"}
                return measure(base, username, pages, f"sqlite:///{store}", tour_path)
            finally:
                server.terminate()
        finally:
            stop_server(proc)


def main() -> None:
    from tests.bench import print_table

    rows = run()
    print_table(f"Chart pages in Chromium: {RUNS} runs x {METRICS} metrics x {STEPS} steps", rows)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
