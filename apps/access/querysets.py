"""The one scoped queryset. Every model with team-owned rows builds its manager from
`ScopedQuerySet`, so `Model.objects.for_user(user, action)` is decided here, once:

- anonymous and deactivated users see nothing;
- platform admins see every row;
- anyone else sees the rows of the teams where their role allows `action`, as the
  model's declared `access_scope` (a `TeamScope`) says how a row belongs to a team.

Models only declare where their team is (`access_scope = TeamScope("project__team")`);
no model, view or API writes its own guard. (NetBox's `RestrictedQuerySet.restrict`.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.db.models import Q

from apps.access.roles import Action, roles_for

_M = TypeVar("_M", bound=models.Model, covariant=True)


def is_signed_in(user: Any) -> bool:
    """A signed-in, active account: anonymous and deactivated users have no rights at all."""
    return bool(getattr(user, "is_authenticated", False) and getattr(user, "is_active", False))


def is_platform_admin(user: Any) -> bool:
    """The platform team's flag on an active, signed-in account: every action everywhere."""
    return is_signed_in(user) and bool(getattr(user, "is_platform_admin", False))


@dataclass(frozen=True)
class TeamScope:
    """How a model's rows belong to teams, declared once on the model as `access_scope`.

    `path` is the lookup from the model to its team (`""` for Team itself, `"team"`,
    `"project__team"`, or a plain id column such as `"team_id"`). `shared` selects rows
    every signed-in user may see whatever their teams (global templates, free GPUs): they
    are open to VIEW only. `action`, when set, is the action a row's team must allow
    whatever was asked (the audit log is for the teams one leads)."""

    path: str
    shared: Q | None = None
    action: Action | None = None

    def rows_for(self, user: Any, action: Action | str) -> Q:
        """The rows a signed-in user who is not a platform admin may `action`."""
        from apps.accounts.models import Membership

        asked = Action(action)
        roles = roles_for(self.action or asked)
        field = f"{self.path}__in" if self.path else "pk__in"
        if roles:
            allowed = Q(**{field: Membership.objects.filter(user=user, role__in=roles).values("team_id")})
        else:  # no team role is enough (ADMIN): nothing through teams
            allowed = Q(pk__in=[])
        if self.shared is not None and asked == Action.VIEW:
            allowed |= self.shared
        return allowed


def scope_of(model: type[models.Model]) -> TeamScope:
    scope = getattr(model, "access_scope", None)
    if not isinstance(scope, TeamScope):
        raise ImproperlyConfigured(f"{model.__name__} uses ScopedQuerySet but declares no access_scope.")
    return scope


class ScopedQuerySet(models.QuerySet[_M]):
    """A queryset that knows who may see its rows: `for_user(user, action)`."""

    def for_user(self, user: Any, action: Action | str = Action.VIEW) -> Self:
        """The rows `user` may do `action` on (see the module's docstring for the rule)."""
        scope = scope_of(self.model)
        Action(action)  # an unknown action is a programming error, for everyone
        if not is_signed_in(user):
            return self.none()
        if is_platform_admin(user):
            return self.all()
        return self.filter(scope.rows_for(user, action))
