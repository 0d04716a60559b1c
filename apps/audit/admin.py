from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from apps.audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Read-only: no add, change or delete, not even for superusers."""

    list_display = ["created_at", "actor_label", "verb", "target_label", "team_label", "project_label"]
    list_filter = ["verb"]
    search_fields = ["actor_label", "target_label", "team_label", "project_label", "request_id"]
    actions = None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
