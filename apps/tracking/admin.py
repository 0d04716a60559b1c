from django.contrib import admin

from apps.tracking.models import MetricSeries


@admin.register(MetricSeries)
class MetricSeriesAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Read-only: the cache is derived data, rebuilt from MLflow on demand."""

    list_display = ("run_id", "key", "max_points", "points", "computed_at")
    search_fields = ("run_id", "key")
    exclude = ("steps", "values")

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False
