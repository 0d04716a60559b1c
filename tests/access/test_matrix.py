"""Who may do what, on every route: one MATRIX, checked against the URL conf and the
OpenAPI schema, so a route added without an entry fails the suite.

Every named route outside the Django admin has one entry. Each entry says how to build
its URL and, per HTTP method, what four callers get (an operation may build its own URL,
as "someone else's launch" does, and tell itself apart from its sibling with a note):

  anonymous  pages redirect to /login/?next=<path>; the API answers 401
             (unless the operation is declared `public`, with the reason beside it)
  outsider   omar, a member of team "other": 404 for team demo's objects, or the
             entry's stated code (200 for lists that are simply scoped, 403 for
             platform-admin pages and for rights no team role of his grants)
  too weak   the role just below the weakest allowed one: 403
  allowed    the weakest allowed user: the entry's success status

Users, weakest first: vic (viewer of demo) < ada (member) < lin (lead) < root
(platform admin, in no team). bea, a second member of demo, only owns launches and sweeps.
Where the code still differs from the matrix, KNOWN_BUGS holds the case as a strict xfail.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, resolve, reverse
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from apps.access.roles import Role
from apps.accounts import services as account_services
from apps.accounts.models import Membership, User
from apps.launches import services as launch_services
from apps.launches import sweeps as sweep_services
from apps.launches.demo import SKLEARN_DIGITS
from apps.launches.models import Launch, Status, Sweep, Template
from apps.projects.models import ExperimentState, Project
from apps.tracking.gateway import MlflowGateway
from portal.celery import app as celery_app
from tests.access.matrix_vocab import (
    ANSWERED,
    API_VIC_IN_DEMO,
    DEMO,
    DEMO_PROJECT,
    NONE,
    VIC_IN_DEMO,
    Body,
    Codes,
    Kwargs,
    Op,
    Route,
    World,
    route,
)
from tests.conftest import PASSWORD, api_for, client_for, make_user

NEW_TEAM = {"slug": "fresh", "name": "Fresh team", "description": "", "gpu_budget": 2}
PAGE_NEW_TEAM = {**NEW_TEAM, "lead": ""}
NEW_PROJECT = {"team": "demo", "slug": "fresh", "name": "Fresh project", "gpu_quota": 0, "backend": "local"}
PAGE_NEW_PROJECT = {**NEW_PROJECT, "description": "", "namespace": "", "mlflow_experiment": ""}
PROJECT_EDIT = {"name": "Renamed", "description": "", "gpu_quota": 2, "backend": "local"}

LAUNCH: Kwargs = lambda w: {"pk": w.launch.pk}  # noqa: E731 - a table of small functions
OTHERS_LAUNCH: Kwargs = lambda w: {"pk": w.others_launch.pk}  # noqa: E731
SWEEP: Kwargs = lambda w: {"pk": w.sweep.pk}  # noqa: E731
OTHERS_SWEEP: Kwargs = lambda w: {"pk": w.others_sweep.pk}  # noqa: E731
GLOBAL_TEMPLATE: Kwargs = lambda w: {"pk": w.template.pk}  # noqa: E731
TEAM_TEMPLATE: Kwargs = lambda w: {"pk": w.team_template.pk}  # noqa: E731
PAGE_LAUNCH: Body = lambda w: {  # noqa: E731
    "template": "sklearn-digits",
    "project": w.project.pk,
    "name": "",
    "param_epochs": 20,
    "param_learning_rate": 0.01,
    "param_alpha": 0.0001,
    "param_register_model": "",
    "param_seed": 0,
    "param_sleep_per_epoch": 0,
    "cpu": "1",
    "memory": "1Gi",
    "gpus": 0,
    "gpu_product": "",
}
PAGE_SWEEP: Body = lambda w: {  # noqa: E731
    "template": "sklearn-digits",
    "project": w.project.pk,
    "name": "",
    "strategy": "grid",
    "space": '{"alpha": [0.0001, 0.001]}',
    "max_trials": 2,
    "parallelism": 1,
    "metric": "accuracy",
    "direction": "max",
}
NEW_LAUNCH = {"project": "demo/demo", "template": "sklearn-digits", "parameters": {"epochs": 20}}
NEW_SWEEP = {
    "project": "demo/demo",
    "template": "sklearn-digits",
    "strategy": "grid",
    "space": {"alpha": [0.0001, 0.001]},
    "max_trials": 2,
    "parallelism": 1,
    "metric": "accuracy",
}
NEW_GLOBAL_TEMPLATE = {"slug": "fresh", "image": "python:3.12", "command": ["python", "-V"], "backends": ["local"]}
NEW_TEAM_TEMPLATE = {**NEW_GLOBAL_TEMPLATE, "team": "demo"}

MATRIX: dict[str, Route] = {
    # --- pages ---------------------------------------------------------------------------
    "home": route(NONE, Op("GET", "vic", outsider=200)),
    # Public: the way in. Signed-in people are sent home instead of shown the form.
    "login": route(
        NONE,
        Op("GET", "vic", ok=302, outsider=302, public=200),
        Op("POST", "vic", ok=302, outsider=302, public=302, body={"username": "vic", "password": PASSWORD}),
    ),
    # Public: signing out when not signed in just lands on the login page.
    "logout": route(NONE, Op("POST", "vic", ok=302, outsider=302, public=302)),
    "account": route(
        NONE,
        Op("GET", "vic", outsider=200),
        Op("POST", "vic", ok=302, outsider=302, body={"name": "laptop"}),  # post/redirect/get
    ),
    # One's own tokens only: anybody else's token id is a 404, for platform admins too.
    "token-revoke": route(lambda w: {"pk": w.ada_token.pk}, Op("POST", "ada", ok=302, admin=404)),
    "teams:list": route(NONE, Op("GET", "vic", outsider=200)),
    "teams:create": route(
        NONE,
        Op("GET", "root", too_weak="lin", outsider=403),
        Op("POST", "root", ok=302, too_weak="lin", outsider=403, body=PAGE_NEW_TEAM),
    ),
    "teams:detail": route(DEMO, Op("GET", "vic")),
    "teams:member-add": route(
        DEMO, Op("POST", "lin", ok=302, too_weak="ada", body={"username": "omar", "role": "viewer"})
    ),
    "teams:member-role": route(VIC_IN_DEMO, Op("POST", "lin", ok=302, too_weak="ada", body={"role": "member"})),
    "teams:member-remove": route(VIC_IN_DEMO, Op("POST", "lin", ok=302, too_weak="ada")),
    "projects:list": route(NONE, Op("GET", "vic", outsider=200)),
    # Omar leads no team, so he may create projects nowhere: 403, not 404.
    "projects:create": route(
        NONE,
        Op("GET", "lin", too_weak="ada", outsider=403),
        Op("POST", "lin", ok=302, too_weak="ada", outsider=403, body=PAGE_NEW_PROJECT),
    ),
    "projects:detail": route(DEMO_PROJECT, Op("GET", "vic")),
    "projects:edit": route(DEMO_PROJECT, Op("POST", "lin", ok=302, too_weak="ada", body=PROJECT_EDIT)),
    # Launches and sweeps: viewers watch, members launch and cancel their own, leads cancel
    # anyone's in their team. Lists are scoped, so omar gets 200 with none of demo's rows.
    "launches:list": route(NONE, Op("GET", "vic", outsider=200)),
    # Without ?template= the page is the template picker, which global templates put in
    # front of every signed-in user.
    "launches:create": route(
        NONE,
        Op("GET", "vic", outsider=200),
        Op("POST", "ada", ok=302, too_weak="vic", body=PAGE_LAUNCH),
    ),
    "launches:detail": route(LAUNCH, Op("GET", "vic")),
    "launches:cancel": route(
        LAUNCH,
        Op("POST", "ada", ok=302, too_weak="vic", note="own"),
        Op("POST", "lin", ok=302, too_weak="ada", kwargs=OTHERS_LAUNCH, note="someone else's"),
    ),
    "launches:sweep-list": route(NONE, Op("GET", "vic", outsider=200)),
    "launches:sweep-create": route(
        NONE,
        Op("GET", "vic", outsider=200),
        Op("POST", "ada", ok=302, too_weak="vic", body=PAGE_SWEEP),
    ),
    "launches:sweep-detail": route(SWEEP, Op("GET", "vic")),
    "launches:sweep-cancel": route(
        SWEEP,
        Op("POST", "ada", ok=302, too_weak="vic", note="own"),
        Op("POST", "lin", ok=302, too_weak="ada", kwargs=OTHERS_SWEEP, note="someone else's"),
    ),
    # Leads see their teams' events; omar leads no team.
    "audit": route(NONE, Op("GET", "lin", too_weak="ada", outsider=403)),
    "status": route(
        NONE,
        Op("GET", "root", too_weak="lin", outsider=403),
        Op("POST", "root", ok=302, too_weak="lin", outsider=403),
    ),
    # Public: probes of the load balancer and the orchestrator carry no credentials.
    "healthz": route(NONE, Op("GET", "vic", outsider=200, public=200)),
    "readyz": route(NONE, Op("GET", "vic", ok=ANSWERED, outsider=ANSWERED, public=ANSWERED)),
    # --- API -----------------------------------------------------------------------------
    # Public: this is where a password becomes a token, so it cannot require one.
    "api:auth-token": route(
        NONE,
        Op("POST", "vic", outsider=200, public=200, body={"username": "vic", "password": PASSWORD, "name": "cli"}),
    ),
    "api:me": route(NONE, Op("GET", "vic", outsider=200)),
    # Public, as the code stands: drf-spectacular serves the schema and its Swagger page
    # with AllowAny unless SPECTACULAR_SETTINGS["SERVE_PERMISSIONS"] says otherwise, and
    # the settings don't. To require a sign-in, set it to IsAuthenticated, drop `public`
    # here and drop both names from PUBLIC_ROUTES: anonymous callers then get 401.
    "api:schema": route(NONE, Op("GET", "vic", outsider=200, public=200)),
    "api:docs": route(NONE, Op("GET", "vic", outsider=200, public=200)),
    "api:team-list": route(
        NONE,
        Op("GET", "vic", outsider=200),
        Op("POST", "root", ok=201, too_weak="lin", outsider=403, body=NEW_TEAM),
    ),
    "api:team-detail": route(
        DEMO,
        Op("GET", "vic"),
        Op("PATCH", "lin", too_weak="ada", body={"name": "Renamed"}, note="name"),
        Op("PATCH", "root", too_weak="lin", body={"gpu_budget": 16}, note="gpu_budget"),
    ),
    "api:member-list": route(
        {"team_slug": "demo"},
        Op("GET", "vic"),
        Op("POST", "lin", ok=201, too_weak="ada", body={"username": "omar", "role": "viewer"}),
    ),
    "api:member-detail": route(
        API_VIC_IN_DEMO,
        Op("GET", "vic"),
        Op("PATCH", "lin", too_weak="ada", body={"role": "member"}),
        Op("DELETE", "lin", ok=204, too_weak="ada"),
    ),
    "api:project-list": route(
        NONE,
        Op("GET", "vic", outsider=200),
        Op("POST", "lin", ok=201, too_weak="ada", body=NEW_PROJECT),
    ),
    "api:project-detail": route(
        lambda w: {"pk": w.project.pk},
        Op("GET", "vic"),
        Op("PATCH", "lin", too_weak="ada", body={"name": "Renamed"}),
    ),
    "api:audit-list": route(NONE, Op("GET", "lin", too_weak="ada", outsider=403)),
    # Global templates: every signed-in user sees them, platform admins manage them (omar
    # gets 403, not 404: the template is not hidden from him). Team templates: the team's.
    "api:template-list": route(
        NONE,
        Op("GET", "vic", outsider=200),
        Op("POST", "lin", ok=201, too_weak="ada", body=NEW_TEAM_TEMPLATE, note="team's"),
        Op("POST", "root", ok=201, too_weak="lin", outsider=403, body=NEW_GLOBAL_TEMPLATE, note="global"),
    ),
    "api:template-detail": route(
        GLOBAL_TEMPLATE,
        Op("GET", "vic", outsider=200, note="global"),
        Op("GET", "vic", kwargs=TEAM_TEMPLATE, note="team's"),
        Op("PATCH", "root", too_weak="lin", outsider=403, body={"name": "Renamed"}, note="global"),
        Op("PATCH", "lin", too_weak="ada", body={"name": "Renamed"}, kwargs=TEAM_TEMPLATE, note="team's"),
    ),
    "api:launch-list": route(
        NONE,
        Op("GET", "vic", outsider=200),
        Op("POST", "ada", ok=201, too_weak="vic", body=NEW_LAUNCH),
    ),
    "api:launch-detail": route(LAUNCH, Op("GET", "vic")),
    "api:launch-cancel": route(
        LAUNCH,
        Op("POST", "ada", too_weak="vic", note="own"),
        Op("POST", "lin", too_weak="ada", kwargs=OTHERS_LAUNCH, note="someone else's"),
    ),
    "api:launch-logs": route(LAUNCH, Op("GET", "vic")),
    "api:sweep-list": route(
        NONE,
        Op("GET", "vic", outsider=200),
        Op("POST", "ada", ok=201, too_weak="vic", body=NEW_SWEEP),
    ),
    "api:sweep-detail": route(SWEEP, Op("GET", "vic")),
    "api:sweep-insights": route(SWEEP, Op("GET", "vic")),
    "api:sweep-cancel": route(
        SWEEP,
        Op("POST", "ada", too_weak="vic", note="own"),
        Op("POST", "lin", too_weak="ada", kwargs=OTHERS_SWEEP, note="someone else's"),
    ),
}

# Where the code does not yet do what MATRIX says: (case, caller) -> the bug. Each is a
# strict xfail: once the bug is fixed the test passes, xfail turns that into a failure,
# and the entry is removed here.
# Apps added later bring their own entries (tests/<app>/matrix.py), so that work on
# different apps never edits this file at the same time.
EXTENSIONS = [
    importlib.import_module(f"tests.{path.parent.name}.matrix")
    for path in sorted(Path(__file__).resolve().parents[1].glob("*/matrix.py"))
]
for _extension in EXTENSIONS:
    MATRIX.update(_extension.MATRIX)

KNOWN_BUGS: dict[tuple[str, str], str] = {}

# Public on purpose. Making a route public takes an edit here as well as in MATRIX.
# The inference gateway (serve:invoke) answers 401 itself: it takes tokens and serving keys, no session.
PUBLIC_ROUTES = {"login", "logout", "healthz", "readyz", "api:auth-token", "api:schema", "api:docs", "serve:invoke"}
# drf-spectacular leaves its own views out of the schema it generates.
NOT_IN_OPENAPI = {"api:schema", "api:docs"}


# --- cases, requests -----------------------------------------------------------------
def codes(value: Codes) -> tuple[int, ...]:
    return (value,) if isinstance(value, int) else value


@dataclass(frozen=True)
class Case:
    name: str
    kwargs: Kwargs
    op: Op

    @property
    def is_api(self) -> bool:
        return self.name.startswith("api:")

    def url(self, world: World) -> str:
        kwargs = self.kwargs(world) if callable(self.kwargs) else self.kwargs
        return reverse(self.name, kwargs=dict(kwargs))

    def __str__(self) -> str:
        return f"{self.name} {self.op.method}" + (f" {self.op.note}" if self.op.note else "")


CASES = [
    Case(name, entry.kwargs if op.kwargs is None else op.kwargs, op)
    for name, entry in MATRIX.items()
    for op in entry.ops
]


def cases(keep: Callable[[Case], bool] = lambda case: True, *, caller: str = "") -> Any:
    """Parametrize over the cases `keep` accepts; a case listed in KNOWN_BUGS for `caller`
    is a strict xfail, so the fix of the bug turns it into a failure to clean up."""

    def param(case: Case) -> Any:
        bug = KNOWN_BUGS.get((str(case), caller))
        return pytest.param(case, marks=pytest.mark.xfail(strict=True, reason=bug)) if bug else case

    return pytest.mark.parametrize("case", [param(c) for c in CASES if keep(c)], ids=str)


def send(case: Case, world: World, who: str | None) -> Any:
    """Pages through a signed-in Django test client, the API through DRF's client."""
    user = world.users[who] if who else None
    method = case.op.method.lower()
    url = case.url(world)
    given = case.op.body or {}
    body = dict(given(world) if callable(given) else given)
    if case.is_api:
        api: APIClient = api_for(user)
        return getattr(api, method)(url, body, format="json") if body else getattr(api, method)(url)
    return getattr(client_for(user), method)(url, body)


