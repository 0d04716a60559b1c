"""Read-only admin views of the GPU tables (changes go through the pages and services)."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from apps.gpus.models import Gpu, GpuPrice, IdleExemption, IdleFinding, IdlePolicy, SourceStatus


class ReadOnly(admin.ModelAdmin):  # type: ignore[type-arg]
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Gpu)
class GpuAdmin(ReadOnly):
    list_display = ["__str__", "product", "allocated", "namespace", "pod", "utilization", "sampled_at", "present"]
    list_filter = ["product", "allocated", "present"]
    search_fields = ["node", "uuid", "pod", "namespace"]


@admin.register(IdleFinding)
class IdleFindingAdmin(ReadOnly):
    list_display = ["gpu", "launch", "namespace", "status", "idle_since", "notified_at", "reclaimed_at"]
    list_filter = ["status"]


for model in (IdlePolicy, IdleExemption, GpuPrice, SourceStatus):
    admin.site.register(model, ReadOnly)
