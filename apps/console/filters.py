"""The console's list filters."""

from __future__ import annotations

import django_filters
from django.db.models import Q, QuerySet

from apps.accounts.models import User
from apps.core.filters import FilterSet


class UserFilter(FilterSet):
    """People: ?q= (part of the username, email or last name)."""

    q = django_filters.CharFilter(
        method="search", max_length=200, label="Search", help_text="Part of the username, email or last name."
    )

    class Meta:
        model = User
        fields = ["q"]

    def search(self, qs: QuerySet[User], name: str, value: str) -> QuerySet[User]:
        if not value:
            return qs
        return qs.filter(Q(username__icontains=value) | Q(email__icontains=value) | Q(last_name__icontains=value))