def describe(response: Any) -> str:
    location = f" -> {response['Location']}" if response.has_header("Location") else ""
    return f"{response.status_code}{location}"


@dataclass
class Sent:
    """Tasks the launch services asked to send after commit, captured instead of sent."""

    tasks: list[tuple[str, tuple[Any, ...]]]


@pytest.fixture(autouse=True)
def sent(monkeypatch: pytest.MonkeyPatch, settings: Any, tmp_path: Any) -> Sent:
    """No MLflow, no broker, no backend for the launch routes: MLflow's run calls answer
    from here, the tasks that would submit or cancel on a backend are recorded, not sent,
    and the local backend's folders (logs) live under tmp_path."""
    settings.DATA_DIR = tmp_path
    runs = iter(range(1, 10_000))
    monkeypatch.setattr(MlflowGateway, "create_run", lambda self, *a, **k: f"run-{next(runs)}")
    monkeypatch.setattr(MlflowGateway, "set_tag", lambda self, *a, **k: None)
    monkeypatch.setattr(MlflowGateway, "delete_run", lambda self, *a, **k: None)
    monkeypatch.setattr(MlflowGateway, "search_runs", lambda self, *a, **k: ([], ""))
    captured = Sent(tasks=[])

    def record(task: Any, *args: Any) -> None:
        captured.tasks.append((task.name.rsplit(".", 1)[-1], args))

    monkeypatch.setattr(launch_services, "enqueue_on_commit", record)
    monkeypatch.setattr(sweep_services, "enqueue_on_commit", record)
    return captured


