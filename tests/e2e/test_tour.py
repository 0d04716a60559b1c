"""A tour of every page of the portal, as each role, in headless Chromium.

The data is what a team has after a day of work: runs logged by people's own scripts
(NaN, a single value, no steps) next to runs Plinth launched, a finished sweep whose
trials logged their objective, a cancelled launch, a failed one, two registered versions
with `champion` on the first and a pending promotion of the second. MLflow is the real
server; the compute backend is the launch tests' stateful fake (no process runs).

Every page (`PAGES`; `test_every_page_of_the_url_conf_is_toured` makes sure a new route is
added there or named in `NOT_PAGES` with the reason) is opened as ada (member), lin (lead),
vic (viewer) and root (platform admin). The tour fails on a 5xx, a JavaScript error or any
console error (a Content-Security-Policy violation is one), a page without the site header
(an error page is a page too), and a chart container that has not drawn. It saves a
screenshot of every page under `<data dir>/tour/<user>/` for a reviewer to look at, and
measures how long the first chart page takes to draw its charts in a fresh browser (as
`make bench` does, tests.bench_pages.first_chart_page_seconds) into its report and prints
it; a time is a benchmark's figure, never a test's verdict (the target is 1.0 s)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page
from playwright.sync_api import Error as PlaywrightError
from pytest_django.live_server_helper import LiveServer

from apps.accounts.models import Team, User
from apps.deployments.models import (
    LATENCY_BUCKETS_MS,
    Deployment,
    DeploymentStatus,
    RequestStats,
    Revision,
    RevisionStatus,
    RolloutEvent,
    RolloutStep,
)
from apps.launches import tasks
from apps.launches.models import Launch, Sweep, SweepStatus, Template
from apps.projects.models import Project
from apps.registry.models import RegisteredModel
from apps.registry.services import create_request
from apps.registry.tasks import reconcile_aliases
from tests.bench_pages import (
    FIRST_CHART_TARGET_SECONDS,
    first_chart_page_seconds,
    tour_runs,
)
from tests.conftest import PASSWORD, api_for
from tests.launches.conftest import FakeBackend, eager_tasks, fake_backend, make_template  # noqa: F401
from tests.registry.conftest import Registered

pytestmark = [pytest.mark.browser, pytest.mark.mlflow, pytest.mark.django_db(transaction=True)]

STEP_MS = 30_000  # a busy build machine: MLflow, the live server and Chromium share two cores
CHART_MS = 20_000

# Routes that are not pages a person opens: state changes (POST only), files, probes.
NOT_PAGES = {
    "logout": "POST: signs out",
    "account-time-zone": "POST: saves the time zone",
    "token-revoke": "POST",
    "teams:member-add": "POST",
    "teams:member-role": "POST",
    "teams:member-remove": "POST",
    "projects:access-sync": "the access card's former address: a redirect to the project page",
    "projects:edit": "POST (the project page holds the form)",
    "gpus:prices": "POST (the GPU usage page holds the form)",
    "projects:attach-experiment": "POST",
    "projects:restore-experiment": "POST",
    "projects:replace-experiment": "POST",
    "environments:change": "POST (the environment page holds the forms)",
    "environments:set-default": "POST",
    "environments:rebuild": "POST",
    "launches:cancel": "POST",
    "launches:sweep-cancel": "POST",
    "launches:sweep-extend": "POST (the sweep page holds the form)",
    "registry:attach": "POST",
    "registry:rollback": "POST",
    "registry:request-approve": "POST",
    "registry:request-reject": "POST",
    "registry:request-withdraw": "POST",
    "gpus:exempt": "POST",
    "gpus:unexempt": "POST",
    "gpus:usage-csv": "a CSV download",
    "audit-export": "a CSV download",
    "tracking:artifact": "a file download",
    "console:user-deactivate": "POST",
    "console:user-reactivate": "POST",
    "console:user-unlock": "POST",
    "console:token-revoke": "POST",
    "console:team-budget": "POST",
    "console:sso-add": "POST",
    "console:sso-delete": "POST",
    "console:project-sync": "POST",
    "deployments:delete": "POST",
    "deployments:rollback": "POST",
    "deployments:try": "POST (the deployment page holds the form)",
    "deployments:key-create": "POST",
    "deployments:key-revoke": "POST",
    "healthz": "a probe for the load balancer",
    "readyz": "a probe for the load balancer",
    "login": "toured signed out, first",
}


@dataclass
class Day:
    """What the tour's pages show: the objects each URL names."""

    project: Project
    launch: Launch
    sweep: Sweep
    template: Template
    model: str
    request_pk: int
    run_ids: list[str]
    trial_run: str
    deployment_pk: int = 0
    environment_pk: int = 0


