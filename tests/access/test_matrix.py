"""Who may do what, on every route: one MATRIX, checked against the URL conf and the
OpenAPI schema, so a route added without an entry fails the suite.

Every named route outside the Django admin has one entry. Each entry says how to build
its URL and, per HTTP method, what four callers get:

  anonymous  pages redirect to /login/?next=<path>; the API answers 401
             (unless the operation is declared `public`, with the reason beside it)
  outsider   omar, a member of team "other": 404 for team demo's objects, or the
             entry's stated code (200 for lists that are simply scoped, 403 for
             platform-admin pages and for rights no team role of his grants)
  too weak   the role just below the weakest allowed one: 403
  allowed    the weakest allowed user: the entry's success status

Users, weakest first: vic (viewer of demo) < ada (member) < lin (lead) < root
(platform admin, in no team).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, resolve, reverse
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from apps.accounts import services as account_services
from apps.accounts.models import ApiToken, User
from apps.projects.models import Project
from portal.celery import app as celery_app
from tests.conftest import PASSWORD, api_for, client_for


# --- the vocabulary of the matrix ------------------------------------------------------
@dataclass(frozen=True)
class World:
    """What URLs and bodies are built from: the conftest people and projects, plus an API
    token of ada's (for the revoke page)."""

    users: Mapping[str, User]
    project: Project
    ada_token: ApiToken


Codes = int | tuple[int, ...]
Kwargs = Mapping[str, Any] | Callable[[World], Mapping[str, Any]]


@dataclass(frozen=True)
class Op:
    """One HTTP method of one route, and who gets what."""

    method: str
    allowed: str  # the weakest user who may: vic < ada < lin < root
    ok: Codes = 200  # what `allowed` gets (pages answer a successful form POST with 302)
    too_weak: str | None = None  # a user who can see the object but lacks the right: 403
    outsider: Codes = 404  # what omar gets
    body: Mapping[str, Any] | None = None  # valid data, so that `allowed` succeeds
    public: Codes | None = None  # what an anonymous caller gets, only for public operations
    admin: Codes | None = None  # what root gets, where it differs from `ok`
    note: str = ""  # tells apart two operations with the same method


@dataclass(frozen=True)
class Route:
    kwargs: Kwargs
    ops: tuple[Op, ...]


def route(kwargs: Kwargs, *ops: Op) -> Route:
    return Route(kwargs, ops)


NONE: dict[str, Any] = {}
DEMO = {"slug": "demo"}
DEMO_PROJECT = {"team": "demo", "slug": "demo"}
VIC_IN_DEMO = {"slug": "demo", "username": "vic"}
API_VIC_IN_DEMO = {"team_slug": "demo", "username": "vic"}
ANSWERED = (200, 503)  # /readyz is 503 while MLflow is down, as it is in these tests

NEW_TEAM = {"slug": "fresh", "name": "Fresh team", "description": "", "gpu_budget": 2}
PAGE_NEW_TEAM = {**NEW_TEAM, "lead": ""}
NEW_PROJECT = {"team": "demo", "slug": "fresh", "name": "Fresh project", "gpu_quota": 0, "backend": "local"}
PAGE_NEW_PROJECT = {**NEW_PROJECT, "description": "", "namespace": "", "mlflow_experiment": ""}
PROJECT_EDIT = {"name": "Renamed", "description": "", "gpu_quota": 2, "backend": "local"}

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
        Op("POST", "vic", ok=201, outsider=201, body={"name": "laptop"}),
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
}

# Public on purpose. Making a route public takes an edit here as well as in MATRIX.
PUBLIC_ROUTES = {"login", "logout", "healthz", "readyz", "api:auth-token", "api:schema", "api:docs"}
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


CASES = [Case(name, entry.kwargs, op) for name, entry in MATRIX.items() for op in entry.ops]


def cases(keep: Callable[[Case], bool] = lambda case: True) -> Any:
    return pytest.mark.parametrize("case", [c for c in CASES if keep(c)], ids=str)


def send(case: Case, world: World, who: str | None) -> Any:
    """Pages through a signed-in Django test client, the API through DRF's client."""
    user = world.users[who] if who else None
    method = case.op.method.lower()
    url = case.url(world)
    body = dict(case.op.body or {})
    if case.is_api:
        api: APIClient = api_for(user)
        return getattr(api, method)(url, body, format="json") if body else getattr(api, method)(url)
    return getattr(client_for(user), method)(url, body)


def describe(response: Any) -> str:
    location = f" -> {response['Location']}" if response.has_header("Location") else ""
    return f"{response.status_code}{location}"


@pytest.fixture
def world(people: dict[str, User], project: Project, other_project: Project) -> World:
    token, _ = account_services.create_api_token(people["ada"], name="laptop")
    return World(users=people, project=project, ada_token=token)


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
@cases(lambda c: c.op.public is None)
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


@cases(lambda c: c.op.public is not None)
def test_public_routes_answer_anonymous_callers(case: Case, world: World) -> None:
    assert case.op.public is not None
    response = send(case, world, None)
    assert response.status_code in codes(case.op.public), f"{case}: anonymous got {describe(response)}"


@cases()
def test_an_outsider_gets_404_or_the_stated_code(case: Case, world: World) -> None:
    response = send(case, world, "omar")
    expected = codes(case.op.outsider)
    assert response.status_code in expected, f"{case}: omar got {describe(response)}, expected {expected}"


@cases(lambda c: c.op.too_weak is not None)
def test_a_role_too_weak_gets_403(case: Case, world: World) -> None:
    response = send(case, world, case.op.too_weak)
    assert response.status_code == 403, f"{case}: {case.op.too_weak} got {describe(response)}, expected 403"


@cases()
def test_the_weakest_allowed_user_succeeds(case: Case, world: World) -> None:
    response = send(case, world, case.op.allowed)
    expected = codes(case.op.ok)
    assert response.status_code in expected, f"{case}: {case.op.allowed} got {describe(response)}, expected {expected}"
    if response.status_code == 302:
        assert "next=" not in response["Location"], f"{case}: {case.op.allowed} was sent to sign in"


@cases(lambda c: c.op.allowed != "root")
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
