"""The lookups of deployment objects, used by pages, the API, the gateway and tasks alike:
404 when the object does not exist or is invisible to the user, 403 when visible but not
allowed. Also the registered model a deployment may serve, the version its alias points
at as Plinth knows it (drift), and a serving key by its secret."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q
from django.http import Http404
from django.utils import timezone

from apps.access.lookups import check_team_access, is_slug
from apps.access.roles import Action
from apps.accounts.models import hash_token
from apps.core.api import MAX_ID
from apps.core.errors import InvalidInput
from apps.deployments.models import Deployment, Revision, RevisionStatus, ServingKey
from apps.deployments.serving.base import RevisionMetrics
from apps.projects.models import Project
from apps.registry.models import AliasHistory, RegisteredModel

# A serving key is this prefix and 43 URL-safe characters; `ServingKey.prefix` keeps the
# first 11 characters (shown on the page, used to find the row), `digest` its SHA-256.
SERVING_KEY_PREFIX = "plsk_"
SERVING_KEY_SHOWN = len(SERVING_KEY_PREFIX) + 6


def _pk(value: Any) -> int | None:
    text = str(value if value is not None else "").strip()
    return int(text) if text.isdigit() and int(text) <= MAX_ID else None


def get_deployment_for_user(user: Any, pk: Any, action: Action | str = Action.VIEW) -> Deployment:
    """A deployment by id (with its project, team and creator). 404 when missing or
    invisible to `user`, 403 when their role does not allow `action` (changes need
    Action.LAUNCH: members, leads, platform admins)."""
    found = (
        Deployment.objects.select_related("project__team", "created_by", "environment__team").filter(pk=pk).first()
        if (pk := _pk(pk)) is not None
        else None
    )
    if found is None:
        raise Http404("No such deployment.")
    check_team_access(user, action, found.project.team, "deployment")
    return found


def get_deployment_by_path(team: str, project: str, name: str) -> Deployment | None:
    """The deployment `<team>/<project>/<name>` (the gateway's URL), with its project and
    team, or None. No access check: the gateway authenticates the caller itself."""
    if not (is_slug(team) and is_slug(project) and isinstance(name, str) and 0 < len(name) <= 45):
        return None
    return (
        Deployment.objects.select_related("project__team")
        .filter(project__team__slug=team, project__slug=project, name=name)
        .first()
    )


def get_serving_key_for_user(
    user: Any, deployment: Deployment, pk: Any, action: Action | str = Action.VIEW
) -> ServingKey:
    """A serving key of `deployment` (404 when it is another deployment's or missing)."""
    check_team_access(user, action, deployment.project.team, "deployment")
    found = ServingKey.objects.filter(deployment=deployment, pk=pk).first() if (pk := _pk(pk)) is not None else None
    if found is None:
        raise Http404("No such serving key.")
    return found


def find_serving_key(deployment: Deployment, key: str) -> ServingKey | None:
    """The live (not revoked) serving key of `deployment` whose secret is `key`, or None.
    Compares digests in constant time; never logs the key."""
    if not isinstance(key, str) or not key.startswith(SERVING_KEY_PREFIX) or len(key) > 200:
        return None
    digest = hash_token(key)
    for candidate in ServingKey.objects.filter(
        deployment=deployment, prefix=key[:SERVING_KEY_SHOWN], revoked_at__isnull=True
    ):
        if hmac.compare_digest(candidate.digest, digest):
            return candidate
    return None


def model_of_project(project: Project, name: Any) -> RegisteredModel:
    """The registered model `name` of `project` (Plinth's mirror row: a model attached to
    the project or seen by the registry's reconciler). A 400 on `model` otherwise — a model
    of another project reads the same as a missing one."""
    text = str(name or "").strip()
    if not text:
        raise InvalidInput.field("model", "Name the registered model to serve.")
    found = RegisteredModel.objects.filter(project=project, name=text).first() if len(text) <= 256 else None
    if found is None:
        raise InvalidInput.field(
            "model", f"{project.full_slug} has no registered model {text[:256]!r}: register or attach it first."
        )
    return found


def alias_versions(deployments: Iterable[Deployment]) -> dict[int, int | None]:
    """{deployment id: the version its alias points at now, as Plinth's alias history
    knows it (None: unset or unknown)}, in one query for any number of deployments."""
    wanted = {(d.project_id, d.model_name, d.alias): d.pk for d in deployments if d.alias}
    if not wanted:
        return {}
    rows = AliasHistory.objects.filter(
        valid_to__isnull=True,
        model__name__in={m for _, m, _ in wanted},
        alias__in={a for _, _, a in wanted},
    ).values_list("model__project_id", "model__name", "alias", "version")
    current = {(p, m, a): v for p, m, a, v in rows}
    return {pk: current.get(key) for key, pk in wanted.items()}


def gateway_path(deployment: Deployment) -> str:
    """The path callers POST predictions to (the inference gateway, MLflow's scoring
    protocol): /serve/<team>/<project>/<deployment>/invocations."""
    project = deployment.project
    return f"/serve/{project.team.slug}/{project.slug}/{deployment.name}/invocations"


def revisions_in_window(deployment: Deployment, since: datetime) -> list[Revision]:
    """The revisions of `deployment` that may have served since `since`: every one not
    retired, and those retired after it; oldest first."""
    return list(
        Revision.objects.filter(deployment=deployment)
        .exclude(status=RevisionStatus.RETIRED, retired_at__lt=since)
        .order_by("number")
    )


def window_metrics(deployments: Sequence[Deployment], since: datetime) -> dict[int, RevisionMetrics]:
    """{revision id: RevisionMetrics since `since`} of the serving revisions of
    `deployments`, one backend call per backend. Raises ServingUnavailable (503)."""
    from apps.deployments.serving.registry import serving_backend

    by_backend: dict[str, list[Revision]] = {}
    wanted = Revision.objects.filter(deployment__in=list(deployments), status=RevisionStatus.SERVING)
    for revision in wanted.select_related("deployment"):
        by_backend.setdefault(revision.deployment.backend, []).append(revision)
    found: dict[int, RevisionMetrics] = {}
    for backend, revisions in by_backend.items():
        found.update(serving_backend(backend).metrics(revisions, since))
    return found


# How far back a failed or rolled-back rollout stays on the home page, and how many are listed.
ATTENTION_WINDOW = timedelta(days=1)
ATTENTION_SHOWN = 10


def attention_items(user: Any) -> list[dict[str, str]]:
    """The home page's lines about failed rollouts of the deployments `user` may change
    (members, leads, platform admins): a deployment where nothing serves (status failed,
    an error line), and a revision that failed its pre-flight or was rolled back by the
    canary rule in the last day (a warning line). [{level, text, url}], newest first, at
    most ATTENTION_SHOWN; one query whatever the number of deployments."""
    from apps.deployments.models import DeploymentStatus

    since = timezone.now() - ATTENTION_WINDOW
    failed = (
        Revision.objects.filter(
            deployment__in=Deployment.objects.for_user(user, Action.LAUNCH), status=RevisionStatus.FAILED
        )
        .filter(Q(created_at__gte=since) | Q(deployment__status=DeploymentStatus.FAILED))
        .select_related("deployment__project__team")
        .order_by("-created_at", "-id")
    )
    items: list[dict[str, str]] = []
    seen: set[int] = set()
    for revision in failed[: ATTENTION_SHOWN * 3]:
        deployment = revision.deployment
        where = f"{deployment.project.full_slug}/{deployment.name}"
        url = f"/deployments/{deployment.pk}/"
        if deployment.status == DeploymentStatus.FAILED:
            if deployment.pk in seen:
                continue
            seen.add(deployment.pk)
            reason = _first_line(deployment.status_reason or revision.reason, "nothing serves")
            items.append({"level": "error", "text": f"Deployment {where} is failing: {reason}", "url": url})
        else:
            reason = _first_line(revision.reason, "failed")
            text = f"Rollout of {deployment.model_name} version {revision.version} to {where} failed: {reason}"
            items.append({"level": "warning", "text": text, "url": url})
        if len(items) >= ATTENTION_SHOWN:
            break
    return items


def _first_line(text: str, default: str) -> str:
    line = text.strip().splitlines()[0] if text and text.strip() else default
    return line[:200]
