"""The filters of the launch, sweep and template lists (pages and API alike)."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import Q, QuerySet

from apps.core.filters import CommaChoiceFilter, FilterSet, IdFilter
from apps.launches.models import LIVE, Launch, Status, Sweep, Template
from apps.projects.filters import ProjectRefFilter, resolve_project


class LaunchFilter(FilterSet):
    """Launches: ?project= ?status=<one or more, comma-separated, or live> ?user= ?sweep=."""

    project = ProjectRefFilter()
    status = CommaChoiceFilter(choices=Status.choices, groups={"live": sorted(LIVE)}, label="Status")
    user = django_filters.CharFilter(
        field_name="created_by__username", max_length=150, label="By", help_text="A username."
    )
    sweep = IdFilter(field_name="sweep", label="Sweep id", help_text="A sweep's id: its trials.")

    class Meta:
        model = Launch
        fields = ["project", "status", "user", "sweep"]


class SweepFilter(FilterSet):
    """Sweeps: ?project=."""

    project = ProjectRefFilter()

    class Meta:
        model = Sweep
        fields = ["project"]


class TemplateFilter(FilterSet):
    """Templates: ?project= narrows to those the project can launch (global or its team's,
    for its backend)."""

    project = ProjectRefFilter(method="launchable_in")

    class Meta:
        model = Template
        fields = ["project"]

    def launchable_in(self, qs: QuerySet[Template], name: str, value: Any) -> QuerySet[Template]:
        if not value:
            return qs
        chosen = resolve_project(self.user, value)
        templates = qs.filter(Q(team__isnull=True) | Q(team=chosen.team_id))
        # `backends` is a JSON list: filter in Python (templates are few) to stay portable.
        return templates.filter(pk__in=[t.pk for t in templates if chosen.backend in t.backends])
