"""Pages of apps.registry (namespace "registry"). API routes live in api_urls.py."""

from django.urls import URLPattern

app_name = "registry"
urlpatterns: list[URLPattern] = []
