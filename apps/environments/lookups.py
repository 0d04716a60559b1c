"""The lookup of an environment, used by pages, the API and tasks alike: 404 when it does
not exist or is invisible to the user, 403 when visible but the user may not manage it."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404

from apps.access.policies import can, can_manage_environment, is_signed_in
from apps.access.roles import Action
from apps.core.api import MAX_ID
from apps.environments.models import Environment


def with_related(queryset: QuerySet[Environment]) -> QuerySet[Environment]:
    """`queryset` with what a page or the API shows of each row, joined in one query."""
    return queryset.select_related("team", "build", "replaced_by__team", "created_by")


def get_environment_for_user(user: Any, pk: Any, action: Action | str = Action.VIEW) -> Environment:
    """An environment by id, with its team, build, replacement and author. Platform-wide
    ones are visible to every signed-in user, a team's own to its members (and platform
    admins); anything else is a 404, as a missing one. Any `action` beyond VIEW is
    managing it (`can_manage_environment`): a 403 otherwise."""
    text = str(pk if pk is not None else "").strip()
    found = None
    if is_signed_in(user) and text.isascii() and text.isdigit() and int(text) <= MAX_ID:
        found = with_related(Environment.objects.filter(pk=int(text))).first()
    if found is None or (found.team is not None and not can(user, Action.VIEW, found.team)):
        raise Http404("No such environment.")
    if Action(action) != Action.VIEW and not can_manage_environment(user, found):
        raise PermissionDenied(
            "Platform admins manage platform-wide environments."
            if found.team is None
            else "Only the team's leads manage its environments."
        )
    return found
