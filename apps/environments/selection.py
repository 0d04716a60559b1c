"""Which environment a new launch or deployment runs in, and the rules of its life cycle.

Resolution: an environment asked for explicitly, else the template's pinned one (launches),
else the project's default, else the platform default. Then the state rules:

- building / failed: refused (409 / 400): it has no usable build;
- ready: used;
- deprecated: used with a warning naming the replacement; when the admin set `redirect`,
  the replacement is used instead (and the warning says so), following replacements until
  one that is not redirected;
- retired: refused (409), naming the replacement when there is one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.db import IntegrityError, transaction

from apps.core.errors import Conflict, InvalidInput
from apps.environments.models import Environment, EnvironmentState

if TYPE_CHECKING:
    from apps.launches.models import Template
    from apps.projects.models import Project

MAX_REDIRECTS = 10


@dataclass
class Selected:
    """The environment to record (`environment`, a concrete version) and the sentences to
    show the person who asked (`warnings`, e.g. "sklearn-1.7:1 is deprecated: …")."""

    environment: Environment
    warnings: list[str] = field(default_factory=list)


PORTAL_DESCRIPTION = (
    "The portal's own Python interpreter and packages (local backend); on Kubernetes, each template's image."
)


def platform_default() -> Environment:
    """The platform default environment (the one row with `is_default`). Where there is none
    (a database emptied by hand or by a test's flush: migration 0002 made `portal:1` the
    first default), the portal's own interpreter, `portal:1`, is made again and is the
    default; two callers at once get the same row (the unique constraints decide)."""
    found = Environment.objects.select_related("build", "team").filter(is_default=True).first()
    if found is not None:
        return found
    try:
        with transaction.atomic():
            portal, _ = Environment.objects.get_or_create(
                team=None,
                name="portal",
                version=1,
                defaults={
                    "description": PORTAL_DESCRIPTION,
                    "is_portal": True,
                    "state": EnvironmentState.READY,
                    "is_default": True,
                },
            )
    except IntegrityError:  # made (or another default set) meanwhile
        portal = Environment.objects.filter(is_default=True).first() or Environment.objects.get(
            team=None, name="portal", version=1
        )
    return Environment.objects.select_related("build", "team").get(pk=portal.pk)


def _replacement_text(env: Environment) -> str:
    """ " Use <replacement> instead." — left out when the admin's message already names it."""
    if env.replaced_by is None or env.replaced_by.label in (env.message or ""):
        return ""
    return f" Use {env.replaced_by.label} instead."


def _sentence(text: str) -> str:
    """The admin's message as a sentence of its own (" Going away in May."), or ""."""
    text = (text or "").strip()
    if not text:
        return ""
    return f" {text}" if text.endswith((".", "!", "?")) else f" {text}."


def apply_rules(env: Environment, *, field_name: str = "environment") -> Selected:
    """The life-cycle rules for a new use of `env` (see the module docstring).
    Raises Conflict (409) for building and retired ones, InvalidInput (400 on
    `field_name`) for a failed one."""
    warnings: list[str] = []
    seen: set[int] = set()
    while True:
        if env.state == EnvironmentState.FAILED:
            raise InvalidInput.field(field_name, f"The environment {env.label} failed to build; pick another.")
        if env.state == EnvironmentState.BUILDING:
            raise Conflict(f"The environment {env.label} is still building; wait until it is ready.")
        if env.state == EnvironmentState.RETIRED:
            raise Conflict(f"The environment {env.label} is retired.{_sentence(env.message)}{_replacement_text(env)}")
        if env.state != EnvironmentState.DEPRECATED:
            return Selected(env, warnings)
        note = _sentence(env.message)
        if env.redirect and env.replaced_by_id is not None and env.pk not in seen and len(seen) < MAX_REDIRECTS:
            seen.add(env.pk)
            replacement = Environment.objects.select_related("build", "team", "replaced_by").get(pk=env.replaced_by_id)
            warnings.append(f"{env.label} is deprecated.{note} This runs in {replacement.label} instead.")
            env = replacement
            continue
        warnings.append(f"{env.label} is deprecated.{note}{_replacement_text(env)}")
        return Selected(env, warnings)


def for_launch(project: Project, template: Template, requested: Environment | None = None) -> Selected:
    """The environment a new launch of `template` in `project` runs in: `requested`, else
    the template's pinned one, else the project's default, else the platform default.
    Raises Conflict / InvalidInput per `apply_rules`."""
    env = requested or _load(template.environment_id) or _load(project.environment_id) or platform_default()
    return apply_rules(env)


def for_deployment(project: Project, recorded: Environment | None, requested: Environment | None = None) -> Selected:
    """The environment a new revision of a deployment serves in: `requested` (set on the
    deployment), else `recorded` (the one the model's training run recorded), else the
    project's default, else the platform default. Same rules as `for_launch`."""
    env = requested or recorded or _load(project.environment_id) or platform_default()
    return apply_rules(env)


def recorded_by_label(label: str) -> Environment | None:
    """The environment a run's `plinth.environment` tag names (`name:version` or
    `team/name:version`), or None when the tag is empty, malformed or names none."""
    label = (label or "").strip()
    team_slug, _, rest = label.rpartition("/")
    name, sep, version = rest.rpartition(":")
    if not sep or not name or not (version.isascii() and version.isdigit()):
        return None
    rows = Environment.objects.select_related("build", "team", "replaced_by").filter(name=name, version=int(version))
    rows = rows.filter(team__slug=team_slug) if team_slug else rows.filter(team__isnull=True)
    return rows.first()


def _load(pk: int | None) -> Environment | None:
    if pk is None:
        return None
    return Environment.objects.select_related("build", "team", "replaced_by").filter(pk=pk).first()
