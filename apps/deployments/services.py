"""Every change to deployments: create, update, delete, the manual rollback, and serving
keys. Each checks the actor's right, validates its input (400 with field messages), runs
in one transaction with its audit event and, where a rollout step, its RolloutEvent, and
queues the reconcile task for after the commit: the task (apps.deployments.tasks) makes
the serving backend match the rows."""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from apps.access.policies import can
from apps.access.roles import Action
from apps.accounts.models import User, hash_token
from apps.audit.services import record
from apps.audit.verbs import AuditVerb
from apps.core.errors import Conflict, InvalidInput, NotAllowed
from apps.core.queue import enqueue_on_commit
from apps.deployments import rollout
from apps.deployments.lookups import SERVING_KEY_PREFIX, SERVING_KEY_SHOWN, model_of_project
from apps.deployments.models import (
    Deployment,
    DeploymentStatus,
    Revision,
    ServingKey,
    deployment_name_validator,
)
from apps.environments import selection
from apps.environments.models import Environment
from apps.projects.models import Project

# MLflow's rule for alias names (as the registry's services check them).
ALIAS_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
# The request formats of MLflow's scoring protocol: an input example has exactly one.
SCORING_KEYS = ("dataframe_split", "dataframe_records", "inputs", "instances")
MAX_INPUT_EXAMPLE_BYTES = 64 * 1024
RESOURCE_RE = {
    "cpu": re.compile(r"^([0-9]{1,3}(\.[0-9]{1,3})?|[0-9]{1,6}m)$"),
    "memory": re.compile(r"^[0-9]{1,6}(Ki|Mi|Gi|Ti|K|M|G|T)?$"),
}
# The fields PATCH may change (the others are fixed at creation: name, model, project, backend).
EDITABLE = (
    "alias",
    "version",
    "canary_percent",
    "canary_minutes",
    "max_error_rate",
    "max_p95_ms",
    "min_replicas",
    "max_replicas",
    "resources",
    "input_example",
    "capture_samples",
    "environment",
)
# Bounds of the numeric options: (minimum, maximum).
INT_BOUNDS = {"canary_percent": (0, 100), "max_p95_ms": (1, 600_000), "min_replicas": (0, 20), "max_replicas": (1, 20)}
FLOAT_BOUNDS = {"canary_minutes": (0.0, 1440.0), "max_error_rate": (0.0, 1.0)}


def example_summary(example: Any) -> str | None:
    """A short stand-in for an input example in audit events: None when there is none, else
    "sha256:<first 12 hex digits> (<size> bytes)" of its canonical JSON, so that any change
    of the example changes the summary without copying up to 64 KiB into the audit log."""
    if example is None:
        return None
    text = json.dumps(example, sort_keys=True, separators=(",", ":")).encode()
    return f"sha256:{hashlib.sha256(text).hexdigest()[:12]} ({len(text)} bytes)"


def as_audit(deployment: Deployment) -> dict[str, Any]:
    """The deployment's settings as an audit event's before/after (the input example
    summarised by example_summary)."""
    return {
        "name": deployment.name,
        "project": deployment.project.full_slug,
        "model": deployment.model_name,
        "alias": deployment.alias,
        "version": deployment.pinned_version,
        "backend": deployment.backend,
        "canary_percent": deployment.canary_percent,
        "canary_minutes": deployment.canary_minutes,
        "max_error_rate": deployment.max_error_rate,
        "max_p95_ms": deployment.max_p95_ms,
        "min_replicas": deployment.min_replicas,
        "max_replicas": deployment.max_replicas,
        "resources": deployment.resources,
        "input_example": example_summary(deployment.input_example),
        "capture_samples": deployment.capture_samples,
        "environment": deployment.environment.label if deployment.environment is not None else None,
        "status": deployment.status,
    }


def _require(actor: User, project: Project) -> None:
    """Members, leads of the project's team and platform admins change its deployments."""
    if not can(actor, Action.LAUNCH, project.team):
        raise NotAllowed("Only members of the project's team change its deployments.")


def _schedule(deployment: Deployment) -> None:
    from apps.deployments.tasks import reconcile_deployment

    enqueue_on_commit(reconcile_deployment, deployment.pk)


# -- validation --------------------------------------------------------------------------


