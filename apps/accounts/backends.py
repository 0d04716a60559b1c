"""Django permissions for platform admins, so the Django admin (which apps.core.admin opens
to them, not to Django's is_staff) shows them every registered model instead of "You don't
have permission to view or edit anything".

View only: every change goes through the console and the services, which check the rule
and write the audit event; the admin is for looking things up."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import BaseBackend


def _is_platform_admin(user: Any) -> bool:
    return bool(getattr(user, "is_authenticated", False) and user.is_active and user.is_platform_admin)


class PlatformAdminPermissions(BaseBackend):
    """Grants an active platform admin every `<app>.view_<model>` permission (and so the
    admin's module pages); authenticates nobody."""

    def authenticate(self, request: Any, **credentials: Any) -> None:
        return None

    def has_perm(self, user_obj: Any, perm: str, obj: Any = None) -> bool:
        return _is_platform_admin(user_obj) and perm.partition(".")[2].startswith("view_")

    def has_module_perms(self, user_obj: Any, app_label: str) -> bool:
        return _is_platform_admin(user_obj)
