"""Django permissions for platform admins, so the Django admin (which apps.core.admin opens
to them, not to Django's is_staff) shows them every registered model instead of "You don't
have permission to view or edit anything".

View only: every change goes through the console and the services, which check the rule
and write the audit event; the admin is for looking things up."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import BaseBackend

from apps.access.policies import is_platform_admin

# Plinth's own apps only: a third-party admin (django_celery_beat's periodic tasks) has
# bulk actions that ask for no permission beyond "view" and would change state unaudited.
PLINTH_APP_LABELS = frozenset(
    {"accounts", "audit", "console", "core", "gpus", "launches", "notifications", "projects", "registry"}
)


class PlatformAdminPermissions(BaseBackend):
    """Grants an active platform admin every `<app>.view_<model>` permission of Plinth's apps (and so the
    admin's module pages); authenticates nobody."""

    def authenticate(self, request: Any, **credentials: Any) -> None:
        return None

    def has_perm(self, user_obj: Any, perm: str, obj: Any = None) -> bool:
        app_label, _, codename = perm.partition(".")
        return is_platform_admin(user_obj) and app_label in PLINTH_APP_LABELS and codename.startswith("view_")

    def has_module_perms(self, user_obj: Any, app_label: str) -> bool:
        return is_platform_admin(user_obj) and app_label in PLINTH_APP_LABELS
