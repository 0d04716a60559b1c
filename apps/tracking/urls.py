"""Pages of apps.tracking (namespace "tracking"). API routes live in api_urls.py."""

from django.urls import URLPattern

app_name = "tracking"
urlpatterns: list[URLPattern] = []
