"""Read-only views of the registry for the platform team. Changes go through the pages and
the API (services with audit events), never through the Django admin."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from apps.registry.models import AliasHistory, PromotionPolicy, PromotionRequest, RegisteredModel


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    actions = None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(RegisteredModel)
class RegisteredModelAdmin(ReadOnlyAdmin):
    list_display = ["name", "project", "attached_by", "created_at"]
    search_fields = ["name"]


@admin.register(PromotionPolicy)
class PromotionPolicyAdmin(ReadOnlyAdmin):
    list_display = ["project", "required_approvals", "expiry_days", "allowed_aliases", "gate_metric", "updated_at"]


@admin.register(PromotionRequest)
class PromotionRequestAdmin(ReadOnlyAdmin):
    list_display = ["id", "model", "version", "alias", "kind", "status", "requested_by", "created_at"]
    list_filter = ["status", "kind"]
    search_fields = ["model__name"]


@admin.register(AliasHistory)
class AliasHistoryAdmin(ReadOnlyAdmin):
    list_display = ["model", "alias", "version", "previous_version", "valid_from", "valid_to", "source", "request"]
    list_filter = ["source"]
