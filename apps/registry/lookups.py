"""The lookups of registry objects, used by pages, the API and tasks alike: 404 when the
object does not exist or is invisible to the user, 403 when visible but not allowed."""

from __future__ import annotations

from typing import Any

from django.http import Http404

from apps.access.lookups import check_team_access
from apps.access.roles import Action
from apps.projects.models import Project
from apps.registry.mlflow import registry, tags_of
from apps.registry.models import PROJECT_TAG, PromotionRequest, RegisteredModel


def get_promotion_for_user(user: Any, pk: Any, action: Action | str = Action.VIEW) -> PromotionRequest:
    try:
        found = PromotionRequest.objects.select_related("project__team", "model", "requested_by").get(pk=int(pk))
    except (PromotionRequest.DoesNotExist, ValueError, TypeError):
        raise Http404("No such promotion request.") from None
    check_team_access(user, action, found.project.team, "promotion request")
    return found


def project_of_tag(value: str) -> Project | None:
    """The project a `plinth.project` tag ("<team>/<project>") names, if it exists."""
    team, _, slug = (value or "").partition("/")
    if not team or not slug:
        return None
    return Project.objects.select_related("team").filter(team__slug=team, slug=slug).first()


def get_model_for_user(user: Any, name: str, action: Action | str = Action.VIEW) -> RegisteredModel:
    """A registered model by name. Plinth's mirror row answers when there is one; otherwise
    MLflow is asked for the model's `plinth.project` tag (503 when MLflow is down) and an
    unsaved mirror is returned — services save it when they act on it, a read does not."""
    found = RegisteredModel.objects.select_related("project__team").filter(name=name).first()
    if found is None:
        model = registry().get_registered_model(name)
        project = project_of_tag(tags_of(model).get(PROJECT_TAG, "")) if model else None
        if project is None:
            raise Http404("No such registered model in any project.")
        found = RegisteredModel(name=name, project=project)
    check_team_access(user, action, found.project.team, "registered model")
    return found