def page_urls(day: Day) -> dict[str, str]:
    """Every page of the portal, by URL name → path (with a query where the page needs one)."""
    team, slug = day.project.team.slug, day.project.slug
    full = f"{team}/{slug}"
    return {
        "home": "/",
        "account": "/account/",
        "teams:list": "/teams/",
        "teams:create": "/teams/new/",
        "teams:detail": f"/teams/{team}/",
        "projects:list": "/projects/",
        "projects:create": "/projects/new/",
        "projects:detail": f"/projects/{full}/",
        "launches:list": "/launches/",
        "launches:create": f"/launches/new/?project={full}&template={day.template.slug}",
        "launches:detail": f"/launches/{day.launch.pk}/",
        "launches:sweep-list": "/launches/sweeps/",
        "launches:sweep-create": f"/launches/sweeps/new/?project={full}&template={day.template.slug}",
        "launches:sweep-detail": f"/launches/sweeps/{day.sweep.pk}/",
        "tracking:index": "/runs/",
        "tracking:compare": "/runs/compare/?run_ids=" + ",".join(day.run_ids),
        "tracking:runs": f"/runs/{full}/",
        "tracking:run": f"/runs/{full}/{day.run_ids[0]}/",
        "registry:index": "/models/",
        "registry:inbox": "/models/approvals/",
        "registry:project": f"/models/projects/{full}/",
        "registry:policy": f"/models/projects/{full}/policy/",
        "registry:webhook": f"/models/teams/{team}/webhook/",
        "registry:model": f"/models/registered/{day.model}/",
        "registry:request-create": f"/models/registered/{day.model}/promote/?version=2",
        "registry:request": f"/models/requests/{day.request_pk}/",
        "deployments:list": "/deployments/",
        "deployments:project": f"/deployments/projects/{full}/",
        "deployments:create": f"/deployments/projects/{full}/new/?model={day.model}",
        "deployments:detail": f"/deployments/{day.deployment_pk}/",
        "deployments:edit": f"/deployments/{day.deployment_pk}/edit/",
        "environments:list": "/environments/",
        "environments:create": "/environments/new/",
        "environments:detail": f"/environments/{day.environment_pk}/",
        "environments:new-version": f"/environments/{day.environment_pk}/versions/new/",
        "gpus:index": "/gpus/",
        "gpus:idle": "/gpus/idle/",
        "gpus:usage": "/gpus/usage/",
        "gpus:policy": f"/gpus/policy/{full}/",
        "gpus:launch-usage": f"/gpus/launches/{day.launch.pk}/",
        "audit": "/audit/",
        "console:index": "/console/",
        "console:user-list": "/console/users/",
        "console:user-create": "/console/users/new/",
        "console:user-detail": "/console/users/ada/",
        "console:team-list": "/console/teams/",
        "console:team-detail": f"/console/teams/{team}/",
        "console:project-list": "/console/projects/",
        "console:project-detail": f"/console/projects/{full}/",
        "console:template-list": "/console/templates/",
        "console:template-create": "/console/templates/new/",
        "console:template-edit": f"/console/templates/{day.template.pk}/",
        "status": "/status/",
    }


