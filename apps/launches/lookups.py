"""Resolving the project and template a request names (by id or by slug)."""

from __future__ import annotations

from typing import Any

from django.http import Http404

from apps.access.lookups import get_project_by_slug_for_user, get_project_for_user
from apps.access.roles import Action
from apps.core.errors import InvalidInput
from apps.launches.models import Template
from apps.projects.models import Project


def project_from(user: Any, value: Any, action: Action = Action.LAUNCH) -> Project:
    """A project named by id or "team/project"; 404 when invisible, 403 when not allowed."""
    text = str(value or "").strip()
    if "/" in text:
        team, _, slug = text.partition("/")
        return get_project_by_slug_for_user(user, team, slug, action)
    if text.isdigit():
        return get_project_for_user(user, text, action)
    raise InvalidInput.field("project", "Name the project by id or as team/project.")


def template_from(user: Any, project: Project, value: Any) -> Template:
    """A template usable in `project`: global, or the project's team's. 400 when unknown."""
    text = str(value or "").strip()
    usable = Template.objects.for_user(user).filter(is_active=True).select_related("team")
    found = (
        usable.filter(pk=int(text)).first()
        if text.isdigit()
        else (
            usable.filter(slug=text, team=project.team).first() or usable.filter(slug=text, team__isnull=True).first()
        )
    )
    if found is None:
        raise InvalidInput.field("template", f"No template {text!r} is available to {project.full_slug}.")
    return found


def project_or_404(user: Any, value: Any) -> Project:
    try:
        return project_from(user, value, Action.VIEW)
    except InvalidInput:
        raise Http404("No such project.") from None