def _running_sweep(project: Project, template: Template, user: User, status: str) -> Sweep:
    sweep = Sweep.objects.create(
        project=project,
        template=template,
        created_by=user,
        strategy="grid",
        space={"alpha": [0.0001, 0.001]},
        planned=[{"alpha": 0.0001}, {"alpha": 0.001}],
        max_trials=2,
        parallelism=1,
        metric="accuracy",
        mlflow_parent_run_id=f"parent-of-{user.username}",
    )
    _launch(project, template, user, status, sweep=sweep)
    return sweep


def _launch(project: Project, template: Template, user: User, status: str, sweep: Sweep | None = None) -> Launch:
    return Launch.objects.create(
        project=project,
        template=template,
        created_by=user,
        sweep=sweep,
        status=status,
        backend="local",
        parameters={"epochs": 20},
        resources={"cpu": "1", "memory": "1Gi", "gpus": 0, "gpu_product": ""},
        mlflow_run_id=f"run-of-{user.username}",
        mlflow_experiment_id="1",
    )


@pytest.fixture
def world(people: dict[str, User], project: Project, other_project: Project, monkeypatch: pytest.MonkeyPatch) -> World:
    token, _ = account_services.create_api_token(people["ada"], name="laptop")
    Project.objects.filter(pk=project.pk).update(mlflow_state=ExperimentState.LINKED, mlflow_experiment_id="1")
    project.refresh_from_db()
    root = people["root"]
    template = launch_services.create_template(root, None, **SKLEARN_DIGITS)
    team_template = launch_services.create_template(root, project.team, **{**SKLEARN_DIGITS, "slug": "demo-digits"})
    bea = make_user("bea")
    Membership.objects.create(team=project.team, user=bea, role=Role.MEMBER)
    ada = people["ada"]
    built = World(
        users=people,
        project=project,
        ada_token=token,
        template=template,
        team_template=team_template,
        launch=_launch(project, template, ada, Status.RUNNING),
        others_launch=_launch(project, template, bea, Status.QUEUED),
        sweep=_running_sweep(project, template, ada, Status.RUNNING),
        others_sweep=_running_sweep(project, template, bea, Status.PENDING),
    )
    for extension in EXTENSIONS:
        extension.extend_world(built, monkeypatch)
    return built


