"""Pages of apps.gpus (namespace "gpus"). API routes live in api_urls.py."""

from django.urls import URLPattern

app_name = "gpus"
urlpatterns: list[URLPattern] = []