def _int(name: str, value: Any, errors: dict[str, list[str]]) -> int | None:
    low, high = INT_BOUNDS[name]
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,9}", value.strip()))
    ):
        errors[name] = [f"Give a whole number between {low} and {high}."]
        return None
    number = int(value)
    if not low <= number <= high:
        errors[name] = [f"Must be between {low} and {high}."]
        return None
    return number


def _float(name: str, value: Any, errors: dict[str, list[str]]) -> float | None:
    low, high = FLOAT_BOUNDS[name]
    try:
        number = float(value) if not isinstance(value, bool) and isinstance(value, int | float | str) else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or not low <= number <= high:
        errors[name] = [f"Give a number between {low:g} and {high:g}."]
        return None
    return number


def _version(value: Any, errors: dict[str, list[str]]) -> int | None:
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, str) and re.fullmatch(r"[0-9]{1,9}", value.strip()))
    ):
        errors["version"] = ["Give the model version as a whole number, e.g. 3."]
        return None
    number = int(value)
    if not 1 <= number <= 2**31 - 1:
        errors["version"] = ["Model versions start at 1."]
        return None
    return number


def _alias(value: Any, errors: dict[str, list[str]]) -> str | None:
    text = str(value).strip() if isinstance(value, str) else ""
    if not ALIAS_RE.fullmatch(text) or re.fullmatch(r"(latest|v\d+)", text, re.IGNORECASE):
        errors["alias"] = ["An alias is 1 to 255 letters, digits, '_' or '-' (not 'latest' or 'v<number>')."]
        return None
    return text


def _has_nul(value: Any) -> bool:
    """Whether a NUL character is in any key or string of the JSON value."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def _input_example(value: Any, errors: dict[str, list[str]]) -> Any:
    """A request body in MLflow's scoring protocol (a JSON object or its text), or None."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            errors["input_example"] = [f"Not valid JSON: {exc}."]
            return None
    if not isinstance(value, dict) or sum(1 for key in SCORING_KEYS if key in value) != 1:
        errors["input_example"] = [
            "Give a JSON object with exactly one of " + ", ".join(SCORING_KEYS) + " (MLflow's scoring protocol)."
        ]
        return None
    try:
        text = json.dumps(value, allow_nan=False)
    except ValueError:
        errors["input_example"] = ["NaN and infinity cannot be sent as JSON; use null."]
        return None
    if _has_nul(value):  # the database cannot store a NUL character in JSON
        errors["input_example"] = ["The example contains a NUL character (\\u0000)."]
        return None
    if len(text) > MAX_INPUT_EXAMPLE_BYTES:
        errors["input_example"] = [f"Keep the example under {MAX_INPUT_EXAMPLE_BYTES // 1024} KiB."]
        return None
    return value


def _resources(value: Any, errors: dict[str, list[str]]) -> dict[str, str] | None:
    if value is None or value == "":
        return {}
    if not isinstance(value, dict) or set(value) - set(RESOURCE_RE):
        errors["resources"] = ['Give {"cpu": "1", "memory": "2Gi"} (either may be left out).']
        return None
    cleaned: dict[str, str] = {}
    for key, raw in value.items():
        text = str(raw).strip() if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
        if not RESOURCE_RE[key].fullmatch(text):
            errors["resources"] = [f"{key} {raw!r} is not a Kubernetes quantity such as 500m, 2 (cpu) or 2Gi (memory)."]
            return None
        cleaned[key] = text
    return cleaned


