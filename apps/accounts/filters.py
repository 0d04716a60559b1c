"""The teams list's filters (page and API)."""

from __future__ import annotations

import django_filters
from django.db.models import Q, QuerySet

from apps.accounts.models import Team
from apps.core.filters import FilterSet


class TeamFilter(FilterSet):
    """Teams: ?slug= (exactly) ?q= (part of the slug or name)."""

    slug = django_filters.CharFilter(max_length=100, help_text="A team's slug.")
    q = django_filters.CharFilter(
        method="search", max_length=200, label="Search", help_text="Part of the slug or name."
    )

    class Meta:
        model = Team
        fields = ["slug", "q"]

    def search(self, qs: QuerySet[Team], name: str, value: str) -> QuerySet[Team]:
        return qs.filter(Q(slug__icontains=value) | Q(name__icontains=value)) if value else qs
