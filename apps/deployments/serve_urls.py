"""The inference gateway's routes (mounted at /serve/ by portal/urls.py)."""

from django.urls import URLPattern, path

from apps.deployments import gateway

app_name = "serve"

urlpatterns: list[URLPattern] = [
    path("<slug:team>/<slug:project>/<slug:deployment>/invocations", gateway.invoke, name="invoke"),
]
