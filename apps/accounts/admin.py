from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from apps.accounts.models import ApiToken, Membership, SsoGroupMapping, Team, User


@admin.register(User)
class PlinthUserAdmin(UserAdmin):  # type: ignore[type-arg]
    list_display = ["username", "email", "is_platform_admin", "is_active", "last_login"]
    list_filter = ["is_platform_admin", "is_active"]
    fieldsets = (*UserAdmin.fieldsets, ("Plinth", {"fields": ["is_platform_admin"]}))  # type: ignore[misc]


class MembershipInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Membership
    extra = 0
    readonly_fields = ["user", "role", "source", "created_at"]
    can_delete = False

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False  # roles change through the team page, where the rules and the audit live


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["slug", "name", "gpu_budget", "created_at"]
    search_fields = ["slug", "name"]
    readonly_fields = ["slug", "name", "description", "gpu_budget", "created_at"]
    inlines = [MembershipInline]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["name", "user", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at"]
    readonly_fields = ["user", "name", "prefix", "digest", "created_at", "expires_at", "last_used_at", "revoked_at"]


@admin.register(SsoGroupMapping)
class SsoGroupMappingAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Read-only here: mappings change in the console (/console/teams/<team>/), audited."""

    list_display = ["group", "team", "role", "created_at"]
    search_fields = ["group", "team__slug"]
    readonly_fields = ["group", "team", "role", "created_at"]

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False
