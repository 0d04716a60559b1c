"""Access in MLflow, per project, when MLflow runs its basic-auth app
(`mlflow server --app-name basic-auth`): the team's members get READ (viewers) or EDIT
(members, leads) on the project's experiment and on the registered models tagged
`plinth.project = <team>/<project>`; people who left lose them.

MLflow 3.17's auth app keeps per-user grants in a synthetic per-user role and exposes them
as `POST /api/3.0/mlflow/users/permissions/grant|revoke` and
`GET /api/3.0/mlflow/users/permissions/list` (the 2.x `/experiments/permissions/create|
update|delete` routes are gone); users are `POST /api/2.0/mlflow/users/create` and
`GET /api/2.0/mlflow/users/get`. Plinth calls them with an MLflow admin account
(PLINTH_MLFLOW_ADMIN_USERNAME / _PASSWORD). A member without an MLflow user gets one with a
random password (an MLflow admin sets a real one, or MLflow sits behind the same SSO);
only grants this sync owns (the user's own role, on this project's resources) are touched.

Run MLflow with `default_permission = NO_PERMISSIONS` in its basic_auth.ini: with the
default READ, every MLflow user can read every experiment and this sync cannot take
anything away."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings

from apps.access.roles import Role
from apps.accounts.models import Membership
from apps.projects.models import Project
from apps.tracking.gateway import MlflowError, MlflowUnavailable

READ, EDIT = "READ", "EDIT"
PROJECT_TAG = "plinth.project"
SYNTHETIC_ROLE = "__user_"


def permission_for(role: str) -> str:
    return READ if role == Role.VIEWER else EDIT


class MlflowAuthClient:
    """The few calls of MLflow's auth REST API the sync needs, as the MLflow admin."""

    def __init__(self, base_url: str | None = None, username: str = "", password: str = "", timeout: float = 0):
        self.base_url = (base_url or settings.MLFLOW_TRACKING_URI).rstrip("/")
        self.username = username or settings.PLINTH_MLFLOW_ADMIN_USERNAME
        self.session = requests.Session()
        self.session.auth = (self.username, password or settings.PLINTH_MLFLOW_ADMIN_PASSWORD)
        self.timeout = timeout or settings.MLFLOW_TIMEOUT

    def _call(self, method: str, path: str, *, version: str = "2.0", **kwargs: Any) -> dict[str, Any]:
        url = f"{self.base_url}/api/{version}/mlflow/{path}"
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise MlflowUnavailable(f"MLflow at {self.base_url} is unreachable ({type(exc).__name__}).") from exc
        if response.status_code >= 500:
            raise MlflowUnavailable(f"MLflow at {self.base_url} answered {response.status_code}.")
        try:
            body: dict[str, Any] = response.json() if response.content else {}
        except ValueError:
            body = {"message": response.text[:300]}
        if response.status_code in (401, 403):
            raise MlflowError(
                f"MLflow refused Plinth's admin account {self.username!r} ({response.status_code}): "
                "check PLINTH_MLFLOW_ADMIN_USERNAME / PLINTH_MLFLOW_ADMIN_PASSWORD.",
                http_status=response.status_code,
            )
        if response.status_code >= 400:
            raise MlflowError(
                str(body.get("message") or f"MLflow refused the request ({response.status_code})."),
                error_code=str(body.get("error_code", "")),
                http_status=response.status_code,
            )
        return body

    def user_exists(self, username: str) -> bool:
        try:
            self._call("GET", "users/get", params={"username": username})
        except MlflowError as exc:
            if exc.http_status == 404 or exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise
        return True

    def create_user(self, username: str, password: str) -> None:
        self._call("POST", "users/create", json={"username": username, "password": password})

    def grants(self, username: str) -> list[dict[str, Any]]:
        """The user's grants (each: role_name, resource_type, resource_pattern, permission)."""
        body = self._call("GET", "users/permissions/list", version="3.0", params={"username": username})
        return list(body.get("permissions") or [])

    def grant(self, username: str, resource_type: str, resource_id: str, permission: str) -> None:
        body = {"username": username, "resource_type": resource_type, "resource_id": resource_id}
        self._call("POST", "users/permissions/grant", version="3.0", json={**body, "permission": permission})

    def revoke(self, username: str, resource_type: str, resource_id: str) -> None:
        body = {"username": username, "resource_type": resource_type, "resource_id": resource_id}
        self._call("POST", "users/permissions/revoke", version="3.0", json=body)

    def project_models(self, full_slug: str) -> list[str]:
        """Names of the registered models tagged with the project (every page)."""
        names: list[str] = []
        token = ""
        quoted = "'" + full_slug.replace("'", "\\'") + "'"
        while True:
            params: dict[str, Any] = {"filter": f"tags.`{PROJECT_TAG}` = {quoted}", "max_results": 100}
            if token:
                params["page_token"] = token
            body = self._call("GET", "registered-models/search", params=params)
            names.extend(m["name"] for m in body.get("registered_models", []))
            token = body.get("next_page_token", "")
            if not token or len(names) >= 5000:
                return names


@dataclass
class Grant:
    """One difference between what a user holds in MLflow and what Plinth wants."""

    username: str
    resource_type: str
    resource_id: str
    have: str | None
    want: str | None

    def as_dict(self) -> dict[str, str]:
        return {
            "action": "grant" if self.have is None else ("revoke" if self.want is None else "update"),
            "kind": self.resource_type,
            "name": f"{self.resource_id} for {self.username}",
            "reason": f"{self.have or 'nothing'} -> {self.want or 'nothing'}",
        }


def desired(project: Project) -> dict[str, str]:
    """username -> READ/EDIT for the project's active team members."""
    memberships = Membership.objects.filter(team_id=project.team_id, user__is_active=True).select_related("user")
    return {m.user.username: permission_for(m.role) for m in memberships}


@dataclass
class MlflowPlan:
    wanted: dict[str, str]
    models: list[str]
    missing_users: list[str]
    changes: list[Grant]


def plan(project: Project, client: MlflowAuthClient, previous_users: list[str]) -> MlflowPlan:
    """Compare the grants of every member, and of everyone the last pass granted, with
    what they should hold on the experiment and the project's models (reads only)."""
    wanted = desired(project)
    models = client.project_models(project.full_slug)
    resources = [("experiment", project.mlflow_experiment_id)] + [("registered_model", m) for m in models]
    missing: list[str] = []
    changes: list[Grant] = []
    for username in sorted(set(wanted) | set(previous_users)):
        if username == client.username:
            continue  # the admin holds everything already; never edit its grants
        if not client.user_exists(username):
            if username in wanted:
                missing.append(username)
                changes.extend(Grant(username, t, r, None, wanted[username]) for t, r in resources)
            continue
        held = {
            (g["resource_type"], g["resource_pattern"]): g["permission"]
            for g in client.grants(username)
            if str(g.get("role_name", "")).startswith(SYNTHETIC_ROLE)
        }
        want = wanted.get(username)
        for resource_type, resource_id in resources:
            have = held.get((resource_type, resource_id))
            if have != want:
                changes.append(Grant(username, resource_type, resource_id, have, want))
    return MlflowPlan(wanted, models, missing, changes)


def apply(client: MlflowAuthClient, result: MlflowPlan) -> None:
    for username in result.missing_users:
        client.create_user(username, secrets.token_urlsafe(24))
    for change in result.changes:
        if change.have is not None:
            client.revoke(change.username, change.resource_type, change.resource_id)
        if change.want is not None:
            client.grant(change.username, change.resource_type, change.resource_id, change.want)
