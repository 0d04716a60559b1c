"""The filters of the environment list (the page and the API alike)."""

from __future__ import annotations

from typing import Any

import django_filters
from django.core.validators import RegexValidator
from django.db.models import Q

from apps.accounts.models import slug_validator
from apps.core.filters import CommaChoiceFilter, FilterSet
from apps.environments.models import SELECTABLE_STATES, Environment, EnvironmentState
from apps.environments.validation import NAME_RE

PLATFORM = "-"  # ?team=- : the platform-wide ones


class EnvironmentFilter(FilterSet):
    """Environments: ?name=<exact name> ?team=<team slug, or - for platform-wide>
    ?state=<one or more, comma-separated; `usable` = ready,deprecated> ?q=<text in the name
    or description>."""

    name = django_filters.CharFilter(
        field_name="name",
        max_length=63,
        validators=[RegexValidator(NAME_RE, "Not an environment name.")],
        label="Name",
        help_text="An environment's name (all its versions).",
    )
    team = django_filters.CharFilter(
        method="filter_team",
        max_length=40,
        validators=[lambda value: _team_value(value)],
        label="Team",
        help_text=f"A team's slug, or {PLATFORM} for the platform-wide environments.",
    )
    state = CommaChoiceFilter(
        choices=EnvironmentState.choices, groups={"usable": [str(s) for s in SELECTABLE_STATES]}, label="State"
    )
    q = django_filters.CharFilter(
        method="filter_q", max_length=100, label="Search", help_text="Text in the name or the description."
    )

    class Meta:
        model = Environment
        fields = ["name", "team", "state", "q"]

    def filter_team(self, queryset: Any, name: str, value: str) -> Any:
        if not value:
            return queryset
        if value == PLATFORM:
            return queryset.filter(team__isnull=True)
        return queryset.filter(team__slug=value)

    def filter_q(self, queryset: Any, name: str, value: str) -> Any:
        text = value.strip()
        return queryset.filter(Q(name__icontains=text) | Q(description__icontains=text)) if text else queryset


def _team_value(value: str) -> None:
    if value and value != PLATFORM:
        slug_validator(value)
