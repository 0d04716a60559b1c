"""Access applied once for pages (ObjectAccessMixin) and once for the API (ScopedViewSet).

Both resolve the object through the lookup functions of apps.access.lookups with the
action the HTTP method needs: reads need VIEW, writes the view's `write_action`."""

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


class PlatformAdminMixin(LoginRequiredMixin):
    """Pages for the platform team only (403 for everyone else who is signed in)."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        if not policies.is_platform_admin(request.user):
            raise PermissionDenied("This page is for platform admins.")
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc,no-any-return]


class ScopedViewSet(viewsets.GenericViewSet):  # type: ignore[type-arg]
    """Base of every API viewset: lists are `Model.objects.for_user(user, VIEW)`, single
    objects come from the app's lookup function with the action the method needs."""

    read_action: Action = Action.VIEW
    write_action: Action = Action.MANAGE
    lookup_function: Callable[..., Any]

    def action_for_request(self) -> Action:
        return self.read_action if self.request.method in SAFE_METHODS else self.write_action

    def get_queryset(self) -> Any:
        assert self.queryset is not None
        return cast(Any, self.queryset).for_user(self.request.user, Action.VIEW)

    def get_object(self) -> Any:
        lookup = type(self).lookup_function
        value = self.kwargs[self.lookup_url_kwarg or self.lookup_field]
        return lookup(self.request.user, value, self.action_for_request())
