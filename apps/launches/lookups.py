"""Resolving the project and template a request names (by id or by slug)."""

from __future__ import annotations

from typing import Any

from django.http import Http404

from apps.access.lookups import get_project_by_slug_for_user, get_project_for_user, is_slug
from apps.access.roles import Action
from apps.core.api import MAX_ID
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


def _id(text: str) -> int | None:
    """A primary key the database can compare (digits, at most a signed 64-bit integer)."""
    return int(text) if text.isdigit() and int(text) <= MAX_ID else None


def visible_project(user: Any, value: Any) -> Project | None:
    """The project `value` names (by id or "team/project") if `user` may see it, else None:
    for pages that only use it to narrow a choice (the access check comes later)."""
    text = str(value or "").strip()
    visible = Project.objects.for_user(user, Action.VIEW).select_related("team")
    if (pk := _id(text)) is not None:
        return visible.filter(pk=pk).first()
    team, _, slug = text.partition("/")
    return visible.filter(team__slug=team, slug=slug).first() if is_slug(team) and is_slug(slug) else None


def find_template(user: Any, value: Any, project: Project | None) -> Template | None:
    """The active template `value` names for `user`, the same way for pages and the API:
    by id, or by slug — the project's team's template first, then the global one. Team
    templates of different teams may share a slug, so without a project a slug names a
    template only when exactly one usable template carries it (None otherwise)."""
    text = str(value or "").strip()
    usable = Template.objects.for_user(user).filter(is_active=True).select_related("team")
    if text.isdigit():
        pk = _id(text)
        return usable.filter(pk=pk).first() if pk is not None else None
    if not is_slug(text):
        return None
    if project is not None:
        return (
            usable.filter(slug=text, team=project.team).first() or usable.filter(slug=text, team__isnull=True).first()
        )
    named = list(usable.filter(slug=text)[:2])
    return named[0] if len(named) == 1 else None


def template_from(user: Any, project: Project, value: Any) -> Template:
    """A template usable in `project`: global, or the project's team's. 400 when unknown."""
    found = find_template(user, value, project)
    if found is None:
        text = str(value or "").strip()
        raise InvalidInput.field("template", f"No template {text!r} is available to {project.full_slug}.")
    return found


def project_or_404(user: Any, value: Any) -> Project:
    try:
        return project_from(user, value, Action.VIEW)
    except InvalidInput:
        raise Http404("No such project.") from None