@pytest.fixture(autouse=True)
def _tasks_run_in_process() -> Iterator[None]:
    # The status page's heartbeat button sends a task: run it here rather than leave a
    # message in the developer's broker folder.
    before = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = before


# --- the matrix covers every route ------------------------------------------------------
def named_routes() -> tuple[set[str], list[str]]:
    """Full names ("teams:detail", "api:team-list") of every URL pattern outside the Django
    admin, and the paths of any unnamed ones."""
    names: set[str] = set()
    unnamed: list[str] = []

    def walk(resolver: URLResolver, namespace: tuple[str, ...], prefix: str) -> None:
        for pattern in resolver.url_patterns:
            if isinstance(pattern, URLResolver):
                inner = (*namespace, pattern.namespace) if pattern.namespace else namespace
                if inner[:1] != ("admin",):
                    walk(pattern, inner, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                if pattern.name:
                    names.add(":".join((*namespace, pattern.name)))
                else:
                    unnamed.append(prefix + str(pattern.pattern))

    walk(get_resolver(), (), "/")
    return names, unnamed


def test_every_route_is_in_the_matrix() -> None:
    names, unnamed = named_routes()
    assert not unnamed, f"Give these URL patterns a name and an entry in MATRIX ({__file__}): {unnamed}"
    missing = sorted(names - MATRIX.keys())
    assert not missing, (
        f"New routes without an authorization entry: {missing}. Add each to MATRIX in {__file__}, saying who may "
        "use it and what anonymous callers, outsiders and too-weak roles get."
    )
    stale = sorted(MATRIX.keys() - names)
    assert not stale, f"MATRIX has entries for routes that no longer exist: {stale}. Remove them."


def openapi_operations() -> dict[tuple[str, str], str]:
    """(URL name, METHOD) -> path template, for every operation of the generated schema."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    operations: dict[tuple[str, str], str] = {}
    for template, item in schema["paths"].items():
        # Any "1" fits every path parameter here (slugs, usernames, ids): enough to resolve.
        name = resolve(re.sub(r"\{[^}/]+\}", "1", template)).view_name
        for method in item:
            if method in {"get", "post", "put", "patch", "delete"}:
                operations[(name, method.upper())] = template
    return operations


def test_every_openapi_operation_is_in_the_matrix_and_back() -> None:
    documented = openapi_operations()
    in_matrix = {(c.name, c.op.method) for c in CASES if c.is_api and c.name not in NOT_IN_OPENAPI}
    missing = sorted(
        f"{method} {template} ({name})"
        for (name, method), template in documented.items()
        if (name, method) not in in_matrix
    )
    assert not missing, f"API operations without an authorization entry: {missing}. Add them to MATRIX in {__file__}."
    undocumented = sorted(f"{method} {name}" for name, method in in_matrix - documented.keys())
    assert not undocumented, f"MATRIX lists API operations the OpenAPI schema does not have: {undocumented}."


def test_only_the_listed_routes_are_public() -> None:
    assert {c.name for c in CASES if c.op.public is not None} == PUBLIC_ROUTES


# --- who gets what -----------------------------------------------------------------------
@cases(lambda c: c.op.public is None, caller="anonymous")
def test_anonymous_is_sent_to_login_or_gets_401(case: Case, world: World) -> None:
    response = send(case, world, None)
    if case.is_api:
        assert response.status_code == 401, f"{case}: anonymous got {describe(response)}, expected 401"
        assert response["WWW-Authenticate"].startswith("Token")
    else:
        assert response.status_code == 302, f"{case}: anonymous got {describe(response)}, expected a redirect"
        location = urlsplit(response["Location"])
        assert location.path == reverse("login")
        assert parse_qs(location.query) == {"next": [case.url(world)]}


@cases(lambda c: c.op.public is not None, caller="public")
def test_public_routes_answer_anonymous_callers(case: Case, world: World) -> None:
    assert case.op.public is not None
    response = send(case, world, None)
    assert response.status_code in codes(case.op.public), f"{case}: anonymous got {describe(response)}"


@cases(caller="outsider")
def test_an_outsider_gets_404_or_the_stated_code(case: Case, world: World) -> None:
    response = send(case, world, "omar")
    expected = codes(case.op.outsider)
    assert response.status_code in expected, f"{case}: omar got {describe(response)}, expected {expected}"


@cases(lambda c: c.op.too_weak is not None, caller="too_weak")
def test_a_role_too_weak_gets_403(case: Case, world: World) -> None:
    response = send(case, world, case.op.too_weak)
    assert response.status_code == 403, f"{case}: {case.op.too_weak} got {describe(response)}, expected 403"


@cases(caller="allowed")
def test_the_weakest_allowed_user_succeeds(case: Case, world: World) -> None:
    response = send(case, world, case.op.allowed)
    expected = codes(case.op.ok)
    assert response.status_code in expected, f"{case}: {case.op.allowed} got {describe(response)}, expected {expected}"
    if response.status_code == 302:
        assert "next=" not in response["Location"], f"{case}: {case.op.allowed} was sent to sign in"


@cases(lambda c: c.op.allowed != "root", caller="admin")
def test_a_platform_admin_may_do_everything(case: Case, world: World) -> None:
    response = send(case, world, "root")
    expected = codes(case.op.admin if case.op.admin is not None else case.op.ok)
    assert response.status_code in expected, f"{case}: root got {describe(response)}, expected {expected}"


# --- real API tokens, not force_authenticate --------------------------------------------
def token_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_a_real_api_token_signs_its_owner_in(world: World) -> None:
    _, key = account_services.create_api_token(world.users["vic"], name="ci")
    response = token_client(key).get(reverse("api:me"))
    assert response.status_code == 200
    assert response.json()["username"] == "vic"


def test_a_real_api_token_gets_the_outsiders_404(world: World) -> None:
    _, key = account_services.create_api_token(world.users["omar"], name="ci")
    assert token_client(key).get(reverse("api:team-detail", kwargs=DEMO)).status_code == 404


@pytest.mark.parametrize("kind", ["unknown", "revoked"])
def test_a_bad_api_token_gets_401(world: World, kind: str) -> None:
    token, key = account_services.create_api_token(world.users["vic"], name="ci")
    if kind == "unknown":
        key = key[:-4] + "xxxx"
    else:
        account_services.revoke_api_token(world.users["vic"], token)
    response = token_client(key).get(reverse("api:me"))
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Token")


def test_team_create_does_not_tell_a_non_admin_whether_a_username_exists(world: World) -> None:
    api = api_for(world.users["lin"])
    answers = {
        lead: api.post(reverse("api:team-list"), {**NEW_TEAM, "lead": lead}, format="json").status_code
        for lead in ("ada", "nobody")
    }
    assert answers == {"ada": 403, "nobody": 403}


def test_known_bugs_name_cases_of_the_matrix() -> None:
    callers = {"anonymous", "public", "outsider", "too_weak", "allowed", "admin"}
    names = {str(c) for c in CASES}
    stale = sorted(f"{case} ({caller})" for case, caller in KNOWN_BUGS if case not in names or caller not in callers)
    assert not stale, f"KNOWN_BUGS entries that match no case: {stale}"


# --- launches: what the matrix's status codes don't show ----------------------------------
def test_launch_logs_are_the_backends_plain_text(world: World, settings: Any) -> None:
    folder = settings.DATA_DIR / "launches" / str(world.launch.pk)
    folder.mkdir(parents=True)
    (folder / "output.log").write_text("epoch 1 loss 0.5\naccuracy 0.93\n")
    url = reverse("api:launch-logs", kwargs={"pk": world.launch.pk})
    response = api_for(world.users["vic"]).get(url, {"tail": "1"})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content.decode() == "accuracy 0.93"


def test_cancelling_only_queues_the_backend_cancel(world: World, sent: Sent, settings: Any) -> None:
    """A running launch goes `cancelling` and its backend cancel is a task for after the
    commit (captured here, so no process group is signalled); a queued one ends at once."""
    running, queued = world.launch, world.others_launch
    response = api_for(world.users["ada"]).post(reverse("api:launch-cancel", kwargs={"pk": running.pk}))
    assert (response.status_code, response.json()["status"]) == (200, Status.CANCELLING)
    response = api_for(world.users["lin"]).post(reverse("api:launch-cancel", kwargs={"pk": queued.pk}))
    assert (response.status_code, response.json()["status"]) == (200, Status.CANCELLED)
    assert sent.tasks == [("cancel_on_backend", (running.pk,)), ("close_mlflow_run", (queued.pk,))]
    assert not (settings.DATA_DIR / "launches").exists(), "the local backend was asked to cancel"


def test_outsiders_list_global_templates_but_none_of_demos_rows(world: World) -> None:
    api = api_for(world.users["omar"])
    assert [t["slug"] for t in api.get(reverse("api:template-list")).json()["results"]] == ["sklearn-digits"]
    assert api.get(reverse("api:launch-list")).json()["results"] == []
    assert api.get(reverse("api:sweep-list")).json()["results"] == []
    client = client_for(world.users["omar"])
    assert not client.get(reverse("launches:list")).context["page"].object_list
    assert not client.get(reverse("launches:sweep-list")).context["page"].object_list
    vic = api_for(world.users["vic"])
    assert {t["slug"] for t in vic.get(reverse("api:template-list")).json()["results"]} == {
        "demo-digits",
        "sklearn-digits",
    }
    demos = Launch.objects.filter(project__team=world.project.team).count()
    assert demos >= 4 and len(vic.get(reverse("api:launch-list")).json()["results"]) == demos