def portal_routes() -> set[str]:
    """The names of every route of the URL conf outside the API, the Django admin and static files."""
    names: set[str] = set()

    def walk(patterns: list[Any], prefix: str, namespace: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                inner = ":".join(filter(None, [namespace, pattern.namespace or ""]))
                walk(pattern.url_patterns, prefix + str(pattern.pattern), inner)
            elif isinstance(pattern, URLPattern) and pattern.name:
                route = prefix + str(pattern.pattern)
                if not route.startswith(("api/", "admin/", "static/", "serve/")):
                    names.add(":".join(filter(None, [namespace, pattern.name])))

    walk(get_resolver().url_patterns, "", "")
    return names


def test_every_page_of_the_url_conf_is_toured() -> None:
    """A new route is either a page the tour opens or named in NOT_PAGES with the reason."""
    toured = set(_PAGE_NAMES)
    missing = portal_routes() - toured - set(NOT_PAGES)
    assert not missing, f"routes neither toured nor named in NOT_PAGES: {sorted(missing)}"
    stale = (toured | set(NOT_PAGES)) - portal_routes()
    assert not stale, f"the tour names routes the URL conf no longer has: {sorted(stale)}"


# The names only (the paths need the day's objects).
_PAGE_NAMES = [
    "home",
    "account",
    "teams:list",
    "teams:create",
    "teams:detail",
    "projects:list",
    "projects:create",
    "projects:detail",
    "launches:list",
    "launches:create",
    "launches:detail",
    "launches:sweep-list",
    "launches:sweep-create",
    "launches:sweep-detail",
    "tracking:index",
    "tracking:compare",
    "tracking:runs",
    "tracking:run",
    "registry:index",
    "registry:inbox",
    "registry:project",
    "registry:policy",
    "registry:webhook",
    "registry:model",
    "registry:request-create",
    "registry:request",
    "deployments:list",
    "deployments:project",
    "deployments:create",
    "deployments:detail",
    "deployments:edit",
    "environments:list",
    "environments:create",
    "environments:detail",
    "environments:new-version",
    "gpus:index",
    "gpus:idle",
    "gpus:usage",
    "gpus:policy",
    "gpus:launch-usage",
    "audit",
    "console:index",
    "console:user-list",
    "console:user-create",
    "console:user-detail",
    "console:team-list",
    "console:team-detail",
    "console:project-list",
    "console:project-detail",
    "console:template-list",
    "console:template-create",
    "console:template-edit",
    "status",
]


# --- the day's data ---------------------------------------------------------------------------
def _finish_sweep(sweep: Sweep, backend: FakeBackend, registered: Registered) -> None:
    """Run the sweep to the end on the fake backend, each trial logging its objective to MLflow
    as a training script would (a curve over steps, the last value the trial's result)."""
    for _round in range(40):
        sweep.refresh_from_db()
        if sweep.status != SweepStatus.RUNNING:
            return
        for pk in backend.live_pks():
            trial = Launch.objects.get(pk=pk)
            lr = float(trial.parameters.get("lr", 0.01))
            final = 0.99 - abs(math.log10(lr) + 2) * 0.08
            for step in range(5):
                registered.client.log_metric(trial.mlflow_run_id, "accuracy", final - 0.1 * (4 - step) / 4, step=step)
            backend.output[pk] = [f"epoch {i}: accuracy {final:.3f}" for i in range(40)]
            backend.set_state(pk, "running")
            backend.set_state(pk, "succeeded", exit_code=0)
        tasks.sync_launches()
    raise AssertionError(f"sweep {sweep.pk} did not finish: {sweep.status}")


@pytest.fixture
def day(
    ada: User,
    lin: User,
    vic: User,
    root: User,
    team: Team,
    project: Project,
    mlflow_up: str,
    fake_backend: FakeBackend,  # noqa: F811
    eager_tasks: None,  # noqa: F811
) -> Day:
    registered = Registered(mlflow_up)
    model = registered.model("demo/demo", [{"accuracy": 0.91, "f1": 0.90}, {"accuracy": 0.96, "f1": 0.95}], "digits")
    registered.client.set_registered_model_alias(model, "champion", "1")
    project.refresh_from_db()
    experiment_id = project.mlflow_experiment_id
    client = registered.client
    run_ids = tour_runs(client, experiment_id)  # scripts' runs and a person's own (NaN, one value)

    train = make_template(
        team,
        "train",
        ["python", "train.py"],
        parameters={
            "lr": {"type": "float", "default": 0.01, "min": 0.00001, "max": 1.0},
            "batch": {"type": "choice", "choices": [16, 32, 64], "default": 32},
        },
    )
    made = api_for(ada).post(
        "/api/v1/sweeps/",
        {
            "project": "demo/demo",
            "template": "train",
            "strategy": "grid",
            "space": {"lr": [0.001, 0.01, 0.1], "batch": [16, 32]},
            "max_trials": 6,
            "parallelism": 2,
            "metric": "accuracy",
        },
        format="json",
    )
    assert made.status_code == 201, made.json()
    sweep = Sweep.objects.get(pk=made.json()["id"])
    _finish_sweep(sweep, fake_backend, registered)

    launched = api_for(ada).post(
        "/api/v1/launches/", {"project": "demo/demo", "template": "train", "parameters": {"lr": 0.05}}, format="json"
    )
    assert launched.status_code == 201, launched.json()
    launch = Launch.objects.get(pk=launched.json()["id"])
    fake_backend.output[launch.pk] = [f"step {i}: loss {1 / (i + 1):.4f}" for i in range(300)]
    fake_backend.set_state(launch.pk, "running")
    tasks.sync_launches()  # a running launch: its page polls
    for parameters, end, code in (({"lr": 0.5}, "failed", 1), ({"lr": 0.2}, "cancelled", -15)):
        other = api_for(ada).post(
            "/api/v1/launches/", {"project": "demo/demo", "template": "train", "parameters": parameters}, format="json"
        )
        assert other.status_code == 201, other.json()
        fake_backend.set_state(other.json()["id"], end, "the fake backend's reason", exit_code=code)
    tasks.sync_launches()

    reconcile_aliases()  # Plinth's registry rows and alias history start from what MLflow says
    registered_model = RegisteredModel.objects.get(name=model)
    request = create_request(ada, registered_model, version=2, alias="champion", justification="More accurate.")
    trial = Launch.objects.filter(sweep=sweep).exclude(mlflow_run_id="").first()
    assert trial is not None
    deployment = _serving_deployment(project, model, ada)
    from apps.environments import services as environment_services

    image = "registry.example/ml/cv-base:1.2@sha256:" + "0" * 64
    environment = environment_services.create_environment(
        root, name="cv-base", description="Vision models' base image", image=image
    )
    return Day(
        project=project,
        launch=launch,
        sweep=sweep,
        template=train,
        model=model,
        request_pk=request.pk,
        run_ids=run_ids,
        trial_run=trial.mlflow_run_id,
        deployment_pk=deployment.pk,
        environment_pk=environment.pk,
    )


def _serving_deployment(project: Project, model: str, ada: User) -> Deployment:
    """A deployment of the model serving version 1 (rows only: no model server runs), with a
    canary of version 2 and a few minutes of request numbers for its charts, and its timeline."""
    deployment = Deployment.objects.create(
        project=project,
        name="digits-api",
        model_name=model,
        backend="local",
        created_by=ada,
        status=DeploymentStatus.ROLLING_OUT,
    )
    now = timezone.now()
    stable = Revision.objects.create(
        deployment=deployment, number=1, version=1, status=RevisionStatus.SERVING, traffic=90, serving_at=now
    )
    canary = Revision.objects.create(
        deployment=deployment,
        number=2,
        version=2,
        status=RevisionStatus.SERVING,
        traffic=10,
        is_canary=True,
        canary_started_at=now,
    )
    for revision, requests, errors in ((stable, 90, 1), (canary, 10, 2)):
        RolloutEvent.objects.create(deployment=deployment, revision=revision, step=RolloutStep.STARTED)
        for minutes in range(1, 4):
            buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
            buckets[2], buckets[4] = requests - 5, 5
            RequestStats.objects.create(
                revision=revision,
                minute=(now - timedelta(minutes=minutes)).replace(second=0, microsecond=0),
                writer="tour:1",
                requests=requests,
                errors_5xx=errors,
                latency_ms_sum=20.0 * requests,
                latency_buckets=buckets,
            )
    return deployment


# --- the checks -------------------------------------------------------------------------------
CHARTS_STATE = """() => Array.from(document.querySelectorAll(".chart")).map((el) => ({
    id: el.id || el.getAttribute("data-chart") || el.className,
    drawn: !!el.querySelector(".main-svg, canvas"),
    empty: el.hasAttribute("data-empty") || !!el.querySelector(".empty"),
}))"""


def wait_for_charts(page: Page) -> list[str]:
    """Scroll every chart container into view and wait until it has drawn (or says it is empty);
    the ids of those that never did."""
    undrawn: list[str] = []
    for index in range(page.locator(".chart").count()):
        chart = page.locator(".chart").nth(index)
        chart.scroll_into_view_if_needed()
        try:
            page.wait_for_function(
                """(i) => { const el = document.querySelectorAll(".chart")[i];
                    return !el || !!el.querySelector(".main-svg, canvas") || el.hasAttribute("data-empty")
                        || !!el.querySelector(".empty"); }""",
                arg=index,
                timeout=CHART_MS,
            )
        except Exception:
            undrawn.append(chart.get_attribute("id") or chart.get_attribute("data-chart") or f"chart #{index}")
    return undrawn


@dataclass
class Visit:
    name: str
    path: str
    status: int
    problems: list[str]


def tour(context: BrowserContext, base: str, pages: dict[str, str], folder: Path) -> list[Visit]:
    """Open each page in a tab of its own, check it and screenshot it; what was wrong, per page."""
    folder.mkdir(parents=True, exist_ok=True)
    visits: list[Visit] = []
    for name, path in pages.items():
        page = context.new_page()
        console: list[str] = []
        errors: list[str] = []

        def on_console(message: ConsoleMessage, console: list[str] = console) -> None:
            # A 4xx page is expected for some roles; Chromium logs its main document as an error.
            if message.type == "error" and "the server responded with a status of 4" not in message.text:
                console.append(message.text)

        def on_error(exc: PlaywrightError, errors: list[str] = errors) -> None:
            errors.append(str(exc))

        page.on("console", on_console)
        page.on("pageerror", on_error)
        try:
            visits.append(visit(page, name, base + path, folder, console, errors))
        except PlaywrightError as exc:  # e.g. an error status with an empty body: no page at all
            answer = context.request.get(base + path, max_redirects=0)
            visits.append(Visit(name, path, answer.status, [f"no page: {exc.message.splitlines()[0]}"]))
        finally:
            page.close()
    return visits


def visit(page: Page, name: str, url: str, folder: Path, console: list[str], errors: list[str]) -> Visit:
    response = page.goto(url, wait_until="load")
    status = response.status if response else 0
    problems: list[str] = []
    if status >= 500 or status == 0:
        problems.append(f"answered {status}")
    if page.locator("header.topbar a.brand").count() != 1:
        problems.append("no site header")
    problems += [f"chart not drawn: {chart}" for chart in wait_for_charts(page)]
    page.wait_for_timeout(150)  # console messages of the last draw arrive asynchronously
    problems += [f"console: {text}" for text in console] + [f"page error: {text}" for text in errors]
    page.screenshot(path=str(folder / f"{name.replace(':', '-')}.png"), full_page=True)
    return Visit(name, url.split("/", 3)[-1], status, problems)


def sign_in(page: Page, base: str, user: User) -> None:
    page.goto(f"{base}/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/login/" not in url)


def test_a_tour_of_every_page_as_each_role(
    browser: Browser, live_server: LiveServer, day: Day, ada: User, lin: User, vic: User, root: User
) -> None:
    base = live_server.url
    pages = page_urls(day)
    assert set(pages) == set(_PAGE_NAMES)
    out = Path(settings.DATA_DIR) / "tour"
    report: dict[str, list[dict[str, Any]]] = {}
    failures: list[str] = []

    context = browser.new_context(viewport={"width": 1366, "height": 900}, locale="en-US")
    context.set_default_timeout(STEP_MS)
    for seen in tour(context, base, {"login": "/login/"}, out / "anonymous"):
        failures += [f"anonymous {seen.path}: {problem}" for problem in seen.problems]
    context.close()

    for user in (ada, lin, vic, root):
        context = browser.new_context(viewport={"width": 1366, "height": 900}, locale="en-US")
        context.set_default_timeout(STEP_MS)
        page = context.new_page()
        sign_in(page, base, user)
        visits = tour(context, base, pages, out / user.username)
        report[user.username] = [{"page": v.name, "status": v.status, "problems": v.problems} for v in visits]
        failures += [f"{user.username} {v.path} ({v.status}): {p}" for v in visits for p in v.problems]
        context.close()

    # The first chart page in a fresh browser, measured as `make bench` measures it (tests.bench_pages).
    compare = pages["tracking:compare"]
    seconds = first_chart_page_seconds(browser, base, compare, lambda page: sign_in(page, base, ada), CHART_MS)
    (out / "report.json").write_text(
        json.dumps(
            {"first_chart_page_seconds": seconds, "target_seconds": FIRST_CHART_TARGET_SECONDS, "visits": report},
            indent=1,
        )
    )
    print(
        f"\ntour: screenshots and report under {out}; first chart page drew in {seconds:.2f} s "
        f"(target {FIRST_CHART_TARGET_SECONDS:.1f} s)"
    )
    assert not failures, f"{len(failures)} problems on the tour:\n" + "\n".join(failures)
    # The roles see different things: the tour did reach pages each role may open.
    for username, rows in report.items():
        opened = [row for row in rows if row["status"] == 200]
        assert len(opened) >= 20, f"{username} opened only {len(opened)} pages"