def clean_options(values: dict[str, Any]) -> dict[str, Any]:
    """The validated subset of EDITABLE in `values`: the numeric options within their
    bounds, `alias` and `version` (at most one of them; `version: null` unpins), resources,
    the input example. Raises InvalidInput with one message per bad field and a 400
    naming any unknown field."""
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(values) - set(EDITABLE))
    for name in unknown:
        errors[name] = ["This field cannot be changed (or does not exist)."]
    cleaned: dict[str, Any] = {}
    if "alias" in values and values["alias"] not in (None, "") and values.get("version") is not None:
        errors["version"] = ["Follow an alias or pin a version, not both."]
    for name, value in values.items():
        if name in INT_BOUNDS:
            cleaned[name] = _int(name, value, errors)
        elif name in FLOAT_BOUNDS:
            cleaned[name] = _float(name, value, errors)
        elif name == "version":
            cleaned[name] = None if value is None or value == "" else _version(value, errors)
        elif name == "alias":
            if value is None or value == "":
                cleaned[name] = None
            else:
                cleaned[name] = _alias(value, errors)
        elif name == "input_example":
            cleaned[name] = _input_example(value, errors)
        elif name == "resources":
            cleaned[name] = _resources(value, errors)
        elif name == "capture_samples":
            if not isinstance(value, bool):
                errors[name] = ["Give true or false."]
            cleaned[name] = value
        elif name == "environment":
            cleaned[name] = value  # checked with the actor's rights by clean_environment
    if errors:
        raise InvalidInput("Some fields are not valid.", fields=errors)
    return cleaned


def clean_environment(actor: User, value: Any, project: Project) -> Environment | None:
    """The environment a deployment of `project` asks for: an Environment, its id, or None /
    "" (serve in the one the training run recorded). It must be one `actor` may see that is
    platform-wide or the project's team's own (another team's image and pod defaults never
    serve here, whatever other teams `actor` is in), and selectable now. Raises InvalidInput (400, field `environment`)
    for an unknown or hidden id and a failed environment, Conflict (409, with the field)
    for a building or retired one (the replacement named)."""
    if value is None or value == "":
        return None
    pk = value.pk if isinstance(value, Environment) else value
    if isinstance(pk, bool) or not isinstance(pk, int | str) or not (str(pk).isascii() and str(pk).isdigit()):
        raise InvalidInput.field("environment", "Give an environment's id, or null to use the training run's.")
    env = (
        Environment.objects.for_user(actor, "view")
        .filter(Q(team__isnull=True) | Q(team_id=project.team_id))
        .select_related("build", "team", "replaced_by")
        .filter(pk=int(pk))
        .first()
    )
    if env is None:
        raise InvalidInput.field("environment", f"There is no environment {pk} you may use.")
    try:
        selection.apply_rules(env)
    except Conflict as exc:
        raise Conflict(exc.message, fields={"environment": [exc.message]}) from None
    return env


def _apply(deployment: Deployment, cleaned: dict[str, Any]) -> None:
    """Set the cleaned options on the (unsaved) row; alias/version follow or pin."""
    for name, value in cleaned.items():
        if name in ("alias", "version", "environment"):
            continue
        setattr(deployment, name, value)
    if cleaned.get("version") is not None:
        deployment.pinned_version = cleaned["version"]
        # Pinned: the alias is kept only to show drift when it points elsewhere.
    elif cleaned.get("alias"):
        deployment.alias = cleaned["alias"]
        deployment.pinned_version = None
    elif "version" in cleaned:  # version: null — unpin, follow the alias again
        deployment.pinned_version = None
    if not deployment.alias and deployment.pinned_version is None:
        raise InvalidInput.field("alias", "Follow an alias or pin a version.")
    if deployment.min_replicas > deployment.max_replicas:
        raise InvalidInput.field("max_replicas", "max_replicas must be at least min_replicas.")


def _check_version_exists(model_name: str, version: int) -> None:
    """A pinned version must exist in MLflow's registry (503 when MLflow is down)."""
    from apps.registry.mlflow import registry

    if registry().get_model_version(model_name, version) is None:
        raise InvalidInput.field("version", f"{model_name} has no version {version}.")


# -- deployments -------------------------------------------------------------------------


