"""The projects list's filters (page and API), and `?project=` as every list reads it."""

from __future__ import annotations

import re
from typing import Any

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet

from apps.access.lookups import get_project_by_slug_for_user, get_project_for_user
from apps.access.roles import Action
from apps.core.api import MAX_ID
from apps.core.filters import FilterSet, LazyChoices, described, lazy_select
from apps.projects.models import Backend, Project

_REF = re.compile(r"[0-9]{1,19}|[^/\s]+/[^/\s]+")


class ProjectRefField(forms.CharField):
    """A project named by id or as team/project (the form checks the shape; the filter
    looks the project up with the caller's access)."""

    def clean(self, value: Any) -> str:
        text = str(super().clean(value) or "")
        if text and (not _REF.fullmatch(text) or (text.isdigit() and not 1 <= int(text) <= MAX_ID)):
            raise ValidationError("Name the project by id or as team/project.", code="invalid")
        return text


def visible_project_choices(user: Any) -> list[tuple[str, str]]:
    projects = Project.objects.for_user(user, Action.VIEW).select_related("team").order_by("team__slug", "slug")
    return [("", "all"), *((str(p.pk), p.full_slug) for p in projects)]


class ProjectRefFilter(django_filters.Filter):
    """`?project=<id or team/project>`: the rows of that project. A project the caller cannot
    see is a 404, as its own URL answers. On a page it is a select of the visible projects
    (read only when the form is drawn)."""

    field_class = ProjectRefField

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("field_name", "project")
        kwargs.setdefault("help_text", "A project's id or team/project.")
        kwargs.setdefault("max_length", 200)
        super().__init__(*args, **kwargs)
        described(self, {"type": "string"})

    @property
    def field(self) -> forms.Field:
        if not hasattr(self, "_field"):
            user = getattr(getattr(self, "parent", None), "user", None)
            kwargs = {**self.extra, "widget": forms.Select(choices=LazyChoices(lambda: visible_project_choices(user)))}
            self._field = self.field_class(label=self.label, **kwargs)
        return self._field  # type: ignore[no-any-return]

    def filter(self, qs: QuerySet[Any], value: Any) -> QuerySet[Any]:
        if not value:
            return qs
        return qs.filter(**{self.field_name: resolve_project(getattr(self.parent, "user", None), value)})


def resolve_project(user: Any, value: str) -> Project:
    """The project `value` (id or team/project) names; 404 when invisible to `user`."""
    if value.isdigit():
        return get_project_for_user(user, value, Action.VIEW)
    team, _, slug = value.partition("/")
    return get_project_by_slug_for_user(user, team, slug, Action.VIEW)


class ProjectFilter(FilterSet):
    """Projects: ?team=<slug> ?backend=local|kubernetes ?q=<in slug or name>."""

    team = django_filters.CharFilter(field_name="team__slug", max_length=100, help_text="A team's slug.")
    backend = django_filters.ChoiceFilter(choices=Backend.choices, empty_label="all")
    q = django_filters.CharFilter(
        method="search", max_length=200, label="Search", help_text="Part of the slug or name."
    )

    class Meta:
        model = Project
        fields = ["team", "backend", "q"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        user = self.user
        self.filters["team"].extra["widget"] = lazy_select(lambda: _team_slugs(user))

    def search(self, qs: QuerySet[Project], name: str, value: str) -> QuerySet[Project]:
        return qs.filter(Q(slug__icontains=value) | Q(name__icontains=value)) if value else qs


def _team_slugs(user: Any) -> list[str]:
    from apps.accounts.models import Team

    return list(Team.objects.for_user(user, Action.VIEW).order_by("slug").values_list("slug", flat=True))
