"""The filters of the deployment lists (the project's page and the API alike)."""

from __future__ import annotations

import django_filters

from apps.core.filters import CommaChoiceFilter, FilterSet
from apps.deployments.models import Deployment, DeploymentStatus
from apps.projects.filters import ProjectRefFilter


class DeploymentFilter(FilterSet):
    """Deployments: ?project= (id or team/project) ?status=<one or more, comma-separated>
    ?model=<registered model name>."""

    project = ProjectRefFilter()
    status = CommaChoiceFilter(choices=DeploymentStatus.choices, label="Status")
    model = django_filters.CharFilter(
        field_name="model_name", max_length=256, label="Model", help_text="A registered model's name."
    )

    class Meta:
        model = Deployment
        fields = ["project", "status", "model"]
