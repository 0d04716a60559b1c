from django.contrib import admin
from django.http import HttpRequest

from apps.access import policies
from apps.core.models import WorkerHeartbeat


def _platform_admin_only(request: HttpRequest) -> bool:
    return policies.is_platform_admin(request.user)


# The Django admin is for platform admins (the flag), not Django's is_staff.
admin.site.has_permission = _platform_admin_only  # type: ignore[method-assign]
admin.site.site_header = "Plinth administration"
admin.site.site_title = "Plinth admin"


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["hostname", "seen_at"]
