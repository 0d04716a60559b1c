"""Read-only views of notifications for the platform team: what was sent, to whom, and why
a delivery failed. Webhooks are configured by leads from the team's notification page."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from apps.notifications.models import Delivery, Notification, TeamWebhook


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    actions = None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class DeliveryInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Delivery
    fields = ["channel", "recipient", "status", "attempts", "last_error", "sent_at"]
    readonly_fields = ["channel", "recipient", "status", "attempts", "last_error", "sent_at"]
    extra = 0
    can_delete = False


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "verb", "team", "subject"]
    list_filter = ["verb"]
    search_fields = ["subject"]
    inlines = [DeliveryInline]


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = ["id", "notification", "channel", "recipient", "status", "attempts", "updated_at"]
    list_filter = ["status", "channel"]


@admin.register(TeamWebhook)
class TeamWebhookAdmin(ReadOnlyAdmin):
    # The secret never appears here: it signs the team's webhook calls.
    list_display = ["team", "url", "is_active", "updated_at", "updated_by"]
    fields = ["team", "url", "is_active", "secret_set_at", "created_at", "updated_at", "updated_by"]
