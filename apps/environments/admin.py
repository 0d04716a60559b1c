"""Read-only views of environments and their builds for the platform team. Changes go
through the pages and the API (services with audit events), never through the Django admin."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from apps.environments.models import Environment, EnvironmentBuild


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    actions = None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Environment)
class EnvironmentAdmin(ReadOnlyAdmin):
    list_display = ["name", "version", "team", "state", "is_default", "build", "created_by", "created_at"]
    list_filter = ["state", "is_default"]
    search_fields = ["name", "description"]


@admin.register(EnvironmentBuild)
class EnvironmentBuildAdmin(ReadOnlyAdmin):
    list_display = ["requirements_hash", "status", "progress", "step", "attempts", "created_at", "finished_at"]
    list_filter = ["status"]
    search_fields = ["requirements_hash", "requirements"]
