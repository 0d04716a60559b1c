from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from apps.core.models import WorkerHeartbeat


def _platform_admin_only(request: HttpRequest) -> bool:
    user: Any = request.user
    return bool(user.is_active and user.is_authenticated and user.is_platform_admin)


# The Django admin is for platform admins (the flag), not Django's is_staff.
admin.site.has_permission = _platform_admin_only  # type: ignore[method-assign]
admin.site.site_header = "Plinth administration"
admin.site.site_title = "Plinth admin"


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["hostname", "seen_at"]
