"""The audit log's filters: the page, its CSV export and the API read the same parameters."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import django_filters
from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db.models import QuerySet

from apps.access.roles import Action
from apps.accounts.models import Team
from apps.audit.models import AuditEvent
from apps.audit.verbs import AuditVerb
from apps.core.filters import EARLIEST_DAY, LATEST_DAY, FilterSet, described, lazy_select, local_midnight

_DAYS = [MinValueValidator(EARLIEST_DAY), MaxValueValidator(LATEST_DAY)]


class AuditFilter(FilterSet):
    """?actor= &team= &project= (team/project, or a project slug in any team) &verb= (a verb or
    its start, e.g. `team.`) &target_type= &since= &until= (days, YYYY-MM-DD, both included)
    &request_id= &q= (a word in the target's label)."""

    actor = django_filters.CharFilter(
        field_name="actor_label", max_length=150, label="Who", help_text="Who acted (username)."
    )
    team = django_filters.CharFilter(field_name="team_label", max_length=100, label="Team", help_text="A team's slug.")
    project = django_filters.CharFilter(
        method="in_project",
        max_length=200,
        label="Project",
        help_text="team/project, or a project's slug in any team.",
    )
    verb = django_filters.CharFilter(
        field_name="verb", lookup_expr="startswith", max_length=100, label="Action", help_text="A verb or its start."
    )
    target_type = django_filters.CharFilter(max_length=100, label="Object", help_text="e.g. accounts.membership")
    q = django_filters.CharFilter(
        field_name="target_label",
        lookup_expr="icontains",
        max_length=200,
        label="Name contains",
        help_text="Part of the object's name.",
    )
    since = django_filters.DateFilter(
        method="from_day", label="From", validators=_DAYS, widget=forms.DateInput(attrs={"type": "date"})
    )
    until = django_filters.DateFilter(
        method="to_day", label="To", validators=_DAYS, widget=forms.DateInput(attrs={"type": "date"})
    )
    request_id = django_filters.CharFilter(max_length=64, label="Request id")
    for day in (since, until):
        described(day, {"type": "string", "format": "date", "description": "A day, YYYY-MM-DD (included)."})
    del day

    class Meta:
        model = AuditEvent
        fields = ["actor", "team", "project", "verb", "target_type", "q", "since", "until", "request_id"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        user = self.user
        # The page's selects; read only when the form is drawn (the API never draws it).
        self.filters["team"].extra["widget"] = lazy_select(
            lambda: Team.objects.for_user(user, Action.MANAGE).order_by("slug").values_list("slug", flat=True)
        )
        self.filters["verb"].extra["widget"] = lazy_select(lambda: sorted(AuditVerb.values))
        self.filters["target_type"].extra["widget"] = lazy_select(
            lambda: (
                AuditEvent.objects.for_user(user)
                .order_by("target_type")
                .values_list("target_type", flat=True)
                .distinct()
            )
        )

    def in_project(self, qs: QuerySet[AuditEvent], name: str, value: str) -> QuerySet[AuditEvent]:
        if not value:
            return qs
        return qs.filter(project_label=value) if "/" in value else qs.filter(project_label__endswith=f"/{value}")

    def from_day(self, qs: QuerySet[AuditEvent], name: str, value: date | None) -> QuerySet[AuditEvent]:
        return qs.filter(created_at__gte=local_midnight(value)) if value else qs

    def to_day(self, qs: QuerySet[AuditEvent], name: str, value: date | None) -> QuerySet[AuditEvent]:
        return qs.filter(created_at__lt=local_midnight(value + timedelta(days=1))) if value else qs
