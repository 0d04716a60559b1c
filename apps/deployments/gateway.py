"""The inference gateway: `POST /serve/<team>/<project>/<deployment>/invocations`.

The one place that authenticates callers of a model. A request in MLflow's scoring
protocol (`dataframe_split`, `dataframe_records`, `inputs`, `instances`, or CSV) goes to
one of the deployment's serving revisions, picked by smooth weighted round-robin over
their `traffic` shares (per process: of 200 requests at 10 % exactly 20 go to the canary,
interleaved), and the model server's answer comes back as it is, with the headers
`X-Plinth-Model-Version` and `X-Plinth-Revision` naming what served it.

Callers present `Authorization: Bearer <secret>` (or `Token <secret>`, as the API takes):
an API token of someone who may use the deployment (a member or lead of its team, or a
platform admin) or one of the deployment's serving keys. Answers of the gateway itself
are JSON `{"detail": …}`: 401 without valid credentials (a serving key also when it is
revoked or another deployment's), 404 for a deployment that does not exist or that the
token's owner may not see, 403 for one they see but may not use (viewers), 405 for
anything but POST, 413 for a body over MAX_BODY_BYTES, 503 when no revision serves or its
model server cannot be reached (or does not answer within its timeout). The model server's
own 4xx (malformed JSON, wrong columns) passes through with MLflow's message; its 5xx
comes back as 502 with its body (the header X-Plinth-Upstream-Status keeps its status).

Every forwarded request is counted for its revision (stats.record: requests, 4xx, 5xx,
latency), and for deployments with `capture_samples` a capped sample of bodies is kept;
headers never are. The deployment and its serving revisions are read with one query each
and kept for CACHE_SECONDS per process.

A caller let through is remembered by the process for CREDENTIAL_CACHE_SECONDS (5 s): the
same secret on the same deployment then passes without a query. So a token or serving key
revoked, expired, or whose owner lost the role or was deactivated is refused at the latest
CREDENTIAL_CACHE_SECONDS later by every process, and at once by the process that saved the
change (saving a token, serving key, user or membership forgets what the process
remembered). Refusals are never remembered: a new token works at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.signals import request_finished
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from apps.access.policies import can
from apps.access.roles import Action
from apps.accounts.authentication import TokenRefused, verify_api_token
from apps.accounts.models import ApiToken, Membership, User, hash_token
from apps.core.errors import ServiceError
from apps.deployments import stats
from apps.deployments.lookups import SERVING_KEY_PREFIX, find_serving_key, get_deployment_by_path
from apps.deployments.models import Deployment, DeploymentStatus, Revision, RevisionStatus, ServingKey
from apps.deployments.serving.base import Answer
from apps.deployments.serving.local import NotReached
from apps.deployments.serving.registry import serving_backend

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 10 * 1024 * 1024  # a larger request is refused with 413
CACHE_SECONDS = 1.0  # how long a process routes by what it read of a deployment
CREDENTIAL_CACHE_SECONDS = 5.0  # how long a process lets a secret through without asking again
KEY_USE_RESOLUTION = timedelta(minutes=1)  # a serving key's last_used_at is written at most this often
CHALLENGE = 'Bearer realm="plinth"'


@dataclass(frozen=True)
class Route:
    """What a process knows of one gateway path for CACHE_SECONDS: the deployment (with
    project and team) and its serving revisions with a share of the traffic."""

    deployment: Deployment | None
    revisions: tuple[Revision, ...]
    expires: float


_routes: dict[tuple[str, str, str], Route] = {}
_routes_lock = threading.Lock()
# (digest of the secret, deployment id) -> clock() until which the secret passes unasked
_passes: dict[tuple[str, int], float] = {}
_passes_lock = threading.Lock()
_forgotten = [0]  # how many times the passes were forgotten: a check that read before the last time is not kept
clock = time.monotonic  # what the caches' ages are measured with
MAX_CACHED = 10_000  # paths and secrets are callers' input: the caches are bounded


def clear_routes() -> None:
    """Forget every cached route and every remembered caller (the next request reads the
    database again)."""
    with _routes_lock:
        _routes.clear()
    forget_credentials()


def forget_credentials(**_: Any) -> None:
    """Forget every caller this process let through (connected to the saving and deleting
    of tokens, serving keys, users and memberships)."""
    with _passes_lock:
        _passes.clear()
        _forgotten[0] += 1


def route_for(team: str, project: str, name: str, *, fresh: bool = False) -> Route:
    """The route of `<team>/<project>/<name>` from this process's cache, read again when
    older than CACHE_SECONDS or when `fresh` (two queries)."""
    key = (team, project, name)
    now = clock()
    if not fresh:
        cached = _routes.get(key)
        if cached is not None and cached.expires > now:
            return cached
    deployment = get_deployment_by_path(team, project, name)
    revisions: tuple[Revision, ...] = ()
    if deployment is not None:
        revisions = tuple(
            Revision.objects.filter(deployment=deployment, status=RevisionStatus.SERVING, traffic__gt=0)
            .only("id", "deployment_id", "number", "version", "traffic", "endpoint", "status")
            .order_by("number")
        )
        for revision in revisions:
            revision.deployment = deployment  # the backend reads revision.deployment without a query
    route = Route(deployment, revisions, now + CACHE_SECONDS)
    with _routes_lock:
        if len(_routes) > MAX_CACHED:
            _routes.clear()
        _routes[key] = route
    return route


class WeightedRoundRobin:
    """Smooth weighted round-robin (nginx's): each pick adds every candidate's weight to
    its running score, takes the highest score and subtracts the total from it. Over any
    run of sum(weights) picks each candidate gets exactly its weight, spread evenly. The
    state is per deployment and starts over when the set of weights changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[int, tuple[tuple[tuple[int, int], ...], dict[int, int]]] = {}

    def pick(self, deployment_id: int, revisions: Sequence[Revision]) -> Revision | None:
        """The revision the next request of `deployment_id` goes to (None when no revision
        has traffic)."""
        candidates = [revision for revision in revisions if revision.traffic > 0]
        if not candidates:
            return None
        shape = tuple((revision.pk, int(revision.traffic)) for revision in candidates)
        total = sum(weight for _, weight in shape)
        with self._lock:
            known, scores = self._state.get(deployment_id, ((), {}))
            if known != shape:
                scores = {pk: 0 for pk, _ in shape}
            for pk, weight in shape:
                scores[pk] += weight
            best = max(shape, key=lambda item: scores[item[0]])[0]
            scores[best] -= total
            self._state[deployment_id] = (shape, scores)
        return next(revision for revision in candidates if revision.pk == best)


balancer = WeightedRoundRobin()


def _logged_once(response: HttpResponse, level: int, text: str, *args: object) -> None:
    """Log a 5xx answer the gateway gives on purpose as one line at `level`, and mark it so
    that Django's request logger does not log it again at ERROR (a model that is still
    starting is expected, not a server error of the portal)."""
    logger.log(level, text, *args)
    response._has_been_logged = True  # type: ignore[attr-defined]  # django.utils.log.log_response


def _error(status: int, detail: str, **headers: str) -> JsonResponse:
    response = JsonResponse({"detail": detail}, status=status)
    response["Cache-Control"] = "no-store"
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    if status >= 500:
        _logged_once(response, logging.INFO, "gateway answered %s: %s", status, detail)
    return response


def _unauthorized(detail: str) -> JsonResponse:
    return _error(401, detail, WWW_Authenticate=CHALLENGE)


def _secret(request: HttpRequest) -> str | None:
    scheme, _, secret = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    secret = secret.strip()
    if scheme.lower() not in ("bearer", "token") or not secret or len(secret) > 200:
        return None
    return secret


def _authorize(secret: str, route: Route) -> JsonResponse | None:
    """None when `secret` may call the route's deployment, else the refusal (401/403/404).
    A secret let through passes unasked for CREDENTIAL_CACHE_SECONDS (see the module
    docstring); otherwise the checks cost one query (two when a write of last_used_at is
    due)."""
    deployment = route.deployment
    digest = hash_token(secret)
    if deployment is not None:
        until = _passes.get((digest, deployment.pk))
        if until is not None and until > clock():
            return None
    generation, started = _forgotten[0], clock()  # a pass counts from when the rows were read
    if secret.startswith(SERVING_KEY_PREFIX):
        key = find_serving_key(deployment, secret) if deployment is not None else None
        if key is None:
            return _unauthorized("This serving key is not valid for this deployment (unknown or revoked).")
        _touch(key)
        _remember(digest, deployment, None, generation, started)
        return None
    team_id = deployment.project.team_id if deployment is not None else None
    try:
        token = verify_api_token(secret, team_id=team_id)
    except TokenRefused as exc:
        return _unauthorized(exc.message)
    user: User = token.user
    # The user object lives for this request only and is asked about this one team.
    user._plinth_team_roles = {team_id: token.team_role} if team_id is not None and token.team_role else {}  # type: ignore[attr-defined]
    if deployment is None or not can(user, Action.VIEW, deployment.project.team):
        return _error(404, "No such deployment.")
    if not can(user, Action.LAUNCH, deployment.project.team):
        return _error(403, "Your role in this team does not allow calling its models (members and leads may).")
    _remember(digest, deployment, token.expires_at, generation, started)
    return None


def _remember(
    digest: str, deployment: Deployment | None, expires_at: datetime | None, generation: int, started: float
) -> None:
    """Let `digest` through to `deployment` unasked for CREDENTIAL_CACHE_SECONDS counted from
    `started` (when the check began to read: a slow write of last_used_at does not lengthen
    it), or until `expires_at` (the token's expiry) when that comes first. Nothing is kept when the
    passes were forgotten since the check began (`generation`): what it read may be older
    than the change that made them forgotten."""
    if deployment is None:
        return
    seconds = CREDENTIAL_CACHE_SECONDS
    if expires_at is not None:
        seconds = min(seconds, (expires_at - timezone.now()).total_seconds())
    if seconds <= 0:
        return
    with _passes_lock:
        if generation != _forgotten[0]:
            return
        if len(_passes) > MAX_CACHED:
            _passes.clear()
        _passes[digest, deployment.pk] = started + seconds


def _touch(key: ServingKey) -> None:
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > KEY_USE_RESOLUTION:
        ServingKey.objects.filter(pk=key.pk).update(last_used_at=now)


def _read_body(request: HttpRequest) -> bytes | None:
    """The request body, or None when it is longer than MAX_BODY_BYTES."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > MAX_BODY_BYTES:
        return None
    body = request.read(MAX_BODY_BYTES + 1)
    return None if len(body) > MAX_BODY_BYTES else body


def _forward(route: Route, revision: Revision, body: bytes, content_type: str, path: tuple[str, str, str]) -> Any:
    """(revision, answer) from the model server; one more try after a connection that was
    never opened (the server restarted on another port, or the revision just stopped), with
    the route read again. ServingUnavailable when that fails too."""
    backend = serving_backend(route.deployment.backend if route.deployment else "local")
    try:
        return revision, backend.predict(revision, body, content_type)
    except NotReached:
        fresh = route_for(*path, fresh=True)
        others = [r for r in fresh.revisions if r.pk != revision.pk] or [
            r for r in fresh.revisions if r.pk == revision.pk
        ]
        if not others:
            raise
        retry = max(others, key=lambda r: r.traffic)
        return retry, backend.predict(retry, body, content_type)


def _answer(revision: Revision, answer: Answer) -> HttpResponse:
    status = answer.status
    response = HttpResponse(answer.body, status=502 if status >= 500 else status, content_type=answer.content_type)
    if status >= 500:
        response["X-Plinth-Upstream-Status"] = str(status)
        _logged_once(response, logging.WARNING, "revision %s answered %s (passed on as 502)", revision.pk, status)
    response["X-Plinth-Model-Version"] = str(revision.version)
    response["X-Plinth-Revision"] = str(revision.number)
    response["Cache-Control"] = "no-store"
    return response


@csrf_exempt
def invoke(request: HttpRequest, team: str, project: str, deployment: str) -> HttpResponse:
    """Forward one prediction request to a serving revision of the deployment (see the
    module docstring for the statuses)."""
    if request.method != "POST":
        return _error(405, "POST a request in MLflow's scoring protocol to this address.", Allow="POST")
    secret = _secret(request)
    if secret is None:
        return _unauthorized("Send an API token or a serving key as 'Authorization: Bearer <secret>'.")
    path = (team, project, deployment)
    route = route_for(*path)
    refusal = _authorize(secret, route)
    if refusal is not None:
        return refusal
    assert route.deployment is not None
    if route.deployment.status == DeploymentStatus.DELETING:
        return _error(404, "This deployment is being deleted.")
    body = _read_body(request)
    if body is None:
        return _error(413, f"The request body is over {MAX_BODY_BYTES // (1024 * 1024)} MiB.")
    revision = balancer.pick(route.deployment.pk, route.revisions)
    if revision is None:
        reason = route.deployment.status_reason if route.deployment.status == DeploymentStatus.FAILED else ""
        return _error(503, "No revision serves yet." + (f" {reason}" if reason else ""), Retry_After="5")
    content_type = request.META.get("CONTENT_TYPE") or "application/json"
    started = time.perf_counter()
    try:
        revision, answer = _forward(route, revision, body, content_type, path)
    except ServiceError as exc:  # ServingUnavailable (cannot reach it, no answer in time)
        stats.record(revision.pk, 503, (time.perf_counter() - started) * 1000.0)
        return _error(503, exc.message, Retry_After="5")
    except Exception:  # a backend's bug must not look like the caller's: logged, and a 503
        logger.exception("forwarding to revision %s of deployment %s failed", revision.pk, route.deployment.pk)
        stats.record(revision.pk, 503, (time.perf_counter() - started) * 1000.0)
        return _error(503, "The model server could not be asked; try again in a moment.", Retry_After="5")
    latency = (time.perf_counter() - started) * 1000.0
    stats.record(revision.pk, answer.status, latency)
    if route.deployment.capture_samples:
        stats.record_sample(revision.pk, answer.status, latency, body, answer.body)
    return _answer(revision, answer)


def _flush_stats(**_: Any) -> None:
    # After the response went out: the statistics' one write, at most once a second.
    stats.flush_if_due()


request_finished.connect(_flush_stats, dispatch_uid="plinth-gateway-stats")


def _forget_on_change(**_: Any) -> None:
    """A token, key, user or membership changed: forget now, and again once the change is
    committed (a request of this process that read the old row between the two would
    otherwise keep its pass)."""
    forget_credentials()
    transaction.on_commit(forget_credentials)


for _model in (ApiToken, ServingKey, User, Membership):
    post_save.connect(_forget_on_change, sender=_model, dispatch_uid=f"plinth-gateway-forget-{_model.__name__}")
    post_delete.connect(_forget_on_change, sender=_model, dispatch_uid=f"plinth-gateway-forget-{_model.__name__}")
