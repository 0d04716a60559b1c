"""The registry's list filters: promotion requests (page and API), registered models and
alias history (API)."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet

from apps.core.filters import CommaChoiceFilter, FilterSet
from apps.projects.filters import ProjectRefFilter, resolve_project
from apps.projects.models import Project
from apps.registry import policies
from apps.registry.models import AliasHistory, PromotionRequest, Status


class PromotionFilter(FilterSet):
    """Promotion requests: ?project= ?status=<one or more, comma-separated> ?model= ?alias=
    ?awaiting=me (the ones waiting for your decision)."""

    project = ProjectRefFilter()
    status = CommaChoiceFilter(choices=Status.choices)
    model = django_filters.CharFilter(field_name="model__name", max_length=256, help_text="A registered model's name.")
    alias = django_filters.CharFilter(max_length=256, help_text="An alias, e.g. champion.")
    awaiting = django_filters.ChoiceFilter(
        choices=[("me", "me")], method="awaiting_me", empty_label="anyone", help_text="me: waiting for your decision."
    )

    class Meta:
        model = PromotionRequest
        fields = ["project", "status", "model", "alias", "awaiting"]

    def awaiting_me(self, qs: QuerySet[PromotionRequest], name: str, value: str) -> QuerySet[PromotionRequest]:
        return qs.filter(pk__in=policies.awaiting_decision(self.user).values("pk")) if value == "me" else qs


class ModelFilter(FilterSet):
    """Registered models: ?project= (id or team/project) narrows to one project's."""

    project = ProjectRefFilter(method="one_project")

    class Meta:
        model = Project
        fields = ["project"]

    def one_project(self, qs: QuerySet[Project], name: str, value: Any) -> QuerySet[Project]:
        return qs.filter(pk=resolve_project(self.user, value).pk) if value else qs


class AliasHistoryFilter(FilterSet):
    """A model's alias history: ?alias= narrows to one alias."""

    alias = django_filters.CharFilter(max_length=256, help_text="An alias, e.g. champion.")

    class Meta:
        model = AliasHistory
        fields = ["alias"]
