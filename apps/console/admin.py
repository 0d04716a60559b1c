from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from apps.console.models import SyncState


@admin.register(SyncState)
class SyncStateAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Read-only: the sync writes these rows; the console shows them."""

    list_display = ["project", "target", "status", "message", "checked_at", "repaired_at"]
    list_filter = ["target", "status"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