def create_deployment(
    actor: User,
    project: Project,
    *,
    name: Any,
    model: Any,
    backend: Any = None,
    **options: Any,
) -> Deployment:
    """A new deployment of registered model `model` of `project`, following `alias`
    (default "champion") or pinning `version`, with the options of EDITABLE (policy:
    canary_percent 0..100 %, canary_minutes 0..1440, max_error_rate 0..1 as a fraction,
    max_p95_ms 1..600000 ms; replicas 0..20; resources; input_example; capture_samples).
    Status `starting`; the reconcile task starts the first revision after the commit.
    `environment` (an id, or None: the one the served version's training run recorded)
    is what its revisions serve in (see clean_environment).

    Raises NotAllowed (403) unless the actor may launch in the project's team;
    InvalidInput (400, with fields) for a bad name, a name taken in the project, a model
    that is not the project's, a version that does not exist, an out-of-bounds option or
    a backend other than the project's; MlflowUnavailable (503) when checking a pinned
    version while MLflow is down."""
    _require(actor, project)
    text = str(name or "").strip() if isinstance(name, str) else ""
    try:
        deployment_name_validator(text)
    except ValidationError as exc:
        raise InvalidInput.field("name", exc.messages[0]) from None
    if backend not in (None, "") and backend != project.backend:
        raise InvalidInput.field("backend", f"Deployments run on the project's backend ({project.backend}).")
    registered = model_of_project(project, model)
    cleaned = clean_options(options)
    deployment = Deployment(
        project=project,
        name=text,
        model_name=registered.name,
        backend=project.backend,
        created_by=actor,
        environment=clean_environment(actor, cleaned.get("environment"), project),
    )
    _apply(deployment, cleaned)
    if deployment.pinned_version is not None:
        _check_version_exists(deployment.model_name, deployment.pinned_version)
    taken = f"{project.full_slug} already has a deployment called {text!r}."
    if Deployment.objects.filter(project=project, name=text).exists():
        raise InvalidInput.field("name", taken)
    try:
        with transaction.atomic():
            deployment.save()
            record(
                actor,
                AuditVerb.DEPLOYMENT_CREATE,
                deployment,
                team=project.team,
                project=project,
                after=as_audit(deployment),
            )
            _schedule(deployment)
    except IntegrityError:  # the same name created at the same moment
        raise InvalidInput.field("name", taken) from None
    return deployment


def _locked(deployment: Deployment) -> Deployment:
    found = (
        Deployment.objects.select_for_update(of=("self",))
        .select_related("project__team")
        .filter(pk=deployment.pk)
        .first()
    )
    if found is None:
        raise Conflict("This deployment was deleted meanwhile.")
    if found.status == DeploymentStatus.DELETING:
        raise Conflict("This deployment is being deleted; it cannot change any more.")
    return found


def update_deployment(actor: User, deployment: Deployment, **changes: Any) -> Deployment:
    """Change the options of EDITABLE (see create_deployment for their bounds). Changing
    the alias or the pinned version makes the reconcile task roll out the version it now
    names. Changing the environment starts a new revision of the version served now, in
    the new environment (rollout.redeploy: pre-flight and canary as any rollout; the
    serving revision serves until then). Returns the saved row.

    Raises NotAllowed (403), InvalidInput (400 with fields), Conflict (409) while the
    deployment is being deleted, MlflowUnavailable (503) when pinning while MLflow is down."""
    _require(actor, deployment.project)
    cleaned = clean_options(changes)
    if cleaned.get("version") is not None and cleaned["version"] != deployment.pinned_version:
        _check_version_exists(deployment.model_name, cleaned["version"])
    env = None
    if "environment" in cleaned:
        given = cleaned["environment"]
        given_pk = given.pk if isinstance(given, Environment) else given
        current = Deployment.objects.filter(pk=deployment.pk).values_list("environment_id", flat=True).first()
        if str(given_pk or "") == str(current or ""):
            del cleaned["environment"]  # unchanged (kept even when no longer selectable)
        else:
            env = clean_environment(actor, given, deployment.project)
    with transaction.atomic():
        row = _locked(deployment)
        before, example_before = as_audit(row), row.input_example
        _apply(row, cleaned)
        environment_changed = "environment" in cleaned and row.environment_id != (env.pk if env else None)
        if environment_changed:
            row.environment = env
        after = as_audit(row)
        if after != before or row.input_example != example_before:
            row.updated_at = timezone.now()
            row.save()
            changed = {k: v for k, v in after.items() if before.get(k) != v}
            record(
                actor,
                AuditVerb.DEPLOYMENT_UPDATE,
                row,
                team=row.project.team,
                project=row.project,
                before={k: before[k] for k in changed},
                after=changed,
            )
            if environment_changed:
                label = row.environment.label if row.environment is not None else "the training run's"
                rollout.redeploy(row, actor, f"the environment is now {label}")
            _schedule(row)
    return row


