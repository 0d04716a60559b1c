"""Read-only views of deployments for the platform team. Changes go through the pages and
the API (services with audit events), never through the Django admin. Serving keys show
their prefix only; the digest is left out."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from apps.deployments.models import Deployment, Revision, RolloutEvent, ServingKey


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    actions = None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Deployment)
class DeploymentAdmin(ReadOnlyAdmin):
    list_display = ["name", "project", "model_name", "alias", "pinned_version", "backend", "status", "updated_at"]
    list_filter = ["status", "backend"]
    search_fields = ["name", "model_name"]


@admin.register(Revision)
class RevisionAdmin(ReadOnlyAdmin):
    list_display = ["deployment", "number", "version", "status", "traffic", "is_canary", "restarts", "created_at"]
    list_filter = ["status"]


@admin.register(RolloutEvent)
class RolloutEventAdmin(ReadOnlyAdmin):
    list_display = ["deployment", "revision", "step", "actor", "at"]
    list_filter = ["step"]


@admin.register(ServingKey)
class ServingKeyAdmin(ReadOnlyAdmin):
    list_display = ["deployment", "name", "prefix", "created_by", "created_at", "last_used_at", "revoked_at"]
    exclude = ["digest"]
