"""Access applied once for pages (ObjectAccessMixin, PolicyRequiredMixin) and once for the
API (ScopedViewSet).

Object pages and viewsets resolve the object through the lookup functions of
apps.access.lookups with the action the HTTP method needs: reads need VIEW, writes the
view's `write_action`; lists are the model's scoped queryset (`for_user`). Pages that are
not about one object (the console, the audit log, admin pages) are opened by one named
policy of apps.access.policies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from rest_framework import viewsets

from apps.access import policies
from apps.access.roles import Action

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class ObjectAccessMixin(LoginRequiredMixin):
    """Page views about one object: `lookup(user, *url_kwargs, action)` runs before the
    handler and sets `self.object` (404 invisible, 403 not allowed)."""

    lookup: Callable[..., Any]
    lookup_kwargs: tuple[str, ...] = ("slug",)
    read_action: Action = Action.VIEW
    write_action: Action = Action.MANAGE
    object: Any

    def action_for(self, request: HttpRequest, kwargs: dict[str, Any]) -> Action:
        return self.read_action if request.method in SAFE_METHODS else self.write_action

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        lookup = type(self).lookup  # a plain function stored on the class
        self.object = lookup(request.user, *(kwargs[k] for k in self.lookup_kwargs), self.action_for(request, kwargs))
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc,no-any-return]


class PolicyRequiredMixin(LoginRequiredMixin):
    """Pages opened by a named policy: `policy(user)` must hold, else 403 with `denied`
    (anonymous users go to the sign-in page first)."""

    policy: Callable[[Any], bool]
    denied = "You may not open this page."

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        allowed = type(self).policy  # a plain function stored on the class
        if not allowed(request.user):
            raise PermissionDenied(self.denied)
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc,no-any-return]


class PlatformAdminMixin(PolicyRequiredMixin):
    """Pages for the platform team only (403 for everyone else who is signed in)."""

    policy = staticmethod(policies.is_platform_admin)
    denied = "This page is for platform admins."


class ScopedViewSet(viewsets.GenericViewSet):  # type: ignore[type-arg]
    """Base of every API viewset: lists are `Model.objects.for_user(user, VIEW)`, single
    objects come from the app's lookup function with the action the method needs."""

    read_action: Action = Action.VIEW
    write_action: Action = Action.MANAGE
    lookup_function: Callable[..., Any]
    # Endpoints opened by a named policy (as PolicyRequiredMixin's pages): checked after
    # authentication, before the handler; None: the scoped queryset alone decides.
    policy: Callable[[Any], bool] | None = None
    denied = "You may not use this endpoint."

    def initial(self, request: Any, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        allowed = type(self).policy
        if allowed is not None and not allowed(request.user):
            self.permission_denied(request, message=self.denied)

    def action_for_request(self) -> Action:
        return self.read_action if self.request.method in SAFE_METHODS else self.write_action

    def get_queryset(self) -> Any:
        assert self.queryset is not None
        return cast(Any, self.queryset).for_user(self.request.user, Action.VIEW)

    def get_object(self) -> Any:
        lookup = type(self).lookup_function
        value = self.kwargs[self.lookup_url_kwarg or self.lookup_field]
        return lookup(self.request.user, value, self.action_for_request())