def delete_deployment(actor: User, deployment: Deployment) -> Deployment:
    """Ask for the deployment to go: status `deleting` at once (the gateway stops
    answering for it), then the reconcile task stops every model server and removes the
    row. Asking again while it is being deleted changes nothing. Raises NotAllowed (403)."""
    _require(actor, deployment.project)
    with transaction.atomic():
        row = (
            Deployment.objects.select_for_update(of=("self",))
            .select_related("project__team")
            .filter(pk=deployment.pk)
            .first()
        )
        if row is None or row.status == DeploymentStatus.DELETING:
            return row or deployment
        before = as_audit(row)
        row.status = DeploymentStatus.DELETING
        row.status_reason = f"deleted by {actor.get_username()}"
        row.updated_at = timezone.now()
        row.save(update_fields=["status", "status_reason", "updated_at"])
        record(actor, AuditVerb.DEPLOYMENT_DELETE, row, team=row.project.team, project=row.project, before=before)
        _schedule(row)
    return row


def rollback_deployment(actor: User, deployment: Deployment) -> Revision:
    """Send 100 % of the traffic back to the previous revision at once: during a canary
    the stable revision takes it all; else the revision that served before the current
    one, at once when it is still warm, or as soon as a new revision of its version passed
    its pre-flight when it was retired (apps.deployments.rollout.rollback). Audited, on the
    timeline; the reconcile task applies the split on the backend. Returns the revision
    that serves (or will serve) the traffic.

    Raises NotAllowed (403); Conflict (409) when nothing serves, nothing served before,
    a rollback is already starting, or the deployment is being deleted."""
    from apps.deployments import rollout

    _require(actor, deployment.project)
    return rollout.rollback(actor, deployment)


# -- serving keys ------------------------------------------------------------------------


def create_serving_key(actor: User, deployment: Deployment, name: Any) -> tuple[ServingKey, str]:
    """A new serving key of `deployment` named `name`: returns the row and the key (shown
    once; only its SHA-256 digest is kept). Raises NotAllowed (403); InvalidInput (400 on
    `name`) for an empty, too long or already used name; Conflict (409) while the
    deployment is being deleted."""
    _require(actor, deployment.project)
    text = str(name or "").strip() if isinstance(name, str) else ""
    if not text:
        raise InvalidInput.field("name", "Give the key a name, e.g. the service that calls the model.")
    if len(text) > 80:
        raise InvalidInput.field("name", "Keep the name under 80 characters.")
    if "\x00" in text:
        raise InvalidInput.field("name", "The name contains a NUL character.")
    taken = f"This deployment already has a key called {text!r} (revoked keys keep their names)."
    key = SERVING_KEY_PREFIX + secrets.token_urlsafe(32)
    try:
        with transaction.atomic():
            row = _locked(deployment)
            if ServingKey.objects.filter(deployment=row, name=text).exists():
                raise InvalidInput.field("name", taken)
            made = ServingKey.objects.create(
                deployment=row, name=text, prefix=key[:SERVING_KEY_SHOWN], digest=hash_token(key), created_by=actor
            )
            record(
                actor,
                AuditVerb.DEPLOYMENT_KEY_CREATE,
                made,
                team=row.project.team,
                project=row.project,
                after={"deployment": row.name, "name": made.name, "prefix": made.prefix},
            )
    except IntegrityError:
        raise InvalidInput.field("name", taken) from None
    return made, key


def revoke_serving_key(actor: User, key: ServingKey) -> ServingKey:
    """Revoke a serving key: the gateway refuses it (401) from now on. Revoking twice
    changes nothing. Raises NotAllowed (403); Conflict (409) when the key went with its
    deleted deployment meanwhile."""
    deployment = key.deployment
    _require(actor, deployment.project)
    with transaction.atomic():
        row = ServingKey.objects.select_for_update().filter(pk=key.pk).first()
        if row is None:  # its deployment was deleted meanwhile: the key is gone with it
            raise Conflict("This serving key is gone: its deployment was deleted.")
        if row.revoked_at is None:
            row.revoked_at = timezone.now()
            row.save(update_fields=["revoked_at"])
            record(
                actor,
                AuditVerb.DEPLOYMENT_KEY_REVOKE,
                row,
                team=deployment.project.team,
                project=deployment.project,
                before={"deployment": deployment.name, "name": row.name, "prefix": row.prefix},
            )
    return row
