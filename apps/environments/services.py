"""Every change of an environment: defining one (a new name, or a new version of one),
its life cycle (deprecate, undeprecate, retire, rebuild a failed build), its description,
and the platform default. Each runs in one transaction and writes one audit event per
environment it changes, with the state before and after.

Content (image, pod defaults, requirements, extends_portal) is immutable: a change of
content is a new version of the same name (`new_version`). Who may: platform admins for
platform-wide environments, a team's leads for the team's own
(`apps.access.policies.can_manage_environment`)."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.utils import timezone

from apps.access.policies import can_manage_environment, can_set_default_environment
from apps.audit.services import record
from apps.audit.verbs import AuditVerb
from apps.core.errors import Conflict, InvalidInput, NotAllowed
from apps.environments import packages
from apps.environments.models import BuildStatus, Environment, EnvironmentBuild, EnvironmentState
from apps.environments.validation import image_is_pinned as image_is_pinned
from apps.environments.validation import validate_image, validate_name, validate_pod_defaults

# --- content -----------------------------------------------------------------------------------
MAX_DESCRIPTION = 4000
MAX_MESSAGE = 2000
CONTENT_FIELDS = ("image", "pod_defaults", "requirements", "extends_portal")
# How many rows of each kind "Who uses this" lists (the counts are always complete).
USAGE_SHOWN = 20


def _text(value: Any, field: str, limit: int) -> str:
    text = str(value if value is not None else "").strip()
    if len(text) > limit:
        raise InvalidInput.field(field, f"At most {limit} characters.")
    return text


def snapshot(env: Environment) -> dict[str, Any]:
    """What an audit event records of an environment (before/after a change)."""
    return {
        "label": env.label,
        "state": env.state,
        "state_reason": env.state_reason[:500],
        "description": env.description,
        "image": env.image,
        "pod_defaults": env.pod_defaults,
        "requirements": env.requirements,
        "extends_portal": env.extends_portal,
        "build": env.build_id,
        "replaced_by": env.replaced_by.label if env.replaced_by_id and env.replaced_by else None,
        "redirect": env.redirect,
        "message": env.message,
        "is_default": env.is_default,
    }


def _audit(actor: Any, verb: AuditVerb, env: Environment, before: dict[str, Any] | None) -> None:
    record(actor, verb, env, team=env.team, before=before, after=snapshot(env))


# --- defining environments --------------------------------------------------------------------
def create_environment(
    actor: Any,
    *,
    team: Any = None,
    name: str,
    description: str = "",
    image: str = "",
    pod_defaults: dict[str, Any] | None = None,
    requirements: str = "",
    extends_portal: bool = True,
) -> Environment:
    """Define an environment: version 1 of a new `name`, or the next version of an existing
    one in the same scope (`team` None = platform-wide). Returns the saved row.

    With requirements (pip syntax, normalised by packages.normalise) it runs in the local
    build of that list (shared by identical lists): ready at once when that build is ready,
    failed with its error when it failed, else `building` with the build task queued
    after the commit. Without requirements it is ready at once (an image for Kubernetes,
    or the portal's interpreter locally).
    Raises NotAllowed (403: platform admins define platform-wide ones, a team's leads the
    team's), InvalidInput (400 on name, image, pod_defaults, requirements, description),
    Conflict (409: a concurrent definition took the version twice)."""
    if not can_manage_environment(actor, team):
        raise NotAllowed(
            "Platform admins define platform-wide environments."
            if team is None
            else f"Only the leads of {team.slug} define its environments."
        )
    name = validate_name(name)
    description = _text(description, "description", MAX_DESCRIPTION)
    image = validate_image(image)
    pods = validate_pod_defaults(pod_defaults)
    normalised, sha = packages.normalise(requirements) if str(requirements or "").strip() else ("", "")
    if not isinstance(extends_portal, bool):
        raise InvalidInput.field("extends_portal", "true or false.")
    for attempt in (1, 2):
        try:
            with transaction.atomic():
                return _create(actor, team, name, description, image, pods, normalised, sha, extends_portal)
        except IntegrityError:
            if attempt == 2:
                break
    raise Conflict(f"Another version of {name} was defined at the same moment; try again.")


def _create(
    actor: Any,
    team: Any,
    name: str,
    description: str,
    image: str,
    pods: dict[str, Any],
    normalised: str,
    sha: str,
    extends_portal: bool,
) -> Environment:
    latest = Environment.objects.filter(team=team, name=name).aggregate(top=Max("version"))["top"] or 0
    build: EnvironmentBuild | None = None
    state, reason = EnvironmentState.READY, ""
    if normalised:
        from apps.environments import builder

        build = builder.ensure_build(normalised, sha, extends_portal=extends_portal)
        if build.status == BuildStatus.FAILED:
            state, reason = EnvironmentState.FAILED, build.error or "The build failed."
        elif build.status != BuildStatus.READY:
            state = EnvironmentState.BUILDING
    now = timezone.now()
    env = Environment.objects.create(
        team=team,
        name=name,
        version=latest + 1,
        description=description,
        image=image,
        pod_defaults=pods,
        requirements=normalised,
        extends_portal=extends_portal,
        build=build,
        state=state,
        state_reason=reason,
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
        created_at=now,
        updated_at=now,
    )
    _audit(actor, AuditVerb.ENVIRONMENT_CREATED, env, None)
    if build is not None and state == EnvironmentState.BUILDING:
        _queue_build(build)
    return env


def _queue_build(build: EnvironmentBuild) -> None:
    from apps.environments import builder

    builder.enqueue(build)  # after the commit, when it is queued


def new_version(actor: Any, env: Environment, **changes: Any) -> Environment:
    """The next version of `env`'s name in its scope: `env`'s content (description, image,
    pod_defaults, requirements, extends_portal) with `changes` applied. The old version is
    left as it is (deprecate it separately). Errors as create_environment; InvalidInput
    for a key that is not content."""
    allowed = {"description", *CONTENT_FIELDS}
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise InvalidInput(
            f"A new version takes {', '.join(sorted(allowed))} only.",
            fields={key: ["Not part of an environment's content."] for key in unknown},
        )
    content = {
        "description": env.description,
        "image": env.image,
        "pod_defaults": env.pod_defaults,
        "requirements": env.requirements,
        "extends_portal": env.extends_portal,
    }
    content.update({key: value for key, value in changes.items() if value is not None})
    return create_environment(actor, team=env.team, name=env.name, **content)


# --- life cycle -------------------------------------------------------------------------------
def _locked(env: Environment, *also: Any) -> Environment:
    """`env` read again under a row lock, with the rows `also` names (Environments or ids:
    a replacement, the current default) locked too. All in one statement, in primary-key
    order, so two changes that lock the same two rows never wait for each other crosswise."""
    ids = {env.pk}
    for other in also:
        pk = other.pk if isinstance(other, Environment) else other
        if isinstance(pk, int) and not isinstance(pk, bool) and 0 < pk < 2**63:
            ids.add(pk)
    list(Environment.objects.select_for_update(of=("self",)).filter(pk__in=ids).order_by("pk").values_list("pk"))
    return Environment.objects.select_related("team", "replaced_by").get(pk=env.pk)


def _replacement(env: Environment, given: Any) -> Environment:
    """The environment `given` (a row or an id) as `env`'s replacement: another version or
    environment in the same scope (a platform-wide one for a platform-wide `env`), ready or
    deprecated. Raises InvalidInput on `replaced_by`."""
    pk = given.pk if isinstance(given, Environment) else given
    found = None
    if isinstance(pk, int) and not isinstance(pk, bool) and 0 < pk < 2**63:
        found = Environment.objects.select_related("team").filter(pk=pk).first()
    if found is None:
        raise InvalidInput.field("replaced_by", "No such environment.")
    if found.pk == env.pk:
        raise InvalidInput.field("replaced_by", "An environment cannot replace itself.")
    if found.team_id is not None and found.team_id != env.team_id:
        raise InvalidInput.field(
            "replaced_by", "The replacement must be platform-wide or belong to the same team (its users must see it)."
        )
    if not found.is_selectable:
        raise InvalidInput.field("replaced_by", f"{found.label} is {found.state}: only a usable one can replace it.")
    return found


def change_environment(
    actor: Any,
    env: Environment,
    *,
    description: str | None = None,
    state: str | None = None,
    replaced_by: Any = None,
    redirect: bool | None = None,
    message: str | None = None,
) -> Environment:
    """Change what may change of an existing version (None = leave as it is):

    - `description`, any time;
    - `state`: ready → deprecated (optional `replaced_by`, required with `redirect`; a
      `message` for its users), deprecated → ready (undeprecate: replacement, redirect and
      message cleared), ready|deprecated → retired (`message`, `replaced_by`), failed →
      building (its build is tried again; "ready" asks the same);
    - `replaced_by` / `redirect` / `message` without a state: only on a deprecated or
      retired one.

    Returns the changed row. One audit event: ENVIRONMENT_DEPRECATED / _RETIRED for those
    transitions, else ENVIRONMENT_CHANGED. Raises NotAllowed (403), InvalidInput (400 on a
    field), Conflict (409: a transition its state does not allow — the default environment
    cannot be retired, a building one cannot change state)."""
    if not can_manage_environment(actor, env):
        raise NotAllowed(_who_manages(env))
    if state is not None and state not in EnvironmentState.values:
        raise InvalidInput.field("state", f"One of {', '.join(EnvironmentState.values)}.")
    if redirect is not None and not isinstance(redirect, bool):
        raise InvalidInput.field("redirect", "true or false.")
    with transaction.atomic():
        # The replacement is locked with it: two retirements that cross (A → B, B → C) are
        # one after the other, and the second sees the first's state.
        env = _locked(env, replaced_by if replaced_by is not None else env.replaced_by_id)
        before = snapshot(env)
        verb = AuditVerb.ENVIRONMENT_CHANGED
        if description is not None:
            env.description = _text(description, "description", MAX_DESCRIPTION)
        new_message = _text(message, "message", MAX_MESSAGE) if message is not None else None
        target = state if state is not None and state != env.state else None
        if target is None:
            _update_notice(env, replaced_by, redirect, new_message, lifecycle=state is not None)
        elif target == EnvironmentState.DEPRECATED:
            _require(env, (EnvironmentState.READY,), "deprecated")
            env.state = EnvironmentState.DEPRECATED
            _set_notice(env, replaced_by, bool(redirect), new_message)
            verb = AuditVerb.ENVIRONMENT_DEPRECATED
        elif target == EnvironmentState.READY and env.state == EnvironmentState.DEPRECATED:
            env.state = EnvironmentState.READY
            env.replaced_by, env.redirect, env.message = None, False, ""
        elif target == EnvironmentState.RETIRED:
            _require(env, (EnvironmentState.READY, EnvironmentState.DEPRECATED), "retired")
            if env.is_default:
                raise Conflict(f"{env.label} is the platform default: make another one the default before retiring it.")
            env.state = EnvironmentState.RETIRED
            keep = replaced_by if replaced_by is not None else env.replaced_by
            _set_notice(env, keep, False, new_message if new_message is not None else env.message)
            moved = _move_users(env)
            verb = AuditVerb.ENVIRONMENT_RETIRED
        elif target in (EnvironmentState.BUILDING, EnvironmentState.READY) and env.state == EnvironmentState.FAILED:
            _rebuild(actor, env, before)
            return env
        else:
            raise Conflict(_bad_transition(env, target))
        if snapshot(env) == before:
            return env  # nothing changed: no write, no event
        env.updated_at = timezone.now()
        env.save()
        if verb == AuditVerb.ENVIRONMENT_RETIRED:
            record(actor, verb, env, team=env.team, before=before, after={**snapshot(env), "moved": moved})
        else:
            _audit(actor, verb, env, before)
    return env


def _move_users(env: Environment) -> dict[str, list[str]]:
    """Retiring `env`: the projects whose default it is and the active templates that pin it
    move to its replacement (else their launches would all be refused), in the retiring
    transaction. {"projects": [team/project …], "templates": [slug …]} moved. Raises Conflict
    (409, naming them) when some use it and it names no replacement."""
    from apps.launches.models import Template
    from apps.projects.models import Project

    projects = Project.objects.filter(environment=env).select_related("team").order_by("team__slug", "slug")
    templates = Template.objects.filter(environment=env, is_active=True).select_related("team").order_by("slug")
    names = {"projects": [p.full_slug for p in projects], "templates": [str(t) for t in templates]}
    if not names["projects"] and not names["templates"]:
        return names
    if env.replaced_by is None:
        users = ", ".join(
            [*(f"project {n}" for n in names["projects"]), *(f"template {n}" for n in names["templates"])]
        )
        raise Conflict(
            f"{env.label} is still the environment of {users}: name a replacement to move them to, "
            "or change them first."
        )
    projects.update(environment=env.replaced_by)
    templates.update(environment=env.replaced_by)
    return names


def _who_manages(env: Environment) -> str:
    if env.team is None:
        return "Platform admins manage platform-wide environments."
    return f"Only the leads of {env.team.slug} manage its environments."


def _require(env: Environment, states: tuple[str, ...], target: str) -> None:
    if env.state not in states:
        raise Conflict(_bad_transition(env, target))


def _bad_transition(env: Environment, target: str) -> str:
    if env.state == EnvironmentState.BUILDING:
        return f"{env.label} is still building: its state changes once the build ends."
    if env.state == EnvironmentState.RETIRED:
        return f"{env.label} is retired: that is final. Define a new version instead."
    if env.state == EnvironmentState.FAILED:
        return f"{env.label} failed to build: rebuild it (or define a new version) first."
    return f"A {env.state} environment cannot become {target}."


def _set_notice(env: Environment, replaced_by: Any, redirect: bool, message: str | None) -> None:
    replacement = _replacement(env, replaced_by) if replaced_by is not None else None
    if redirect and replacement is None:
        raise InvalidInput.field("replaced_by", "Name the replacement that new launches are redirected to.")
    env.replaced_by, env.redirect = replacement, redirect
    env.message = message or ""


def _update_notice(
    env: Environment, replaced_by: Any, redirect: bool | None, message: str | None, *, lifecycle: bool
) -> None:
    """Replacement, redirect and message of a deprecated or retired version, without a state
    change (a `state` equal to the current one counts as none)."""
    if replaced_by is None and redirect is None and message is None:
        return
    if env.state not in (EnvironmentState.DEPRECATED, EnvironmentState.RETIRED):
        raise Conflict(f"{env.label} is {env.state}: only a deprecated or retired one names a replacement or message.")
    if replaced_by is not None:
        env.replaced_by = _replacement(env, replaced_by)
    if redirect is not None:
        if env.state == EnvironmentState.RETIRED and redirect:
            raise Conflict(f"{env.label} is retired: launches that ask for it are refused, not redirected.")
        if redirect and env.replaced_by is None:
            raise InvalidInput.field("replaced_by", "Name the replacement that new launches are redirected to.")
        env.redirect = redirect
    if message is not None:
        env.message = message


def rebuild_environment(actor: Any, env: Environment) -> Environment:
    """Try the failed build of `env` again: it (and every other failed environment of the
    same build) is `building` until the build ends. Raises NotAllowed (403), Conflict (409
    unless `env` failed)."""
    current = Environment.objects.filter(pk=env.pk).values_list("state", flat=True).first()
    if current != EnvironmentState.FAILED:
        if not can_manage_environment(actor, env):
            raise NotAllowed(_who_manages(env))
        raise Conflict(f"{env.label} is {current}: only a failed build is built again.")
    return change_environment(actor, env, state=EnvironmentState.BUILDING)


def _rebuild(actor: Any, env: Environment, before: dict[str, Any]) -> None:
    """The failed build of `env` queued again (builder.rebuild: every environment that
    failed with it goes back to building, the task is sent on commit); one audit event per
    environment it moved."""
    from apps.environments import builder

    if env.build is None:
        raise Conflict(f"{env.label} has no build to try again: define a new version.")
    failed = list(
        Environment.objects.select_for_update(of=("self",))
        .select_related("team", "replaced_by")
        .filter(build_id=env.build_id, state=EnvironmentState.FAILED)
    )
    previous = {other.pk: (before if other.pk == env.pk else snapshot(other)) for other in failed}
    builder.rebuild(env.build)
    for other in Environment.objects.select_related("team", "replaced_by").filter(pk__in=previous):
        _audit(actor, AuditVerb.ENVIRONMENT_CHANGED, other, previous[other.pk])
    env.refresh_from_db()


def set_default(actor: Any, env: Environment) -> Environment:
    """Make `env` the platform default (what new projects, and projects without their own,
    run in); the previous default stops being it in the same transaction. Platform admins
    only (NotAllowed 403); `env` must be platform-wide and ready (Conflict 409)."""
    if not can_set_default_environment(actor):
        raise NotAllowed("Platform admins choose the platform default environment.")
    with transaction.atomic():
        current = Environment.objects.filter(is_default=True).values_list("pk", flat=True).first()
        env = _locked(env, current)
        if not can_set_default_environment(actor, env):  # a platform admin: the env is a team's
            raise Conflict(f"{env.label} belongs to a team: the platform default must be platform-wide.")
        if env.state != EnvironmentState.READY:
            raise Conflict(f"{env.label} is {env.state}: only a ready environment can be the default.")
        if env.is_default:
            return env
        previous = Environment.objects.select_for_update(of=("self",)).filter(is_default=True).first()
        before = {"default": previous.label if previous else None}
        if previous is not None:
            Environment.objects.filter(pk=previous.pk).update(is_default=False, updated_at=timezone.now())
        env.is_default, env.updated_at = True, timezone.now()
        try:
            with transaction.atomic():
                env.save(update_fields=["is_default", "updated_at"])
        except IntegrityError:
            raise Conflict("Another default was set at the same moment; reload and try again.") from None
        record(actor, AuditVerb.ENVIRONMENT_DEFAULT_SET, env, before=before, after={"default": env.label})
    return env


# --- who uses it ------------------------------------------------------------------------------
def who_uses(env: Environment, user: Any = None, *, limit: int = USAGE_SHOWN) -> dict[str, dict[str, Any]]:
    """Who still uses `env`: {"templates" (active ones pinning it), "projects" (their
    default), "launches" (live ones that run in it), "deployments" (not being deleted, that
    name it or whose live revisions serve in it)}, each {"count": all of them, "rows": the
    first `limit` model rows}. With `user`, rows are only those `user` may see (counts stay
    complete). Two queries per kind."""
    from apps.deployments.models import LIVE_REVISION_STATUSES, Deployment, DeploymentStatus
    from apps.launches.models import LIVE, Launch, Template
    from apps.projects.models import Project

    deployments = Deployment.objects.exclude(status=DeploymentStatus.DELETING).filter(
        Q(environment=env) | Q(pk__in=env.revisions.filter(status__in=LIVE_REVISION_STATUSES).values("deployment_id"))
    )
    kinds: dict[str, Any] = {
        "templates": Template.objects.filter(environment=env, is_active=True).select_related("team").order_by("slug"),
        "projects": Project.objects.filter(environment=env).select_related("team").order_by("team__slug", "slug"),
        "launches": Launch.objects.filter(environment=env, status__in=LIVE)
        .select_related("project__team", "created_by")
        .order_by("-created_at"),
        "deployments": deployments.select_related("project__team").order_by("project__team__slug", "name"),
    }
    found = {}
    for kind, rows in kinds.items():
        shown = rows.for_user(user) if user is not None else rows
        found[kind] = {"count": rows.count(), "rows": list(shown[:limit])}
    return found


def usage_counts(env_ids: list[int]) -> dict[int, dict[str, int]]:
    """{environment id: {"templates", "projects", "launches", "deployments": count}} for many
    environments at once (the counts of `who_uses`), in five queries whatever their number."""
    from django.db.models import Count

    from apps.deployments.models import LIVE_REVISION_STATUSES, Deployment, DeploymentStatus, Revision
    from apps.launches.models import LIVE, Launch, Template
    from apps.projects.models import Project

    counts = {pk: {"templates": 0, "projects": 0, "launches": 0, "deployments": 0} for pk in env_ids}
    if not env_ids:
        return counts
    grouped = {
        "templates": Template.objects.filter(environment_id__in=env_ids, is_active=True),
        "projects": Project.objects.filter(environment_id__in=env_ids),
        "launches": Launch.objects.filter(environment_id__in=env_ids, status__in=LIVE),
    }
    for kind, rows in grouped.items():
        for pk, n in rows.values("environment_id").annotate(n=Count("pk")).values_list("environment_id", "n"):
            counts[pk][kind] = n
    pairs = set(
        Deployment.objects.filter(environment_id__in=env_ids)
        .exclude(status=DeploymentStatus.DELETING)
        .values_list("environment_id", "pk")
    )
    pairs |= set(
        Revision.objects.filter(environment_id__in=env_ids, status__in=LIVE_REVISION_STATUSES)
        .exclude(deployment__status=DeploymentStatus.DELETING)
        .values_list("environment_id", "deployment_id")
    )
    for pk, _ in pairs:
        counts[pk]["deployments"] += 1
    return counts
