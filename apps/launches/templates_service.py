"""Creating and changing templates: platform admins for global ones, leads for their team's."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from apps.access import policies
from apps.accounts.models import Team, User, slug_validator
from apps.audit.services import record
from apps.core.errors import InvalidInput, NotAllowed
from apps.launches.models import ParamType, Template
from apps.launches.validation import check_value, quantity
from apps.projects.models import Backend

FIELDS = (
    "name",
    "description",
    "image",
    "command",
    "parameters",
    "default_resources",
    "max_resources",
    "max_runtime_seconds",
    "backends",
    "is_active",
)


def _check_spec(data: dict[str, Any]) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    command = data.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(a, str) and a for a in command):
        errors["command"] = ['The command is a non-empty list of arguments, e.g. ["python", "train.py"].']
    if not str(data.get("image", "")).strip():
        errors["image"] = ["Name the container image the job runs in."]
    parameters = data.get("parameters", {})
    if not isinstance(parameters, dict):
        errors["parameters"] = ["Parameters are an object of name: {type, default, min, max, choices}."]
        parameters = {}
    for name, spec in parameters.items():
        key = f"parameters.{name}"
        if not name.isidentifier():
            errors[key] = ["A parameter name is letters, digits and underscores."]
            continue
        if not isinstance(spec, dict) or spec.get("type") not in ParamType.values:
            errors[key] = [f"Give a type: one of {', '.join(ParamType.values)}."]
            continue
        if spec["type"] == ParamType.CHOICE and not (isinstance(spec.get("choices"), list) and spec["choices"]):
            errors[key] = ["A choice parameter needs a non-empty list of choices."]
            continue
        if "default" in spec:
            try:
                check_value(spec, spec["default"])
            except ValueError as exc:
                errors[key] = [f"The default {exc}."]
    for key in ("default_resources", "max_resources"):
        res = data.get(key, {})
        if not isinstance(res, dict):
            errors[key] = ["Resources are an object with cpu, memory, gpus, gpu_model."]
            continue
        for q in ("cpu", "memory"):
            if q in res:
                try:
                    quantity(str(res[q]))
                except ValueError:
                    errors[f"{key}.{q}"] = [f"{res[q]!r} is not a quantity like 2, 500m or 4Gi."]
        if "gpus" in res and (isinstance(res["gpus"], bool) or not isinstance(res["gpus"], int) or res["gpus"] < 0):
            errors[f"{key}.gpus"] = ["A whole number, 0 or more."]
    backends = data.get("backends", [])
    if not isinstance(backends, list) or not backends or any(b not in Backend.values for b in backends):
        errors["backends"] = [f"Choose from: {', '.join(Backend.values)}."]
    runtime = data.get("max_runtime_seconds", 3600)
    if isinstance(runtime, bool) or not isinstance(runtime, int) or not 1 <= runtime <= 7 * 24 * 3600:
        errors["max_runtime_seconds"] = ["Between 1 second and 7 days."]
    return errors


def _can_manage(actor: User, team: Team | None) -> bool:
    return policies.is_platform_admin(actor) if team is None else policies.can_manage_team(actor, team)


@transaction.atomic
def create_template(actor: User, team: Team | None, *, slug: str, **data: Any) -> Template:
    """A new template for `team` (its leads) or global (`team` None: platform admins)."""
    if not _can_manage(actor, team):
        raise NotAllowed("Leads manage their team's templates; platform admins manage global ones.")
    try:
        slug_validator(slug)
    except ValidationError as exc:
        raise InvalidInput.field("slug", exc.messages[0]) from None
    data = {key: data[key] for key in FIELDS if key in data}
    data.setdefault("backends", [Backend.LOCAL, Backend.KUBERNETES])
    data.setdefault("name", slug)
    errors = _check_spec(data)
    if Template.objects.filter(team=team, slug=slug).exists():
        errors["slug"] = [f"A template called {slug!r} already exists here."]
    if errors:
        raise InvalidInput("The template is not valid.", fields=errors)
    template = Template.objects.create(team=team, slug=slug, **data)
    record(actor, "template.created", template, team=team, after={"slug": slug, **data})
    return template


@transaction.atomic
def update_template(actor: User, template: Template, **changes: Any) -> Template:
    template = Template.objects.select_for_update(of=("self",)).select_related("team").get(pk=template.pk)
    if not _can_manage(actor, template.team):
        raise NotAllowed("Leads manage their team's templates; platform admins manage global ones.")
    before = {key: getattr(template, key) for key in FIELDS}
    after = {**before, **{key: changes[key] for key in FIELDS if key in changes}}
    errors = _check_spec(after)
    if errors:
        raise InvalidInput("The template is not valid.", fields=errors)
    for key, value in after.items():
        setattr(template, key, value)
    template.save()
    record(
        actor,
        "template.updated",
        template,
        team=template.team,
        before={k: v for k, v in before.items() if after[k] != v},
        after={k: v for k, v in after.items() if before[k] != v},
    )
    return template
