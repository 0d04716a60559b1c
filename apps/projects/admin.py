from django.contrib import admin

from apps.projects.models import Project


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["__str__", "name", "gpu_quota", "backend", "namespace", "mlflow_state"]
    list_filter = ["backend", "mlflow_state"]
    readonly_fields = [f.name for f in Project._meta.fields]
